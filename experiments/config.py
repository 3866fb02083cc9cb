"""Structured config of the experiment entry points: one dataclass schema per Hydra group.

The schemas live in Hydra's ConfigStore; the YAML files under ``conf/`` only select options
and override values. :func:`to_run_spec` turns a composed config into the typed
:class:`control.run.RunSpec` once, at start, so that every range check the library makes
fails before any simulated second runs.

Groups and their options:

* ``cluster``: hosts, physics tick and probe interval (YAML options ``default``, ``small``);
* ``scenario``: one option per registered scenario of :data:`sim.scenarios.SCENARIOS`, each
  with its ``name`` and the simulated ``hours``;
* ``agent``: one option per healing agent of :data:`control.run.AGENTS`;
* ``safety``: the fields of :class:`control.safety.SafetyConfig` (``default``, ``strict``,
  ``dry_run``);
* ``operator``: the simulated human of :class:`control.run.OperatorSpec`;
* ``engine``: timing and thresholds of :class:`control.engine.EngineConfig`;
* ``tracking``: MLflow experiment, tracking URI and a switch (``mlflow``, ``off``);

plus the top-level ``seed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from control.engine import EngineConfig
from control.run import AGENTS, OperatorSpec, RunSpec
from control.safety import SafetyConfig
from experiments import joblog, tracking
from sim.config import DeploySpec
from sim.errors import ConfigError
from sim.scenarios import SCENARIOS, make_config


@dataclass
class ClusterSchema:
    """Size of the twin, its time resolution and how its configuration deploys roll out."""

    hosts: int = 100
    tick_s: float = 1.0
    probe_interval_s: float = 1.0
    canary_share: float = 0.0
    """Share of a service's replicas a configuration deploy reaches first (0: all at once)."""
    canary_bake_s: float = 600.0
    """Time a canaried deploy waits before it is promoted to every replica."""


@dataclass
class ScenarioSchema:
    """Which registered scenario runs, and for how many simulated hours."""

    name: str = "mixed"
    hours: float = 24.0


@dataclass
class AgentSchema:
    """The healing agent: ``rules`` (the runbook engine) or ``noop`` (do nothing)."""

    name: str = "rules"


@dataclass
class SafetySchema:
    """Safety gate limits; mirrors :class:`control.safety.SafetyConfig` field for field."""

    human_approval_required: bool = False
    approval_risks: list[str] = field(default_factory=lambda: ["high"])
    safety_mode: bool = False
    rollback_enabled: bool = True
    dry_run: bool = False
    cooldown_s: float = 120.0
    max_disruptive_in_flight: int = 2
    max_capacity_share: float = 0.25
    rate_limit_per_min: int = 10


@dataclass
class OperatorSchema:
    """The simulated human; mirrors :class:`control.run.OperatorSpec`."""

    response_delay_s: float = 120.0
    approval_prob: float = 0.95


@dataclass
class EngineSchema:
    """Timing and thresholds of the healing loop; mirrors :class:`control.engine.EngineConfig`."""

    correlation_window_s: float = 120.0
    slo_target: float = 0.999
    verify_hold_s: float = 30.0
    rollback_tolerance: float = 0.002


@dataclass
class TrackingSchema:
    """MLflow tracking.

    ``tracking_uri`` null means ``MLFLOW_TRACKING_URI`` when set, else an embedded SQLite
    store at ``./mlruns/mlflow.db`` with artifacts beside it under ``./mlruns``.
    """

    enabled: bool = True
    experiment: str = "novacron"
    tracking_uri: str | None = None
    run_name: str | None = None


@dataclass
class RunSchema:
    """Top level of ``python -m experiments.run``."""

    cluster: ClusterSchema = MISSING
    scenario: ScenarioSchema = MISSING
    agent: AgentSchema = MISSING
    safety: SafetySchema = MISSING
    operator: OperatorSchema = MISSING
    engine: EngineSchema = MISSING
    tracking: TrackingSchema = MISSING
    seed: int = 0


def register_configs() -> None:
    """Store the schemas, and the scenario and agent options, in Hydra's ConfigStore.

    YAML options of a group extend its ``base_<group>`` schema. Scenario and agent options
    come from the library's registries, so a scenario added to ``sim.scenarios`` is an
    option here without a YAML file.
    """
    cs = ConfigStore.instance()
    joblog.register()
    cs.store(name="base_config", node=RunSchema)
    cs.store(group="cluster", name="base_cluster", node=ClusterSchema)
    cs.store(group="safety", name="base_safety", node=SafetySchema)
    cs.store(group="operator", name="base_operator", node=OperatorSchema)
    cs.store(group="engine", name="base_engine", node=EngineSchema)
    cs.store(group="tracking", name="base_tracking", node=TrackingSchema)
    for name in SCENARIOS:
        cs.store(group="scenario", name=name, node=ScenarioSchema(name=name))
    for name in AGENTS:
        cs.store(group="agent", name=name, node=AgentSchema(name=name))


def to_schema(cfg: DictConfig) -> RunSchema:
    """The composed config as typed dataclasses; a ``hydra`` node, if present, is ignored.

    Raises:
        ConfigError: a key the schemas do not know (e.g. added with ``+cluster.foo=1``).
    """
    _reject_unknown_keys(cfg, RunSchema, "")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(RunSchema):
        node = cfg[f.name]
        values[f.name] = OmegaConf.to_object(node) if isinstance(node, DictConfig) else node
    return RunSchema(**values)


def _reject_unknown_keys(cfg: DictConfig, schema: type, prefix: str) -> None:
    types = typing.get_type_hints(schema)
    for key in cfg:
        name = str(key)
        if prefix == "" and name == "hydra":
            continue
        if name not in types:
            raise ConfigError(f"{prefix}{name}: unknown key; known here: {', '.join(types)}")
        node = cfg._get_node(name)
        if isinstance(node, DictConfig) and dataclasses.is_dataclass(types[name]):
            _reject_unknown_keys(node, types[name], f"{prefix}{name}.")


_SPEC_KEYS = {
    "hosts": "cluster.hosts",
    "tick_s": "cluster.tick_s",
    "probe_interval_s": "cluster.probe_interval_s",
    "hours": "scenario.hours",
    "agent": "agent.name",
    "seed": "seed",
}
"""Config key of each :class:`RunSpec` field whose error message begins with the field."""


def _keyed(err: ConfigError) -> ConfigError:
    """``err`` with its message led by the config key it is about."""
    msg = str(err)
    head = msg.split(" ", 1)[0]
    if head in _SPEC_KEYS:
        return ConfigError(_SPEC_KEYS[head] + msg[len(head):])
    if msg.startswith("deploys."):
        return ConfigError("cluster." + msg[len("deploys."):])
    if msg.startswith("unknown scenario"):
        return ConfigError(f"scenario.name: {msg}")
    if re.match(r"^(safety|operator|engine)\.\w+ ", msg):
        return err
    return ConfigError(f"config: {msg}")


def to_run_spec(schema: RunSchema) -> RunSpec:
    """The one conversion from config to the library's :class:`RunSpec`, validating it all.

    Raises:
        ConfigError: a value out of range, with the config key it is about at its start.
    """
    try:
        safety_fields = dataclasses.asdict(schema.safety)
        safety_fields["approval_risks"] = tuple(safety_fields["approval_risks"])
        spec = RunSpec(
            scenario=schema.scenario.name,
            hosts=schema.cluster.hosts,
            hours=schema.scenario.hours,
            seed=schema.seed,
            agent=schema.agent.name,
            tick_s=schema.cluster.tick_s,
            probe_interval_s=schema.cluster.probe_interval_s,
            safety=SafetyConfig(**safety_fields),
            operator=OperatorSpec(**dataclasses.asdict(schema.operator)),
            engine=EngineConfig(**dataclasses.asdict(schema.engine)),
            deploys=DeploySpec(canary_share=schema.cluster.canary_share,
                               canary_bake_s=schema.cluster.canary_bake_s),
        )
        make_config(spec.scenario, spec.hosts, tick_s=spec.tick_s)
    except ConfigError as err:
        raise _keyed(err) from None
    if not schema.tracking.experiment.strip():
        raise ConfigError("tracking.experiment must be a non-empty name")
    return spec


class StartupAbort(BaseException):
    """A config rejected by a Hydra callback; carries the one-line message.

    Hydra turns an ``Exception`` raised by a callback into a warning and goes on, so the
    check that runs before any job raises this instead.
    """


CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, HydraException, OmegaConfBaseException,
)
"""What a bad command line or config raises: reported in one line by :func:`error_line`."""


def error_line(err: BaseException) -> str:
    """One line naming the offending key, for any of :data:`CONFIG_ERRORS`."""
    if isinstance(err, MissingConfigException):
        m = re.search(r"Could not (?:find|load) '([^']+)'", str(err))
        missing = m.group(1) if m else (err.missing_cfg_file or "?")
        group, _, option = missing.rpartition("/")
        if group and err.options is not None:
            options = ", ".join(o for o in err.options if not o.startswith("base_"))
            return f"{group}: unknown option '{option}'; available: {options}"
        return _first_line(str(err))
    if isinstance(err, OverrideParseException):
        return f"cannot parse override '{err.override}': {_first_line(err.message)}"
    cause = err.__cause__ if isinstance(err, HydraException) else err
    if isinstance(cause, OmegaConfBaseException):
        key = cause.full_key or _override_key(str(err))
        return f"{key}: {_first_line(cause.msg or str(cause))}"
    return _first_line(str(err))


@contextlib.contextmanager
def reported_at_exit(*extra: type[BaseException]) -> Iterator[None]:
    """Inside a Hydra task: a config error (or one of ``extra``) leaves as :class:`StartupAbort`.

    Hydra reports an ``Exception`` leaving a task with an "Error executing job" line before
    it re-raises; a ``BaseException`` passes that report, so :func:`run_app` prints the one
    line alone. An MLflow run the job left open is marked FAILED first.
    """
    try:
        yield
    except CONFIG_ERRORS + extra as err:
        tracking.fail_open_runs()
        raise StartupAbort(error_line(err)) from None


def run_app(app: Callable[[], object]) -> None:
    """Run a Hydra entry point; a rejected config is one line on stderr and exit status 2.

    On any other way out by exception, every MLflow run the process left open is marked
    FAILED; after a SIGTERM the exit status is 143 (128 + 15) whichever exception the signal
    turned into on its way out (one raised inside a database call can surface as another).
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except StartupAbort as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except CONFIG_ERRORS as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except BaseException:
        tracking.fail_open_runs()
        signum = tracking.terminated_by()
        if signum is not None:
            sys.exit(128 + signum)
        raise


def _override_key(text: str) -> str:
    m = re.search(r"override '([^']+)'", text)
    return m.group(1) if m else "config"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else text
