"""Each named scenario's fault ends as an operator would expect, asserted from the event log.

One representative fault per scenario is struck on a small calm twin run by the rule-based
engine; the assertions read only the event log, as KPIs and post-mortems do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

import control.engine as engine_module
from control.engine import BRIDGE, HealingEngine
from control.kpi import fault_outcomes
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig, SimulatedOperator
from sim.actions import Action
from sim.events import (
    ActionRecord,
    AlertRecord,
    DecisionRecord,
    Event,
    FaultCleared,
    IncidentRecord,
    SloWindow,
    StateChange,
)
from sim.faults import FaultKind, strike
from sim.twin import Twin

SLO = 0.999


def _setup(
    tick_s: float = 1.0, seed: int = 0, start_s: float = 0.0
) -> tuple[HealingEngine, Twin]:
    spec = RunSpec(scenario="calm", hosts=30, hours=1.0, seed=seed, tick_s=tick_s,
                   probe_interval_s=tick_s)
    twin = build_twin(spec)
    twin.advance(start_s)
    operator = SimulatedOperator(60.0, 1.0, twin.rng_for("fork", 11))
    engine = HealingEngine(twin, SafetyConfig(), operator)
    _run(engine, twin, 120.0)
    return engine, twin


def _run(engine: HealingEngine, twin: Twin, seconds: float) -> None:
    end = twin.now_s + seconds
    while twin.now_s < end - 1e-9:
        twin.advance(min(twin.config.tick_s, end - twin.now_s))
        engine.step()


def _actions(events: Sequence[Event], kind: str, phase: str = "succeeded") -> list[ActionRecord]:
    return [r for r in events if isinstance(r, ActionRecord) and r.kind == kind
            and r.phase == phase]


def _bad_windows(events: Sequence[Event], after_s: float = 0.0) -> list[SloWindow]:
    return [r for r in events if isinstance(r, SloWindow) and r.t_s > after_s
            and r.requests > 0 and r.good / r.requests < SLO]


def _only_fault(events: Sequence[Event]) -> tuple[int, float]:
    (outcome,) = fault_outcomes(events, slo_target=SLO)
    assert outcome.auto_recovered and not outcome.escalated and outcome.rca_rank == 1
    assert outcome.recovered_s is not None
    return outcome.fault_id, outcome.recovered_s


def test_service_crash_is_restarted() -> None:
    """A crashed process is restarted by the runbook and the incident resolves on its own."""
    engine, twin = _setup()
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    _run(engine, twin, 300.0)
    events = twin.events()
    fid, recovered_s = _only_fault(events)
    assert [r.target for r in _actions(events, "restart_instance")] == ["inst-5"]
    assert [r for r in events if isinstance(r, FaultCleared) and r.fault_id == fid
            and r.by == "restart"]
    assert recovered_s <= twin.now_s - 300.0 + 90.0
    assert "resolved" in [r.phase for r in events if isinstance(r, IncidentRecord)]


def test_memory_leak_is_restarted_before_the_oom_kill() -> None:
    """A leak is caught from its memory trend and restarted long before it is OOM-killed."""
    engine, twin = _setup(tick_s=5.0)
    strike(twin, FaultKind.MEMORY_LEAK, 5, twin.rng_for("script", 1))
    _run(engine, twin, 1800.0)
    events = twin.events()
    restarts = _actions(events, "restart_instance")
    assert [r.target for r in restarts] == ["inst-5"]
    assert [r for r in events if isinstance(r, FaultCleared) and r.by == "restart"]
    assert not [r for r in events if isinstance(r, StateChange) and r.target == "inst-5"
                and r.state == "down" and r.cause != "restart"]
    # The restart drops the requests in flight on one of ~45 instances: one window, mildly.
    bad = _bad_windows(events)
    assert len(bad) <= 1 and all(w.good / w.requests >= 0.99 for w in bad)


def test_vm_failure_is_migrated_with_no_loss_beyond_the_failure() -> None:
    """The dead VM is rebuilt elsewhere; once it is back no window misses the SLO."""
    engine, twin = _setup()
    strike(twin, FaultKind.VM_FAILURE, 5, twin.rng_for("script", 1))
    _run(engine, twin, 600.0)
    events = twin.events()
    _, recovered_s = _only_fault(events)
    assert [r.target for r in _actions(events, "cold_migrate")] == ["inst-5"]
    assert not _bad_windows(events, after_s=recovered_s + 60.0)
    assert not _actions(events, "restart_instance")


def test_network_partition_is_rerouted_before_the_switch_is_back() -> None:
    """The cut-off rack is failed over and the SLO holds again while its switch is down."""
    engine, twin = _setup()
    strike(twin, FaultKind.NETWORK_PARTITION, 1, twin.rng_for("script", 1))
    _run(engine, twin, 600.0)
    events = twin.events()
    _, recovered_s = _only_fault(events)
    (failover,) = _actions(events, "failover_rack")
    assert failover.target == "rack-1"
    repaired = _actions(events, "repair_switch")
    assert not repaired or repaired[0].t_s > recovered_s
    assert not _bad_windows(events, after_s=failover.t_s + 60.0)


def test_failed_over_rack_serves_again_once_its_switch_is_repaired() -> None:
    """After the switch repair the rack is failed back: its instances take traffic again."""
    engine, twin = _setup()
    strike(twin, FaultKind.NETWORK_PARTITION, 1, twin.rng_for("script", 1))
    _run(engine, twin, 2400.0)
    events = twin.events()
    (repaired,) = _actions(events, "repair_switch")
    (failback,) = _actions(events, "failback_rack")
    assert failback.target == "rack-1" and failback.t_s > repaired.t_s
    st = twin.state
    in_rack = st.inst_used & (twin.topo.host_rack[st.inst_host] == 1)
    assert in_rack.any() and st.inst_in_rotation[in_rack].all()
    assert (st.inst_rps[in_rack] > 0.0).all()
    assert not _bad_windows(events, after_s=failback.t_s)


def test_load_growth_is_scaled_out_before_the_slo_breaks() -> None:
    """A surge ramping for hours is met by scale-outs from its warning signs.

    Struck three hours before the daily peak, so surge and diurnal load add up (left alone,
    it takes the cluster down to a few percent of requests served). The incident opens on
    trend alerts, its first scale-out comes before any SLO miss, and over the four hours
    the cluster serves at least 99.9% of requests within the SLO (a 30-host twin misses in
    a few minutes of short load bursts even without a surge).
    """
    engine, twin = _setup(tick_s=5.0, start_s=11 * 3600.0)
    start_s = twin.now_s
    strike(twin, FaultKind.LOAD_SURGE, 1, twin.rng_for("script", 1))
    _run(engine, twin, 4 * 3600.0)
    events = twin.events()
    scale_outs = _actions(events, "scale_out", "started")
    bad = _bad_windows(events)
    assert scale_outs and (not bad or scale_outs[0].t_s < bad[0].t_s)
    opened = [r for r in events if isinstance(r, IncidentRecord) and r.phase == "opened"]
    assert opened and opened[0].root_cause == "cluster:load_surge"
    first_alerts = set(opened[0].alert_ids)
    assert {a.source for a in events if isinstance(a, AlertRecord)
            and a.alert_id in first_alerts} == {"trend"}
    windows = [w for w in events if isinstance(w, SloWindow) and w.t_s > start_s]
    assert sum(w.good for w in windows) / sum(w.requests for w in windows) >= SLO


def _sudden_surge() -> tuple[float, list[Event]]:
    """A sudden surge at 13:00 on the 30-host twin: requests lost over 10 minutes, and the log.

    The surge grows the load x1.83 in 60 s, enough to saturate the services most requests
    pass through.
    """
    engine, twin = _setup(start_s=13 * 3600.0)
    start_s = twin.now_s
    strike(twin, FaultKind.LOAD_SURGE, 0, twin.rng_for("script", 1))
    _run(engine, twin, 600.0)
    events = twin.events()
    windows = [w for w in events if isinstance(w, SloWindow) and w.t_s > start_s]
    return sum(w.requests - w.good for w in windows) / sum(w.requests for w in windows), events


def test_a_sudden_surge_sheds_load_until_its_scale_outs_land(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A surge too sudden for the scale-outs (90 s to boot) is bridged by shedding one step.

    The shed starts once a service saturates with its scale-out in flight, is not taken for
    an action that made things worse, stops once those scale-outs have landed, and loses
    far fewer requests than the queue that builds without it.
    """
    lost, events = _sudden_surge()
    decisions = [d for d in events if isinstance(d, DecisionRecord) and d.executed]
    sheds = [d for d in decisions if d.action == "shed_load"]
    assert len(sheds) == 1 and sheds[0].reason.startswith(BRIDGE)
    stops = [d for d in decisions if d.action == "stop_shedding"]
    assert len(stops) == 1 and not stops[0].reason.startswith("rollback")
    booting = [d.action_id for d in decisions if d.action == "scale_out"
               and d.t_s <= sheds[0].t_s]
    landed = [r for r in _actions(events, "scale_out") if r.action_id in booting]
    assert booting and len(landed) == len(booting)
    assert sheds[0].t_s < min(r.t_s for r in landed) <= max(r.t_s for r in landed) <= stops[0].t_s
    # The autoscaler reads the load the services would carry without the shed, so its next
    # steps start while the shed is on rather than once it stops and they saturate again.
    assert [d for d in decisions if d.action == "scale_out" and sheds[0].t_s < d.t_s < stops[0].t_s
            and d.reason.startswith("follow-up: autoscale")]

    monkeypatch.setattr(engine_module, "BRIDGE_UTIL", math.inf)
    lost_unbridged, events = _sudden_surge()
    assert not _actions(events, "shed_load")
    assert lost < 0.5 * lost_unbridged


def _surge_without_room(multiplier: float) -> tuple[list[Event], float]:
    """A sudden surge on the 30-host twin once every instance slot is used: no scale-out fits.

    Returns the log and the surge's onset.
    """
    engine, twin = _setup(start_s=13 * 3600.0)
    for _ in range(20):
        results = [twin.apply(Action("scale_out", f"svc-{name}"))
                   for name in twin.topo.service_names]
        twin.advance(100.0)
        if all(not r.accepted and r.reason.startswith("no free instance slot") for r in results):
            break
    else:
        pytest.fail("the twin never ran out of instance slots")
    _run(engine, twin, 300.0)
    start_s = twin.now_s
    twin.workload.surge(multiplier, start_s, 60.0, math.inf)
    _run(engine, twin, 900.0)
    return twin.events(), start_s


def test_a_surge_the_capacity_absorbs_is_not_shed_when_no_scale_out_fits() -> None:
    """Scale-outs refused for want of room, the SLO holding: the incident resolves, no shed.

    The runbook's last step sheds load; taken on a surge the cluster already serves, it
    would only turn requests away.
    """
    events, start_s = _surge_without_room(1.5)
    refused = [d for d in events if isinstance(d, DecisionRecord) and d.t_s > start_s
               and d.action == "scale_out" and d.verdict == "rejected"]
    assert refused
    assert not _actions(events, "shed_load", "started")
    surge = [r for r in events if isinstance(r, IncidentRecord) and r.t_s > start_s
             and r.root_cause == "cluster:load_surge"]
    assert surge and surge[-1].phase == "resolved"
    assert not _bad_windows(events, start_s)


def test_a_surge_that_only_nicks_the_slo_is_not_shed() -> None:
    """No room to scale out and the SLO missed by a fraction of a percent: no shed.

    Shedding one step turns away a fifth of the requests, far more than such a surge fails;
    the incident is neither shed nor escalated to a human for it.
    """
    events, start_s = _surge_without_room(2.6)
    windows = [w for w in events if isinstance(w, SloWindow) and w.t_s > start_s]
    assert _bad_windows(events, start_s)
    assert min(w.good / w.requests for w in windows) > 0.99
    assert not _actions(events, "shed_load", "started")
    assert not [r for r in events if isinstance(r, IncidentRecord) and r.phase == "escalated"]


def test_a_surge_too_big_for_the_capacity_is_shed_once_the_slo_shows_it() -> None:
    """Scale-outs refused for want of room and the SLO broken: the shed comes within minutes.

    Each refused scale-out step ends at the next SLO window that shows the SLO still
    broken, instead of waiting out its 300 s deadline for capacity that never started.
    """
    events, start_s = _surge_without_room(3.5)
    sheds = _actions(events, "shed_load", "started")
    bad = _bad_windows(events, start_s)
    assert bad and sheds
    assert bad[0].t_s <= sheds[0].t_s < bad[0].t_s + 180.0


def test_vulnerability_is_patched_by_a_rolling_roll_out() -> None:
    """A disclosed CVE is patched service-wide, one instance at a time, with no SLO miss."""
    engine, twin = _setup()
    strike(twin, FaultKind.SECURITY_VULNERABILITY, 2, twin.rng_for("script", 1))
    _run(engine, twin, 900.0)
    events = twin.events()
    fid, _ = _only_fault(events)
    patches = _actions(events, "rolling_patch")
    assert [r.target for r in patches] == [f"svc-{twin.topo.service_names[2]}"]
    assert [r for r in events if isinstance(r, FaultCleared) and r.fault_id == fid
            and r.by == "rolling_patch"]
    assert not _bad_windows(events)
