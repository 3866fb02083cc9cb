"""Failure prediction in the healing loop: pre-emptive action, event-log records, KPIs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from agents import failure_data as fd
from agents.failure_predictor import LSTMFailurePredictor, PredictorConfig
from control.detection import DetectionStage, EventDetector, ProbeDetector
from control.engine import HealingEngine
from control.kpi import compute_kpis
from control.prediction import (
    PredictionConfig,
    PredictionStage,
    diagnose,
    host_feature_rows,
    prediction_kpis,
)
from sim.config import ScriptedFault
from sim.events import (
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
def fan_model() -> LSTMFailurePredictor:
    """An LSTM trained on twin fleets whose warning faults fail within hours."""
    spec = fd.FleetSpec(
        hosts=20,
        days=2.0,
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


def _run(model: LSTMFailurePredictor | None, hours: float = 8.0) -> tuple[list, float]:
    """performance_degradation on 20 hosts with a fan failing on host-3 one hour in.

    Detection is reactive only (probes and operational events), so what acts before the fan
    stalls is the prediction stage or nothing.
    """
    cfg = make_config("performance_degradation", 20, tick_s=10.0)
    cfg = dataclasses.replace(cfg, scripted=(ScriptedFault(3600.0, "fan_failure", 3),))
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
    return events, compute_kpis(events)["slo_violation_minutes"]


@pytest.mark.slow
def test_prediction_averts_a_fan_failure_in_performance_degradation(fan_model) -> None:
    """A confident prediction replaces the fan before it stalls; without it, it stalls."""
    events, slo_min = _run(fan_model)
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

    base_events, base_slo_min = _run(None)
    base_cleared = [
        e
        for e in base_events
        if isinstance(e, FaultCleared) and e.fault_id == fault.fault_id and e.t_s < stall_s
    ]
    assert not base_cleared
    assert not any(isinstance(e, PredictionRecord) for e in base_events)
    assert slo_min <= base_slo_min
    assert math.isfinite(slo_min)


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
