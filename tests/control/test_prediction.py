"""Failure prediction in the healing loop: pre-emptive action, event-log records, KPIs."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from agents import failure_data as fd
from agents.failure_predictor import LSTMFailurePredictor, PredictorConfig
from control.detection import DetectionStage, EventDetector, ProbeDetector
from control.engine import HealingEngine
from control.kpi import compute_kpis
from control.prediction import (
    GRACEFUL_RESTART,
    PredictionConfig,
    PredictionStage,
    diagnose,
    host_feature_rows,
    prediction_kpis,
)
from control.safety import SafetyConfig
from sim.config import ScriptedFault
from sim.events import (
    ActionRecord,
    DecisionRecord,
    FaultCleared,
    FaultRecord,
    PredictionRecord,
    StateChange,
)
from sim.scenarios import make_config
from sim.twin import Twin

STEP_S = 600.0
SEQ = 6
HORIZON_S = 3 * 3600.0


def test_diagnose_picks_the_trending_warning_sign() -> None:
    """Falling fan speed reads as a fan failure, rising memory as a leak, wear as disk."""
    base = np.tile(
        np.array([0.2, 0.3, 200, 40, 12000, 0.01, 0.0, 0.1, 0.01, 1.0], dtype=np.float32), (SEQ, 1)
    )
    fan = base.copy()
    fan[:, 4] = np.linspace(12000, 7000, SEQ)
    mem = base.copy()
    mem[:, 1] = np.linspace(0.3, 0.9, SEQ)
    wear = base.copy()
    wear[:, 7] = np.linspace(0.1, 0.8, SEQ)
    assert diagnose(fan) == "fan_failure"
    assert diagnose(mem) == "memory_leak"
    assert diagnose(wear) == "disk_degradation"


def test_host_feature_rows_take_the_busiest_live_instance_memory() -> None:
    """The memory feature is the highest mean memory use among live instances of the host."""
    host = np.zeros((2, 2, 12), dtype=np.float32)
    inst = np.zeros((2, 3, 13), dtype=np.float32)
    inst[:, :, 1] = [[0.2, 0.6, 0.9], [0.4, 0.8, 0.9]]
    inst[:, :, 10] = [1.0, 1.0, 0.0]
    rows = host_feature_rows(host, inst, np.array([True, True, True]), np.array([0, 0, 1]))
    assert rows.shape == (2, 10)
    assert rows[0, 1] == pytest.approx(0.7)
    assert rows[1, 1] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def warning_model() -> LSTMFailurePredictor:
    """An LSTM trained on twin fleets whose warning faults fail within hours.

    40 hosts over 4 days give some 40 leak, 50 disk and 60 fan failures per fleet; half
    that data left the leaks unlearnt (fans outnumber them, and a leak fails only once its
    instance runs out of memory).
    """
    spec = fd.FleetSpec(
        hosts=40,
        days=4.0,
        tick_s=60.0,
        step_s=STEP_S,
        warning_scale=1.0,
        warning_rate_per_day=20.0,
        silent_rate_per_day=0.0,
    )
    ds = fd.build_dataset(spec, (11, 12))
    w = fd.make_windows(ds, SEQ, HORIZON_S)
    idx = np.arange(w.label.size)
    tr, va = idx[w.fleet == 0], idx[w.fleet == 1]
    model = LSTMFailurePredictor(
        PredictorConfig(
            hidden=16, layers=1, seq_len=SEQ, max_epochs=30, patience=6, lr=3e-3, seed=0
        )
    )
    model.fit(
        fd.gather(ds, w, tr, SEQ),
        w.label[tr],
        fd.gather(ds, w, va, SEQ),
        w.label[va],
        progress=False,
    )
    return model


def _run(
    model: LSTMFailurePredictor | None, kind: str = "fan_failure", hours: float = 8.0
) -> tuple[list, dict]:
    """performance_degradation on 20 hosts with a ``kind`` fault on host-3 / inst-3 at 1 h.

    Detection is reactive only (probes and operational events), so what acts before the
    fault fails is the prediction stage or nothing.
    """
    cfg = make_config("performance_degradation", 20, tick_s=10.0)
    cfg = dataclasses.replace(cfg, scripted=(ScriptedFault(3600.0, kind, 3),))
    twin = Twin(cfg, seed=5)
    stage = None
    if model is not None:
        stage = PredictionStage(model, PredictionConfig(step_s=STEP_S, horizon_s=HORIZON_S))
    engine = HealingEngine(
        twin, detection=DetectionStage([ProbeDetector(), EventDetector()]), prediction=stage
    )
    while twin.now_s < hours * 3600.0:
        twin.advance(10.0)
        engine.step()
    events = twin.events(0)
    return events, compute_kpis(events)


@pytest.mark.slow
def test_prediction_averts_a_fan_failure_in_performance_degradation(warning_model) -> None:
    """A confident prediction replaces the fan before it stalls; without it, it stalls."""
    events, kpis_pred = _run(warning_model)
    slo_min = kpis_pred["slo_violation_minutes"]
    fault = next(
        e
        for e in events
        if isinstance(e, FaultRecord) and e.target == "host-3" and e.kind == "fan_failure"
    )
    stall_s = fault.t_s + 3600.0 * fault.detail["hours_to_stall"]
    preds = [
        e
        for e in events
        if isinstance(e, PredictionRecord) and e.phase == "predicted" and e.host == "host-3"
    ]
    assert preds and preds[0].probability >= 0.8 and preds[0].fault_class == "fan_failure"
    assert fault.t_s < preds[0].t_s < stall_s
    pre = [
        e
        for e in events
        if isinstance(e, DecisionRecord)
        and e.incident_id == -1
        and e.target == "host-3"
        and e.action == "replace_fan"
        and e.executed
    ]
    assert pre and pre[0].t_s < stall_s
    cleared = [e for e in events if isinstance(e, FaultCleared) and e.fault_id == fault.fault_id]
    assert cleared and cleared[0].t_s < stall_s and cleared[0].by == "replace_fan"
    outcomes = [
        e
        for e in events
        if isinstance(e, PredictionRecord) and e.phase == "outcome" and e.host == "host-3"
    ]
    assert not outcomes or outcomes[0].outcome == "no_failure"
    kpis = prediction_kpis(events, HORIZON_S)
    assert kpis["prediction_recall"] > 0 and kpis["prediction_median_lead_h"] > 0

    base_events, base_kpis = _run(None)
    base_slo_min = base_kpis["slo_violation_minutes"]
    base_cleared = [
        e
        for e in base_events
        if isinstance(e, FaultCleared) and e.fault_id == fault.fault_id and e.t_s < stall_s
    ]
    assert not base_cleared
    assert not any(isinstance(e, PredictionRecord) for e in base_events)
    assert slo_min <= base_slo_min
    assert math.isfinite(slo_min)


@pytest.mark.slow
def test_prediction_averts_a_memory_leak_and_lowers_slo_minutes(warning_model) -> None:
    """A predicted leak is restarted gracefully before its OOM kill, which costs SLO minutes."""
    events, kpis = _run(warning_model, "memory_leak")
    fault = next(e for e in events if isinstance(e, FaultRecord) and e.kind == "memory_leak")
    assert fault.target == "inst-3"
    oom_s = fault.t_s + 3600.0 * fault.detail["hours_to_oom"]
    pred = next(e for e in events if isinstance(e, PredictionRecord) and e.phase == "predicted")
    assert pred.target == "inst-3" and pred.fault_class == "memory_leak"
    assert pred.probability >= 0.8 and fault.t_s < pred.t_s < oom_s
    ran = [
        e for e in events if isinstance(e, DecisionRecord) and e.incident_id == -1 and e.executed
    ]
    assert [(d.action, d.target) for d in ran] == [(kind, "inst-3") for kind in GRACEFUL_RESTART]
    ids = {d.action_id for d in ran}
    succeeded = [
        e
        for e in events
        if isinstance(e, ActionRecord) and e.action_id in ids and e.phase == "succeeded"
    ]
    assert len(succeeded) == 3 and max(e.t_s for e in succeeded) < oom_s
    cleared = next(
        e for e in events if isinstance(e, FaultCleared) and e.fault_id == fault.fault_id
    )
    assert cleared.t_s < oom_s and cleared.by == "restart"
    assert not any(
        isinstance(e, StateChange) and e.fault_id == fault.fault_id and e.state == "down"
        for e in events
    )
    outcome = next(e for e in events if isinstance(e, PredictionRecord) and e.phase == "outcome")
    assert outcome.outcome == "no_failure"

    base_events, base_kpis = _run(None, "memory_leak")
    assert any(
        isinstance(e, StateChange) and e.fault_id == fault.fault_id and e.state == "down"
        for e in base_events
    )
    assert kpis["slo_violation_minutes"] < base_kpis["slo_violation_minutes"]
    assert kpis["availability"] > base_kpis["availability"]


class _LeakOracle:
    """A failure model that is sure of a failure wherever the busiest memory keeps rising."""

    seq_len = 2

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        rising = windows[:, -1, 1] - windows[:, 0, 1] > 0.01
        return np.where(rising, 0.95, 0.01)


def _leak_run(safety: SafetyConfig) -> list:
    cfg = make_config("calm", 4, tick_s=10.0)
    cfg = dataclasses.replace(cfg, scripted=(ScriptedFault(600.0, "memory_leak", 0),))
    twin = Twin(cfg, seed=1)
    stage = PredictionStage(_LeakOracle(), PredictionConfig(step_s=600.0, horizon_s=3 * 3600.0))
    engine = HealingEngine(
        twin,
        detection=DetectionStage([ProbeDetector(), EventDetector()]),
        prediction=stage,
        safety=safety,
    )
    while twin.now_s < 2 * 3600.0:
        twin.advance(10.0)
        engine.step()
    return twin.events(0)


def test_a_predicted_leak_gets_a_graceful_restart_one_action_after_the_other() -> None:
    """Out of rotation, restarted, back in: each waits for the last to succeed and the gate.

    On 4 hosts a service has two replicas, so the blast-radius share is raised to let one
    of them restart.
    """
    events = _leak_run(SafetyConfig(max_capacity_share=0.5))
    ran = [e for e in events if isinstance(e, DecisionRecord) and e.incident_id == -1]
    executed = [d for d in ran if d.executed]
    assert [d.action for d in executed] == list(GRACEFUL_RESTART)
    assert {d.target for d in ran} == {"inst-0"}
    finished = {
        e.action_id: e.t_s for e in events if isinstance(e, ActionRecord) and e.phase == "succeeded"
    }
    for before, after in itertools.pairwise(executed):
        assert finished[before.action_id] <= after.t_s
        assert after.t_s - before.t_s >= SafetyConfig().cooldown_s
    blocked = [d for d in ran if d.verdict == "blocked"]
    assert [d.action for d in blocked] == list(GRACEFUL_RESTART[1:])
    assert all("cooling down" in d.reason for d in blocked)
    leak = next(e for e in events if isinstance(e, FaultRecord))
    assert any(isinstance(e, FaultCleared) and e.fault_id == leak.fault_id for e in events)


def test_a_graceful_restart_the_blast_radius_refuses_puts_the_instance_back() -> None:
    """The restart would take half of a two-replica service: refused, traffic restored."""
    events = _leak_run(SafetyConfig())
    ran = [e for e in events if isinstance(e, DecisionRecord) and e.incident_id == -1]
    assert [(d.action, d.verdict) for d in ran] == [
        ("reroute_traffic", "allowed"),
        ("restart_instance", "blocked"),
        ("restart_instance", "blocked"),
        ("restore_traffic", "allowed"),
    ]
    assert "cooling down" in ran[1].reason and "blast radius" in ran[2].reason
    assert [d.executed for d in ran] == [True, False, False, True]


def test_a_dry_run_logs_the_whole_graceful_restart_and_runs_none_of_it() -> None:
    """dry_run: the three decisions are logged, nothing reaches the plant."""
    events = _leak_run(SafetyConfig(dry_run=True, max_capacity_share=0.5))
    ran = [e for e in events if isinstance(e, DecisionRecord) and e.incident_id == -1]
    assert [d.action for d in ran] == list(GRACEFUL_RESTART)
    assert all(d.verdict == "dry_run" and not d.executed for d in ran)
    assert not any(isinstance(e, ActionRecord) and e.action_id >= 0 for e in events)


def test_prediction_kpis_from_a_hand_made_log() -> None:
    """One true and one false prediction: precision 0.5, recall 1, lead to the failure."""
    fault = FaultRecord(0, 100.0, 7, "fan_failure", "host-2", "fan", True, {"hours_to_stall": 2.0})
    events = [
        fault,
        PredictionRecord(1, 1900.0, "host-2", "host-2", "predicted", 0.9, "fan_failure", 7200.0),
        PredictionRecord(2, 2000.0, "host-5", "host-5", "predicted", 0.85, "fan_failure", 7200.0),
        StateChange(3, 7300.0, "host-2", "down", 7, "thermal shutdown"),
    ]
    k = prediction_kpis(events, 7200.0)
    assert k["prediction_precision"] == pytest.approx(0.5)
    assert k["prediction_recall"] == pytest.approx(1.0)
    assert k["prediction_median_lead_h"] == pytest.approx((7300.0 - 1900.0) / 3600.0)
