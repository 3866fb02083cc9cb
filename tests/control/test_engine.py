"""The healing engine end to end on small twins: it heals, and its safety switches hold."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from control.engine import HealingEngine, _request_share
from control.incidents import postmortem
from control.kpi import fault_outcomes
from control.run import RunSpec, build_twin
from control.runbooks import RUNBOOKS, Runbook, Step
from control.safety import SafetyConfig, SimulatedOperator
from sim.actions import ACTION_SPECS
from sim.events import (
    ActionRecord,
    AlertRecord,
    ApprovalRecord,
    ControlRecord,
    DecisionRecord,
    FaultRecord,
    IncidentRecord,
    StateChange,
)
from sim.faults import FaultKind, strike
from sim.twin import Twin


def _engine(safety: SafetyConfig, seed: int = 0) -> tuple[HealingEngine, Twin]:
    spec = RunSpec(scenario="calm", hosts=30, hours=1.0, seed=seed, safety=safety)
    twin = build_twin(spec)
    operator = SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 11))
    return HealingEngine(twin, safety, operator), twin


def _replicas(twin: Twin, service: str) -> list[int]:
    """The slots of ``service``'s instances."""
    svc = twin.topo.service_names.index(service)
    return [int(i) for i in np.flatnonzero(twin.state.inst_used & (twin.state.inst_service == svc))]


def _run(engine: HealingEngine, twin: Twin, seconds: int) -> None:
    for _ in range(seconds):
        twin.advance(1.0)
        engine.step()


def _crash(twin: Twin, slots: list[int]) -> None:
    for i in slots:
        strike(twin, FaultKind.SERVICE_CRASH, i, twin.rng_for("script", i))


def _assert_each_restarted_once(twin: Twin, slots: list[int]) -> list[object]:
    """Each of ``slots`` was restarted exactly once, serves again and its fault healed."""
    events = twin.events()
    started = sorted(r.target for r in events if isinstance(r, ActionRecord)
                     and r.kind == "restart_instance" and r.phase == "started")
    assert started == sorted(f"inst-{i}" for i in slots)
    assert twin.state.inst_ready[slots].all()
    assert all(o.auto_recovered for o in fault_outcomes(events))
    return list(events)


def test_a_crashed_instance_is_detected_restarted_and_the_incident_resolved() -> None:
    """A crash is alerted within seconds, restarted by the runbook, and the incident resolves."""
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 120)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    _run(engine, twin, 300)
    events = twin.events()
    restarts = [r for r in events if isinstance(r, ActionRecord) and r.kind == "restart_instance"
                and r.target == "inst-5" and r.phase == "succeeded"]
    phases = [r.phase for r in events if isinstance(r, IncidentRecord)]
    ups = [r for r in events if isinstance(r, StateChange) and r.target == "inst-5"
           and r.state == "up"]
    assert restarts and ups and "resolved" in phases


def test_dry_run_takes_no_action_but_logs_every_decision() -> None:
    """With dry_run the engine decides (logged as dry_run decisions) and never acts."""
    engine, twin = _engine(SafetyConfig(dry_run=True))
    _run(engine, twin, 60)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    _run(engine, twin, 300)
    events = twin.events()
    started = [r for r in events if isinstance(r, ActionRecord) and r.phase == "started"]
    dry = [r for r in events if isinstance(r, DecisionRecord) and r.verdict == "dry_run"]
    assert not started
    assert dry and all(not d.executed for d in dry)
    assert any(d.action == "restart_instance" and d.target == "inst-5" for d in dry)


def test_emergency_stop_halts_every_action_within_one_step() -> None:
    """After an emergency stop no action starts, though incidents keep being opened."""
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 60)
    engine.emergency_stop("test")
    stop_seq = twin.log.next_seq
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    strike(twin, FaultKind.BAD_CONFIG, 1, twin.rng_for("script", 2))
    _run(engine, twin, 300)
    after = twin.events(stop_seq)
    assert not [r for r in after if isinstance(r, ActionRecord) and r.phase == "started"]
    assert [r for r in after if isinstance(r, IncidentRecord) and r.phase == "opened"]
    blocked = [r for r in after if isinstance(r, DecisionRecord) and r.verdict == "blocked"]
    assert blocked and all("emergency" in d.reason.lower() for d in blocked)
    engine.resume()
    _run(engine, twin, 400)
    assert [r for r in twin.events(stop_seq)
            if isinstance(r, ActionRecord) and r.phase == "started"]


def _harmful_runbook(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make bad_config's remedy shed load: it turns requests away, so the SLO gets worse."""
    monkeypatch.setitem(RUNBOOKS, FaultKind.BAD_CONFIG.value, Runbook(
        FaultKind.BAD_CONFIG.value,
        (Step((("shed_load", lambda component, obs: ["cluster"]),), deadline_s=600.0),),
    ))


@pytest.mark.parametrize("enabled", [True, False])
def test_an_action_that_makes_things_worse_is_rolled_back_when_enabled(
    monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    """Shedding load against a bad deploy lowers the good share: undone iff rollback is on."""
    _harmful_runbook(monkeypatch)
    engine, twin = _engine(SafetyConfig(rollback_enabled=enabled, cooldown_s=0.0))
    _run(engine, twin, 120)
    strike(twin, FaultKind.BAD_CONFIG, 1, twin.rng_for("script", 2))
    _run(engine, twin, 240)
    events = twin.events()
    shed = [r for r in events if isinstance(r, ActionRecord) and r.kind == "shed_load"
            and r.phase == "succeeded"]
    undone = [r for r in events if isinstance(r, DecisionRecord) and r.action == "stop_shedding"
              and r.reason.startswith("rollback of shed_load") and r.executed]
    assert shed
    assert bool(undone) == enabled


def test_postmortem_facts_match_the_event_log() -> None:
    """A crash's post-mortem names the true cause, its times and every action, as logged."""
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 120)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    _run(engine, twin, 300)
    events = twin.events()
    (fault,) = [r for r in events if isinstance(r, FaultRecord)]
    (incident_id,) = {r.incident_id for r in events if isinstance(r, IncidentRecord)}
    life = [r for r in events if isinstance(r, IncidentRecord)]
    first_alert = min(r.t_s for r in events if isinstance(r, AlertRecord))
    resolved = next(r for r in life if r.phase == "resolved")
    text = postmortem(events, incident_id)
    assert f"`{fault.kind}` on `{fault.target}`" in text
    assert "Ground truth: `inst-5:service_crash` — the diagnosis was right." in text
    assert f"Time to detect: {first_alert - fault.t_s:.1f} s." in text
    assert f"Time to restore (onset to resolution): {resolved.t_s - fault.t_s:.1f} s" in text
    executed = [r for r in events if isinstance(r, DecisionRecord) and r.executed]
    assert executed and all(f"| {d.action} | {d.target} | allowed | succeeded |" in text
                            for d in executed)
    timeline = text.split("## Timeline", 1)[1].split("## Root cause", 1)[0]
    assert timeline.count("incident opened") == 1 and timeline.count("incident resolved") == 1
    assert timeline.index("incident opened") < timeline.index("action restart_instance on "
                                                             "inst-5 started")


def test_alerts_after_their_group_s_incident_resolved_open_a_new_incident() -> None:
    """A crash right after the previous one on the same instance is healed too.

    The second crash's alert joins the correlation group of the first (its window is still
    open) after that group's incident resolved; it must get an incident of its own and be
    restarted, not be dropped.
    """
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 120)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    for _ in range(600):
        _run(engine, twin, 1)
        if any(isinstance(r, IncidentRecord) and r.phase == "resolved" for r in twin.events()):
            break
    first = [r for r in twin.events() if isinstance(r, IncidentRecord)]
    assert [r.phase for r in first][-1] == "resolved"
    second_at = twin.now_s
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 2))
    _run(engine, twin, 300)
    events = twin.events()
    alert = next(r for r in events if isinstance(r, AlertRecord) and r.target == "inst-5"
                 and r.t_s >= second_at)
    assert alert.t_s - second_at < 60
    holding = [r for r in events if isinstance(r, IncidentRecord)
               and alert.alert_id in r.alert_ids]
    assert holding and holding[0].incident_id != first[0].incident_id
    assert any(r.phase == "resolved" for r in holding)
    restarts = [r for r in events if isinstance(r, ActionRecord) and r.kind == "restart_instance"
                and r.target == "inst-5" and r.phase == "succeeded" and r.t_s > second_at]
    assert restarts


def test_a_second_advisory_on_a_patched_service_is_alerted_and_patched() -> None:
    """The twin records the patch, so the next CVE on the same service alerts again."""
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 60)
    for n in range(2):
        start = twin.now_s
        strike(twin, FaultKind.SECURITY_VULNERABILITY, 0, twin.rng_for("script", n))
        _run(engine, twin, 900)
        target = next(r.target for r in twin.events() if isinstance(r, FaultRecord)
                      and r.t_s >= start)
        alerts = [r for r in twin.events() if isinstance(r, AlertRecord)
                  and r.target == target and r.t_s >= start and "vulnerable" in r.evidence]
        patched = [r for r in twin.events() if isinstance(r, StateChange)
                   and r.target == target and r.state == "patched" and r.t_s >= start]
        assert len(alerts) == 1 and alerts[0].t_s - start < 5, n
        assert len(patched) == 1, n


def test_a_host_drained_for_a_fan_or_a_disk_is_uncordoned_once_repaired() -> None:
    """Fan and disk faults: drain first, repair on the drained host, then uncordon it.

    The drain restores service within minutes (the load is off the faulty host), long before
    the 15-minute fan swap or the 30-minute disk swap ends; after each repair the host takes
    instances again instead of staying out of the scheduler's pool for good.
    """
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 60)
    fan = strike(twin, FaultKind.FAN_FAILURE, 3, twin.rng_for("script", 1))
    disk = strike(twin, FaultKind.DISK_DEGRADATION, 7, twin.rng_for("script", 2))
    _run(engine, twin, 3000)
    events = twin.events()

    def done(kind: str, target: str) -> list[float]:
        return [r.t_s for r in events if isinstance(r, ActionRecord) and r.kind == kind
                and r.target == target and r.phase == "succeeded"]

    for host, repair in (("host-3", "replace_fan"), ("host-7", "replace_disk")):
        (drained,) = done("drain_host", host)
        (repaired,) = done(repair, host)
        (uncordoned,) = done("uncordon_host", host)
        assert drained < repaired < uncordoned
    assert twin.state.host_schedulable.all()
    outcomes = {o.fault_id: o for o in fault_outcomes(events)}
    for fid, swap_s in ((fan, 900.0), (disk, 1800.0)):
        o = outcomes[fid]
        assert o.auto_recovered and o.recovered_s is not None and o.detected_s is not None
        # Restored by the drain, well before the swap could have ended.
        assert o.recovered_s - o.detected_s < swap_s / 2


def test_a_failed_step_moves_to_the_next_step_without_waiting_for_its_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A link repair that fails is retried when its failure is known, not at the deadline."""
    monkeypatch.setitem(ACTION_SPECS, "repair_link",
                        dataclasses.replace(ACTION_SPECS["repair_link"], success_prob=0.0))
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 60)
    strike(twin, FaultKind.LINK_DEGRADATION, 4, twin.rng_for("script", 1))
    _run(engine, twin, 900)
    repairs = [r for r in twin.events() if isinstance(r, ActionRecord)
               and r.kind == "repair_link" and r.phase in ("started", "failed")]
    assert [r.phase for r in repairs[:3]] == ["started", "failed", "started"]
    first_failed, second_started = repairs[1].t_s, repairs[2].t_s
    assert second_started - repairs[0].t_s < RUNBOOKS["link_degradation"].steps[0].deadline_s
    assert second_started - first_failed <= 2.0


def test_a_leak_on_a_two_replica_service_gets_surge_capacity_before_its_restart() -> None:
    """Restarting one of the cache's two replicas breaks the 25% blast-radius limit.

    The engine scales the cache out (each scale-out through the gate) until one replica is
    at most a quarter of it, restarts the leaking one before its OOM kill, resolves the
    incident without a human, and scales the surge replicas back in.
    """
    engine, twin = _engine(SafetyConfig())
    members = _replicas(twin, "cache")
    assert len(members) == 2
    _run(engine, twin, 60)
    leak = strike(twin, FaultKind.MEMORY_LEAK, members[0], twin.rng_for("script", 1))
    _run(engine, twin, 2400)
    events = twin.events()
    decisions = [r for r in events if isinstance(r, DecisionRecord) and r.executed]
    surge = [d for d in decisions if d.action == "scale_out" and d.target == "svc-cache"]
    assert len(surge) == 2 and all(d.reason.startswith("surge capacity") for d in surge)
    restart = [d for d in decisions if d.action == "restart_instance"
               and d.target == f"inst-{members[0]}"]
    assert restart and restart[0].t_s > surge[-1].t_s
    shrink = [d for d in decisions if d.action == "scale_in" and d.target == "svc-cache"]
    assert len(shrink) == 2 and shrink[0].t_s > restart[0].t_s
    phases = [r.phase for r in events if isinstance(r, IncidentRecord)]
    assert "escalated" not in phases
    assert not [r for r in events if isinstance(r, StateChange) and r.cause == "oom_kill"]
    outcome = next(o for o in fault_outcomes(events) if o.fault_id == leak)
    assert outcome.auto_recovered
    assert len(_replicas(twin, "cache")) == 2


def test_replicas_that_crash_together_are_each_restarted() -> None:
    """Both cache replicas crash at once: one incident per replica, both restarted.

    Their alerts correlate into one incident whose diagnoses tie; before, its runbook
    restarted one replica and the incident resolved with the other still down.
    """
    engine, twin = _engine(SafetyConfig())
    members = _replicas(twin, "cache")
    _run(engine, twin, 60)
    faults = [strike(twin, FaultKind.SERVICE_CRASH, i, twin.rng_for("script", i))
              for i in members]
    _run(engine, twin, 600)
    events = twin.events()
    restarted = {r.target for r in events if isinstance(r, ActionRecord)
                 and r.kind == "restart_instance" and r.phase == "succeeded"}
    assert restarted == {f"inst-{i}" for i in members}
    assert twin.state.inst_ready[members].all()
    resolved = {r.incident_id for r in events
                if isinstance(r, IncidentRecord) and r.phase == "resolved"}
    assert len(resolved) == 2
    outcomes = {o.fault_id: o for o in fault_outcomes(events)}
    for fid in faults:
        assert outcomes[fid].auto_recovered and outcomes[fid].rca_rank == 1
    assert len({outcomes[fid].incident_id for fid in faults}) == 2


def test_every_replica_of_a_service_down_at_once_is_restarted() -> None:
    """All four database replicas crash together: all four are restarted.

    The probes raise service-level alerts and the diagnosis ties the four replicas; the
    runbook acts on every replica of the tie, not on the first alone.
    """
    engine, twin = _engine(SafetyConfig())
    members = _replicas(twin, "database")
    assert len(members) == 4
    _run(engine, twin, 60)
    _crash(twin, members)
    _run(engine, twin, 600)
    _assert_each_restarted_once(twin, members)


def test_surge_capacity_the_plant_refuses_is_asked_for_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plant that refuses the surge capacity is asked a few times, not every second.

    With no host room for another cache replica, the engine stops after a few refused
    scale-outs while the restart waits (without the cap: 510 refusals in 20 minutes).
    """
    engine, twin = _engine(SafetyConfig())
    members = _replicas(twin, "cache")
    monkeypatch.setattr(type(twin), "scale_out_host", lambda self, service: -1)
    _run(engine, twin, 60)
    strike(twin, FaultKind.MEMORY_LEAK, members[0], twin.rng_for("script", 1))
    _run(engine, twin, 1200)
    asked = [r for r in twin.events() if isinstance(r, DecisionRecord)
             and r.action == "scale_out" and r.target == "svc-cache"]
    assert asked and all(r.verdict == "rejected" for r in asked)
    assert len(asked) <= 8


def test_a_restarted_engine_takes_over_open_incidents_and_keeps_the_gates_book() -> None:
    """A second engine on the same plant (a controller restart) picks up where the log says.

    The first engine opens an incident for a crash and starts a restart, then goes away. The
    second one takes that incident over at its runbook step (logged), counts the restart
    still running against its gate (no second restart of the same instance), resolves the
    incident once the restart has brought the instance back, numbers its own incidents
    after it, and heals the next crash under incident id 1. Nothing is escalated.
    """
    safety = SafetyConfig()
    first, twin = _engine(safety)
    _run(first, twin, 60)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    _run(first, twin, 3)
    assert [i.phase for i in first.incidents.values()] == ["mitigating"]
    running = [f for f in first.gate.in_flight() if f.action.target == "inst-5"]
    assert running
    second = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 12)))
    assert [f.action_id for f in second.gate.in_flight()] == [f.action_id for f in running]
    verdict = second.gate.check(running[0].action, twin.observe(), twin.now_s)
    assert verdict.kind == "blocked"
    taken = [r for r in twin.events() if isinstance(r, IncidentRecord) and r.incident_id == 0]
    assert taken[-1].phase == "mitigating"
    assert taken[-1].note == "controller restarted: incident taken over at runbook step 1"
    assert second.incidents[0].step_action_ids == [running[0].action_id]
    _run(second, twin, 300)
    events = twin.events()
    assert [r.phase for r in events if isinstance(r, IncidentRecord)
            and r.incident_id == 0][-1] == "resolved"
    assert [r.action_id for r in events if isinstance(r, ActionRecord)
            and r.phase == "started" and r.target == "inst-5"] == [running[0].action_id]
    assert all(o.auto_recovered and not o.escalated for o in fault_outcomes(events))
    strike(twin, FaultKind.SERVICE_CRASH, 7, twin.rng_for("script", 2))
    _run(second, twin, 300)
    later = [r for r in twin.events() if isinstance(r, IncidentRecord) and r.incident_id != 0]
    assert {r.incident_id for r in later} == {1}
    assert later[0].root_cause == "inst-7:service_crash" and later[-1].phase == "resolved"
    assert "taken over" in postmortem(twin.events(), 0)
    # A third engine finds nothing open and no stop: it neither takes over nor blocks.
    n = twin.log.next_seq
    third = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 13)))
    assert not third.gate.stopped and not third.incidents and twin.log.next_seq == n
    assert not any(isinstance(r, IncidentRecord) and r.phase == "escalated"
                   for r in twin.events())


def test_a_restarted_engine_asks_again_for_an_approval_that_was_pending() -> None:
    """The step waited for a human when the controller died: the new one runs it again.

    The approval request died with the process (only the log survives), so the step, which
    ran none of its actions, is run again: a new request, then the restart once approved.
    """
    safety = SafetyConfig(human_approval_required=True)
    first, twin = _engine(safety)
    _run(first, twin, 60)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    _run(first, twin, 3)
    assert not first.gate.in_flight()
    second = HealingEngine(twin, safety, SimulatedOperator(5.0, 1.0, twin.rng_for("fork", 12)))
    assert second.incidents[0].step == 0
    _run(second, twin, 200)
    events = twin.events()
    asked = [r for r in events if isinstance(r, ApprovalRecord) and r.phase == "requested"]
    assert len(asked) == 2
    assert [r.phase for r in events if isinstance(r, ActionRecord) and r.target == "inst-5"] == [
        "started", "succeeded"]
    assert [r.phase for r in events if isinstance(r, IncidentRecord)][-1] == "resolved"


def test_a_restarted_engine_fails_a_rack_back_after_the_repair_its_predecessor_started() -> None:
    """A rack failed over by a predecessor is failed back once its switch is repaired.

    The partition's incident resolved on the failover; the switch repair ran on as a
    follow-up when the controller restarted. The new engine reads the failed-over rack and
    the running repair from the log, and fails the rack back once the repair ends (before,
    the rack stayed out of rotation for good).
    """
    safety = SafetyConfig()
    first, twin = _engine(safety)
    _run(first, twin, 60)
    strike(twin, FaultKind.NETWORK_PARTITION, 1, twin.rng_for("script", 1))
    for _ in range(900):
        _run(first, twin, 1)
        if any(isinstance(r, ActionRecord) and r.kind == "repair_switch" and r.phase == "started"
               for r in twin.events()):
            break
    assert [i.phase for i in first.incidents.values()] == ["resolved"]
    second = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 12)))
    _run(second, twin, 900)
    events = twin.events()
    (repaired,) = [r for r in events if isinstance(r, ActionRecord)
                   and r.kind == "repair_switch" and r.phase == "succeeded"]
    (failback,) = [r for r in events if isinstance(r, ActionRecord)
                   and r.kind == "failback_rack" and r.phase == "succeeded"]
    assert failback.target == "rack-1" and failback.t_s > repaired.t_s
    st = twin.state
    in_rack = st.inst_used & (twin.topo.host_rack[st.inst_host] == 1)
    assert in_rack.any() and st.inst_in_rotation[in_rack].all()


def test_a_restarted_engine_keeps_a_step_the_plant_refused_as_refused() -> None:
    """A step whose action the plant refused moves on after a restart; it is not rerun.

    Seen with the engine replaced every 97 s: a surge diagnosed as a bad deploy had its
    rollback refused (the service ran its last good configuration); each new engine
    counted the step as one that ran nothing and ran it again, so the incident never
    reached its runner-up diagnosis.
    """
    safety = SafetyConfig()
    _, twin = _engine(safety)
    _run(HealingEngine(twin, safety), twin, 60)
    log, t = twin.log, twin.now_s
    cands = (("svc-api:bad_config", 0.6), ("cluster:load_surge", 0.3))
    for phase, note in (("opened", ""), ("mitigating", "runbook step 1")):
        log.add(IncidentRecord(log.next_seq, t, 9, phase, "P2", "svc-api:bad_config", (),
                               cands, note))
    log.add(DecisionRecord(log.next_seq, t, 9, "config_rollback", "svc-api", "rejected",
                           "svc-api already runs its last good configuration", False))
    engine = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 12)))
    assert engine.incidents[9].step == 1 and engine.incidents[9].step_refused == 1
    _run(engine, twin, 150)
    notes = [r.note for r in twin.events() if isinstance(r, IncidentRecord) and r.incident_id == 9]
    assert "runbook step 2" in notes
    assert notes.count("runbook step 1") == 1


def test_a_restarted_engine_escalates_an_open_incident_it_has_no_runbook_for() -> None:
    """An open incident whose logged diagnosis no runbook covers goes to a human."""
    safety = SafetyConfig()
    _, twin = _engine(safety)
    twin.log.add(IncidentRecord(twin.log.next_seq, twin.now_s, 4, "opened", "P3",
                                "inst-5:unheard_of", (), (("inst-5:unheard_of", 0.9),)))
    engine = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 12)))
    last = [r for r in twin.events() if isinstance(r, IncidentRecord)][-1]
    assert last.incident_id == 4 and last.phase == "escalated" and "no runbook" in last.note
    assert not engine.incidents
    strike(twin, FaultKind.SERVICE_CRASH, 7, twin.rng_for("script", 2))
    _run(engine, twin, 120)
    assert {r.incident_id for r in twin.events() if isinstance(r, IncidentRecord)} == {4, 5}


def test_an_emergency_stop_survives_a_restart_until_it_is_lifted() -> None:
    """The stop is in the log; engines started on it stay stopped until someone resumes."""
    safety = SafetyConfig()
    engine, twin = _engine(safety)
    _run(engine, twin, 30)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    engine.emergency_stop("maintenance window")
    _run(engine, twin, 5)
    restarted = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 12)))
    assert restarted.gate.stopped
    _run(restarted, twin, 60)
    started = [r for r in twin.events() if isinstance(r, ActionRecord) and r.phase == "started"]
    assert not started
    restarted.resume()
    again = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 13)))
    assert not again.gate.stopped
    commands = [(r.command, r.reason) for r in twin.events() if isinstance(r, ControlRecord)]
    assert commands == [("emergency_stop", "maintenance window"), ("resume", "")]
    _run(again, twin, 200)
    assert any(isinstance(r, ActionRecord) and r.kind == "restart_instance"
               and r.target == "inst-5" and r.phase == "succeeded" for r in twin.events())
    opened = next(r.incident_id for r in twin.events() if isinstance(r, IncidentRecord))
    assert "operator: emergency stop (maintenance window)" in postmortem(twin.events(), opened)


def test_resume_runs_again_the_step_the_stop_interrupted() -> None:
    """A restart blocked by the stop is issued right after resume, not at the step deadline."""
    engine, twin = _engine(SafetyConfig())
    _run(engine, twin, 30)
    engine.emergency_stop("drill")
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    _run(engine, twin, 20)
    assert not [r for r in twin.events() if isinstance(r, ActionRecord)]
    resumed_at = twin.now_s
    engine.resume()
    _run(engine, twin, 10)
    started = [r for r in twin.events() if isinstance(r, ActionRecord) and r.phase == "started"
               and r.kind == "restart_instance" and r.target == "inst-5"]
    assert started and started[0].t_s - resumed_at <= 2.0
    assert len({r.incident_id for r in twin.events() if isinstance(r, IncidentRecord)}) == 1


def test_a_replica_whose_crash_is_seen_later_shares_the_restart_already_running() -> None:
    """Three database replicas crash, the fourth two seconds later: each restarted once.

    The fourth crash opens an incident of its own while the first incident restarts all
    four; its runbook step takes that running restart as its own (a ``shared`` decision)
    instead of restarting the replica again once its cooldown passes, and both resolve.
    """
    engine, twin = _engine(SafetyConfig())
    members = _replicas(twin, "database")
    _run(engine, twin, 60)
    for i in members[:3]:
        strike(twin, FaultKind.SERVICE_CRASH, i, twin.rng_for("script", i))
    _run(engine, twin, 2)
    strike(twin, FaultKind.SERVICE_CRASH, members[3], twin.rng_for("script", members[3]))
    _run(engine, twin, 600)
    events = twin.events()
    started = sorted(r.target for r in events if isinstance(r, ActionRecord)
                     and r.kind == "restart_instance" and r.phase == "started")
    assert started == sorted(f"inst-{i}" for i in members)
    (shared,) = [r for r in events if isinstance(r, DecisionRecord) and r.verdict == "shared"]
    assert shared.target == f"inst-{members[3]}" and not shared.executed
    owner = next(r for r in events if isinstance(r, DecisionRecord) and r.executed
                 and r.action_id == shared.action_id)
    assert owner.incident_id != shared.incident_id and owner.target == shared.target
    phases = {r.incident_id: r.phase for r in events if isinstance(r, IncidentRecord)}
    assert phases == {owner.incident_id: "resolved", shared.incident_id: "resolved"}
    report = postmortem(events, shared.incident_id)
    assert f"| restart_instance | inst-{members[3]} | shared | succeeded |" in report


@pytest.mark.parametrize("gap_s", [1, 3, 10])
def test_replicas_that_crash_during_a_restart_are_restarted_too(gap_s: int) -> None:
    """Two database replicas crash, then the other two once the first restart runs.

    The later alerts correlate into the incident restarting the first replicas; they name
    replicas that nothing heals and leave it for an incident of their own, rather than
    being taken by an incident that resolves once its own replicas serve again.
    """
    engine, twin = _engine(SafetyConfig())
    members = _replicas(twin, "database")
    _run(engine, twin, 60)
    _crash(twin, members[:2])
    for _ in range(120):
        _run(engine, twin, 1)
        if any(isinstance(r, ActionRecord) and r.phase == "started" for r in twin.events()):
            break
    _run(engine, twin, gap_s)
    _crash(twin, members[2:])
    _run(engine, twin, 600)
    events = _assert_each_restarted_once(twin, members)
    phases = {r.incident_id: r.phase for r in events if isinstance(r, IncidentRecord)}
    assert set(phases.values()) == {"resolved"}


def _restarted_then(engine: HealingEngine, twin: Twin, slot: int, after_s: int) -> float:
    """Step until ``slot``'s restart has brought it back, ``after_s`` more, crash it; the time."""
    for _ in range(300):
        _run(engine, twin, 1)
        if twin.state.inst_ready[slot] and any(
                isinstance(r, ActionRecord) and r.phase == "succeeded"
                and r.target == f"inst-{slot}" for r in twin.events()):
            break
    _run(engine, twin, after_s)
    _crash(twin, [slot])
    return twin.now_s


@pytest.mark.parametrize("after_s", [1, 25])
def test_a_replica_crashing_again_while_its_restart_is_verified_is_restarted_again(
    after_s: int,
) -> None:
    """The first relapse runs the step again as soon as the cooldown allows.

    Before, the incident waited out the restart step's 120 s deadline and then cold-migrated
    the replica (up 184-208 s after the second crash, against 94-118 s now); on the live
    fleet, where migration is refused, the replica stayed down.
    """
    engine, twin = _engine(SafetyConfig())
    k = _replicas(twin, "api")[0]
    _run(engine, twin, 60)
    _crash(twin, [k])
    again = _restarted_then(engine, twin, k, after_s)
    _run(engine, twin, 400)
    events = twin.events()
    starts = [r for r in events if isinstance(r, ActionRecord) and r.phase == "started"
              and r.target == f"inst-{k}"]
    assert [r.kind for r in starts] == ["restart_instance", "restart_instance"]
    assert starts[1].t_s - starts[0].t_s <= SafetyConfig().cooldown_s + 1.0
    notes = [r.note for r in events if isinstance(r, IncidentRecord) and "down again" in r.note]
    assert notes == [f"inst-{k} down again while step 1 was verified; the step runs again"]
    assert twin.state.inst_ready[k]
    ups = [r.t_s for r in events if isinstance(r, StateChange) and r.target == f"inst-{k}"
           and r.state == "up" and r.t_s > again]
    assert ups and ups[0] - again <= 120.0
    assert {r.incident_id: r.phase for r in events if isinstance(r, IncidentRecord)} == {
        0: "resolved"}


def test_a_replica_that_keeps_crashing_after_its_restarts_gets_the_next_step() -> None:
    """A second relapse moves on: the restart does not hold, so the replica is rebuilt."""
    engine, twin = _engine(SafetyConfig())
    k = _replicas(twin, "api")[0]
    _run(engine, twin, 60)
    _crash(twin, [k])
    _restarted_then(engine, twin, k, 2)
    for _ in range(300):  # the rerun restart
        _run(engine, twin, 1)
        if twin.state.inst_ready[k]:
            break
    _run(engine, twin, 2)
    _crash(twin, [k])
    _run(engine, twin, 600)
    events = twin.events()
    kinds = [r.kind for r in events if isinstance(r, ActionRecord) and r.phase == "started"
             and r.target == f"inst-{k}"]
    assert kinds == ["restart_instance", "restart_instance", "cold_migrate"]
    notes = [r.note.rsplit("; ", 1)[1] for r in events
             if isinstance(r, IncidentRecord) and "down again" in r.note]
    assert notes == ["the step runs again", "the next step starts"]
    assert twin.state.inst_ready[k]


def test_request_share_reads_each_service_s_share_of_requests_from_its_request_rate() -> None:
    """The share of requests through each service, as the bridging shed weighs saturation.

    Read from request rates alone, it matches the twin's visit ratios (the gateway takes
    every request, auth a quarter).
    """
    _, twin = _engine(SafetyConfig())
    twin.advance(300.0)
    share = _request_share(twin.observe())
    assert np.allclose(share, np.minimum(twin.topo.visit_ratio, 1.0), atol=0.03)
