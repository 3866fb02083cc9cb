"""The live fleet healed by the unchanged rule-based engine; dry run; stop; blast radius."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from control.engine import CONFIDENT, EVIDENCE_WAIT_S
from control.incidents import postmortem
from control.kpi import fault_outcomes
from live.chaos import inject
from live.controller import (
    EncodedPolicy,
    PolicyController,
    control_loop,
    live_engine,
    live_safety,
)
from live.loadgen import run_load
from live.plant import LivePlant
from live.procs import alive
from live.runtime import Runtime
from sim.actions import Action
from sim.events import ActionRecord, DecisionRecord, FaultCleared, IncidentRecord
from sim.telemetry import Observation

Factory = Callable[..., LivePlant]


def _run_until(plant: LivePlant, ctrl: object, cond: Callable[[], bool], limit_s: float) -> None:
    """Step the loop until ``cond`` holds or ``limit_s`` passes.

    The limit only bounds a broken run: timings a test cares about are asserted from the log,
    so a slow, loaded machine takes longer here without failing the test.
    """
    end = time.monotonic() + limit_s
    while time.monotonic() < end and not cond():
        plant.advance(0.1)
        ctrl.step()  # type: ignore[attr-defined]


def test_engine_heals_a_crash_under_load(fleet_factory: Factory) -> None:
    """A killed replica is detected within 1 s and restarted; KPIs come from the live log."""
    plant = fleet_factory(3)
    engine = live_engine(plant, actuate=True)
    control_loop(plant, engine, 0.5, 0.1)
    old = plant.pids()["inst-1"]
    rec = inject(plant, "service_crash", "inst-1")
    _run_until(plant, engine, lambda: any(isinstance(r, FaultCleared)
                                          for r in plant.log.since(rec.seq)), 30.0)
    control_loop(plant, engine, 1.5, 0.1)
    new = plant.pids()["inst-1"]
    assert new != old and alive(new)
    (out,) = fault_outcomes(plant.log.since(0), hold_s=0.5, deadline_s=30.0)
    assert out.detected_s is not None and out.detected_s - out.t0_s <= 1.0
    assert out.recovered_s is not None and out.auto_recovered
    assert run_load(plant.lb_url + "/", 40.0, 1.0).success == 1.0


@pytest.mark.parametrize("kind", ["slow_response", "error_responses", "service_hang"])
def test_one_replica_slow_or_failing_alone_is_diagnosed_and_restarted(
    fleet_factory: Factory, kind: str
) -> None:
    """One replica 1.5 s late, failing half its requests, or hung; the others fine: restarted.

    The fleet reports no host sensors, so the RCA names that replica and its symptom (top-1
    right; a hung process still holds memory, which tells it from a crash), and the
    runbook's restart (after a surge replica where the blast radius asks for one) clears
    it; the incident resolves and the SLO holds again.
    """
    plant = fleet_factory(3)
    engine = live_engine(plant, actuate=True)
    control_loop(plant, engine, 0.5, 0.1)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            run_load(plant.lb_url + "/", 30.0, 0.5)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        rec = inject(plant, kind, "inst-1")
        _run_until(plant, engine, lambda: any(
            isinstance(r, IncidentRecord) and r.phase == "resolved"
            for r in plant.log.since(rec.seq)), 60.0)
        control_loop(plant, engine, 1.5, 0.1)
    finally:
        stop.set()
        loader.join(timeout=10)
    events = plant.log.since(rec.seq)
    assert any(isinstance(r, FaultCleared) and r.fault_id == rec.fault_id for r in events)
    restarts = [r for r in events if isinstance(r, ActionRecord)
                and r.kind == "restart_instance" and r.phase == "succeeded"]
    assert [r.target for r in restarts] == ["inst-1"]
    (out,) = fault_outcomes(plant.log.since(0), hold_s=0.5, deadline_s=30.0)
    assert out.rca_rank == 1 and out.auto_recovered


def test_a_bad_deploy_is_rolled_back_at_once(fleet_factory: Factory) -> None:
    """A configuration every replica rejects: diagnosed from readiness, rolled back, no wait.

    Every replica answers its probes but none is ready. The RCA names the service's
    configuration with the confidence to act, so the rollback starts as soon as the alert is
    raised instead of after the engine's evidence wait (3 s) for a low-confidence diagnosis;
    the replicas keep their processes.
    """
    plant = fleet_factory(3)
    engine = live_engine(plant, actuate=True)
    control_loop(plant, engine, 0.5, 0.1)
    pids = plant.pids()
    rec = inject(plant, "bad_config", "svc-api")
    _run_until(plant, engine, lambda: any(
        isinstance(r, IncidentRecord) and r.phase == "resolved"
        for r in plant.log.since(rec.seq)), 30.0)
    control_loop(plant, engine, 1.5, 0.1)
    events = plant.log.since(rec.seq)
    opened = next(r for r in events if isinstance(r, IncidentRecord) and r.phase == "opened")
    assert opened.root_cause == "svc-api:bad_config" and opened.candidates[0][1] >= CONFIDENT
    rollback = next(r for r in events if isinstance(r, ActionRecord)
                    and r.kind == "config_rollback" and r.phase == "started")
    assert rollback.t_s - opened.t_s < EVIDENCE_WAIT_S / 2
    assert [r.kind for r in events if isinstance(r, ActionRecord) and r.phase == "started"] \
        == ["config_rollback"]
    assert any(isinstance(r, FaultCleared) and r.fault_id == rec.fault_id for r in events)
    (out,) = fault_outcomes(plant.log.since(0), hold_s=0.5, deadline_s=30.0)
    assert out.rca_rank == 1 and out.auto_recovered
    assert plant.pids() == pids and plant.observe().inst_ready[:3].all()


def test_a_bad_deploy_while_one_replica_stalls_is_one_rollback(fleet_factory: Factory) -> None:
    """A bad deploy seen first by some replicas while another does not answer for a moment.

    A loaded machine can leave one replica's probes unanswered for a few ticks just as the
    others reject the deploy (reproduced here by stopping that replica for 0.35 s). The
    replicas that answer yet fail readiness have not crashed: each incident their alerts
    open names the service's configuration, and one rollback serves them all. Where the
    stalled replica's probe alert opens an incident of its own (a hang, when its probe
    times out in the tick the others fail readiness), that incident resolves without an
    action once the replica answers again: no replica is restarted.
    """
    plant = fleet_factory(3)
    engine = live_engine(plant, actuate=True)
    control_loop(plant, engine, 0.5, 0.1)
    pids = plant.pids()
    os.kill(pids["inst-0"], signal.SIGSTOP)
    try:
        rec = inject(plant, "bad_config", "svc-api")
        control_loop(plant, engine, 0.35, 0.1)
    finally:
        os.kill(pids["inst-0"], signal.SIGCONT)
    _run_until(plant, engine, lambda: any(
        isinstance(r, FaultCleared) and r.fault_id == rec.fault_id
        for r in plant.log.since(rec.seq)), 30.0)
    control_loop(plant, engine, 1.5, 0.1)
    events = plant.log.since(rec.seq)
    incidents = [r for r in events if isinstance(r, IncidentRecord)]
    opened = {r.root_cause for r in incidents if r.phase == "opened"}
    assert "svc-api:bad_config" in opened
    assert opened <= {"svc-api:bad_config", "inst-0:service_hang"}, "\n".join(map(str, events))
    assert [r.kind for r in events if isinstance(r, ActionRecord) and r.phase == "started"] \
        == ["config_rollback"], "\n".join(map(str, events))
    assert set({r.incident_id: r.phase for r in incidents}.values()) == {"resolved"}
    assert plant.pids() == pids


def test_a_replica_that_stalls_and_answers_again_is_not_restarted(
    fleet_factory: Factory,
) -> None:
    """A replica silent long enough for a hang incident, then answering again: no restart.

    Its probes time out and the RCA names a hang (the process still holds its memory), but
    the engine restarts a hung replica only after it stays silent ``HANG_CONFIRM_S`` past
    the incident's opening; this one answers first, and its incident resolves with no
    action.
    """
    plant = fleet_factory(3)
    engine = live_engine(plant, actuate=True)
    control_loop(plant, engine, 0.5, 0.1)
    pids = plant.pids()
    start = plant.log.next_seq
    os.kill(pids["inst-0"], signal.SIGSTOP)
    try:
        _run_until(plant, engine, lambda: any(
            isinstance(r, IncidentRecord) and r.phase == "opened"
            for r in plant.log.since(start)), 10.0)
    finally:
        os.kill(pids["inst-0"], signal.SIGCONT)
    _run_until(plant, engine, lambda: any(
        isinstance(r, IncidentRecord) and r.phase == "resolved"
        for r in plant.log.since(start)), 10.0)
    events = plant.log.since(start)
    incidents = [r for r in events if isinstance(r, IncidentRecord)]
    assert incidents[0].root_cause == "inst-0:service_hang", "\n".join(map(str, events))
    assert incidents[-1].phase == "resolved" and "stalled, not hung" in incidents[-1].note
    assert not [r for r in events if isinstance(r, ActionRecord)], "\n".join(map(str, events))
    assert plant.pids() == pids
    report = postmortem(plant.log.since(0), incidents[0].incident_id)
    assert "stalled, not hung" in report and "No action was decided" in report


def test_dry_run_changes_no_process(fleet_factory: Factory) -> None:
    """Without actuation the engine decides (dry_run) but no process is started or stopped."""
    plant = fleet_factory(2, actuate=False)
    engine = live_engine(plant, actuate=False)
    control_loop(plant, engine, 0.3, 0.1)
    before = plant.pids()
    inject(plant, "service_crash", "inst-0")
    control_loop(plant, engine, 2.0, 0.1)
    after = plant.pids()
    assert after["inst-1"] == before["inst-1"] and alive(after["inst-1"])
    assert not alive(before["inst-0"]) and after["inst-0"] == before["inst-0"]
    assert after["haproxy"] == before["haproxy"]
    log = plant.log.since(0)
    assert not [r for r in log if isinstance(r, ActionRecord) and r.phase == "started"]
    assert [r for r in log if isinstance(r, DecisionRecord) and r.verdict == "dry_run"]
    assert not plant.apply(Action("restart_instance", "inst-0")).accepted


def test_emergency_stop_halts_actuation_within_a_second(fleet_factory: Factory) -> None:
    """After the stop (which takes effect in well under 1 s) no action starts."""
    plant = fleet_factory(2)
    runtime = Runtime(plant, live_engine(plant, actuate=True), mode="live", step_s=0.1,
                      plant_dt_s=0.0)
    runtime.start()
    try:
        assert runtime.wait_steps(3)
        t0 = time.monotonic()
        stop_at_s = runtime.emergency_stop("test")
        assert time.monotonic() - t0 < 1.0 and runtime.gate.stopped
        with runtime.lock:
            inject(plant, "service_crash", "inst-0")
        assert runtime.wait_steps(20)
        with runtime.lock:
            started = [r for r in plant.log.since(0) if isinstance(r, ActionRecord)
                       and r.phase == "started" and r.t_s >= stop_at_s]
            blocked = [r for r in plant.log.since(0) if isinstance(r, DecisionRecord)
                       and r.verdict == "blocked"]
        assert started == [] and blocked
    finally:
        runtime.stop()


def _heal_two_waves(
    plant: LivePlant, engine: object, first: tuple[int, ...], second: tuple[int, ...],
    gap_s: float | None,
) -> None:
    """Crash replicas ``first``, then ``second``; each is restarted once, all resolve.

    ``gap_s``: seconds between the waves, or None for the moment the first restart starts.
    """
    control_loop(plant, engine, 0.3, 0.1)
    for k in first:
        inject(plant, "service_crash", f"inst-{k}")
    if gap_s is None:
        _run_until(plant, engine, lambda: any(isinstance(r, ActionRecord) and r.phase == "started"
                                              for r in plant.log.since(0)), 30.0)
    elif gap_s:
        control_loop(plant, engine, gap_s, 0.1)
    for k in second:
        inject(plant, "service_crash", f"inst-{k}")
    crashed = sorted(f"inst-{k}" for k in (*first, *second))

    def all_resolved() -> bool:
        last = {r.incident_id: r.phase for r in plant.log.since(0)
                if isinstance(r, IncidentRecord)}
        return bool(last) and set(last.values()) == {"resolved"}

    _run_until(plant, engine, lambda: sum(isinstance(r, FaultCleared)
                                          for r in plant.log.since(0)) >= len(crashed), 30.0)
    _run_until(plant, engine, all_resolved, 30.0)
    control_loop(plant, engine, 1.5, 0.1)
    events = plant.log.since(0)
    started = [r.target for r in events if isinstance(r, ActionRecord)
               and r.kind == "restart_instance" and r.phase == "started"]
    assert sorted(started) == crashed, "\n".join(map(str, events))
    assert sum(isinstance(r, FaultCleared) for r in events) == len(crashed)
    incidents = {r.incident_id: r.phase for r in events if isinstance(r, IncidentRecord)}
    assert set(incidents.values()) == {"resolved"}, "\n".join(map(str, events))
    obs = plant.observe()
    assert obs.inst_ready[obs.inst_used].all()


def test_replicas_crashing_during_a_restart_get_their_own(fleet_factory: Factory) -> None:
    """Replicas that crash while another's restart runs are restarted too.

    Their alerts correlate into the incident restarting the first replica. Before, that
    incident took them and resolved once its own replica served again, leaving the later
    two down with no incident to restart them (seen in CI on a loaded machine).
    """
    plant = fleet_factory(4)
    _heal_two_waves(plant, live_engine(plant, actuate=True), (0, 2), (1, 3), None)


@pytest.mark.parametrize("last_after_s", [0.0, 0.15, 0.5])
def test_every_replica_failing_at_once_is_restarted(
    fleet_factory: Factory, last_after_s: float
) -> None:
    """All four replicas crash at once: each is restarted once, and together.

    The probes raise one alert for the service and the diagnosis ties the four replicas; a
    restart of a replica that is down takes no serving capacity, so the 25% blast radius
    allows all four. Before, the runbook restarted the first of the tie only, and the
    incident resolved with three replicas still down. When the last crash is seen a probe
    later (``last_after_s``: a loaded machine does this too) it opens an incident of its own;
    that incident's restart is the one already running, not a second restart once the
    replica serves again. Half a second later, the first incident is still gathering
    evidence when the second restarts its replica; the second's service-wide alert names
    the first's three replicas and stays with it (no third incident, escalated for a
    cause nobody has).
    """
    plant = fleet_factory(4)
    _heal_two_waves(plant, live_engine(plant, actuate=True), (0, 1, 3), (2,), last_after_s)


@pytest.mark.parametrize("kind", ["service_crash", "service_hang"])
def test_a_replica_failing_again_right_after_its_restart_is_restarted_again(
    fleet_factory: Factory, kind: str
) -> None:
    """The same replica fails again while its incident verifies the restart: restarted at once.

    Before, the incident waited out the restart step's deadline (60 s for a hang); for a
    crash it then tried a cold migration, which the fleet refuses, and a scale-out, and
    the replica stayed down.
    """
    plant = fleet_factory(3)
    engine = live_engine(plant, actuate=True)
    control_loop(plant, engine, 0.5, 0.1)
    inject(plant, kind, "inst-1")
    _run_until(plant, engine, lambda: any(isinstance(r, FaultCleared)
                                          for r in plant.log.since(0)), 30.0)
    control_loop(plant, engine, 0.1, 0.1)
    again = inject(plant, kind, "inst-1")
    _run_until(plant, engine, lambda: any(
        isinstance(r, FaultCleared) and r.fault_id == again.fault_id
        for r in plant.log.since(again.seq)), 90.0)
    _run_until(plant, engine, lambda: [r.phase for r in plant.log.since(0)
                                       if isinstance(r, IncidentRecord)][-1] == "resolved", 30.0)
    events = plant.log.since(again.seq)
    starts = [r for r in events if isinstance(r, ActionRecord) and r.phase == "started"]
    assert [(r.kind, r.target) for r in starts] == [("restart_instance", "inst-1")], (
        "\n".join(map(str, events)))
    assert starts[0].t_s - again.t_s <= 10.0
    assert any(isinstance(r, IncidentRecord) and "down again" in r.note for r in events)
    assert {r.incident_id: r.phase for r in plant.log.since(0)
            if isinstance(r, IncidentRecord)} == {0: "resolved"}
    obs = plant.observe()
    assert obs.inst_ready[obs.inst_used].all()


@pytest.mark.slow
@pytest.mark.parametrize("gap_s", [0.1, 0.3, 1.0, 2.5])
@pytest.mark.parametrize(("first", "second"), [
    ((0, 1, 3), (2,)), ((0, 2), (1, 3)), ((0,), (1, 2, 3)), ((0, 1), (2,)),
])
def test_crash_waves_at_any_timing_are_each_healed_once(
    fleet_factory: Factory, first: tuple[int, ...], second: tuple[int, ...], gap_s: float
) -> None:
    """Two waves of crashes across four replicas, at gaps from a probe to seconds.

    The default tests pin three timings; the engine's correlation, ties and evidence wait
    interact differently at each gap (a sweep like this one found the 0.5 s case above).
    """
    plant = fleet_factory(4)
    _heal_two_waves(plant, live_engine(plant, actuate=True), first, second, gap_s)


def test_any_policy_drives_the_fleet_through_the_gate(fleet_factory: Factory) -> None:
    """A plain observation -> action policy heals a hang via the same control loop."""
    plant = fleet_factory(2)

    def restart_dead(obs: Observation) -> Action | None:
        dead = obs.inst_used & ~obs.inst_live
        return Action("restart_instance", f"inst-{int(dead.argmax())}") if dead.any() else None

    ctrl = PolicyController(plant, restart_dead, live_safety(actuate=True))
    control_loop(plant, ctrl, 0.3, 0.1)
    old = plant.pids()["inst-0"]
    inject(plant, "service_hang", "inst-0")
    _run_until(plant, ctrl, lambda: any(isinstance(r, FaultCleared)
                                        for r in plant.log.since(0)), 30.0)
    assert plant.pids()["inst-0"] != old
    assert [r for r in plant.log.since(0) if isinstance(r, DecisionRecord)
            and r.executed and r.action == "restart_instance"]
    assert os.path.exists(plant.store.path)


def test_an_encoded_policy_heals_a_crash_on_the_fleet(fleet_factory: Factory) -> None:
    """The encode -> predict -> decode adapter used on the twin heals a live crash too."""
    from tests.live.test_controller import FirstDeadIndex, _decode, _encode

    plant = fleet_factory(2)
    ctrl = PolicyController(plant, EncodedPolicy(FirstDeadIndex(), _encode, _decode),
                            live_safety(actuate=True))
    control_loop(plant, ctrl, 0.3, 0.1)
    old = plant.pids()["inst-1"]
    inject(plant, "service_crash", "inst-1")
    _run_until(plant, ctrl, lambda: any(isinstance(r, FaultCleared)
                                        for r in plant.log.since(0)), 30.0)
    new = plant.pids()["inst-1"]
    assert new != old and alive(new)


def test_the_same_decision_is_not_executed_twice(fleet_factory: Factory) -> None:
    """A request repeated while the first runs, or under a used key, is refused."""
    plant = fleet_factory(2, replica_startup_delay_s=0.5)
    first = plant.apply(Action("scale_out", "svc-api"))
    assert first.accepted
    plant.advance(0.0)
    again = plant.apply(Action("scale_out", "svc-api"))
    assert not again.accepted and "in progress" in again.reason
    end = time.monotonic() + 10.0
    while time.monotonic() < end and not any(
        isinstance(r, ActionRecord) and r.action_id == first.action_id and r.phase == "succeeded"
        for r in plant.log.since(0)
    ):
        plant.advance(0.1)
    assert len(plant.used_slots()) == 3
    late = plant.apply(Action("scale_in", "svc-api"))
    assert late.accepted, late.reason
    plant.advance(0.0)
    end = time.monotonic() + 10.0
    while time.monotonic() < end and "svc-api" in plant._busy_targets:
        plant.advance(0.1)
    refused = plant.apply(Action("restore_traffic", "inst-0"), idempotency_key="k-1")
    assert not refused.accepted and "already in rotation" in refused.reason
    ok = plant.apply(Action("reroute_traffic", "inst-0"), idempotency_key="k-1")
    assert ok.accepted, ok.reason
    end = time.monotonic() + 5.0
    while time.monotonic() < end and "inst-0" in plant._busy_targets:
        plant.advance(0.1)
    dup = plant.apply(Action("restore_traffic", "inst-0"), idempotency_key="k-1")
    assert not dup.accepted and "k-1" in dup.reason


def _until_done(plant: LivePlant, action_id: int, limit_s: float = 10.0) -> str:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        plant.advance(0.1)
        for r in plant.log.since(0):
            if isinstance(r, ActionRecord) and r.action_id == action_id and r.phase in (
                "succeeded", "failed"
            ):
                return r.phase
    return "timed out"


def test_actions_act_for_real(fleet_factory: Factory) -> None:
    """Rollback repairs a bad deploy; shedding denies requests; add_cpu widens the affinity."""
    plant = fleet_factory(2)
    plant.advance(0.3)
    inject(plant, "bad_config", "svc-api")
    end = time.monotonic() + 5.0
    while time.monotonic() < end and plant.observe().inst_ready[:2].any():
        plant.advance(0.1)
    assert not plant.observe().inst_ready[:2].any()
    assert _until_done(plant, plant.apply(Action("config_rollback", "svc-api")).action_id) \
        == "succeeded"
    end = time.monotonic() + 5.0
    while time.monotonic() < end and not plant.observe().inst_ready[:2].all():
        plant.advance(0.1)
    assert plant.observe().inst_ready[:2].all()
    assert any(isinstance(r, FaultCleared) and r.by == "config_rollback"
               for r in plant.log.since(0))

    assert _until_done(plant, plant.apply(Action("shed_load", "cluster")).action_id) \
        == "succeeded"
    shed = run_load(plant.lb_url + "/", 100.0, 1.0)
    assert 0 < shed.failed < shed.sent
    assert _until_done(plant, plant.apply(Action("stop_shedding", "cluster")).action_id) \
        == "succeeded"
    assert run_load(plant.lb_url + "/", 50.0, 0.5).success == 1.0

    pid = plant.pids()["inst-0"]
    assert _until_done(plant, plant.apply(Action("add_cpu", "inst-0")).action_id) == "succeeded"
    assert sorted(os.sched_getaffinity(pid)) == sorted(os.sched_getaffinity(0))
    rejected = plant.apply(Action("cold_migrate", "inst-0"))
    assert not rejected.accepted and "not available on the live plant" in rejected.reason
