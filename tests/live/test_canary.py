"""Configuration deploys through a canary stage on the live fleet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from control.engine import CONFIDENT
from control.kpi import fault_outcomes
from live.chaos import ChaosInjector, inject
from live.controller import control_loop, live_engine
from live.loadgen import run_load
from live.plant import LivePlant
from sim.actions import Action
from sim.events import ActionRecord, FaultCleared, IncidentRecord, StateChange

Factory = Callable[..., LivePlant]


def _wait(plant: LivePlant, cond: Callable[[], bool], limit_s: float) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end and not cond():
        plant.advance(0.1)


def _promoted(plant: LivePlant, since: int) -> list[StateChange]:
    return [r for r in plant.log.since(since)
            if isinstance(r, StateChange) and r.state == "config_promoted"]


def test_a_canary_deploy_reaches_its_replicas_first_and_the_rest_after_the_bake(
    fleet_factory: Factory,
) -> None:
    """Only the canary rejects the deploy until the bake ends; then every replica does.

    The replicas report the version they run, which the observation carries; a rollback
    afterwards brings all of them back, and its idempotency key sees the promoted state.
    """
    plant = fleet_factory(3, actuate=True)
    plant.advance(0.5)
    rec = inject(plant, "bad_config", "svc-api", canaries=[1], bake_s=5.0)
    assert rec.affected == ("inst-1",) and rec.detail == {"canaries": 1.0}
    _wait(plant, lambda: not plant.observe().inst_ready[1], 5.0)
    obs = plant.observe()
    assert list(obs.inst_ready[:3]) == [True, False, True]
    assert obs.inst_config_version is not None
    assert obs.inst_config_version[1] == 1000 + rec.fault_id
    assert list(obs.inst_config_version[[0, 2]]) == [1, 1]
    _wait(plant, lambda: bool(_promoted(plant, rec.seq))
          and not plant.observe().inst_ready[:3].any(), 15.0)
    (promoted,) = _promoted(plant, rec.seq)
    assert promoted.fault_id == rec.fault_id and promoted.t_s - rec.t_s >= 5.0
    assert not plant.observe().inst_ready[:3].any()
    result = plant.apply(Action("config_rollback", "svc-api"))
    assert result.accepted, result.reason
    _wait(plant, lambda: bool(plant.observe().inst_ready[:3].all()), 10.0)
    assert plant.observe().inst_ready[:3].all()
    cleared = {r.fault_id for r in plant.log.since(rec.seq) if isinstance(r, FaultCleared)}
    assert cleared == {rec.fault_id}
    refused = plant.apply(Action("config_rollback", "svc-api"))
    assert not refused.accepted and "last good configuration" in refused.reason


def test_a_bad_canary_is_rolled_back_before_promotion_and_traffic_never_fails_much(
    fleet_factory: Factory,
) -> None:
    """The engine diagnoses the canary's configuration, rolls it back, nothing is promoted.

    Under load, the load balancer takes the unready canary out of rotation and the
    rollback follows at once, so nearly every request succeeds; the processes stay.
    """
    plant = fleet_factory(4, actuate=True)
    engine = live_engine(plant, actuate=True)
    control_loop(plant, engine, 0.5, 0.1)
    pids = plant.pids()
    stop = threading.Event()
    results = []

    def load() -> None:
        while not stop.is_set():
            results.append(run_load(plant.lb_url + "/", 40.0, 0.5))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        time.sleep(0.6)
        rec = inject(plant, "bad_config", "svc-api", canaries=[2], bake_s=20.0)
        end = time.monotonic() + 30.0
        while time.monotonic() < end and not any(
                isinstance(r, IncidentRecord) and r.phase == "resolved"
                for r in plant.log.since(rec.seq)):
            plant.advance(0.1)
            engine.step()
        control_loop(plant, engine, 1.0, 0.1)
    finally:
        stop.set()
        loader.join(timeout=10)
    events = plant.log.since(rec.seq)
    opened = next(r for r in events if isinstance(r, IncidentRecord) and r.phase == "opened")
    assert opened.root_cause == "svc-api:bad_config" and opened.candidates[0][1] >= CONFIDENT
    started = [r.kind for r in events if isinstance(r, ActionRecord) and r.phase == "started"]
    assert started == ["config_rollback"]
    assert not _promoted(plant, rec.seq)
    (out,) = fault_outcomes(plant.log.since(0), hold_s=0.5, deadline_s=30.0)
    assert out.rca_rank == 1 and out.auto_recovered
    assert plant.pids() == pids and plant.observe().inst_ready[:4].all()
    sent, ok = sum(r.sent for r in results), sum(r.ok for r in results)
    assert sent > 50 and ok / sent >= 0.97, (sent, ok)


def test_bad_canary_inputs_are_refused(fleet_factory: Factory) -> None:
    """Canaries on every replica, on an unused slot, or for another kind: a clear error."""
    plant = fleet_factory(2, actuate=True)
    for canaries, kind, words in (([0, 1], "bad_config", "some, not all"),
                                  ([5], "bad_config", "some, not all"),
                                  ([0], "service_crash", "bad_config only")):
        with pytest.raises(ValueError, match=words):
            inject(plant, kind, "svc-api" if kind == "bad_config" else "inst-0",
                   canaries=canaries)
    with pytest.raises(ValueError, match="canary_share"):
        ChaosInjector(plant, {"bad_config": 1.0}, 0, canary_share=1.0)
    injector = ChaosInjector(plant, {"bad_config": 1.0}, 3, canary_share=0.5, bake_s=30.0)
    rec = injector.inject_next(plant.used_slots())
    assert rec.detail == {"canaries": 1.0} and len(rec.affected) == 1
    assert np.isin([int(a[5:]) for a in rec.affected], plant.used_slots()).all()
