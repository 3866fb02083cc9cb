"""The rule-based healing engine: detect, correlate, diagnose, remediate, verify, escalate.

One :meth:`HealingEngine.step` per control interval, against any :class:`sim.plant.Plant`:

1. the detection stage turns telemetry and operational events into alerts;
2. alerts are correlated into groups; a new group opens an incident whose priority comes
   from its impact and whose root cause is ranked by the topology-aware RCA;
3. the root cause's runbook runs step by step; every action passes the safety gate (which
   may block it, turn it into a logged dry-run decision, or ask the simulated operator);
4. once a step's actions have finished, the incident resolves if the SLO is healthy and the
   services it touched have their ready capacity back; past the step's deadline the next
   step runs, and after the last one the incident escalates;
5. an action that made the SLO worse (the first whole SLO window after it finished has a
   lower good share than the last one before it started) is rolled back when rollback is
   enabled (scale-outs, a shed bridging their boot and hold-outs excepted);
6. while a load surge is handled, services past AUTOSCALE_UTIL get further scale-outs, and
   a saturated main path whose scale-outs are still booting gets one step of load shed
   until they land (``HealingEngine._autoscale``);
7. while a lossy host link is repaired or a bad deploy caught on its canaries is rolled
   back, the replicas it harms are held out of rotation where the rest of their service
   has room, and put back once the fix shows (``HealingEngine._hold_out``).

Every decision is written to the plant's event log, which is what KPIs and post-mortems read,
and from which an engine started on a plant that kept its log takes over the incidents its
predecessor left open (``HealingEngine._take_over``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from control.detection import DetectionStage, alert_metric, component_index, default_detectors
from control.incidents import Impact, Incident, priority
from control.prediction import PredictionStage
from control.rca import (
    ERROR_RESPONSES,
    SERVICE_HANG,
    SLOW_P99_S,
    SLOW_RESPONSE,
    AlertGroup,
    correlate,
    produces,
    rank_root_causes,
    second_problem,
)
from control.runbooks import RUNBOOKS, Runbook, Step
from control.safety import (
    ApprovalTicket,
    SafetyConfig,
    SafetyGate,
    SimulatedOperator,
    log_command,
    restore_gate,
    rollback_action,
)
from sim.actions import Action
from sim.errors import ConfigError
from sim.events import (
    ActionRecord,
    AlertRecord,
    ApprovalRecord,
    DecisionRecord,
    Event,
    IncidentRecord,
    SloWindow,
)
from sim.faults import FaultKind
from sim.plant import Plant
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

_CPU_UTIL = INSTANCE_FEATURES.index("cpu_util")
_RPS = INSTANCE_FEATURES.index("rps")
_ERR = INSTANCE_FEATURES.index("error_rate")
_P99 = INSTANCE_FEATURES.index("p99_latency_s")
HEALTHY_ERROR_RATE = 0.01
HANG_CONFIRM_S = 1.0
"""How long a replica diagnosed as hung (``service_hang``) must stay silent after its incident
opens before it is restarted. A loaded machine can stall a process for a few probes; one that
answers again within this time was stalled, not hung, and its incident resolves without an
action (``HealingEngine._stall_over``)."""
_ALONE = frozenset({SLOW_RESPONSE, ERROR_RESPONSES, SERVICE_HANG})
"""Live-only causes that strike one replica on its own (``control.rca._degraded_instances``)."""
CONFIDENT = 0.7
EVIDENCE_WAIT_S = 3.0
"""A diagnosis below CONFIDENT waits this long for more alerts (e.g. a VM's telemetry),
unless what holds it below is a second problem its group caught
(``HealingEngine._split_second_problem``)."""
SHED_STEP, SHED_MAX = 0.2, 0.6
"""What one shed_load action rate-limits, and the most it can (see sim.actions)."""
UNSHED_UTIL = 0.6
"""Stop shedding when the busiest service would run below this utilisation without it."""
BRIDGE_UTIL = 0.97
BRIDGE_SHARE = 0.5
"""A surge that brings services through which at least BRIDGE_SHARE of the requests pass to
BRIDGE_UTIL while scale-outs of them boot has load shed until that capacity lands (see
``HealingEngine._autoscale``)."""
BLOCKED_RETRY_S = 60.0
"""How long a blocked follow-up action is retried (cooldowns, rate and blast-radius limits)."""
HUMAN_RERUNS = 1
"""Times the on-call human reruns an exhausted runbook, approving each action."""
RUNNER_UP_MIN = 0.15
"""Least confidence of a runner-up diagnosis worth a runbook of its own before escalating."""
AUTOSCALE_UTIL = 0.75
"""While a load surge is being handled, a service busier than this gets another scale-out."""
AUTOSCALE_GAP_S = 300.0
"""Least time between two autoscaling scale-outs of one service (boot plus settling)."""
HOST_REPAIRS = frozenset({"replace_fan", "replace_disk", "repair_host"})
"""Repairs after which a host the engine drained is uncordoned (``uncordon_host``)."""
CAPACITY_WAIT_S = 900.0
"""How long an action waits for the surge capacity that lets it pass the blast-radius limit,
and how long the replicas added for it are retried (scale-out, then scale-in) while blocked."""
SURGE_CAPACITY = "surge capacity"
BRIDGE = "follow-up: bridge"
SHARED_REPAIRS = frozenset({
    "restart_instance", "cold_migrate", "config_rollback", "reroute_traffic",
    "quarantine_instance", "failover_rack", "drain_host", "replace_disk", "reboot_host",
    "repair_host", "replace_fan", "repair_switch", "repair_link", "evict_noisy_neighbour",
    "clear_cache", "rolling_patch",
})
"""Actions that bring their target to one state: run for one incident, they serve another
that asks for the same action on the same target (see ``HealingEngine._shared``). Actions
that add (``scale_out``, ``add_cpu``, ``shed_load``) or move (``live_migrate``) are not."""
HOLD_OUT = "follow-up: hold out"
HOLD_OUT_MAX = 6
"""Most replicas one incident takes out of rotation while their cause is fixed: each is an
action under the rate limit (10 a minute by default) that other incidents may need."""
HOLD_OUT_UTIL = 0.85
"""A replica is held out only if the rest of its service would run below this utilisation
(services saturate at about 0.97, see BRIDGE_UTIL)."""
_LINK_LOSS = HOST_FEATURES.index("link_loss")
SURGE_WATCH_S = 4 * 3600.0
"""How long after a load-surge incident resolves its capacity stays watched (surges last
hours and keep ramping after the first scale-out has cleared the alert)."""


def _request_share(obs: Observation) -> np.ndarray:
    """Per service, the share of incoming requests that reach it, at most 1.

    Its request rate over that of the entry services (those no other service calls).
    """
    n = len(obs.service_names)
    used = obs.inst_used & obs.inst_live
    rps = np.bincount(obs.inst_service[used], obs.inst[used, _RPS], minlength=n)
    callees = {callee for _, callee in obs.call_edges}
    entry = [i for i, name in enumerate(obs.service_names) if name not in callees]
    total = float(rps[entry].sum())
    return np.minimum(rps / total, 1.0) if total > 0.0 else np.zeros(n)


def _served_share(w: SloWindow) -> float:
    """Share of an SLO window's requests served well (1 for a window without requests)."""
    return w.good / w.requests if w.requests else 1.0


_DOWN_METRICS = frozenset({"live", "ready", "vm_up", "ready_instances"})
"""Probe signals an alert on a service can carry for replicas that stopped serving."""


def _slot(component: str, obs: Observation) -> int | None:
    """The instance slot ``inst-<i>`` names, if it is one of the observation's; else None."""
    kind, _, ident = component.rpartition("-")
    if kind != "inst" or not ident.isdigit() or int(ident) >= obs.inst_used.size:
        return None
    return int(ident)


def _held_for(reason: str) -> str:
    """The component a hold-out waits on, read from its decision's reason ('' if none)."""
    if not reason.startswith(HOLD_OUT) or " while " not in reason:
        return ""
    return reason.rsplit(" while ", 1)[1].removesuffix(" is fixed")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Timing and thresholds of the healing loop."""

    correlation_window_s: float = 120.0
    slo_target: float = 0.999
    verify_hold_s: float = 30.0
    rollback_tolerance: float = 0.002

    def __post_init__(self) -> None:
        for name in ("correlation_window_s", "verify_hold_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"engine.{name} must be a non-negative number, got {value!r}")
        if not 0.0 < self.slo_target <= 1.0:
            raise ConfigError(f"engine.slo_target must lie in (0, 1], got {self.slo_target!r}")
        if not 0.0 <= self.rollback_tolerance < 1.0:
            raise ConfigError(
                f"engine.rollback_tolerance must lie in [0, 1), got {self.rollback_tolerance!r}"
            )


@dataclass(slots=True)
class _Pending:
    """An action the engine wants to run for an incident, and what it is waiting on."""

    action: Action
    incident_id: int
    reason: str
    ticket: ApprovalTicket | None = None
    blocked_reason: str = ""
    retry_until_s: float = 0.0
    """Retry while blocked until this time, whatever the step's deadline (0: the deadline)."""
    surge_requests: int = 0
    """Scale-outs queued to make room for this action (see ``HealingEngine._make_room``)."""


@dataclass(slots=True)
class _Executed:
    action: Action
    incident_id: int
    good_share_before: float
    rollback: bool
    finished_s: float | None = None
    started_s: float = 0.0
    sharers: list[int] = field(default_factory=list)
    """Other incidents whose runbook step this action also serves (see ``_shared``)."""
    surge_capacity: bool = False
    bridge: bool = False
    """A shed bridging the boot of scale-outs (see ``HealingEngine._autoscale``)."""
    hold_for: str = ""
    """For a replica taken out of rotation while its cause is fixed, the component whose
    fix lets it back (see ``HealingEngine._hold_out``); empty otherwise."""


@dataclass(slots=True)
class _State:
    incidents: dict[int, Incident] = field(default_factory=dict)
    group_of: dict[int, int] = field(default_factory=dict)
    groups: list[AlertGroup] = field(default_factory=list)
    alerts: dict[int, AlertRecord] = field(default_factory=dict)
    routed: set[int] = field(default_factory=set)
    """Alerts handled apart from the incident their group names now: routed to an incident
    of their own cause, or held by the group's earlier, resolved incident."""
    pending: list[_Pending] = field(default_factory=list)
    executed: dict[int, _Executed] = field(default_factory=dict)
    succeeded: set[int] = field(default_factory=set)
    latest: dict[tuple[str, str], int] = field(default_factory=dict)
    """The last action this engine ran per (kind, target)."""
    to_verify: list[int] = field(default_factory=list)
    shed_level: float = 0.0
    shed_started: dict[int, float] = field(default_factory=dict)
    shed_incident: int = 0
    bridge_for: frozenset[int] = frozenset()
    """The scale-outs a bridging shed waits for; empty when no shed is bridging."""
    bridge_tried_s: float = -math.inf
    last_autoscale_s: dict[str, float] = field(default_factory=dict)
    failed_over: dict[str, int] = field(default_factory=dict)
    drained: dict[str, int] = field(default_factory=dict)
    """Hosts this engine drained, and the incident that drained each."""
    surge_added: dict[int, list[str]] = field(default_factory=dict)
    """Per incident, the services given a replica of surge capacity (one entry per replica)."""
    held_out: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Replicas this engine took out of rotation while their cause is fixed: for each, the
    incident and the component whose fix lets it back (``HealingEngine._hold_out``)."""
    next_incident: int = 0
    seen_seq: int = 0


class _LogBook:
    """An earlier engine's log, read once for a restarted engine (``_take_over``).

    Incident records and decisions per incident, alerts by id, each action's outcome, and
    the action records that succeeded, in log order.
    """

    def __init__(self, earlier: Sequence[Event]) -> None:
        self.records: dict[int, list[IncidentRecord]] = {}
        self.decisions: dict[int, list[DecisionRecord]] = {}
        self.alerts: dict[int, AlertRecord] = {}
        self.outcome: dict[int, str] = {}
        self.succeeded: list[ActionRecord] = []
        for r in earlier:
            if isinstance(r, IncidentRecord):
                self.records.setdefault(r.incident_id, []).append(r)
            elif isinstance(r, DecisionRecord):
                self.decisions.setdefault(r.incident_id, []).append(r)
            elif isinstance(r, AlertRecord):
                self.alerts[r.alert_id] = r
            elif isinstance(r, ActionRecord) and r.phase in ("succeeded", "failed"):
                self.outcome[r.action_id] = r.phase
                if r.phase == "succeeded":
                    self.succeeded.append(r)

    def incident(self, incident_id: int) -> Incident:
        """The incident as its latest record states it (phase, diagnosis, alerts)."""
        records = self.records[incident_id]
        last = records[-1]
        return Incident(
            incident_id=incident_id, opened_s=records[0].t_s, priority=last.priority,
            components=set(), alert_ids=list(last.alert_ids),
            candidates=[(str(label), float(c)) for label, c in last.candidates],
            phase=last.phase, resolved_s=last.t_s if last.phase == "resolved" else None,
        )


class HealingEngine:
    """Rule-based policy over a plant, behind the safety gate.

    Args:
        plant: the system to heal (the twin, or a live adapter).
        safety: safety controls enforced on every action.
        operator: the human in the loop (simulated in the twin); required when any action
            can need approval.
        config: timing and thresholds.
        detection: the detection stage; the default detectors when None.
        prediction: failure prediction with pre-emptive actions; none when None.
    """

    def __init__(
        self,
        plant: Plant,
        safety: SafetyConfig | None = None,
        operator: SimulatedOperator | None = None,
        config: EngineConfig | None = None,
        detection: DetectionStage | None = None,
        prediction: PredictionStage | None = None,
    ) -> None:
        self.plant = plant
        self.config = config or EngineConfig()
        self.safety = safety or SafetyConfig()
        self.gate = SafetyGate(self.safety)
        self.operator = operator
        self.detection = detection or DetectionStage(default_detectors())
        self.prediction = prediction
        earlier = restore_gate(self.gate, plant)
        self._s = _State(seen_seq=plant.log.next_seq)
        self._take_over(earlier)

    # ------------------------------------------------------------------ public
    @property
    def incidents(self) -> dict[int, Incident]:
        """Incidents by id (open and closed)."""
        return self._s.incidents

    def emergency_stop(self, reason: str = "operator request") -> None:
        """Halt every action from now on; in-flight ones finish, nothing new starts.

        The stop is logged, so an engine started again on the same log stays stopped.
        """
        self.gate.emergency_stop(self.plant.now_s, reason)
        log_command(self.plant, "emergency_stop", reason)

    def resume(self) -> None:
        """Lift an emergency stop (logged), and take up what it interrupted.

        The stop dropped the actions it blocked; an open incident whose current runbook step
        ran none of its actions runs that step again at its next advance, instead of
        waiting out the step's deadline for actions that never started.
        """
        if self.gate.stopped:
            log_command(self.plant, "resume")
            s = self._s
            for inc in s.incidents.values():
                if (inc.phase in ("opened", "mitigating") and inc.step > 0
                        and not inc.step_action_ids and not inc.waiting_for
                        and not any(p.incident_id == inc.incident_id for p in s.pending)):
                    inc.step -= 1
        self.gate.resume()

    def _take_over(self, earlier: Sequence[Event]) -> None:
        """Start after the incidents an earlier engine left in the log.

        Incident ids continue after the largest one logged, so a restarted engine's incidents
        never share an id with its predecessor's. An incident the predecessor left open
        (opened or mitigating) is taken over where the log says it stood (``_adopt``) and
        goes on from there: verified, resolved, or moved to its next step. One whose
        diagnosis has no runbook here is escalated, and a human is told to confirm its
        outcome. The shed level is read back from the shed actions that succeeded.
        """
        s = self._s
        book = _LogBook(earlier)
        for done in book.succeeded:
            if done.kind == "shed_load":
                s.shed_level = min(s.shed_level + SHED_STEP, SHED_MAX)
            elif done.kind == "stop_shedding":
                s.shed_level = 0.0
        if not book.records:
            return
        s.next_incident = max(book.records) + 1
        log = self.plant.log
        self._restore_follow_ups(book)
        for iid in sorted(book.records):
            r = book.records[iid][-1]
            if r.phase not in ("opened", "mitigating"):
                continue
            inc = self._adopt(iid, book)
            if inc is None:
                log.add(IncidentRecord(
                    log.next_seq, self.plant.now_s, iid, "escalated", r.priority, r.root_cause,
                    r.alert_ids, r.candidates,
                    "controller restarted with this incident open and no runbook for its "
                    "diagnosis; on-call human asked to confirm the outcome",
                ))
                continue
            s.incidents[iid] = inc
            self._log_incident(inc, inc.phase, "controller restarted: incident taken over at "
                               + (f"runbook step {inc.step}" if inc.step else "its diagnosis"))
        # A rack or host whose incident this engine does not carry (escalated) stays as it is.
        s.failed_over = {k: v for k, v in s.failed_over.items() if v in s.incidents}
        s.drained = {k: v for k, v in s.drained.items() if v in s.incidents}
        s.seen_seq = log.next_seq

    def _restore_follow_ups(self, book: _LogBook) -> None:
        """What resolved incidents still expect: racks failed over, hosts drained, repairs.

        A partition's incident resolves once its rack is failed over, and the switch repair
        runs on as a follow-up; when the repair ends the rack is failed back. A disk's or
        fan's host is drained, repaired, then uncordoned. Rebuilt from the log: racks whose
        failover succeeded with no failback since, hosts drained and not uncordoned since
        (each with the incident that acted), and the actions of resolved incidents still
        running, whose end this engine then handles as its predecessor would have.
        """
        s = self._s
        by_action = {d.action_id: d for ds in book.decisions.values() for d in ds
                     if d.executed and d.action_id >= 0}
        for r in book.succeeded:
            d = by_action.get(r.action_id)
            if d is None:
                continue
            if r.kind == "failover_rack":
                s.failed_over[r.target] = d.incident_id
            elif r.kind == "failback_rack":
                s.failed_over.pop(r.target, None)
            elif r.kind == "drain_host":
                s.drained[r.target] = d.incident_id
            elif r.kind == "uncordon_host":
                s.drained.pop(r.target, None)
            elif r.kind == "reroute_traffic" and _held_for(d.reason):
                s.held_out[r.target] = (d.incident_id, _held_for(d.reason))
            elif r.kind == "restore_traffic":
                s.held_out.pop(r.target, None)
        running = [d for aid, d in by_action.items() if aid not in book.outcome]
        wanted = {*s.failed_over.values(), *s.drained.values(), *(d.incident_id for d in running)}
        for iid in sorted(wanted):
            records = book.records.get(iid)
            if records is not None and records[-1].phase == "resolved":
                s.incidents[iid] = book.incident(iid)
        for d in running:
            inc = s.incidents.get(d.incident_id)
            if inc is None or inc.phase != "resolved":
                continue
            inc.action_ids.append(d.action_id)
            inc.waiting_for.add(d.action_id)
            self._remember(d)

    def _remember(self, d: DecisionRecord) -> None:
        """Book an action a predecessor started (``d``) as this engine's own."""
        self._s.executed[d.action_id] = _Executed(
            Action(d.action, d.target), d.incident_id, self._good_share(),
            d.reason.startswith("rollback"), started_s=d.t_s,
            surge_capacity=d.reason.startswith(SURGE_CAPACITY),
            bridge=d.reason.startswith(BRIDGE), hold_for=_held_for(d.reason),
        )
        self._s.latest[(d.action, d.target)] = d.action_id

    def _adopt(self, incident_id: int, book: _LogBook) -> Incident | None:
        """An open incident rebuilt from the log, to be carried on; None if it cannot be.

        From its records: the alerts, the candidates and the one acted on, the runbook step
        (each step's start is logged as ``runbook step N``) and when it began, its relapses.
        From the decisions and action records: the actions it ran, which of them the current
        step ran, and their outcomes; an action still running (the gate resumed it) is
        waited for, and its outcome read when it comes. Actions of the step the plant
        refused count as refused (the step then fails as it would have). A step none of whose
        actions ran or were refused (they waited for an approval, a cooldown or a limit when
        the process died) runs again. What the log does not hold is lost: actions queued
        and not started, approvals asked for and not answered, the verification hold under
        way (it starts again).
        """
        s = self._s
        records = book.records[incident_id]
        inc = book.incident(incident_id)
        labels = [label for label, _ in inc.candidates]
        if records[-1].root_cause not in labels:
            return None
        inc.hypothesis = labels.index(records[-1].root_cause)
        if self._runbook(inc)[0] is None:
            return None
        for aid in inc.alert_ids:
            if aid in book.alerts:
                s.alerts[aid] = book.alerts[aid]
                inc.components.add(book.alerts[aid].target)
        steps = [r for r in records if r.note.startswith("runbook step ")]
        inc.step = int(steps[-1].note.split()[2]) if steps else 0
        inc.step_started_s = steps[-1].t_s if steps else records[0].t_s
        inc.relapses = sum(" again while step " in r.note for r in records)
        for d in book.decisions.get(incident_id, []):
            if d.verdict == "rejected" and d.t_s >= inc.step_started_s:
                inc.step_refused += 1  # the plant refused an action of the step
            if not (d.action_id >= 0 and (d.executed or d.verdict == "shared")):
                continue
            aid = d.action_id
            inc.action_ids.append(aid)
            if d.t_s >= inc.step_started_s and not d.reason.startswith(("follow-up", "rollback")):
                inc.step_action_ids.append(aid)
            if book.outcome.get(aid) == "succeeded":
                s.succeeded.add(aid)
            elif aid not in book.outcome:
                inc.waiting_for.add(aid)
            ex = s.executed.get(aid)
            if ex is None:
                self._remember(d)
            elif ex.incident_id != incident_id:
                ex.sharers.append(incident_id)
        if inc.step > 0 and not inc.step_action_ids and not inc.step_refused:
            inc.step -= 1
        return inc

    def step(self) -> None:
        """One control step at the plant's current time."""
        plant, s = self.plant, self._s
        new_events = plant.events(s.seen_seq)
        self.gate.sync(new_events)
        self._finish_actions(new_events)
        alerts = self.detection.step(plant)
        s.seen_seq = plant.log.next_seq
        obs = plant.observe()
        if self.prediction is not None:
            self.prediction.step(plant, self.gate, obs)
        if alerts:
            self._correlate(alerts, obs)
        self._run_pending(obs)
        for incident in list(s.incidents.values()):
            if incident.phase in ("opened", "mitigating", "escalated"):
                self._advance(incident, obs)
        self._housekeeping(obs)

    def _housekeeping(self, obs: Observation) -> None:
        """Keep capacity ahead of a surge; stop shedding once the full load fits again."""
        self._autoscale(obs)
        self._unshed(obs)
        self._release_held(obs)

    def _service_util(self, obs: Observation) -> np.ndarray:
        used = obs.inst_used & obs.inst_ready
        n = len(obs.service_names)
        counts = np.maximum(np.bincount(obs.inst_service[used], minlength=n), 1)
        return np.bincount(obs.inst_service[used], obs.inst[used, _CPU_UTIL], minlength=n) / counts

    def _autoscale(self, obs: Observation) -> None:
        """While a surge is handled or watched, scale out any service past AUTOSCALE_UTIL.

        A surge ramps for hours; the trend alert that opened its incident stays latched while
        the load keeps rising, so no new alert would ask for the next scale-out in time. The
        actions belong to the surge's incident and pass the safety gate like any other.

        A sudden surge saturates services before their scale-outs have booted (90 s), and the
        queue that builds then fails most requests, admitted or not. So while the surge's
        incident is open and a service that at least half the requests pass through is at
        BRIDGE_UTIL or more with a scale-out of it in flight, one step of load is shed
        (``shed_load``, 20% of requests), a known loss instead of a queue; ``_unshed`` stops
        it once the scale-outs it waited for have landed, and if the load still does not fit
        the next saturation with capacity booting sheds again. A saturated service off the
        main path (the auth service, a quarter of the requests) is left to its scale-out: only
        the requests through it suffer, fewer than a cluster-wide shed would turn away. While
        load is shed, utilisation is read as the full load would give it, so the next
        scale-outs start under the shed rather than once it stops.
        """
        s, now = self._s, self.plant.now_s
        surge = None
        for inc in s.incidents.values():
            if not inc.root_cause.startswith("cluster:"):
                continue
            watched = inc.phase in ("opened", "mitigating") or (
                inc.phase == "resolved" and inc.resolved_s is not None
                and now - inc.resolved_s < SURGE_WATCH_S
            )
            if watched and (surge is None or inc.opened_s > surge.opened_s):
                surge = inc
        if surge is None:
            return
        util = self._service_util(obs)
        booting = {f.action.target: f.action_id for f in self.gate.in_flight()
                   if f.action.kind == "scale_out"}
        if surge.phase in ("opened", "mitigating"):
            self._bridge(obs, util, booting, surge.incident_id)
        busy = {p.action.target for p in s.pending if p.action.kind == "scale_out"}
        busy |= set(booting)
        util = util / (1.0 - s.shed_level)
        for svc in np.flatnonzero(util > AUTOSCALE_UTIL):
            target = f"svc-{obs.service_names[int(svc)]}"
            if target in busy or now - s.last_autoscale_s.get(target, -math.inf) < AUTOSCALE_GAP_S:
                continue
            s.last_autoscale_s[target] = now
            s.pending.append(_Pending(
                Action("scale_out", target), surge.incident_id,
                f"follow-up: autoscale, {target} at {float(util[svc]):.0%} utilisation",
            ))
        if any(p.reason.startswith("follow-up: autoscale") for p in s.pending):
            self._run_pending(obs)

    def _bridge(self, obs: Observation, util: np.ndarray, booting: dict[str, int],
                incident_id: int) -> None:
        """Shed one step of load while a saturated service waits for its scale-out."""
        s = self._s
        targets = [f"svc-{name}" for name in obs.service_names]
        hot = [int(i) for i in np.flatnonzero(util >= BRIDGE_UTIL) if targets[i] in booting]
        if not hot:
            return
        shed, now = Action("shed_load", "cluster"), self.plant.now_s
        if (float(_request_share(obs)[hot].max()) < BRIDGE_SHARE or s.shed_level > 0.0
                or self._shedding_queued() or now - s.bridge_tried_s < BLOCKED_RETRY_S
                or self.gate.cooling_down(shed, now)):
            return
        s.bridge_for, s.bridge_tried_s = frozenset(booting[targets[i]] for i in hot), now
        s.pending.append(_Pending(
            shed, incident_id, f"{BRIDGE}, {len(hot)} saturated service(s) wait for a scale-out",
        ))
        self._run_pending(obs)

    def _shedding_queued(self) -> bool:
        kinds = ("shed_load", "stop_shedding")
        return (any(p.action.kind in kinds for p in self._s.pending)
                or any(f.action.kind in kinds for f in self.gate.in_flight()))

    def _unshed(self, obs: Observation) -> None:
        """Stop load shedding once the busiest service could take the full load again.

        A bridging shed (``_autoscale``) stops as soon as the scale-outs it waited for have
        finished.
        """
        s = self._s
        if self._shedding_queued():
            return
        if s.shed_level <= 0.0:
            s.bridge_for = frozenset()  # a bridge the gate refused
            return
        if s.bridge_for:
            stop = Action("stop_shedding", "cluster")
            flying = {f.action_id for f in self.gate.in_flight()}
            if not s.bridge_for & flying and not self.gate.cooling_down(stop, self.plant.now_s):
                s.pending.append(_Pending(stop, s.shed_incident,
                                          "follow-up: the capacity the shed bridged has landed"))
                self._run_pending(obs)
            return
        util = self._service_util(obs)
        recent = any(e.action.kind == "shed_load" for aid, e in s.executed.items()
                     if aid in s.shed_started and self.plant.now_s - s.shed_started[aid] < 900.0)
        if not recent and float(util.max()) / (1.0 - s.shed_level) < UNSHED_UTIL:
            s.pending.append(_Pending(Action("stop_shedding", "cluster"), s.shed_incident,
                                      "follow-up: capacity is back, stop shedding load"))
            self._run_pending(obs)

    # ------------------------------------------------------------------ incidents
    def _log_incident(self, inc: Incident, phase: str, note: str = "") -> None:
        log = self.plant.log
        log.add(IncidentRecord(
            log.next_seq, self.plant.now_s, inc.incident_id, phase, inc.priority, inc.root_cause,
            tuple(inc.alert_ids), tuple(inc.candidates[:5]), note,
        ))

    def _correlate(self, alerts: Sequence[AlertRecord], obs: Observation) -> None:
        s = self._s
        for a in alerts:
            s.alerts[a.alert_id] = a
        s.groups = correlate(alerts, s.groups, window_s=self.config.correlation_window_s, obs=obs)
        for group in s.groups:
            members = [s.alerts[i] for i in group.alert_ids if i in s.alerts and i not in s.routed]
            inc_id = s.group_of.get(group.group_id)
            if inc_id is None:
                self._open(group, members, obs)
                continue
            inc = s.incidents[inc_id]
            added = [i for i in group.alert_ids if i not in inc.alert_ids and i not in s.routed]
            if added and inc.phase == "resolved":
                # The group's window outlives its incident: alerts that join it after the
                # incident resolved are a new problem (or the old one back), and are handled
                # as one, in an incident the group names from now on.
                s.routed.update(i for i in group.alert_ids if i not in added)
                self._open(group, [s.alerts[i] for i in added if i in s.alerts], obs, added)
                continue
            if not added or inc.phase not in ("opened", "mitigating"):
                continue
            if inc.step == 0 and not inc.action_ids:
                inc.alert_ids += added
                inc.components |= {s.alerts[i].target for i in added if i in s.alerts}
                inc.candidates = [(c.component + ":" + c.fault_class, c.confidence)
                                  for c in rank_root_causes(members, obs)]
            else:
                self._absorb(inc, [s.alerts[i] for i in added if i in s.alerts], obs)

    def _explains(self, root: str, component: str, obs: Observation) -> bool:
        """Whether a fault at ``root`` accounts for symptoms at ``component``."""
        if root == component:
            return True
        if "cluster" in (root, component):
            return False
        theirs = self._instances_of({component}, obs)
        return bool(theirs) and theirs <= self._instances_of({root}, obs)

    def _absorb(self, inc: Incident, alerts: Sequence[AlertRecord], obs: Observation) -> None:
        """Add new alerts to an active incident, unless they belong elsewhere.

        Alerts with a confident cause of their own go (``_split_off``). Once the incident's
        runbook has started, so do alerts on instances down for a reason no incident's cause
        accounts for (``_strays``): replicas of one service that crash a probe apart (a
        loaded machine) correlate into the incident restarting the first, which would
        otherwise resolve once that one serves again and leave the others down, their alerts
        taken. Before the first step ``_split_unexplained`` does the same.
        """
        if self._split_off(inc, alerts, obs):
            return
        stray = self._strays(inc, alerts, obs) if inc.step > 0 else []
        kept = [a for a in alerts if a not in stray]
        inc.alert_ids += [a.alert_id for a in kept if a.alert_id not in inc.alert_ids]
        inc.components |= {a.target for a in kept}
        if stray:
            self._route_strays(inc, stray, obs)

    def _roots(self, inc: Incident, obs: Observation) -> list[str]:
        """The components ``inc``'s runbook acts on: its root cause and the replicas tied."""
        if not inc.root_cause or ":" not in inc.root_cause:
            return []
        return [inc.root_cause.rsplit(":", 1)[0], *self._co_roots(inc, obs)]

    def _strays(
        self, inc: Incident, alerts: Sequence[AlertRecord], obs: Observation
    ) -> list[AlertRecord]:
        """Alerts on instances down for a reason no incident's cause accounts for.

        An alert on an instance, or a probe alert on a service (its replicas rolled into one
        alert, or none ready), is one when an instance it names is used, not ready, not the
        target of an action in flight (a restart, a scale-out booting), and the root cause of
        neither ``inc`` nor another unresolved incident (with the replicas tied with it,
        ``_co_roots``, acted on together) explains it.
        """
        down = [(a, {j for j in self._named(a, obs) if obs.inst_used[j] and not obs.inst_ready[j]})
                for a in alerts]
        down = [(a, js) for a, js in down if js]
        if not down or not self._roots(inc, obs):
            return []
        roots = [r for o in self._s.incidents.values() if o is inc or o.phase != "resolved"
                 for r in self._roots(o, obs)]
        busy = {f.action.target for f in self.gate.in_flight()}
        return [a for a, js in down
                if a.target not in busy
                and any(f"inst-{j}" not in busy
                        and not any(self._explains(r, f"inst-{j}", obs) for r in roots)
                        for j in js)]

    def _named(self, alert: AlertRecord, obs: Observation) -> set[int]:
        """The instance slots an alert is about: its own, or a service's for a probe alert."""
        i = _slot(alert.target, obs)
        if i is not None:
            return {i}
        if alert.target.startswith("svc-") and alert_metric(alert) in _DOWN_METRICS:
            return self._instances_of({alert.target}, obs)
        return set()

    def _route_strays(
        self, inc: Incident, stray: Sequence[AlertRecord], obs: Observation,
        rediagnose: bool = False,
    ) -> None:
        """Move ``stray`` out of ``inc``, into an incident that accounts for them.

        That is an active incident whose root cause explains them, else a new incident
        diagnosed from them alone. ``rediagnose``: rank ``inc``'s root causes again from the
        alerts it keeps (before its first step).
        """
        s = self._s
        ids = {a.alert_id for a in stray}
        s.routed.update(ids)
        held = any(i in ids for i in inc.alert_ids)
        if held:
            inc.alert_ids = [i for i in inc.alert_ids if i not in ids]
            kept = {s.alerts[i].target for i in inc.alert_ids if i in s.alerts}
            inc.components -= {a.target for a in stray} - kept
        if rediagnose and (remaining := [s.alerts[i] for i in inc.alert_ids if i in s.alerts]):
            inc.candidates = [(c.component + ":" + c.fault_class, c.confidence)
                              for c in rank_root_causes(remaining, obs)]
        rest = []
        for a in stray:
            home = next((o for o in s.incidents.values()
                         if o is not inc and o.phase in ("opened", "mitigating")
                         and any(self._explains(r, a.target, obs)
                                 for r in self._roots(o, obs))),
                        None)
            if home is None:
                rest.append(a)
                continue
            if a.alert_id not in home.alert_ids:
                home.alert_ids.append(a.alert_id)
                home.components.add(a.target)
            if held:
                self._log_incident(inc, inc.phase,
                                   f"alerts on {a.target} moved to incident {home.incident_id}")
        if not rest:
            return
        names = ", ".join(sorted({a.target for a in rest}))
        self._log_incident(inc, inc.phase, f"alerts on {names} moved to an incident of their own")
        self._new_incident(sorted(a.alert_id for a in rest), rest, obs)

    def _split_off(
        self, inc: Incident, alerts: Sequence[AlertRecord], obs: Observation
    ) -> bool:
        """Route alerts with a confident cause of their own away from ``inc``.

        An incident already remediating one cause must not absorb a second, concurrent one
        (a bad deploy on the service of an instance being restarted for a leak): when the
        new alerts alone point with confidence at a component the incident's root cause does
        not account for, they join the active incident with that diagnosis, or open one.
        A replica diagnosed as slow, failing or hung on its own (the live-only causes, which
        by their rule strike at most half of a service) is such a component even inside a
        service whose incident is open, unless the service's cause shows that way anyway
        (``rca.SERVICE_SYMPTOMS``: a bad deploy fails requests, but does not make one
        replica slow, and that replica, ready all along, would be left slow when the
        deploy's incident resolves).

        Returns:
            Whether the alerts were routed away.
        """
        ranked = rank_root_causes(alerts, obs)
        if not ranked or ranked[0].confidence < CONFIDENT or not inc.root_cause:
            return False
        top = ranked[0]
        root, cause = inc.root_cause.rsplit(":", 1)
        alone = top.fault_class in _ALONE and top.component != root and not produces(cause, alerts)
        if top.label == inc.root_cause or (
            not alone and self._explains(root, top.component, obs)
        ):
            return False
        s = self._s
        ids = [a.alert_id for a in alerts]
        s.routed.update(ids)
        for other in s.incidents.values():
            if other.phase in ("opened", "mitigating") and other.root_cause == top.label:
                other.alert_ids += [i for i in ids if i not in other.alert_ids]
                other.components |= {a.target for a in alerts}
                return True
        self._new_incident(ids, alerts, obs)
        return True

    def _open(self, group: AlertGroup, members: Sequence[AlertRecord], obs: Observation,
              alert_ids: Sequence[int] | None = None) -> None:
        """Give ``group`` an incident for ``members`` (``alert_ids``: theirs, default all)."""
        s = self._s
        targets = {a.target for a in members}
        for other in s.incidents.values():
            # Alerts about a component an active incident is remediating join it, so a
            # remediation in progress does not spawn a competing incident, unless they point
            # with confidence at a cause of their own; an escalated one does not swallow new
            # problems.
            if other.phase in ("opened", "mitigating") and other.components & targets:
                s.group_of[group.group_id] = other.incident_id
                self._absorb(other, members, obs)
                return
        ids = list(group.alert_ids if alert_ids is None else alert_ids)
        s.group_of[group.group_id] = self._new_incident(ids, members, obs)

    def _new_incident(
        self, alert_ids: list[int], members: Sequence[AlertRecord], obs: Observation
    ) -> int:
        s, now = self._s, self.plant.now_s
        inc = Incident(
            incident_id=s.next_incident, opened_s=now, priority="P4",
            components={a.target for a in members}, alert_ids=list(alert_ids),
        )
        s.next_incident += 1
        inc.candidates = [(c.component + ":" + c.fault_class, c.confidence)
                          for c in rank_root_causes(members, obs)]
        inc.priority = priority(self._impact(inc, obs))
        inc.step_started_s = now
        s.incidents[inc.incident_id] = inc
        notified = "P1: human notified; automation proceeds" if inc.priority == "P1" else ""
        self._log_incident(inc, "opened", notified)
        if inc.priority == "P0":
            inc.phase = "escalated"
            self._log_incident(inc, "escalated", "P0: on-call human paged; actions need approval")
        return inc.incident_id

    def _impact(self, inc: Incident, obs: Observation) -> Impact:
        share = 1.0 - self._good_share()
        n_inst = max(int(obs.inst_used.sum()), 1)
        touched = self._instances_of(inc.components, obs)
        data_risk = any(c.endswith("security_vulnerability") for c, _ in inc.candidates[:1]) or any(
            "database" in c for c in inc.components
        )
        return Impact(share, max(share - (1.0 - self.config.slo_target), 0.0),
                      len(touched) / n_inst, data_risk)

    def _instances_of(self, components: set[str], obs: Observation) -> set[int]:
        out: set[int] = set()
        for comp in components:
            kind, _, ident = comp.rpartition("-")
            if kind == "inst" and ident.isdigit():
                out.add(int(ident))
            elif kind == "host" and ident.isdigit():
                on_host = obs.inst_used & (obs.inst_host == int(ident))
                out |= {int(i) for i in np.flatnonzero(on_host)}
            elif kind == "tor" and ident.isdigit():
                out |= {int(i) for i in np.flatnonzero(
                    obs.inst_used & (obs.host_rack[obs.inst_host] == int(ident)))}
            elif kind == "svc" and ident in obs.service_names:
                svc = obs.service_names.index(ident)
                out |= {int(i) for i in np.flatnonzero(obs.inst_used & (obs.inst_service == svc))}
        return out

    def _runbook(self, inc: Incident) -> tuple[Runbook | None, str]:
        if not inc.root_cause or ":" not in inc.root_cause:
            return None, ""
        component, fault_class = inc.root_cause.rsplit(":", 1)
        return RUNBOOKS.get(fault_class), component

    def _advance(self, inc: Incident, obs: Observation) -> None:
        now = self.plant.now_s
        runbook, component = self._runbook(inc)
        if runbook is None:
            if now - inc.opened_s > 600.0 and inc.phase != "escalated":
                inc.phase = "escalated"
                self._log_incident(inc, "escalated", "no runbook for the diagnosed cause")
            return
        if inc.waiting_for or any(p.incident_id == inc.incident_id for p in self._s.pending):
            return
        if (
            inc.step == 0 and inc.candidates and inc.candidates[0][1] < CONFIDENT
            and now - inc.opened_s < EVIDENCE_WAIT_S and not self._split_second_problem(inc, obs)
        ):
            return
        if (inc.step == 0 and not inc.action_ids and inc.root_cause.endswith(":" + SERVICE_HANG)
                and (self._stall_over(inc, runbook, component, obs)
                     or now - inc.opened_s < HANG_CONFIRM_S)):
            return
        if inc.step > 0 and self._healthy(inc, obs):
            stray = self._strays(inc, [self._s.alerts[i] for i in inc.alert_ids
                                       if i in self._s.alerts], obs)
            if stray:
                self._route_strays(inc, stray, obs)
            if inc.verify_after_s == 0.0:
                inc.verify_after_s = now + self.config.verify_hold_s
            if now >= inc.verify_after_s:
                self._resolve(inc, runbook, component, obs)
            return
        relapsed = self._relapsed(inc, obs)
        inc.verify_after_s = 0.0
        deadline = runbook.steps[inc.step - 1].deadline_s if inc.step else 0.0
        # Every action of the step has finished here; one that failed will not help however
        # long the step waits, so the next step starts at once rather than at the deadline.
        # So does a step whose every action the plant refused (a scale-out with no room),
        # once an SLO window after the refusal has shown it unhealthy, and one whose remedy
        # held until what it restored went down again (``_relapsed``).
        failed = any(a not in self._s.succeeded for a in inc.step_action_ids) or (
            self._refused(inc) and self._fresh_share(inc) is not None) or bool(relapsed)
        if inc.step and now < inc.step_started_s + deadline and not failed:
            return
        if inc.step == 0 and inc.hypothesis == 0 and not inc.action_ids:
            self._split_unexplained(inc, obs)
        if relapsed:
            inc.relapses += 1
            again = inc.relapses == 1
            down = all(not obs.inst_ready[i] for c in relapsed
                       if (i := _slot(c, obs)) is not None)
            self._log_incident(inc, inc.phase, f"{', '.join(relapsed)} "
                               f"{'down' if down else 'failing'} again while step "
                               f"{inc.step} was verified; "
                               + ("the step runs again" if again else "the next step starts"))
            if again:
                inc.step -= 1
        exhausted = inc.step >= len(runbook.steps)
        if exhausted and inc.phase != "escalated" and self._next_hypothesis(inc):
            runbook, component = self._runbook(inc)
            if runbook is None:
                return
        if inc.step >= len(runbook.steps):
            if inc.phase != "escalated":
                inc.phase = "escalated"
                self._log_incident(inc, "escalated", "runbook exhausted without recovery; "
                                   "the on-call human reruns it, approving each action")
            if inc.human_reruns >= HUMAN_RERUNS:
                return
            inc.human_reruns += 1
            inc.step = 0
        step = runbook.steps[inc.step]
        if self._shed_not_worth_it(step, component, obs):
            return  # decided again at the next tick
        inc.step += 1
        inc.step_started_s = now
        inc.step_action_ids = []
        inc.step_refused = 0
        # Every step's start is logged: the post-mortem's timeline shows it, and a restarted
        # controller reads from it where the incident stood (``_adopt``).
        if inc.phase == "opened":
            inc.phase = "mitigating"
        self._log_incident(inc, inc.phase, f"runbook step {inc.step}")
        for action in (a for c in self._acted_on(inc, obs)
                       for a in step.resolve(c, obs)):
            self._s.pending.append(_Pending(action, inc.incident_id, f"runbook step {inc.step}"))
        if inc.step == 1:
            self._hold_out(inc, runbook.fault_class, component, obs)
        self._run_pending(obs)

    def _stall_over(
        self, inc: Incident, runbook: Runbook, component: str, obs: Observation
    ) -> bool:
        """Resolve a hang incident, before any action, whose replica answers again.

        The replica is up and ready once more: it was stalled (a loaded machine, a long
        pause), not hung, and a restart would only cost its in-flight requests.

        Returns:
            Whether the incident was resolved.
        """
        i = _slot(component, obs)
        if i is None or not (obs.inst_live[i] and obs.inst_ready[i]):
            return False
        self._resolve(inc, runbook, component, obs, f"{component} answers again before any "
                      "action: stalled, not hung; nothing to do")
        return True

    def _relapsed(self, inc: Incident, obs: Observation) -> list[str]:
        """Instances the step restored that are down again while its result is verified.

        The verification hold has begun (the step's actions succeeded and the incident was
        healthy), and an instance of the root cause, or of a replica tied with it, is used,
        not ready, and not the target of an action in flight: a new failure of what the step
        repaired. Waiting out the step's deadline (minutes) would not bring it back, so the
        step is over at once: the first relapse of an incident runs the same step again (the
        remedy worked, a replica crashing again a second after its restart gets another),
        a later one moves on to the next step, as a remedy that does not hold would. The
        per-target cooldown still spaces the actions. A replica restarted for being slow or
        failing requests on its own relapses the same way when, still ready, it is slow
        again (p99 at least ``SLOW_P99_S``) or fails more than ``HEALTHY_ERROR_RATE`` of its
        requests again. Empty otherwise.
        """
        if inc.verify_after_s <= 0.0:
            return []
        busy = {f.action.target for f in self.gate.in_flight()}
        own = self._instances_of(set(self._roots(inc, obs)), obs)
        cause = inc.root_cause.rsplit(":", 1)[-1]

        def again(i: int) -> bool:
            if not obs.inst_ready[i]:
                return True
            if cause == SLOW_RESPONSE:
                return bool(obs.inst[i, _P99] >= SLOW_P99_S)
            return cause == ERROR_RESPONSES and bool(obs.inst[i, _ERR] > HEALTHY_ERROR_RATE)

        return [f"inst-{i}" for i in sorted(own)
                if obs.inst_used[i] and again(i) and f"inst-{i}" not in busy]

    def _acted_on(self, inc: Incident, obs: Observation) -> list[str]:
        """The components a runbook step acts on: the root cause and the replicas tied.

        Of a tie, only the replicas still down when the step starts (when any is): a
        service-wide alert raised while one replica restarted for another incident ties it
        with the replicas that crashed, and by the time this incident acts (after its
        evidence wait) that replica serves again and needs no second restart.
        """
        tied = self._roots(inc, obs)
        if len(tied) == 1:
            return tied
        down = [c for c in tied if (i := _slot(c, obs)) is not None
                and obs.inst_used[i] and not obs.inst_ready[i]]
        return down or tied

    def _shed_not_worth_it(self, step: Step, component: str, obs: Observation) -> bool:
        """A surge's shed step waits while it would turn away more than the surge fails.

        A shed turns away SHED_STEP of the requests for certain. It pays while the latest SLO
        window lost more than that, or a service is saturated (its queue is about to); a
        surge that only nicks the SLO is better served by the capacity already added.
        """
        if component != "cluster" or not any(kind == "shed_load" for kind, _ in step.actions):
            return False
        return (self._good_share() > 1.0 - SHED_STEP
                and float(self._service_util(obs).max()) < BRIDGE_UTIL)

    def _co_roots(self, inc: Incident, obs: Observation) -> list[str]:
        """Other instances of the root cause's service that tie with it for the diagnosis.

        When every replica of a service fails at once the probes raise one alert for the
        service, and the diagnosis ranks each replica equally; the runbook then acts on all
        of them, not on the first of the tie alone. Only for the first diagnosis (a
        runner-up is a different explanation, not a tie), and only replicas still used.
        """
        if inc.hypothesis != 0 or len(inc.candidates) < 2:
            return []
        top, conf = inc.candidates[0]
        component, _, fault_class = top.rpartition(":")
        root = _slot(component, obs)
        if root is None:
            return []
        svc = int(obs.inst_service[root])
        out = []
        for label, c in inc.candidates[1:]:
            other, _, cls = label.rpartition(":")
            i = _slot(other, obs)
            if (i is not None and cls == fault_class and abs(c - conf) <= 1e-9 * max(conf, 1.0)
                    and obs.inst_used[i] and int(obs.inst_service[i]) == svc):
                out.append(other)
        return out

    def _split_second_problem(self, inc: Incident, obs: Observation) -> bool:
        """Give a second problem the group caught its own incident (``rca.second_problem``).

        A low-confidence diagnosis waits for more evidence, unless what lowers it is a
        second, independent problem: its alerts move to an incident of their own, and the
        leader, diagnosed again from the rest, is acted on at once when that makes it
        confident.

        Returns:
            Whether the incident's diagnosis is now confident.
        """
        alerts = [self._s.alerts[i] for i in inc.alert_ids if i in self._s.alerts]
        theirs = second_problem(alerts, obs, confident=CONFIDENT, leader=inc.root_cause)
        if not theirs:
            return False
        self._route_strays(inc, theirs, obs, rediagnose=True)
        return bool(inc.candidates) and inc.candidates[0][1] >= CONFIDENT

    def _split_unexplained(self, inc: Incident, obs: Observation) -> None:
        """Before the first step, give instances down for a cause of their own an incident.

        Two replicas of a service that crash together correlate into one incident whose root
        cause is one of them (the two diagnoses tie); its runbook restarts that one, and the
        incident resolves once it serves again, leaving the other down with its alerts
        already taken. Alerts on instances that are not ready and that the root cause does not
        account for (not the root instance, nor on its host, rack or service) move to an
        incident of their own, which is diagnosed from them alone and splits again the same
        way when several instances remain.
        """
        s = self._s
        root = inc.root_cause.rsplit(":", 1)[0]
        moved: list[AlertRecord] = []
        for aid in inc.alert_ids:
            a = s.alerts.get(aid)
            if a is None:
                continue
            i = _slot(a.target, obs)
            if (i is not None and obs.inst_used[i] and not obs.inst_ready[i]
                    and not self._explains(root, a.target, obs)):
                moved.append(a)
        if not moved:
            return
        self._route_strays(inc, moved, obs, rediagnose=True)

    def _next_hypothesis(self, inc: Incident) -> bool:
        """After a runbook ran out, act on the runner-up diagnosis if it is plausible.

        Two causes can look alike (a bad deploy on a database that is also saturated by a
        surge); an operator tries the second explanation before paging anyone.
        """
        nxt = inc.hypothesis + 1
        if nxt >= len(inc.candidates) or inc.candidates[nxt][1] < RUNNER_UP_MIN:
            return False
        tried = inc.root_cause
        if inc.candidates[nxt][0].rsplit(":", 1)[-1] not in RUNBOOKS:
            return False
        inc.hypothesis = nxt
        inc.step = 0
        self._log_incident(inc, "mitigating",
                           f"runbook for {tried} ran out; trying the runner-up diagnosis")
        return True

    def _retry_s(self, inc: Incident) -> float:
        """Blocked actions are retried until their step's deadline (cooldowns pass)."""
        runbook, _ = self._runbook(inc)
        if runbook is None or inc.step == 0:
            return BLOCKED_RETRY_S
        return runbook.steps[min(inc.step, len(runbook.steps)) - 1].deadline_s

    def _resolve(self, inc: Incident, runbook: Runbook, component: str, obs: Observation,
                 note: str = "") -> None:
        inc.phase = "resolved"
        inc.resolved_s = self.plant.now_s
        self._log_incident(inc, "resolved", note)
        done = {(self._s.executed[a].action.kind, self._s.executed[a].action.target)
                for a in inc.action_ids if a in self._s.succeeded}
        for kind, rule in runbook.follow_up:
            if kind == "stop_shedding" and self._s.shed_level <= 0.0:
                continue
            for target in rule(component, obs):
                if (kind, target) in done:
                    continue  # a fallback step already did it (a fan swapped in step 3)
                self._s.pending.append(_Pending(Action(kind, target), inc.incident_id, "follow-up"))
        for target in self._s.surge_added.pop(inc.incident_id, []):
            self._s.pending.append(_Pending(
                Action("scale_in", target), inc.incident_id,
                f"follow-up: remove the {SURGE_CAPACITY} added for this incident",
                retry_until_s=self.plant.now_s + CAPACITY_WAIT_S,
            ))
        self._run_pending(obs)

    def _healthy(self, inc: Incident, obs: Observation) -> bool:
        """The current step's actions all succeeded and what the incident is about is well.

        Local, so one incident's recovery does not wait on another's: the root-cause
        instance (or every instance still placed on the root-cause host) is ready again, and
        the request-weighted error rate of the ready instances of the touched services is
        under ``HEALTHY_ERROR_RATE``. Instances another incident took out of rotation (a
        failed-over rack) do not hold this one open. An instance diagnosed slow on its own
        (``slow_response``) must also answer within ``SLOW_P99_S`` again. A cluster-wide
        cause (a load surge) needs the SLO met; when the plant refused every action of the
        step (no room to scale out), in an SLO window begun after the refusal.
        """
        component = inc.root_cause.rsplit(":", 1)[0]
        if component == "cluster" and self._refused(inc):
            # Capacity the plant had no room for: if the SLO holds under the surge anyway
            # (in a window that began after the refusal), the surge is absorbed, and the
            # runbook's last step, a shed, would only turn requests away.
            share = self._fresh_share(inc)
            return share is not None and share >= self.config.slo_target
        if not inc.step_action_ids or not set(inc.step_action_ids) <= self._s.succeeded:
            return False
        if component == "cluster":
            return self._good_share() >= self.config.slo_target
        kind, _, ident = component.rpartition("-")
        if kind in ("inst", "host") and ident.isdigit():
            own = self._instances_of({component, *self._co_roots(inc, obs)}, obs)
            if any(obs.inst_used[i] and not obs.inst_ready[i] for i in own):
                return False
            if inc.root_cause.endswith(":" + SLOW_RESPONSE) and any(
                obs.inst_used[i] and obs.inst[i, _P99] >= SLOW_P99_S for i in own
            ):
                return False
        touched = self._instances_of(inc.components | {component}, obs)
        services = {int(obs.inst_service[i]) for i in touched if obs.inst_used[i]}
        for svc in services:
            members = obs.inst_used & obs.inst_ready & (obs.inst_service == svc)
            rps = obs.inst[members, _RPS]
            err = float((rps * obs.inst[members, _ERR]).sum() / max(float(rps.sum()), 1e-9))
            if err > HEALTHY_ERROR_RATE:
                return False
        return True

    # ------------------------------------------------------------------ actions
    def _run_pending(self, obs: Observation) -> None:
        s, now, log = self._s, self.plant.now_s, self.plant.log
        keep: list[_Pending] = []
        for p in s.pending:
            inc = s.incidents[p.incident_id]
            if p.ticket is not None:
                if now < p.ticket.decide_at_s:
                    keep.append(p)
                    continue
                phase = "approved" if p.ticket.approved else "denied"
                log.add(ApprovalRecord(log.next_seq, now, inc.incident_id, p.action.kind,
                                       p.action.target, phase))
                if p.ticket.approved:
                    # Limits may have changed while the human decided: check again.
                    verdict = self.gate.check(p.action, obs, now, approved=True)
                    if verdict.kind == "allowed":
                        self._submit(p, inc, obs, "approved by operator")
                    else:
                        log.add(DecisionRecord(log.next_seq, now, inc.incident_id,
                                               p.action.kind, p.action.target, verdict.kind,
                                               verdict.reason, False))
                continue
            shared = self._shared(p, inc)
            if shared is not None:
                self._join(p, inc, shared)
                continue
            verdict = self.gate.check(p.action, obs, now)
            needs_human = verdict.kind == "needs_approval" or (
                inc.phase == "escalated" and verdict.kind == "allowed"
            )
            if verdict.kind == "blocked":
                if p.blocked_reason != verdict.reason:
                    p.blocked_reason = verdict.reason
                    log.add(DecisionRecord(log.next_seq, now, inc.incident_id, p.action.kind,
                                           p.action.target, "blocked", verdict.reason, False))
                if not self.gate.stopped:
                    keep.extend(self._make_room(p, obs, keep))
                # A bridge is decided afresh (``_bridge``), not retried once its moment passed.
                if not self.gate.stopped and not p.reason.startswith(BRIDGE) and (
                        now - inc.step_started_s < self._retry_s(inc)
                        or now < p.retry_until_s):
                    keep.append(p)
                continue
            if verdict.kind == "dry_run":
                log.add(DecisionRecord(log.next_seq, now, inc.incident_id, p.action.kind,
                                       p.action.target, "dry_run", p.reason, False))
                continue
            if needs_human:
                if self.operator is None:
                    log.add(DecisionRecord(log.next_seq, now, inc.incident_id, p.action.kind,
                                           p.action.target, "blocked",
                                           "needs approval and no operator is configured", False))
                    continue
                p.ticket = self.operator.request(p.action, now)
                log.add(ApprovalRecord(log.next_seq, now, inc.incident_id, p.action.kind,
                                       p.action.target, "requested"))
                keep.append(p)
                continue
            self._submit(p, inc, obs, p.reason)
        s.pending = keep

    def _make_room(
        self, p: _Pending, obs: Observation, queued: Sequence[_Pending]
    ) -> list[_Pending]:
        """Surge capacity for an instance action its service is too small to allow.

        A restart of one of the cache's two replicas is refused by a blast-radius limit of
        25% of a service under disruptive actions. As a rolling update's max-surge adds a
        replica first, the action waits up to CAPACITY_WAIT_S while scale-outs of its
        service, one at a time and each through the gate, bring the service to the size at
        which it passes; the replicas are scaled in once its incident resolves. Returns the
        scale-out to queue, if one is due now.
        """
        need = self.gate.capacity_needed(p.action, obs)
        if need is None:
            return []
        svc, size = need
        now = self.plant.now_s
        p.retry_until_s = max(p.retry_until_s, now + CAPACITY_WAIT_S)
        target = f"svc-{obs.service_names[svc]}"
        growing = any(q.action.kind == "scale_out" and q.action.target == target
                      for q in (*self._s.pending, *queued))
        growing = growing or any(f.action.kind == "scale_out" and f.action.target == target
                                 for f in self.gate.in_flight())
        if growing or p.surge_requests >= size:
            return []  # one at a time; and never more tries than replicas (a plant refusing)
        p.surge_requests += 1
        have = int((obs.inst_used & (obs.inst_service == svc)).sum())
        return [_Pending(
            Action("scale_out", target), p.incident_id,
            f"{SURGE_CAPACITY}: {p.action.kind} of {p.action.target} needs {size} instances "
            f"of {target} under the blast-radius limit, it has {have}",
            retry_until_s=now + CAPACITY_WAIT_S,
        )]

    def _submit(self, p: _Pending, inc: Incident, obs: Observation, reason: str) -> None:
        log, now = self.plant.log, self.plant.now_s
        result = self.plant.apply(p.action)
        if not result.accepted:
            log.add(DecisionRecord(log.next_seq, now, inc.incident_id, p.action.kind,
                                   p.action.target, "rejected", result.reason, False))
            if not reason.startswith(("follow-up", "rollback")):
                inc.step_refused += 1
            return
        self.gate.started(p.action, result.action_id, obs, now)
        log.add(DecisionRecord(log.next_seq, now, inc.incident_id, p.action.kind, p.action.target,
                               "allowed", reason, True, result.action_id))
        inc.action_ids.append(result.action_id)
        if p.action.kind == "shed_load":
            self._s.shed_started[result.action_id] = now
        if not reason.startswith(("follow-up", "rollback")):
            inc.step_action_ids.append(result.action_id)
        inc.waiting_for.add(result.action_id)
        self._s.executed[result.action_id] = _Executed(
            p.action, inc.incident_id, self._good_share(), reason.startswith("rollback"),
            surge_capacity=reason.startswith(SURGE_CAPACITY), started_s=now,
            bridge=reason.startswith(BRIDGE), hold_for=_held_for(reason),
        )
        self._s.latest[(p.action.kind, p.action.target)] = result.action_id

    def _shared(self, p: _Pending, inc: Incident) -> int | None:
        """The same repair of the same target, run for another incident since this one opened.

        Four replicas crash within a fraction of a second: one incident restarts all four
        (they tie for its diagnosis) while the last crash, seen a probe later, opens an
        incident of its own whose restart of that replica is blocked as in flight. Retried
        once the cooldown passes, it would restart a replica that already serves again. The
        running (or succeeded) action serves this incident's step instead; a failed one does
        not, and the step's action then runs as usual.
        """
        if p.action.kind not in SHARED_REPAIRS or not p.reason.startswith("runbook step"):
            return None
        aid = self._s.latest.get((p.action.kind, p.action.target))
        if aid is None:
            return None
        ex = self._s.executed[aid]
        owner = self._s.incidents[ex.incident_id]
        running = aid in owner.waiting_for
        if (ex.incident_id == inc.incident_id or ex.rollback or ex.started_s < inc.opened_s
                or not (running or aid in self._s.succeeded)):
            return None
        return aid

    def _join(self, p: _Pending, inc: Incident, aid: int) -> None:
        """Let ``inc``'s step wait on (and be verified by) another incident's action ``aid``."""
        log, now = self.plant.log, self.plant.now_s
        ex = self._s.executed[aid]
        log.add(DecisionRecord(log.next_seq, now, inc.incident_id, p.action.kind, p.action.target,
                               "shared", f"{p.reason}: the same action already ran for "
                               f"incident {ex.incident_id}", False, aid))
        inc.action_ids.append(aid)
        inc.step_action_ids.append(aid)
        if aid in self._s.incidents[ex.incident_id].waiting_for:
            inc.waiting_for.add(aid)
            ex.sharers.append(inc.incident_id)

    def _finish_actions(self, events: Sequence[object]) -> None:
        s = self._s
        for r in events:
            if not (isinstance(r, ActionRecord) and r.phase in ("succeeded", "failed")):
                continue
            ex = s.executed.get(r.action_id)
            if ex is None:
                continue
            inc = s.incidents[ex.incident_id]
            inc.waiting_for.discard(r.action_id)
            for other in ex.sharers:
                s.incidents[other].waiting_for.discard(r.action_id)
            if r.phase == "succeeded":
                s.succeeded.add(r.action_id)
                if ex.action.kind == "shed_load":
                    s.shed_level = min(s.shed_level + SHED_STEP, SHED_MAX)
                    s.shed_incident = ex.incident_id
                elif ex.action.kind == "stop_shedding":
                    s.shed_level = 0.0
                    s.bridge_for = frozenset()
                elif ex.action.kind == "failover_rack":
                    s.failed_over[ex.action.target] = ex.incident_id
                elif ex.action.kind == "failback_rack":
                    s.failed_over.pop(ex.action.target, None)
                elif ex.action.kind == "repair_switch":
                    self._fail_back(ex.action.target)
                elif ex.action.kind == "drain_host":
                    s.drained[ex.action.target] = ex.incident_id
                elif ex.action.kind in HOST_REPAIRS:
                    self._uncordon(ex.action.target)
                elif ex.action.kind == "reroute_traffic" and ex.hold_for:
                    s.held_out[ex.action.target] = (ex.incident_id, ex.hold_for)
                elif ex.action.kind == "restore_traffic":
                    s.held_out.pop(ex.action.target, None)
                elif ex.surge_capacity:
                    s.surge_added.setdefault(ex.incident_id, []).append(ex.action.target)
                # Adding capacity cannot make the twin worse; a surge that keeps growing would
                # otherwise read as the scale-out's fault. A bridging shed loses its share by
                # design and ends by itself when the capacity lands. A replica held out of
                # rotation while its cause is fixed comes back with the fix: the windows
                # meanwhile are the cause's, not the hold-out's.
                if (self.safety.rollback_enabled and not ex.rollback
                        and ex.action.kind != "scale_out"
                        and not ex.bridge and not ex.hold_for
                        and rollback_action(ex.action) is not None):
                    ex.finished_s = r.t_s
                    s.to_verify.append(r.action_id)
        self._verify_actions()

    def _hold_out(self, inc: Incident, fault_class: str, component: str,
                  obs: Observation) -> None:
        """Take the replicas a cause keeps harming out of rotation while its fix runs.

        A degraded host link drops a share of the packets of every request its replicas
        serve for the five minutes a link repair takes; a bad configuration caught on its
        canaries fails their share of requests for the minute a rollback takes. The rest
        of each service can serve those requests meanwhile, as an operator would drain a
        flapping link or a failing canary first. Queued after the step's own actions (the
        fix is submitted first under the rate limit); only replicas that serve, at most
        HOLD_OUT_MAX, and only where the rest of their service would stay below
        HOLD_OUT_UTIL. ``_release_held`` puts them back once the fix shows.
        """
        if fault_class == FaultKind.LINK_DEGRADATION.value and component.startswith("link-host-"):
            cand = obs.inst_used & (obs.inst_host == component_index(component))
        elif fault_class == FaultKind.BAD_CONFIG.value:
            cand = self._canaries(component, obs)
        else:
            return
        s = self._s
        serving = obs.inst_used & obs.inst_ready & (obs.inst[:, _RPS] > 0.0)
        queued = {p.action.target for p in s.pending if p.action.kind == "reroute_traffic"}
        chosen: list[int] = []
        for svc in np.unique(obs.inst_service[cand & serving]):
            members = serving & (obs.inst_service == svc)
            out = [int(i) for i in np.flatnonzero(cand & members)
                   if f"inst-{i}" not in s.held_out and f"inst-{i}" not in queued]
            rest = int(members.sum()) - len(out)
            if not out or rest < 1:
                continue
            if float(obs.inst[members, _CPU_UTIL].sum()) / rest < HOLD_OUT_UTIL:
                chosen += out
        for i in chosen[:HOLD_OUT_MAX]:
            s.pending.append(_Pending(
                Action("reroute_traffic", f"inst-{i}"), inc.incident_id,
                f"{HOLD_OUT}: inst-{i} out of rotation while {component} is fixed",
            ))

    @staticmethod
    def _canaries(component: str, obs: Observation) -> np.ndarray:
        """The replicas of a service on a newer configuration than most of the others."""
        none = np.zeros(obs.inst_used.shape, dtype=bool)
        versions = obs.inst_config_version
        name = component.removeprefix("svc-")
        if versions is None or not component.startswith("svc-") or name not in obs.service_names:
            return none
        members = obs.inst_used & (obs.inst_service == obs.service_names.index(name))
        if not members.any() or versions[members].min() == versions[members].max():
            return none
        newest = members & (versions == versions[members].max())
        return newest if 2 * int(newest.sum()) < int(members.sum()) else none

    def _release_held(self, obs: Observation) -> None:
        """Put held-out replicas back into rotation once their cause is fixed.

        A host link is fixed when the host reports no packet loss; a canary when it runs the
        configuration most of its service runs (rolled back, or promoted everywhere). A
        replica gone from its slot is forgotten.
        """
        s = self._s
        if not s.held_out:
            return
        now, queued = self.plant.now_s, False
        busy = {p.action.target for p in s.pending if p.action.kind == "restore_traffic"}
        busy |= {f.action.target for f in self.gate.in_flight()
                 if f.action.kind == "restore_traffic"}
        for inst, (incident_id, component) in list(s.held_out.items()):
            i = _slot(inst, obs)
            if i is None or not obs.inst_used[i]:
                del s.held_out[inst]
                continue
            if inst in busy or not self._fixed(component, i, obs):
                continue
            del s.held_out[inst]
            s.pending.append(_Pending(
                Action("restore_traffic", inst), incident_id,
                f"follow-up: {component} fixed, {inst} back into rotation",
                retry_until_s=now + CAPACITY_WAIT_S,
            ))
            queued = True
        if queued:
            self._run_pending(obs)

    @staticmethod
    def _fixed(component: str, slot: int, obs: Observation) -> bool:
        """Whether what held ``slot`` out of rotation is fixed (see ``_release_held``)."""
        if component.startswith("link-host-"):
            return float(obs.host[component_index(component), _LINK_LOSS]) <= 0.0
        versions = obs.inst_config_version
        if versions is None:
            return True
        others = obs.inst_used & (obs.inst_service == obs.inst_service[slot])
        others[slot] = False
        if not others.any():
            return True
        values, counts = np.unique(versions[others], return_counts=True)
        return bool(versions[slot] == values[int(np.argmax(counts))])

    def _fail_back(self, switch: str) -> None:
        """Once a failed-over rack's top-of-rack switch is repaired, serve from it again.

        Without this the rack's instances stay out of rotation for good: the capacity the
        failover's scale-out added then carries the whole load, and the next surge finds the
        service short of what it appears to run (its idle, out-of-rotation replicas look
        ready and unloaded).
        """
        kind, _, ident = switch.rpartition("-")
        rack = f"rack-{ident}"
        if kind != "tor" or rack not in self._s.failed_over:
            return
        self._s.pending.append(_Pending(
            Action("failback_rack", rack), self._s.failed_over[rack],
            f"follow-up: {switch} repaired, put {rack} back into rotation",
        ))

    def _uncordon(self, host: str) -> None:
        """Once a host this engine drained is repaired, let it take instances again.

        Without this every host drained for a worn disk or a failing fan stays out of the
        scheduler's pool for good after its repair, and the cluster's head-room for
        scale-outs and migrations shrinks with every such fault.
        """
        incident = self._s.drained.pop(host, None)
        if incident is None:
            return
        self._s.pending.append(_Pending(
            Action("uncordon_host", host), incident,
            f"follow-up: {host} repaired, back into the scheduler's pool",
        ))

    def _verify_actions(self) -> None:
        """Undo a finished action once a whole SLO window after it is worse than before it."""
        s = self._s
        if not s.to_verify:
            return
        window = self._latest_window()
        keep: list[int] = []
        for aid in s.to_verify:
            ex = s.executed[aid]
            assert ex.finished_s is not None
            if window is None or window.t_s - window.window_s < ex.finished_s:
                keep.append(aid)
                continue
            after = window.good / window.requests if window.requests else 1.0
            inverse = rollback_action(ex.action)
            if ex.good_share_before - after > self.config.rollback_tolerance and inverse:
                s.pending.append(_Pending(
                    inverse, ex.incident_id,
                    f"rollback of {ex.action.kind}: good share {ex.good_share_before:.4f} "
                    f"before, {after:.4f} in the window after",
                ))
        s.to_verify = keep

    def _latest_window(self) -> SloWindow | None:
        for r in reversed(self.plant.log.since(max(0, self.plant.log.next_seq - 400))):
            if isinstance(r, SloWindow):
                return r
        return None

    @staticmethod
    def _refused(inc: Incident) -> bool:
        """The plant refused every action of the incident's current step."""
        return inc.step_refused > 0 and not inc.step_action_ids

    def _fresh_share(self, inc: Incident) -> float | None:
        """Good share of the latest SLO window begun since the current step; None if none."""
        w = self._latest_window()
        if w is None or w.t_s - w.window_s < inc.step_started_s:
            return None
        return _served_share(w)

    def _good_share(self) -> float:
        w = self._latest_window()
        return _served_share(w) if w is not None else 1.0

