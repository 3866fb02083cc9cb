"""Structured configs of ``experiments.evolve`` and ``experiments.optimize``.

One dataclass schema per group, stored in Hydra's ConfigStore: ``ga`` (the genetic search;
options ``default``, the full-size run, and ``quick``), ``eval`` (how a twin run scores an
architecture; ``default`` and ``quick``), ``bo`` (the Bayesian optimiser; ``default``,
``quick``), ``tuner`` (the online tuner's run; ``default``) and the shared ``tracking``
group of :mod:`experiments.config`. :func:`to_ga_params`, :func:`to_eval_spec` and
:func:`to_bo_params` convert them once into the library's validated types.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from agents.evolution import GAParams
from experiments import joblog
from experiments.config import TrackingSchema, _reject_unknown_keys
from sim.architecture import EvalSpec
from sim.config import _positive
from sim.errors import ConfigError

if TYPE_CHECKING:
    from agents.bayesopt import BOParams


@dataclass
class GASchema:
    """Genetic search; mirrors :class:`agents.evolution.GAParams`."""

    pop_size: int = 100
    max_generations: int = 500
    mutation_rate: float = 0.1
    crossover_rate: float = 0.7
    elitism: float = 0.1
    tournament_size: int = 5
    ftol: float = 1e-4
    period: int = 20
    resample: bool = True
    final_draws: int = 5
    seeded_share: float = 0.25
    draw_effects: bool | None = None
    capacity_shift: float | None = None


@dataclass
class EvalSchema:
    """Twin evaluation of an architecture; mirrors :class:`sim.architecture.EvalSpec`."""

    scenario: str = "mixed"
    hosts: int = 100
    hours: float = 1.0
    tick_s: float = 10.0
    step_s: float = 60.0
    fault_rate_scale: float = 8.0
    usd_per_vcpu_h: float = 0.04
    usd_per_gib_h: float = 0.005
    slo_target: float = 0.99
    replicates: int = 3


@dataclass
class BOSchema:
    """Bayesian optimiser; iterations per cycle, batch size, objectives and settings."""

    iterations: int = 100
    batch_size: int = 1
    objectives: int = 1
    n_initial: int = 10
    num_restarts: int = 8
    raw_samples: int = 256
    exploit_every: int = 3


@dataclass
class TunerSchema:
    """The online tuner's run on the twin."""

    scenario: str = "performance_degradation"
    hosts: int = 100
    hours: float = 6.0
    cooldown_s: float = 300.0
    low_util: float = 0.3
    high_util: float = 0.75
    step: int = 1
    max_factor: float = 3.0
    interval_s: float = 60.0


@dataclass
class EvolveSchema:
    """Top level of ``python -m experiments.evolve``."""

    ga: GASchema = MISSING
    eval: EvalSchema = MISSING
    tracking: TrackingSchema = MISSING
    mode: str = "ga"
    seed: int = 0
    eval_seed: int = 0
    n_jobs: int = 2
    checkpoint: str | None = None
    resume: bool = True
    compare_random: bool = False
    validate_seeds: int = 5


@dataclass
class OptimizeSchema:
    """Top level of ``python -m experiments.optimize``."""

    bo: BOSchema = MISSING
    eval: EvalSchema = MISSING
    tuner: TunerSchema = MISSING
    tracking: TrackingSchema = MISSING
    mode: str = "bo"
    seed: int = 0
    eval_seed: int = 0
    n_jobs: int = 2
    validate_seeds: int = 5


def register_search_configs() -> None:
    """Store the schemas and their named options in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    joblog.register()
    cs.store(name="base_evolve", node=EvolveSchema)
    cs.store(name="base_optimize", node=OptimizeSchema)
    cs.store(group="ga", name="default", node=GASchema())
    cs.store(group="ga", name="quick", node=GASchema(pop_size=16, max_generations=6, period=5))
    cs.store(group="eval", name="default", node=EvalSchema())
    cs.store(group="eval", name="quick", node=EvalSchema(hosts=40, hours=0.5))
    cs.store(group="bo", name="default", node=BOSchema())
    cs.store(group="bo", name="quick", node=BOSchema(iterations=12, n_initial=5,
                                                     num_restarts=4, raw_samples=128))
    cs.store(group="tuner", name="default", node=TunerSchema())
    cs.store(group="tuner", name="quick", node=TunerSchema(hosts=40, hours=2.0))
    cs.store(group="tracking", name="base_tracking", node=TrackingSchema)


def to_object(cfg: DictConfig, schema: type) -> Any:
    """The composed config as ``schema`` (a ``hydra`` node is ignored).

    Raises:
        ConfigError: a key the schema does not know.
    """
    _reject_unknown_keys(cfg, schema, "")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        node = cfg[f.name]
        values[f.name] = OmegaConf.to_object(node) if isinstance(node, DictConfig) else node
    return schema(**values)


def _keyed(prefix: str, err: Exception) -> ConfigError:
    msg = str(err)
    for head in ("ga.", "eval.", "bo."):
        if msg.startswith(head):
            return ConfigError(msg)
    return ConfigError(f"{prefix}: {msg}")


def to_ga_params(s: GASchema) -> GAParams:
    """Validated GA settings."""
    try:
        return GAParams(**dataclasses.asdict(s))
    except ValueError as err:
        raise _keyed("ga", err) from None


def to_eval_spec(s: EvalSchema) -> EvalSpec:
    """Validated evaluation settings."""
    try:
        return EvalSpec(**dataclasses.asdict(s))
    except ValueError as err:
        raise _keyed("eval", err) from None


def check_tuner(s: TunerSchema) -> None:
    """Check the tuner's run settings at start, before any twin runs.

    Raises:
        ConfigError: a value out of range, led by its key; an empty or inverted utilisation
            band names both ``tuner.low_util`` and ``tuner.high_util``.
    """
    for name in ("low_util", "high_util", "cooldown_s"):
        value = getattr(s, name)
        if isinstance(value, bool) or not (isinstance(value, int | float)
                                           and math.isfinite(value) and value >= 0):
            raise ConfigError(f"tuner.{name} must be a finite number >= 0, got {value!r}")
    if not s.low_util < s.high_util:
        raise ConfigError(
            f"tuner.low_util ({s.low_util}) must be below tuner.high_util ({s.high_util}): "
            "the utilisation band is inverted or empty"
        )
    for name in ("hosts", "step"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"tuner.{name} must be a positive integer, got {value!r}")
    _positive("tuner", hours=s.hours, interval_s=s.interval_s)


def to_bo_params(s: BOSchema) -> BOParams:
    """Validated optimiser settings (iterations, batch and objectives are checked here)."""
    from agents.bayesopt import BOParams


    for name in ("iterations", "batch_size"):
        value = getattr(s, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"bo.{name} must be a positive integer, got {value!r}")
    if s.objectives not in (1, 3):
        raise ConfigError(f"bo.objectives must be 1 (weighted) or 3 (Pareto), got {s.objectives}")
    try:
        return BOParams(n_initial=s.n_initial, num_restarts=s.num_restarts,
                        raw_samples=s.raw_samples, max_iter=s.iterations,
                        exploit_every=s.exploit_every)
    except ValueError as err:
        raise _keyed("bo", err) from None


__all__ = [
    "BOSchema", "EvalSchema", "EvolveSchema", "GASchema", "OptimizeSchema", "TunerSchema",
    "check_tuner", "register_search_configs", "to_bo_params", "to_eval_spec", "to_ga_params",
    "to_object",
]
