"""Structured configs of ``experiments.train``, ``experiments.evaluate`` and ``experiments.export``.

One dataclass schema per group, stored in Hydra's ConfigStore by :func:`register_rl_configs`
(the entry points call it before Hydra composes): ``scenario`` (one option per registered
scenario; ``hours`` is the episode length), ``agent`` (``dqn``), ``env`` (cluster size and
control interval) and ``tracking`` (``mlflow``, ``off``). No YAML is needed; the command line
selects options and overrides values.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from agents.demonstrations import DemoParams
from agents.dqn_params import DqnParams
from envs import env_id
from experiments import joblog
from experiments.config import ScenarioSchema, TrackingSchema
from sim.config import TwinConfig
from sim.errors import ConfigError
from sim.scenarios import SCENARIOS

if TYPE_CHECKING:  # torch and stable-baselines3: seconds to import, for loading a model only
    from agents.dqn import DqnPolicy


@dataclass
class EnvSchema:
    """Cluster size and control interval of the environment."""

    hosts: int = 100
    control_interval_s: float = 10.0
    fault_rate_scale: float = 1.0
    """Multiplies the scenario's fault arrival rates (a curriculum knob: a small cluster
    sees the scenario's faults often enough to learn from them)."""


_DQN = DqnParams()


@dataclass
class DqnSchema:
    """The DQN agent: :class:`agents.dqn.DqnParams` (whose defaults it takes), plus its name."""

    name: str = "dqn"
    learning_rate: float = _DQN.learning_rate
    buffer_size: int = _DQN.buffer_size
    learning_starts: int = _DQN.learning_starts
    batch_size: int = _DQN.batch_size
    gamma: float = _DQN.gamma
    train_freq: int = _DQN.train_freq
    gradient_steps: int = _DQN.gradient_steps
    target_update_interval: int = _DQN.target_update_interval
    exploration_fraction: float = _DQN.exploration_fraction
    exploration_initial_eps: float = _DQN.exploration_initial_eps
    exploration_final_eps: float = _DQN.exploration_final_eps
    net_arch: list[int] = field(default_factory=lambda: list(_DQN.net_arch))
    n_steps: int = _DQN.n_steps
    action_mask: bool = _DQN.action_mask
    double_q: bool = _DQN.double_q


_DEMO = DemoParams()

DEMONSTRATORS = ("none", "symptoms")
"""Demonstrators ``experiments.train`` can record.

``symptoms`` is :class:`agents.base.SymptomPolicy`; ``none`` records nothing."""


@dataclass
class DemoSchema:
    """Demonstrations for the DQN (:mod:`agents.demonstrations`); ``policy=none``: none.

    ``episodes`` episodes of the training env (same scenario, size, length and fault rates,
    seeds apart from training's and evaluation's) are recorded with the demonstrator, the DQN
    takes ``pretrain_steps`` gradient steps on them alone, then adds ``batch_size`` of them
    to every update.
    """

    policy: str = "none"
    episodes: int = 20
    margin: float = _DEMO.margin
    weight: float = _DEMO.weight
    batch_size: int = _DEMO.batch_size
    pretrain_steps: int = _DEMO.pretrain_steps


@dataclass
class TrainSchema:
    """Top level of ``python -m experiments.train``.

    ``run_dir`` (default ``runs/<scenario>-<agent>-seed<seed>``) holds the checkpoint, the
    final model and the learning curve; a run started again with the same ``run_dir``
    resumes from its checkpoint.
    """

    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"scenario": "service_crash"},
            {"agent": "dqn"},
            {"tracking": "mlflow"},
            {"override hydra/job_logging": joblog.OPTION},
        ]
    )
    scenario: ScenarioSchema = MISSING
    agent: DqnSchema = MISSING
    tracking: TrackingSchema = MISSING
    env: EnvSchema = field(default_factory=EnvSchema)
    demo: DemoSchema = field(default_factory=DemoSchema)
    seed: int = 0
    total_timesteps: int = 200_000
    checkpoint_freq: int = 10_000
    eval_freq: int = 10_000
    eval_episodes: int = 2
    eval_hours: float = 2.0
    torch_threads: int = 1
    run_dir: str = ""


def register_rl_configs() -> None:
    """Store the schemas and options in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    joblog.register()
    cs.store(name="train_config", node=TrainSchema)
    for name in SCENARIOS:
        cs.store(group="scenario", name=name, node=ScenarioSchema(name=name))
    cs.store(group="agent", name="dqn", node=DqnSchema)
    cs.store(group="tracking", name="mlflow", node=TrackingSchema)
    cs.store(group="tracking", name="off", node=TrackingSchema(enabled=False))


def to_object(cfg: DictConfig, schema: type) -> Any:
    """The composed config as ``schema``.

    Unknown keys were refused by Hydra's structured config already; the ``hydra`` node and
    the defaults list are dropped.
    """
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    data.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))


def dqn_params(agent: DqnSchema) -> DqnParams:
    """The library's DQN parameters from the agent config (validated)."""
    values = dataclasses.asdict(agent)
    values.pop("name")
    values["net_arch"] = tuple(int(w) for w in values["net_arch"])
    try:
        return DqnParams(**values)
    except ConfigError as err:
        # every key the library's message names, not only the first: the keys are agent.*
        raise ConfigError(re.sub(r"\bdqn\.", "agent.", str(err))) from None


def episode_steps(hours: float, control_interval_s: float, key: str = "scenario.hours") -> int:
    """Steps of an episode of ``hours`` simulated hours.

    Raises:
        ConfigError: not a positive number, or shorter than one control interval.
    """
    if not (isinstance(hours, int | float) and math.isfinite(hours) and hours > 0):
        raise ConfigError(f"{key} must be a positive number, got {hours!r}")
    steps = round(hours * 3600.0 / control_interval_s)
    if steps < 1:
        raise ConfigError(f"{key}: {hours} h is shorter than one control interval")
    return steps


def check_train(schema: TrainSchema) -> None:
    """Range checks of a training config, each naming its key.

    Raises:
        ConfigError: a bad value.
    """
    if schema.scenario.name not in SCENARIOS:
        raise ConfigError(
            f"scenario.name: unknown scenario {schema.scenario.name!r}; known: {sorted(SCENARIOS)}"
        )
    if schema.env.hosts < 1:
        raise ConfigError(f"env.hosts must be >= 1, got {schema.env.hosts}")
    if not schema.env.control_interval_s > 0:
        raise ConfigError(
            f"env.control_interval_s must be > 0, got {schema.env.control_interval_s}"
        )
    if not (math.isfinite(schema.env.fault_rate_scale) and schema.env.fault_rate_scale > 0):
        raise ConfigError(f"env.fault_rate_scale must be > 0, got {schema.env.fault_rate_scale}")
    for key in (
        "total_timesteps",
        "checkpoint_freq",
        "eval_freq",
        "eval_episodes",
        "torch_threads",
    ):
        value = getattr(schema, key)
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if schema.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {schema.seed}")
    episode_steps(schema.scenario.hours, schema.env.control_interval_s)
    episode_steps(schema.eval_hours, schema.env.control_interval_s, "eval_hours")
    dqn_params(schema.agent)
    demo_params(schema.demo)


def demo_params(demo: DemoSchema) -> DemoParams | None:
    """The demonstration settings (None for ``demo.policy=none``), validated.

    Raises:
        ConfigError: an unknown demonstrator or a bad value, naming its key.
    """
    if demo.policy not in DEMONSTRATORS:
        raise ConfigError(f"demo.policy: unknown demonstrator {demo.policy!r}; "
                          f"known: {list(DEMONSTRATORS)}")
    if demo.episodes < 1:
        raise ConfigError(f"demo.episodes must be >= 1, got {demo.episodes}")
    try:
        params = DemoParams(margin=demo.margin, weight=demo.weight, batch_size=demo.batch_size,
                            pretrain_steps=demo.pretrain_steps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return None if demo.policy == "none" else params


def run_dir_of(schema: TrainSchema) -> Path:
    """Folder of a training run's checkpoint and model."""
    if schema.run_dir:
        return Path(schema.run_dir)
    return Path("runs") / f"{schema.scenario.name}-{schema.agent.name}-seed{schema.seed}"


_NOT_A_MODEL = (
    ValueError, AssertionError, KeyError, EOFError, RuntimeError, zipfile.BadZipFile,
    pickle.UnpicklingError,
)
"""What stable-baselines3 raises on a file that is not a saved model: not a zip (ValueError),
a zip without its ``data`` (AssertionError), missing or mismatched weights (KeyError,
RuntimeError), a truncated or corrupt archive."""


def load_dqn_model(path: Path, key: str) -> DqnPolicy:
    """The DQN saved at ``path`` (a ``model.zip`` of ``python -m experiments.train``).

    Raises:
        ConfigError: the file cannot be read or is not a saved DQN model; led by ``key``.
    """
    from agents.dqn import DqnPolicy

    try:
        return DqnPolicy.load(str(path))
    except OSError as err:
        raise ConfigError(f"{key}: cannot read {path}: {err.strerror or err}") from None
    except _NOT_A_MODEL as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise ConfigError(
            f"{key}: {path} is not a saved DQN model (a model.zip written by "
            f"python -m experiments.train): {lines[0]}"
        ) from None


def make_env(
    scenario: str,
    hosts: int,
    control_interval_s: float,
    hours: float,
    fault_rate_scale: float = 1.0,
) -> Any:
    """``gymnasium.make`` of the scenario's env id with these settings.

    ``fault_rate_scale`` multiplies the scenario's fault arrival rates.

    Raises:
        ConfigError: ``fault_rate_scale`` is not a finite number > 0.
    """
    import gymnasium as gym

    from envs.selfheal import env_twin_config

    if not (
        isinstance(fault_rate_scale, int | float)
        and math.isfinite(fault_rate_scale)
        and fault_rate_scale > 0
    ):
        raise ConfigError(f"env.fault_rate_scale must be > 0, got {fault_rate_scale!r}")
    kwargs: dict[str, Any] = {}
    if fault_rate_scale != 1.0:

        def scale(config: TwinConfig) -> TwinConfig:
            rates = config.faults.rates_per_day_per_100_hosts
            faults = dataclasses.replace(
                config.faults,
                rates_per_day_per_100_hosts=tuple(
                    (kind, rate * fault_rate_scale) for kind, rate in rates
                ),
            )
            return dataclasses.replace(config, faults=faults)

        kwargs["config"] = env_twin_config(scenario, hosts, control_interval_s, customize=scale)
    return gym.make(
        env_id(scenario),
        hosts=hosts,
        control_interval_s=control_interval_s,
        max_episode_steps=episode_steps(hours, control_interval_s),
        **kwargs,
    )


@dataclass
class EvaluateSchema:
    """Top level of ``python -m experiments.evaluate``.

    ``models`` maps a scenario to its DQN (a ``.zip`` or an export folder); a scenario
    without an entry uses ``<model_dir>/<scenario>-dqn-seed0/best_model.zip`` (the best
    periodic evaluation of training), else its ``model.zip``, else the same two of
    ``<model_dir>/mixed-dqn-seed0``. Seeds are ``seed_base`` to
    ``seed_base + seeds - 1``, the same for every agent, so agents face the same faults.
    """

    defaults: list[Any] = field(default_factory=lambda: [
        "_self_", {"tracking": "mlflow"}, {"override hydra/job_logging": joblog.OPTION}])
    tracking: TrackingSchema = MISSING
    agents: list[str] = field(
        default_factory=lambda: ["noop", "random", "rules", "symptoms", "dqn"]
    )
    scenarios: list[str] = field(
        default_factory=lambda: ["service_crash", "performance_degradation"]
    )
    seeds: int = 20
    seed_base: int = 0
    hours: float = 12.0
    env: EnvSchema = field(default_factory=EnvSchema)
    models: dict[str, str] = field(default_factory=dict)
    model_dir: str = "runs"
    baseline: str = "rules"
    metric: str = "availability"
    out_dir: str = ""


@dataclass
class ExportSchema:
    """Top level of ``python -m experiments.export``.

    ``model`` is a trained ``model.zip``; ``out`` the export folder (default: an ``export``
    folder beside the model). The parity check records ``parity_observations`` observations
    from ``scenario`` episodes run by the in-memory policy (epsilon-greedy with
    ``parity_epsilon``, so off-policy states are covered too) and compares the actions.
    """

    defaults: list[Any] = field(default_factory=lambda: [
        "_self_", {"tracking": "mlflow"}, {"override hydra/job_logging": joblog.OPTION}])
    tracking: TrackingSchema = MISSING
    model: str = "runs/service_crash-dqn-seed0/model.zip"
    out: str = ""
    scenario: str = "service_crash"
    env: EnvSchema = field(default_factory=EnvSchema)
    parity_observations: int = 10_000
    parity_epsilon: float = 0.1
    parity_hours: float = 6.0
    seed: int = 0


def register_eval_export_configs() -> None:
    """Store the evaluate and export schemas (and the tracking options) in the ConfigStore."""
    cs = ConfigStore.instance()
    joblog.register()
    cs.store(name="evaluate_config", node=EvaluateSchema)
    cs.store(name="export_config", node=ExportSchema)
    cs.store(group="tracking", name="mlflow", node=TrackingSchema)
    cs.store(group="tracking", name="off", node=TrackingSchema(enabled=False))
