"""The engine on a scripted one-host fleet: a live plant's telemetry, with no processes.

The live fleet's timing depends on the machine; here every probe result and latency comes
from a script, so the order of alerts that matters to the engine is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from live.controller import live_engine
from sim.actions import Action, ActionResult
from sim.events import ActionRecord, Event, EventLog, IncidentRecord, StateChange
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

F = {name: j for j, name in enumerate(INSTANCE_FEATURES)}
H = {name: j for j, name in enumerate(HOST_FEATURES)}
N = 4


class ScriptedFleet:
    """Four replicas of ``api`` on one sensorless host; actions finish ``act_s`` after start.

    A config rollback makes every replica ready again; a restart clears its replica's
    latency. The test sets ``ready`` and ``p99`` to script faults.
    """

    def __init__(self, act_s: float = 0.1) -> None:
        self.t = 0.0
        self._log = EventLog()
        self.ready = np.ones(N, dtype=bool)
        self.p99 = np.full(N, 0.01)
        self.err = np.zeros(N)
        self.act_s = act_s
        self._running: list[tuple[float, int, Action]] = []
        self._next_id = 0
        self.applied: list[tuple[float, str, str]] = []

    @property
    def now_s(self) -> float:
        """Scripted time, seconds."""
        return self.t

    @property
    def log(self) -> EventLog:
        """The fleet's event log."""
        return self._log

    def _add(self, make: type[Event], *args: object) -> None:
        self._log.add(make(self._log.next_seq, self.t, *args))  # type: ignore[call-arg]

    def set_ready(self, slots: Sequence[int], ready: bool) -> None:
        """Make ``slots`` pass or fail readiness (logged as the live plant does)."""
        for k in slots:
            if self.ready[k] != ready:
                self.ready[k] = ready
                self._add(StateChange, f"inst-{k}", "ready" if ready else "not_ready", None,
                          "readiness probe" if ready else "readiness probe failed")

    def observe(self) -> Observation:
        """Every replica live; readiness and latency as scripted; no host sensors."""
        inst = np.zeros((N, len(INSTANCE_FEATURES)), dtype=np.float32)
        inst[:, F["up"]] = inst[:, F["vm_up"]] = 1.0
        inst[:, F["mem_util"]] = 0.08
        inst[:, F["cpu_util"]] = 0.2
        inst[:, F["rps"]] = np.where(self.ready, 25.0, 0.0)
        inst[:, F["p99_latency_s"]] = inst[:, F["latency_s"]] = self.p99
        inst[:, F["error_rate"]] = self.err
        host = np.zeros((1, len(HOST_FEATURES)), dtype=np.float32)
        host[0, H["up"]] = host[0, H["throttle"]] = 1.0  # as the live plant: no sensors
        return Observation(
            t_s=self.t, host=host, inst=inst,
            inst_used=np.ones(N, dtype=bool), inst_service=np.zeros(N, dtype=np.int64),
            inst_host=np.zeros(N, dtype=np.int64), inst_live=np.ones(N, dtype=bool),
            inst_ready=self.ready.copy(), service_names=("api",),
            host_rack=np.zeros(1, dtype=np.int64), call_edges=(),
        )

    def apply(self, action: Action) -> ActionResult:
        """Start the fleet's actions (done after ``act_s``); reject the others."""
        aid, self._next_id = self._next_id, self._next_id + 1
        if action.kind not in ("config_rollback", "restart_instance", "scale_out", "scale_in"):
            self._add(ActionRecord, aid, action.kind, action.target, "rejected", "not here", 0.0)
            return ActionResult(False, aid, action.kind, action.target, "not here", self.t)
        for phase in ("requested", "started"):
            self._add(ActionRecord, aid, action.kind, action.target, phase, "", 0.0)
        self._running.append((self.t + self.act_s, aid, action))
        self.applied.append((self.t, action.kind, action.target))
        return ActionResult(True, aid, action.kind, action.target, "", self.t + self.act_s)

    def advance(self, dt_s: float) -> None:
        """Move the clock on and finish the actions due."""
        self.t += dt_s
        done = [r for r in self._running if r[0] <= self.t + 1e-9]
        self._running = [r for r in self._running if r[0] > self.t + 1e-9]
        for _, aid, action in done:
            if action.kind == "config_rollback":
                self.set_ready(range(N), True)
                self.err[:] = 0.0
            elif action.kind == "restart_instance":
                self.p99[int(action.target[5:])] = 0.01
            self._add(ActionRecord, aid, action.kind, action.target, "succeeded", "", 0.0)

    def events(self, since: int = 0) -> Sequence[Event]:
        """Records with sequence number >= ``since``."""
        return self._log.since(since)


def _run(fleet: ScriptedFleet, engine: object, seconds: float) -> None:
    for _ in range(round(seconds / 0.1)):
        fleet.advance(0.1)
        engine.step()  # type: ignore[attr-defined]


def test_a_bad_deploy_on_a_sensorless_fleet_is_rolled_back_without_an_evidence_wait() -> None:
    """Every replica live but unready: diagnosed as the service's configuration at once."""
    fleet = ScriptedFleet()
    engine = live_engine(fleet, actuate=True)
    _run(fleet, engine, 1.0)
    fleet.set_ready(range(N), False)
    t_fault = fleet.t
    _run(fleet, engine, 2.0)
    assert [(k, tgt) for _, k, tgt in fleet.applied] == [("config_rollback", "svc-api")]
    assert fleet.applied[0][0] - t_fault <= 0.3
    opened = next(r for r in fleet.log.since(0)
                  if isinstance(r, IncidentRecord) and r.phase == "opened")
    assert opened.root_cause == "svc-api:bad_config"


def test_a_replica_failing_requests_under_a_bad_deploy_is_not_a_second_problem() -> None:
    """The replica whose errors were sampled before it turned unready is the deploy's.

    Its error alert alone reads as that replica failing on its own, but failing requests is
    what a bad configuration does (``rca.SERVICE_SYMPTOMS``): rolled back, not restarted.
    """
    fleet = ScriptedFleet()
    engine = live_engine(fleet, actuate=True)
    _run(fleet, engine, 1.0)
    fleet.set_ready(range(N), False)
    fleet.err[1] = 1.0
    _run(fleet, engine, 4.0)
    assert [(k, tgt) for _, k, tgt in fleet.applied] == [("config_rollback", "svc-api")]


def test_a_replica_slow_alone_during_a_bad_deploy_gets_its_own_incident() -> None:
    """A slow replica alerted while the deploy's incident verifies is restarted, not absorbed.

    The deploy's rollback makes every replica ready again, so its incident would resolve and
    carry the slow replica's alert away with it; a bad configuration does not make one
    replica of four slow.
    """
    fleet = ScriptedFleet()
    engine = live_engine(fleet, actuate=True)
    _run(fleet, engine, 1.0)
    fleet.set_ready(range(N), False)
    _run(fleet, engine, 0.2)  # alerted, diagnosed, rolled back: the incident verifies
    assert [k for _, k, _ in fleet.applied] == ["config_rollback"]
    fleet.p99[1] = 1.5  # alerted within the deploy's correlation window
    t_slow = fleet.t
    _run(fleet, engine, 3.0)
    restarts = [t for t, k, tgt in fleet.applied if (k, tgt) == ("restart_instance", "inst-1")]
    assert restarts and restarts[0] - t_slow <= 0.5
    incidents = {r.incident_id: r.root_cause for r in fleet.log.since(0)
                 if isinstance(r, IncidentRecord)}
    assert sorted(incidents.values()) == ["inst-1:slow_response", "svc-api:bad_config"]


def test_a_bad_deploy_and_a_slow_replica_alerted_together_are_both_acted_on_at_once() -> None:
    """One alert group, two problems: the deploy is not held back by the slow replica's alert.

    The group's ranking shares its evidence between the deploy and the slow replica, so the
    deploy's diagnosis alone falls below the confidence the engine acts on; as two problems
    (``rca.second_problem``) each gets its incident and its remedy without the evidence wait.
    """
    fleet = ScriptedFleet()
    engine = live_engine(fleet, actuate=True)
    _run(fleet, engine, 1.0)
    fleet.set_ready(range(N), False)
    fleet.p99[1] = 1.5
    t_fault = fleet.t
    _run(fleet, engine, 2.0)
    first = {}
    for t, kind, target in fleet.applied:
        first.setdefault((kind, target), t)
    assert first[("config_rollback", "svc-api")] - t_fault <= 0.3
    assert first[("restart_instance", "inst-1")] - t_fault <= 0.3
    incidents = {r.incident_id: r.root_cause for r in fleet.log.since(0)
                 if isinstance(r, IncidentRecord)}
    assert sorted(incidents.values()) == ["inst-1:slow_response", "svc-api:bad_config"]


def test_a_replica_slow_again_while_its_restart_is_verified_is_restarted_again() -> None:
    """A relapse need not be a crash: a restarted replica that is slow again, still ready.

    The first relapse runs the restart again at once, not after the step's 60 s deadline;
    one that keeps coming back runs the runbook's second restart and is then escalated.
    """
    fleet = ScriptedFleet()
    engine = live_engine(fleet, actuate=True)
    _run(fleet, engine, 1.0)

    def restarts() -> list[float]:
        return [t for t, k, tgt in fleet.applied if (k, tgt) == ("restart_instance", "inst-1")]

    fleet.p99[1] = 1.5
    slowed = []
    for n in (1, 2, 3):  # slow again 0.3 s after each restart, within its verification
        for _ in range(100):  # 10 s at most
            if len(restarts()) >= n and fleet.p99[1] < 1.0:
                break
            _run(fleet, engine, 0.1)
        assert len(restarts()) == n, f"restart {n} not within 10 s"
        _run(fleet, engine, 0.3)
        fleet.p99[1] = 1.5
        slowed.append(fleet.t)
    _run(fleet, engine, 2.0)
    assert restarts()[1] - slowed[0] <= 1.5  # the 1 s cooldown, not the 60 s deadline
    records = [r for r in fleet.log.since(0) if isinstance(r, IncidentRecord)]
    notes = [r.note for r in records if " again while step " in r.note]
    assert notes == ["inst-1 failing again while step 1 was verified; the step runs again",
                     "inst-1 failing again while step 1 was verified; the next step starts",
                     "inst-1 failing again while step 2 was verified; the next step starts"]
    assert {r.incident_id for r in records} == {0} and len(restarts()) == 3
    assert records[-1].phase == "escalated" and "resolved" not in {r.phase for r in records}
