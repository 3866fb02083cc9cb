"""Run one scenario on the twin with a healing agent and compute its KPIs.

This is the plain-function core that experiment entry points call; it never imports Hydra
or MLflow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control.engine import EngineConfig, HealingEngine
from control.incidents import postmortem
from control.kpi import compute_kpis
from control.safety import SafetyConfig, SimulatedOperator
from sim.config import DeploySpec, ProbeSpec
from sim.errors import ConfigError
from sim.events import EventLog, IncidentRecord
from sim.scenarios import make_config
from sim.twin import Twin

AGENTS = ("rules", "noop")


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """The simulated human: how long an approval takes and how often it is granted."""

    response_delay_s: float = 120.0
    approval_prob: float = 0.95

    def __post_init__(self) -> None:
        if not (math.isfinite(self.response_delay_s) and self.response_delay_s >= 0):
            raise ConfigError(
                f"operator.response_delay_s must be >= 0, got {self.response_delay_s!r}"
            )
        if not 0.0 <= self.approval_prob <= 1.0:
            raise ConfigError(
                f"operator.approval_prob must lie in [0, 1], got {self.approval_prob!r}"
            )


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run: cluster, scenario, agent, safety controls, timing."""

    scenario: str = "mixed"
    hosts: int = 100
    hours: float = 24.0
    seed: int = 0
    agent: str = "rules"
    tick_s: float = 1.0
    probe_interval_s: float = 1.0
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    operator: OperatorSpec = field(default_factory=OperatorSpec)
    engine: EngineConfig = field(default_factory=EngineConfig)
    deploys: DeploySpec = field(default_factory=DeploySpec)

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ConfigError(f"agent must be one of {AGENTS}, got {self.agent!r}")
        if not (math.isfinite(self.hours) and self.hours > 0):
            raise ConfigError(f"hours must be a positive number, got {self.hours!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.tick_s) and self.tick_s > 0):
            raise ConfigError(f"tick_s must be positive, got {self.tick_s!r}")
        if not (math.isfinite(self.probe_interval_s) and self.probe_interval_s >= self.tick_s):
            raise ConfigError(
                f"probe_interval_s must be at least tick_s ({self.tick_s}), "
                f"got {self.probe_interval_s!r}"
            )


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run produced: KPIs, the twin's summary, the event log and post-mortems."""

    spec: RunSpec
    kpis: dict[str, float]
    summary: dict[str, Any]
    log: EventLog
    postmortems: dict[int, str]
    twin: Twin


def build_twin(spec: RunSpec) -> Twin:
    """The twin of a run: scenario on ``hosts`` hosts with second-level probes."""
    probes = ProbeSpec(interval_s=spec.probe_interval_s, timeout_s=min(1.0, spec.probe_interval_s),
                       failure_threshold=1, success_threshold=1)
    config = make_config(
        spec.scenario, spec.hosts, tick_s=spec.tick_s,
        telemetry_interval_s=max(spec.tick_s, 10.0 if spec.tick_s > 1.0 else spec.tick_s),
        probes=probes, deploys=spec.deploys,
    )
    return Twin(config, seed=spec.seed)


def run(spec: RunSpec, progress: Callable[[float], None] | None = None) -> RunResult:
    """Run ``spec`` to the end; ``progress`` receives the simulated seconds done so far."""
    twin = build_twin(spec)
    engine = None
    if spec.agent == "rules":
        operator = SimulatedOperator(
            spec.operator.response_delay_s, spec.operator.approval_prob,
            twin.rng_for("fork", 7_000_001),
        )
        engine = HealingEngine(twin, spec.safety, operator, spec.engine)
    total_s = spec.hours * 3600.0
    chunk_s = 60.0
    done = 0.0
    while done < total_s - 1e-9:
        span = min(chunk_s, total_s - done)
        end = done + span
        while twin.now_s < end - 1e-9:
            twin.advance(min(spec.tick_s, end - twin.now_s))
            if engine is not None:
                engine.step()
        done = end
        if progress is not None:
            progress(done)
    events = twin.log.since(0)
    kpis = compute_kpis(events, slo_target=spec.engine.slo_target)
    incident_ids = sorted({r.incident_id for r in events if isinstance(r, IncidentRecord)})
    return RunResult(
        spec=spec,
        kpis=kpis,
        summary=twin.summary(),
        log=twin.log,
        postmortems={i: postmortem(events, i) for i in incident_ids},
        twin=twin,
    )


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    """A run spec as plain nested dicts (for logging)."""
    return dataclasses.asdict(spec)
