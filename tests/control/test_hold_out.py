"""Replicas held out of rotation while their cause is fixed (``HealingEngine._hold_out``)."""

from __future__ import annotations

import numpy as np
import pytest

from control import engine as engine_module
from control.engine import HealingEngine
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig, SimulatedOperator
from sim.config import DeploySpec
from sim.events import ActionRecord, DecisionRecord, IncidentRecord, SloWindow
from sim.faults import FaultKind, strike
from sim.twin import Twin

API = 2


def _twin(share: float = 0.0) -> tuple[Twin, HealingEngine]:
    safety = SafetyConfig()
    spec = RunSpec(scenario="calm", hosts=30, hours=1.0, seed=4, safety=safety,
                   deploys=DeploySpec(canary_share=share, canary_bake_s=600.0))
    twin = build_twin(spec)
    return twin, _engine(twin, 11)


def _engine(twin: Twin, fork: int) -> HealingEngine:
    return HealingEngine(twin, SafetyConfig(),
                         SimulatedOperator(30.0, 1.0, twin.rng_for("fork", fork)))


def _run(twin: Twin, engine: HealingEngine, seconds: int) -> None:
    for _ in range(seconds):
        twin.advance(1.0)
        engine.step()


def _actions(twin: Twin, kind: str, phase: str = "succeeded") -> list[ActionRecord]:
    return [r for r in twin.events()
            if isinstance(r, ActionRecord) and r.kind == kind and r.phase == phase]


def _lost(twin: Twin) -> float:
    return sum(r.requests - r.good for r in twin.events() if isinstance(r, SloWindow))


def _bad_canary(share: float = 0.25) -> tuple[Twin, list[int]]:
    """A bad deploy of svc-api caught on its canaries, healed for 5 minutes."""
    twin, engine = _twin(share)
    _run(twin, engine, 120)
    strike(twin, FaultKind.BAD_CONFIG, API, twin.rng_for("script", 1))
    st = twin.state
    canaries = [int(i) for i in np.flatnonzero(
        st.inst_used & (st.inst_service == API)
        & (st.inst_config_version != st.svc_good_config_version[API]))]
    _run(twin, engine, 300)
    return twin, canaries


def _strike_link(twin: Twin, engine: HealingEngine) -> int:
    """After 2 calm minutes, degrade the link of a host serving svc-frontend; its index."""
    _run(twin, engine, 120)
    st = twin.state
    host = int(st.inst_host[np.flatnonzero(st.inst_used & (st.inst_service == 1))[0]])
    strike(twin, FaultKind.LINK_DEGRADATION, host, twin.rng_for("script", 1))
    return host


def _degraded_link() -> tuple[Twin, int]:
    """A host link losing packets under a replica of svc-frontend, healed for 9 minutes."""
    twin, engine = _twin()
    host = _strike_link(twin, engine)
    _run(twin, engine, 540)
    return twin, host


def test_bad_canaries_are_held_out_until_the_rollback_and_then_put_back() -> None:
    """The canaries leave rotation within seconds, before the rollback ends; back after it.

    Their restore is a follow-up of the fix, not the rollback check undoing the hold-out
    (the windows meanwhile are worse because of the deploy, not because of the hold-out).
    """
    twin, canaries = _bad_canary()
    assert len(canaries) == 3
    rollback = _actions(twin, "config_rollback")
    assert len(rollback) == 1
    held = _actions(twin, "reroute_traffic")
    assert sorted(int(r.target.split("-")[1]) for r in held) == canaries
    deploy_s = min(r.t_s for r in twin.events()
                   if isinstance(r, IncidentRecord) and r.phase == "opened")
    assert all(r.t_s - deploy_s < 10.0 for r in held)
    assert all(r.t_s < rollback[0].t_s for r in held)
    back = _actions(twin, "restore_traffic")
    assert sorted(r.target for r in back) == sorted(r.target for r in held)
    assert all(r.t_s >= rollback[0].t_s for r in back)
    reasons = [r.reason for r in twin.events() if isinstance(r, DecisionRecord)
               and r.action == "restore_traffic" and r.executed]
    assert reasons and all("fixed" in why and not why.startswith("rollback") for why in reasons)
    st = twin.state
    api = st.inst_used & (st.inst_service == API)
    assert st.inst_in_rotation[api].all()
    assert (st.inst_config_version[api] == st.svc_good_config_version[API]).all()


def test_holding_bad_canaries_out_loses_fewer_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    held, _ = _bad_canary()
    monkeypatch.setattr(engine_module, "HOLD_OUT_MAX", 0)
    kept, _ = _bad_canary()
    assert not _actions(kept, "reroute_traffic")
    assert _lost(held) < 0.5 * _lost(kept)


def test_a_deploy_on_every_replica_is_not_held_out() -> None:
    """Without a canary stage there is no healthy majority to serve instead."""
    twin, canaries = _bad_canary(0.0)
    assert len(canaries) == int((twin.state.inst_used & (twin.state.inst_service == API)).sum())
    assert _actions(twin, "config_rollback")
    assert not _actions(twin, "reroute_traffic")


def test_a_degraded_host_link_has_its_replicas_held_out_while_it_is_repaired() -> None:
    twin, host = _degraded_link()
    st = twin.state
    on_host = {f"inst-{i}" for i in np.flatnonzero(st.inst_used & (st.inst_host == host))}
    repair = _actions(twin, "repair_link")
    assert [r.target for r in repair] == [f"link-host-{host}"]
    held = _actions(twin, "reroute_traffic")
    assert held and {r.target for r in held} <= on_host
    assert all(r.t_s < repair[0].t_s for r in held)
    back = _actions(twin, "restore_traffic")
    assert sorted(r.target for r in back) == sorted(r.target for r in held)
    assert all(r.t_s >= repair[0].t_s for r in back)
    assert st.inst_in_rotation[st.inst_used].all()


def test_holding_a_lossy_links_replicas_out_loses_fewer_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held, _ = _degraded_link()
    monkeypatch.setattr(engine_module, "HOLD_OUT_MAX", 0)
    kept, _ = _degraded_link()
    assert not _actions(kept, "reroute_traffic")
    assert _actions(kept, "repair_link")
    assert _lost(held) < 0.5 * _lost(kept)


def test_no_replica_is_held_out_when_the_rest_of_its_service_would_be_too_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "HOLD_OUT_UTIL", 0.0)
    twin, _ = _degraded_link()
    assert _actions(twin, "repair_link")
    assert not _actions(twin, "reroute_traffic")


def test_a_restarted_engine_puts_back_what_its_predecessor_held_out() -> None:
    """The hold-out is rebuilt from the log: the successor restores once the link is fixed."""
    twin, first = _twin()
    _strike_link(twin, first)
    st = twin.state
    _run(twin, first, 30)
    held = _actions(twin, "reroute_traffic")
    assert held and not _actions(twin, "repair_link")
    second = _engine(twin, 12)
    _run(twin, second, 510)
    repair = _actions(twin, "repair_link")
    assert len(repair) == 1
    back = _actions(twin, "restore_traffic")
    assert sorted(r.target for r in back) == sorted(r.target for r in held)
    assert all(r.t_s >= repair[0].t_s for r in back)
    assert st.inst_in_rotation[st.inst_used].all()



def test_a_hold_out_is_not_undone_by_the_rollback_check_while_its_cause_persists() -> None:
    """A lossy link's replica held out, then a bad deploy elsewhere makes the next windows worse.

    The rollback check must not read the deploy's harm as the hold-out's and put the
    replica back behind the lossy link before the link is repaired.
    """
    twin, engine = _twin()
    _strike_link(twin, engine)
    _run(twin, engine, 10)
    strike(twin, FaultKind.BAD_CONFIG, API, twin.rng_for("script", 2))
    _run(twin, engine, 530)
    held = _actions(twin, "reroute_traffic")
    repair = _actions(twin, "repair_link")
    assert held and len(repair) == 1
    back = [r for r in twin.events() if isinstance(r, DecisionRecord)
            and r.action == "restore_traffic" and r.executed]
    assert sorted(r.target for r in back) == sorted(r.target for r in held)
    assert all(not r.reason.startswith("rollback") and r.t_s >= repair[0].t_s for r in back)
