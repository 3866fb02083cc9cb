"""Failure prediction in the control loop: predictions, pre-emptive actions, outcomes, KPIs.

:class:`PredictionStage` plugs into the healing engine's step (``HealingEngine(...,
prediction=stage)``). Every ``step_s`` it turns the observations of the past step into one
row of ten host features per host (:func:`host_feature_rows`, the same features the
failure-prediction data sets use), keeps the last ``seq_len`` rows, and asks a
:class:`FailureModel` for each up host's probability of failing within the horizon. A host
whose probability reaches ``act_probability`` (0.8) gets:

1. a ``predicted`` :class:`sim.events.PredictionRecord` naming the likely fault class, found
   from which warning sign trends fastest over the window (:func:`diagnose`);
2. a pre-emptive remedy, each action through the safety gate and written as
   :class:`sim.events.DecisionRecord` s (``incident_id`` -1: no incident is open, nothing has
   failed yet). A predicted memory leak on an instance gets a graceful restart
   (:data:`GRACEFUL_RESTART`: out of load-balancer rotation, restart, back in, one action
   after the other succeeds), because the hours of warning leave time to restart without
   dropping the requests a plain restart drops; a predicted fan failure gets the fan
   swapped (:data:`PRE_EMPTIVE`: with hours to go, draining the host first, as the runbook
   does once the fan is alerted, would only move its load away for the length of the swap);
   every other prediction gets the first step of its fault class's runbook;
3. later, an ``outcome`` record: ``failed`` (with the lead time) when a fault takes the host
   or one of its instances down or fails its disk within the horizon, else ``no_failure``
   (the remedy's own restart is not a failure).

:func:`prediction_kpis` scores the predictions against the ground-truth fault records of the
log: precision, recall over faults that give warning signs, and lead time.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from control.runbooks import RUNBOOKS
from control.safety import SafetyGate
from sim.actions import Action
from sim.events import (
    ActionRecord,
    DecisionRecord,
    Event,
    EventLog,
    FaultCleared,
    FaultRecord,
    PredictionRecord,
    StateChange,
)
from sim.plant import Plant
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

PREDICTION_FEATURES: tuple[str, ...] = (
    "cpu_util",
    "max_inst_mem_util",
    "power_w",
    "temp_c",
    "fan_rpm",
    "disk_util",
    "disk_latency_s",
    "disk_wear",
    "net_util",
    "throttle",
)
"""Host features a failure model reads, in order (see :func:`host_feature_rows`)."""

_HOST_COLS = [HOST_FEATURES.index(n) for n in PREDICTION_FEATURES if n != "max_inst_mem_util"]
_I_MEM = INSTANCE_FEATURES.index("mem_util")
_I_UP = INSTANCE_FEATURES.index("up")
_H_UP = HOST_FEATURES.index("up")
_MEM, _FAN, _WEAR = (
    PREDICTION_FEATURES.index(n) for n in ("max_inst_mem_util", "fan_rpm", "disk_wear")
)
WARNING_DETAIL_KEYS = {
    "memory_leak": "hours_to_oom",
    "disk_degradation": "hours_to_wear_out",
    "fan_failure": "hours_to_stall",
}
"""Ground-truth detail of each warning fault giving the time from onset to failure, hours."""

GRACEFUL_RESTART: tuple[str, ...] = ("reroute_traffic", "restart_instance", "restore_traffic")
"""Pre-emptive remedy of a predicted leak on an instance, one action after the other."""
_RESTORE = GRACEFUL_RESTART[-1]
PRE_EMPTIVE: dict[str, str] = {"fan_failure": "replace_fan"}
"""Pre-emptive remedies that are not the first step of the fault class's runbook."""


def host_feature_rows(
    host: npt.NDArray[np.floating],
    inst: npt.NDArray[np.floating],
    inst_used: npt.NDArray[np.bool_],
    inst_host: npt.NDArray[np.integer],
) -> npt.NDArray[np.float32]:
    """Mean over samples of the ten prediction features per host.

    Args:
        host: host telemetry, ``(samples, hosts, host features)``.
        inst: instance telemetry, ``(samples, slots, instance features)``.
        inst_used: which instance slots hold an instance.
        inst_host: host of each slot.

    Returns:
        ``(hosts, 10)`` rows in the order of :data:`PREDICTION_FEATURES`; the memory feature
        is the highest mean memory use among the host's instances that are up.
    """
    mean_host = host.mean(axis=0)
    mem = inst[:, :, _I_MEM].mean(axis=0)
    live = inst_used & (inst[-1, :, _I_UP] > 0.5)
    max_mem = np.zeros(host.shape[1], dtype=np.float32)
    np.maximum.at(max_mem, inst_host[live], mem[live].astype(np.float32))
    cols = mean_host[:, _HOST_COLS]
    return np.concatenate([cols[:, :1], max_mem[:, None], cols[:, 1:]], axis=1).astype(np.float32)


class FailureModel(Protocol):
    """A trained model of P(host fails within the horizon | last ``seq_len`` feature rows)."""

    @property
    def seq_len(self) -> int:
        """Rows per window."""
        ...

    def predict_proba(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Probabilities for ``(hosts, seq_len, 10)`` windows."""
        ...


def diagnose(window: npt.NDArray[np.float32]) -> str:
    """Fault class whose warning sign moved furthest towards failure over the window.

    Memory use and disk wear rise towards 1, fan speed falls towards 0; each is measured as
    the share of its remaining head-room used up between the first and last row.
    """
    first, last = window[0], window[-1]
    mem = (last[_MEM] - first[_MEM]) / max(1.0 - first[_MEM], 1e-6)
    wear = (last[_WEAR] - first[_WEAR]) / max(1.0 - first[_WEAR], 1e-6)
    fan = (first[_FAN] - last[_FAN]) / max(first[_FAN], 1e-6)
    scores = {"memory_leak": mem, "disk_degradation": wear, "fan_failure": fan}
    return max(scores, key=lambda k: float(scores[k]))


@dataclass(frozen=True, slots=True)
class PredictionConfig:
    """When the stage samples, how far it looks ahead, and when it acts."""

    act_probability: float = 0.8
    step_s: float = 3600.0
    horizon_s: float = 72 * 3600.0

    def __post_init__(self) -> None:
        if not 0.0 < self.act_probability <= 1.0:
            raise ValueError(f"act_probability must be in (0, 1], got {self.act_probability}")
        if not (self.step_s > 0 and self.horizon_s > 0):
            raise ValueError("step_s and horizon_s must be > 0")


@dataclass(slots=True)
class _Open:
    t_s: float
    target: str
    host: int
    probability: float
    fault_class: str


@dataclass(slots=True)
class _Plan:
    """A graceful restart under way: the actions still to run and the one awaited."""

    target: str
    reason: str
    remaining: list[str]
    awaiting: int = -1
    out_of_rotation: bool = False
    logged_wait: str = ""
    """The action whose wait for a cooldown is logged, so a wait is logged once."""

    def abandon(self) -> None:
        """Run nothing more but the return to rotation, if the instance was taken out."""
        self.remaining = [_RESTORE] if self.out_of_rotation else []
        self.out_of_rotation = False


def _decide(
    log: EventLog, now: float, action: Action, verdict: str, reason: str, action_id: int = -1
) -> None:
    """Log a pre-emptive decision (incident -1); executed when it has an action id."""
    log.add(DecisionRecord(log.next_seq, now, -1, action.kind, action.target, verdict, reason,
                           action_id >= 0, action_id))


class PredictionStage:
    """Runs a failure model over the hosts and acts pre-emptively on confident predictions."""

    def __init__(self, model: FailureModel, config: PredictionConfig | None = None) -> None:
        self.model = model
        self.config = config or PredictionConfig()
        self._rows: collections.deque[npt.NDArray[np.float32]] = collections.deque(
            maxlen=model.seq_len
        )
        self._samples: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = []
        self._next_sample_s: float | None = None
        self._open: dict[int, _Open] = {}
        self._plans: list[_Plan] = []
        self._seen_seq = 0

    def _target(self, fault_class: str, host: int, obs: Observation) -> str:
        if fault_class != "memory_leak":
            return f"host-{host}"
        on_host = np.flatnonzero(obs.inst_used & (obs.inst_host == host))
        if on_host.size == 0:
            return f"host-{host}"
        return f"inst-{int(on_host[np.argmax(obs.inst[on_host, _I_MEM])])}"

    def step(self, plant: Plant, gate: SafetyGate, obs: Observation) -> list[PredictionRecord]:
        """One control step: sample, predict at step boundaries, act, record outcomes."""
        now = plant.now_s
        cfg = self.config
        self._samples.append((obs.host.astype(np.float32), obs.inst.astype(np.float32)))
        if self._next_sample_s is None:
            self._next_sample_s = now + cfg.step_s
        out = self._outcomes(plant, gate, obs)
        if now < self._next_sample_s:
            return out
        self._next_sample_s += cfg.step_s * max(
            1.0, math.floor((now - self._next_sample_s) / cfg.step_s) + 1.0
        )
        host = np.stack([s[0] for s in self._samples])
        inst = np.stack([s[1] for s in self._samples])
        self._samples = []
        self._rows.append(host_feature_rows(host, inst, obs.inst_used, obs.inst_host))
        if len(self._rows) < self.model.seq_len:
            return out
        windows = np.stack(list(self._rows), axis=1)  # (hosts, seq, features)
        up = obs.host[:, _H_UP] > 0.5
        probs = np.zeros(windows.shape[0])
        if up.any():
            probs[up] = self.model.predict_proba(windows[up])
        log = plant.log
        for flagged in np.flatnonzero(up & (probs >= cfg.act_probability)):
            h = int(flagged)
            if h in self._open:
                continue
            fault_class = diagnose(windows[h])
            target = self._target(fault_class, h, obs)
            rec = PredictionRecord(
                log.next_seq,
                now,
                target,
                f"host-{h}",
                "predicted",
                float(probs[h]),
                fault_class,
                cfg.horizon_s,
            )
            log.add(rec)
            out.append(rec)
            self._open[h] = _Open(now, target, h, float(probs[h]), fault_class)
            reason = f"pre-emptive: {fault_class} predicted on host-{h} (p={probs[h]:.2f})"
            if fault_class == "memory_leak" and target.startswith("inst-"):
                plan = _Plan(target, reason, list(GRACEFUL_RESTART))
                self._plans.append(plan)
                self._advance(plan, plant, gate, obs)
                continue
            if fault_class in PRE_EMPTIVE:
                self._submit(Action(PRE_EMPTIVE[fault_class], target), plant, gate, obs, reason)
                continue
            for action in RUNBOOKS[fault_class].steps[0].resolve(target, obs):
                self._submit(action, plant, gate, obs, reason)
        return out

    def _submit(
        self, action: Action, plant: Plant, gate: SafetyGate, obs: Observation, reason: str
    ) -> tuple[str, int]:
        """Pass one action through the gate and, if allowed, the plant; log the decision.

        Returns the gate's verdict (``rejected`` when the plant refused) and the action id
        (-1 unless it runs).
        """
        log, now = plant.log, plant.now_s
        verdict = gate.check(action, obs, now)
        if verdict.kind != "allowed":
            _decide(log, now, action, verdict.kind, verdict.reason)
            return verdict.kind, -1
        result = plant.apply(action)
        if not result.accepted:
            _decide(log, now, action, "rejected", result.reason)
            return "rejected", -1
        gate.started(action, result.action_id, obs, now)
        _decide(log, now, action, "allowed", reason, result.action_id)
        return "allowed", result.action_id

    def _advance(self, plan: _Plan, plant: Plant, gate: SafetyGate, obs: Observation) -> None:
        """Submit the plan's next action unless one is awaited; drop the plan when done.

        An action whose target is cooling down (the previous action started less than the
        gate's cooldown ago) waits and is tried again every step, its refusal logged once.
        Any other refusal (the blast radius, an emergency stop, a human's approval, the
        plant) ends the plan, after trying to put the instance back into rotation if it was
        taken out. A dry run logs every action and acts on none.
        """
        while plan.awaiting < 0 and plan.remaining:
            kind = plan.remaining[0]
            action = Action(kind, plan.target)
            waiting = gate.cooling_down(action, plant.now_s)
            if waiting:
                if plan.logged_wait != kind:
                    _decide(plant.log, plant.now_s, action, "blocked", waiting)
                    plan.logged_wait = kind
                return
            verdict, action_id = self._submit(action, plant, gate, obs, plan.reason)
            if verdict == "dry_run":
                plan.remaining.pop(0)
                continue
            if action_id < 0:
                plan.abandon()
                continue
            plan.remaining.pop(0)
            plan.awaiting = action_id
            if kind == GRACEFUL_RESTART[0]:
                plan.out_of_rotation = True
            elif kind == _RESTORE:
                plan.out_of_rotation = False
        if plan.awaiting < 0 and not plan.remaining:
            self._plans.remove(plan)

    def _outcomes(self, plant: Plant, gate: SafetyGate, obs: Observation) -> list[PredictionRecord]:
        log, now, cfg = plant.log, plant.now_s, self.config
        events = plant.events(self._seen_seq)
        self._seen_seq = log.next_seq
        failed: dict[int, float] = {}
        obs_inst_host = obs.inst_host
        done = {
            e.action_id: e.phase
            for e in events
            if self._plans and isinstance(e, ActionRecord) and e.phase in ("succeeded", "failed")
        }
        for plan in list(self._plans):
            phase = done.get(plan.awaiting)
            if phase is None and plan.awaiting >= 0:
                continue
            if phase == "failed":
                plan.abandon()
            plan.awaiting = -1
            self._advance(plan, plant, gate, obs)
        for e in events:
            if (
                isinstance(e, StateChange)
                and e.state in ("down", "disk_failed")
                and e.fault_id is not None
            ):
                kind, _, ident = e.target.rpartition("-")
                if not ident.isdigit():
                    continue
                if kind == "host":
                    failed.setdefault(int(ident), e.t_s)
                elif kind == "inst":
                    failed.setdefault(int(obs_inst_host[int(ident)]), e.t_s)
        out = []
        for h, op in list(self._open.items()):
            if h in failed and failed[h] >= op.t_s:
                outcome, lead = "failed", failed[h] - op.t_s
            elif now - op.t_s >= cfg.horizon_s:
                outcome, lead = "no_failure", math.nan
            else:
                continue
            rec = PredictionRecord(
                log.next_seq,
                now,
                op.target,
                f"host-{h}",
                "outcome",
                op.probability,
                op.fault_class,
                cfg.horizon_s,
                outcome,
                lead,
            )
            log.add(rec)
            out.append(rec)
            del self._open[h]
        return out


def _fault_failure_s(f: FaultRecord, failures: dict[int, float]) -> float:
    """When a warning fault failed, or (averted) when it would have by its ground truth."""
    if f.fault_id in failures:
        return failures[f.fault_id]
    key = WARNING_DETAIL_KEYS.get(f.kind)
    if key is not None and key in f.detail:
        return f.t_s + 3600.0 * f.detail[key]
    if f.kind == "load_surge" and "ramp_s" in f.detail:
        return f.t_s + f.detail["ramp_s"]
    return math.inf


def prediction_kpis(events: Iterable[Event], horizon_s: float = 72 * 3600.0) -> dict[str, float]:
    """Prediction precision, recall and lead time from an event log's ground truth.

    A ``predicted`` record is a true positive when a fault with warning signs on its target or
    its host began at or before the prediction and had not failed or been cleared yet. Recall
    is over faults with warning signs on a host or instance that lasted until a prediction
    could be made; lead time is from the first true prediction of a fault to the fault's
    failure (or, when the pre-emptive action averted it, to when it would have failed).
    """
    records: Sequence[Event] = list(events)
    faults = [
        r
        for r in records
        if isinstance(r, FaultRecord) and r.warning_signs and r.kind in WARNING_DETAIL_KEYS
    ]
    failures: dict[int, float] = {}
    cleared: dict[int, float] = {}
    for r in records:
        if (
            isinstance(r, StateChange)
            and r.fault_id is not None
            and r.state in ("down", "disk_failed")
        ):
            failures.setdefault(r.fault_id, r.t_s)
        if isinstance(r, FaultCleared):
            cleared.setdefault(r.fault_id, r.t_s)
    preds = [r for r in records if isinstance(r, PredictionRecord) and r.phase == "predicted"]
    tp = 0
    first_hit: dict[int, float] = {}
    for p in preds:
        hit = False
        for f in faults:
            end_s = min(_fault_failure_s(f, failures), cleared.get(f.fault_id, math.inf))
            if f.target in (p.target, p.host) and f.t_s <= p.t_s < end_s:
                hit = True
                first_hit.setdefault(f.fault_id, p.t_s)
        tp += hit
    leads = [
        _fault_failure_s(f, failures) - first_hit[f.fault_id]
        for f in faults
        if f.fault_id in first_hit
    ]
    leads = [x for x in leads if math.isfinite(x)]
    return {
        "prediction_count": float(len(preds)),
        "prediction_precision": tp / len(preds) if preds else math.nan,
        "prediction_recall": len(first_hit) / len(faults) if faults else math.nan,
        "prediction_median_lead_h": float(np.median(leads)) / 3600.0 if leads else math.nan,
        "prediction_horizon_h": horizon_s / 3600.0,
    }
