"""The control loop over any plant, with any policy plugged in.

A :class:`Controller` is anything with ``step()`` and an emergency stop: the rule-based
:class:`control.engine.HealingEngine` is one as it is; :class:`PolicyController` turns any
:class:`ObservationPolicy` (an Observation in, an Action or None out, e.g. an exported
policy wrapped with its observation encoder and action decoder) into one, with every action
through the same :class:`control.safety.SafetyGate` and logged as a
:class:`~sim.events.DecisionRecord`. :class:`EncodedPolicy` turns an exported policy
(a ``predict`` on encoded observations plus the environment's encoder and decoder) into
an :class:`ObservationPolicy`. :func:`control_loop` drives a controller against a plant, the
twin or the live fleet alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from control.detection import (
    DetectionStage,
    EventDetector,
    ProbeDetector,
    ThresholdDetector,
    ThresholdRule,
)
from control.engine import EngineConfig, HealingEngine
from control.safety import SafetyConfig, SafetyGate, log_command, restore_gate
from sim.actions import Action
from sim.events import DecisionRecord
from sim.plant import Plant
from sim.telemetry import Observation


@runtime_checkable
class ObservationPolicy(Protocol):
    """A policy: the action to take for an observation, or None to do nothing."""

    def __call__(self, obs: Observation) -> Action | None:
        """Choose an action."""
        ...


class Predictor(Protocol):
    """An exported policy's runtime: ``predict`` on an encoded observation.

    Returns an action index, or Stable-Baselines3's ``(action, state)`` pair.
    """

    def predict(self, observation: np.ndarray) -> Any:
        """The action index for an encoded observation."""
        ...


class EncodedPolicy:
    """An exported policy as an :class:`ObservationPolicy`: encode, predict, decode.

    Args:
        predictor: the policy runtime (``predict`` on the encoded observation).
        encode: Observation -> the policy's input vector (the environment's layout).
        decode: action index -> Action, or None for "do nothing".
    """

    def __init__(self, predictor: Predictor, encode: Callable[[Observation], np.ndarray],
                 decode: Callable[[int], Action | None]) -> None:
        self.predictor = predictor
        self.encode = encode
        self.decode = decode

    def __call__(self, obs: Observation) -> Action | None:
        """Encode, predict, decode."""
        raw = self.predictor.predict(self.encode(obs))
        if isinstance(raw, tuple):
            raw = raw[0]
        index = np.asarray(raw)
        if index.size != 1 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"the policy must predict one integer action, got {raw!r}")
        return self.decode(int(index.item()))


@runtime_checkable
class Controller(Protocol):
    """What the control loop and the HTTP API drive."""

    def step(self) -> None:
        """One control step at the plant's current time."""
        ...

    def emergency_stop(self, reason: str = "operator request") -> None:
        """Halt every action from now on."""
        ...

    def resume(self) -> None:
        """Lift an emergency stop."""
        ...


def live_safety(*, actuate: bool) -> SafetyConfig:
    """Safety limits for a live fleet of a few replicas healed within seconds.

    Dry run unless ``actuate``; cooldowns of 1 s (a replica may fail again seconds after it
    was healed); one disruptive action per quarter of a service's replicas.
    """
    return SafetyConfig(dry_run=not actuate, cooldown_s=1.0, max_disruptive_in_flight=2,
                        max_capacity_share=0.25, rate_limit_per_min=120,
                        rollback_enabled=False)


def live_detection() -> DetectionStage:
    """Detectors for the live fleet: probes, state changes and instance / service thresholds.

    Host rules are left out: power, temperature, fans and disks are not measured live, and
    the host's CPU is shared with other work. Rules re-arm after 1 s clear (not 60 s as in
    the twin), since a replica can fail again seconds after it was repaired; memory alerts at
    25% of the limit, so a fast leak is caught well before the limit kills the replica.
    """
    rules = (
        ThresholdRule("instance", "mem_util", ">", 0.25, "warning"),
        ThresholdRule("instance", "error_rate", ">", 0.2, "critical"),
        ThresholdRule("instance", "p99_latency_s", ">", 1.0, "warning"),
        ThresholdRule("service", "error_rate", ">", 0.5, "critical"),
    )
    return DetectionStage([ProbeDetector(grace_s=0.5), EventDetector(),
                           ThresholdDetector(rules, rearm_s=1.0)])


def live_engine(plant: Plant, *, actuate: bool) -> HealingEngine:
    """The rule-based engine configured for a live fleet (second-scale verification)."""
    return HealingEngine(plant, live_safety(actuate=actuate), None,
                         EngineConfig(correlation_window_s=0.3, verify_hold_s=1.0),
                         live_detection())


class PolicyController:
    """Any :class:`ObservationPolicy` behind the safety gate.

    Args:
        plant: the plant.
        policy: chooses actions.
        safety: the gate's limits.
    """

    def __init__(self, plant: Plant, policy: ObservationPolicy, safety: SafetyConfig) -> None:
        self.plant = plant
        self.policy = policy
        self.gate = SafetyGate(safety)
        restore_gate(self.gate, plant)  # a restart keeps in-flight actions, cooldowns, a stop
        self._seen = plant.log.next_seq

    def emergency_stop(self, reason: str = "operator request") -> None:
        """Halt every action from now on (logged, so it survives a restart)."""
        self.gate.emergency_stop(self.plant.now_s, reason)
        log_command(self.plant, "emergency_stop", reason)

    def resume(self) -> None:
        """Lift an emergency stop (logged)."""
        if self.gate.stopped:
            log_command(self.plant, "resume")
        self.gate.resume()

    def step(self) -> None:
        """Ask the policy, pass its action through the gate, submit it when allowed."""
        plant = self.plant
        self.gate.sync(plant.events(self._seen))
        self._seen = plant.log.next_seq
        obs = plant.observe()
        action = self.policy(obs)
        if action is None or action.kind == "noop":
            return
        now = plant.now_s
        verdict = self.gate.check(action, obs, now)
        log = plant.log
        if verdict.kind != "allowed":
            log.add(DecisionRecord(log.next_seq, now, -1, action.kind, action.target,
                                   verdict.kind, verdict.reason, False))
            return
        result = plant.apply(action)
        if result.accepted:
            self.gate.started(action, result.action_id, obs, now)
        log.add(DecisionRecord(log.next_seq, now, -1, action.kind, action.target,
                               "allowed" if result.accepted else "rejected",
                               result.reason or "policy", result.accepted, result.action_id))
        self._seen = log.next_seq


def control_loop(plant: Plant, controller: Controller, duration_s: float, step_s: float,
                 on_step: Callable[[], bool] | None = None) -> int:
    """Step ``controller`` every ``step_s`` of plant time for ``duration_s``; returns steps.

    ``on_step`` runs after each step; returning False ends the loop early.
    """
    if not (math.isfinite(step_s) and step_s > 0 and duration_s >= 0):
        raise ValueError(f"step_s must be > 0 and duration_s >= 0, got {step_s}, {duration_s}")
    end = plant.now_s + duration_s
    steps = 0
    while plant.now_s < end:
        t0 = time.monotonic()
        plant.advance(step_s)
        controller.step()
        steps += 1
        if on_step is not None and not on_step():
            break
        del t0
    return steps
