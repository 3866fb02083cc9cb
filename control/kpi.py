"""Healing KPIs computed from the event log alone, in sim and live mode alike.

Everything here reads typed records (:mod:`sim.events`) and nothing else, so the same numbers
come out of a twin run, a live run or a log read back from JSON Lines.

Per fault (:func:`fault_outcomes`)
----------------------------------
Let ``f`` be a :class:`~sim.events.FaultRecord` with onset ``t0`` (its ``t_s``, ground truth).

* **Components of f**: its ``target`` and ``affected`` set plus every component of a
  :class:`~sim.events.StateChange` that carries ``f``'s ``fault_id`` (e.g. a replica booted
  after ``t0`` and then compromised).
* **Active period**: ``[t0, t_clear]``, where ``t_clear`` is the time of ``f``'s first
  :class:`~sim.events.FaultCleared`, or +inf when it was never cleared. Evidence about ``f``
  (alerts, impairing state changes, SLO dips) is only taken from its active period, so a fault
  cleared at 350 s is not blamed for an alert on the same instance an hour later.
* **Attributed alerts**: :class:`~sim.events.AlertRecord` s whose ``target`` is a component
  of ``f`` and whose ``t_s`` lies in the active period. An alert can be attributed to several
  overlapping faults, with one exception: a *cluster-wide* fault (target ``cluster``: a load
  surge, whose components are every service) does not take an alert whose target is also a
  component of a fault with a later onset that is active at the alert. A surge lasts hours
  and touches every service, so without this a crash, bad deploy or CVE advisory on any
  service during it would count as the surge's detection (and harm), as the loss
  attribution (:func:`lost_requests_by_kind`) already charges a window to the latest onset.
* **Detection** ``td``: the time of the first attributed alert; None if there is none.
* **Impairment evidence**, the earliest of which is ``t_imp``:

  - an impairing state change (``down``, ``not_ready``, ``compromised``, ``disk_degraded``,
    ``disk_failed``) on a component of ``f`` in the active period, unless the record carries
    the id of *another* fault (then that fault caused it);
  - an attributed alert (so a memory leak restarted on a predictor's alert before it did any
    harm still "needed healing", and counts with ``t_imp = td``);
  - an unhealthy SLO window (``good / requests < slo_target``) ending in
    ``(t0, t0 + deadline_s]`` and starting before ``t_clear``, with ``t_imp`` = max(window
    start, ``t0``); for a cluster-wide fault, the first such window in which no fault with a
    later onset is active. Faults that harm at once do so within minutes, so a later dip is taken as
    someone else's; a load_surge, whose demand may ramp for hours, takes dips up to
    ``t_clear`` instead. Latent kinds (memory_leak, disk_degradation, fan_failure,
    security_vulnerability) take hours to do harm, so no SLO dip is taken as theirs; their
    harm shows up as state changes or alerts. SLO windows are cluster-wide, so concurrent
    faults share a dip.

  ``needed_healing`` is True iff there is any evidence. A fault without any (a leak never
  alerted on and healed by an unrelated restart, a noisy neighbour the cluster absorbed) did
  not need healing: its ``recovered_s`` is None and it is left out of every mean and rate.
  An unexploited CVE advisory (state ``vulnerable``) is not impairment by itself.
* **Recovery** ``tr``: the earliest ``t >= t_imp`` such that the restoration predicate
  ``R`` below holds throughout ``[t, t + hold_s]``, every SLO window overlapping
  ``(t, t + hold_s]`` is healthy (a window without requests is healthy), and SLO windows cover
  the log up to ``t + hold_s``; None if no such ``t`` (unrecovered, or too little log left to
  confirm). ``R(t)`` is the conjunction of

  a. *component restoration*. The components of ``f`` with an impairing state change (rule
     above) at or after ``t0`` are *impaired*. If any of them is an instance, every impaired
     instance must be healthy: ``removed`` (replaced), out of load-balancer rotation (a
     succeeded ``reroute_traffic`` or ``quarantine_instance`` not undone by
     ``restore_traffic``, or for a fault on ``tor-r`` / ``uplink-r`` a succeeded
     ``failover_rack`` of ``rack-r``), or up, ready and not compromised (``down`` is undone
     by ``up``, ``not_ready`` by ``ready``, ``compromised`` by ``rebuilt``). Otherwise every
     impaired host or switch must be healthy: up, with no degraded or failed disk (undone by
     ``disk_ok``), or drained (a succeeded ``drain_host`` not undone by ``uncordon_host``).
     Hosts and switches under impaired instances need not come back: service is restored
     once the instances serve again, wherever they run, so a failed host whose replicas
     were cold-migrated is recovered although its 4-hour hardware repair is still to come.
  b. *root cause repaired*, for the kinds whose cause keeps impairing until it is removed:
     memory_leak (the leak grows back to an OOM kill), bad_config, security_vulnerability,
     link_degradation, noisy_neighbour, fan_failure and disk_degradation: ``f`` has a
     ``FaultCleared`` at or before ``t``, or, for a cause on one host or rack, the load was
     moved away from it (a succeeded ``drain_host`` of ``host-h`` for a fault on ``host-h``
     or ``link-host-h``; a succeeded ``failover_rack`` of ``rack-r`` for ``uplink-r``). The
     other kinds impair only through their instances or the SLO and need no clearance:
     service_crash, vm_failure, host_failure, network_partition (its unreachable instances
     must be ready again, i.e. the switch repaired, or failed over) and load_surge (demand,
     not a defect: it is recovered when the SLO holds again under it).

* **MTTD** = mean(``td - t0``); **MTTR** = mean(``tr - t0``) (time to restore, detection
  included); **MTTM** = mean(max(``tr - td``, 0)), 0 when the fault was restored before it
  was detected. Means are over faults that needed healing and have the times involved.
* **auto_recovered**: ``tr`` exists and ``tr <= t_imp + deadline_s``, and no incident that
  contains an alert attributed to ``f`` up to ``tr`` (later ones concern whatever else
  touched the same components) was escalated or had an action approved by a human before it
  resolved (a follow-up such as a disk replacement approved after recovery does not make
  the recovery manual; it still counts in the human intervention rate). The
  deadline runs from ``t_imp``, which is ``t0`` for every fault that harms at once; for a
  latent fault (a leak hours from its OOM kill) it starts when the fault first shows, since
  nothing could be healed before that.
* **rca_rank**: the 1-based position of the true root cause, ``"<target>:<kind>"`` of ``f``,
  among the candidates of the incident that contains ``f``'s first attributed alert (its
  last record with candidates; ``root_cause`` alone if none has any); None when there is no
  such incident (``incident_id`` is None then) or the true cause is not among them.
* An incident *contains* the alerts its latest record lists. The engine's records list
  every alert so far, so that is all of them, except alerts it moved to an incident of
  their own (instances down for another cause than the incident's); those belong to the
  new incident only.

Per run (:func:`compute_kpis`)
------------------------------
* ``healing_success_rate`` = faults auto-recovered / faults that needed healing.
* Over incidents (distinct ``incident_id``): ``auto_resolution_rate`` = incidents with a
  ``resolved`` record and no ``escalated`` one / all; ``escalation_rate`` = incidents with an
  ``escalated`` record / all.
* ``human_intervention_rate`` = human-gated actions / all actions, where *all actions* are
  executed decisions (:class:`~sim.events.DecisionRecord` with ``executed=True``), approval
  requests a human ``denied`` or let time out, and manual actions; *human-gated* are the
  executed decisions matched to an earlier ``approved`` :class:`~sim.events.ApprovalRecord`
  of the same incident, action and target (each approval matches one decision), the denied
  and timed-out requests, and the manual actions. A manual action is a ``started``
  :class:`~sim.events.ActionRecord` no executed decision refers to; it is only recognised
  when the log has decisions at all (otherwise an agent drove the plant directly and the
  rate is NaN).
* ``availability`` = sum(good) / sum(requests) over SLO windows (request-weighted);
  ``time_availability`` = window time meeting ``slo_target`` / all window time;
  ``slo_violation_minutes`` = window time below it, in minutes.
* ``rca_top1`` / ``rca_top3``: over incidents with at least one attributed fault, the share
  whose candidates rank the true root cause of one of those faults first / in the first
  three (an incident that merges concurrent faults is right if it names one of them).
  Incidents no fault's alert belongs to are counted in ``incidents_unattributed``.
* Counts: ``faults``, ``faults_needing_healing``, ``faults_detected``, ``faults_recovered``,
  ``faults_auto_recovered``, ``incidents``, ``actions`` (``started`` records),
  ``action_cost_usd`` (sum of ``cost_usd`` over action records).
* ``faults_censored``: faults that needed healing, are not auto-recovered and not escalated,
  and whose deadline plus the hold period (``t_imp + deadline_s + hold_s``) lies after the
  end of the last SLO window: the run ended before their outcome was known. They still count
  as not healed in ``healing_success_rate``; this count says how many of its misses are
  such right-censored faults rather than failures.

Rates are fractions in [0, 1]. A rate whose denominator is 0 and a mean over an empty set are
NaN, never a made-up 0 or 1.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sim.events import (
    ActionRecord,
    AlertRecord,
    ApprovalRecord,
    DecisionRecord,
    Event,
    FaultCleared,
    FaultRecord,
    IncidentRecord,
    SloWindow,
    StateChange,
)

NAN = float("nan")
IMPAIRING_STATES = frozenset({"down", "not_ready", "compromised", "disk_degraded", "disk_failed"})
LATENT_KINDS = frozenset(
    {"memory_leak", "disk_degradation", "fan_failure", "security_vulnerability"}
)
"""Kinds that take hours to do harm: an SLO dip in their active period is not theirs."""
SLOW_ONSET_KINDS = frozenset({"load_surge"})
"""Kinds whose SLO harm may start long after onset (a demand ramp of up to hours)."""
MUST_CLEAR_KINDS = frozenset(
    {
        "memory_leak", "bad_config", "security_vulnerability", "link_degradation",
        "noisy_neighbour", "fan_failure", "disk_degradation",
    }
)
"""Kinds whose root cause keeps impairing until it is repaired (or the load moved away)."""
OUT_OF_ROTATION_ACTIONS = frozenset({"reroute_traffic", "quarantine_instance"})
HUMAN_NOT_EXECUTED = frozenset({"denied", "timed_out"})

KPI_LABELS: dict[str, str] = {
    "mttd_s": "MTTD (s)",
    "mttr_s": "MTTR (s)",
    "mttm_s": "MTTM (s)",
    "healing_success_rate": "healing success rate",
    "auto_resolution_rate": "auto-resolution rate",
    "escalation_rate": "escalation rate",
    "human_intervention_rate": "human intervention rate",
    "availability": "availability (request-weighted)",
    "time_availability": "availability (time-weighted)",
    "slo_violation_minutes": "SLO violation (min)",
    "rca_top1": "RCA top-1 accuracy",
    "rca_top3": "RCA top-3 accuracy",
    "action_cost_usd": "action cost (USD)",
}
"""Human-readable names for :func:`to_markdown`; the key, with its unit, is shown too."""


@dataclass(frozen=True, slots=True)
class FaultOutcome:
    """What happened to one injected fault; times are simulated seconds, None if never."""

    fault_id: int
    kind: str
    target: str
    t0_s: float
    detected_s: float | None
    recovered_s: float | None
    needed_healing: bool
    auto_recovered: bool
    escalated: bool
    rca_rank: int | None
    impaired_s: float | None = None
    incident_id: int | None = None
    alert_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Incident:
    alert_ids: frozenset[int]
    escalated: bool
    resolved: bool
    candidates: tuple[str, ...]
    human_approved: bool


class _Index:
    """The log, sorted by time and indexed once for every fault."""

    def __init__(self, events: Iterable[Event], slo_target: float) -> None:
        records = sorted(events, key=lambda r: (r.t_s, r.seq))
        self.records = records
        self.faults = [r for r in records if isinstance(r, FaultRecord)]
        self.cleared_s: dict[int, float] = {}
        self.states: dict[str, list[StateChange]] = defaultdict(list)
        self.comps_of_fault: dict[int, set[str]] = defaultdict(set)
        self.alerts: dict[str, list[AlertRecord]] = defaultdict(list)
        self.done_actions: dict[str, list[ActionRecord]] = defaultdict(list)
        self.windows = [r for r in records if isinstance(r, SloWindow)]
        for r in records:
            if isinstance(r, FaultCleared):
                self.cleared_s.setdefault(r.fault_id, r.t_s)
            elif isinstance(r, StateChange):
                self.states[r.target].append(r)
                if r.fault_id is not None:
                    self.comps_of_fault[r.fault_id].add(r.target)
            elif isinstance(r, AlertRecord):
                self.alerts[r.target].append(r)
            elif isinstance(r, ActionRecord) and r.phase == "succeeded":
                self.done_actions[r.target].append(r)
        self.comps: dict[int, set[str]] = {
            f.fault_id: set(f.affected) | {f.target} | self.comps_of_fault.get(f.fault_id, set())
            for f in self.faults
        }
        bad = [w for w in self.windows if not _healthy(w, slo_target)]
        self.bad_start = [w.t_s - w.window_s for w in bad]
        self.bad_end = [w.t_s for w in bad]
        self.coverage_end_s = max((w.t_s for w in self.windows), default=-math.inf)
        self.incidents = _incidents(records)


def _claimed_by_later(later: Sequence[FaultRecord], ix: _Index, start_s: float,
                      end_s: float, target: str | None) -> bool:
    """Whether one of ``later`` (faults with a later onset) is active in ``[start_s, end_s]``.

    Active: onset at or before ``end_s``, not cleared before ``start_s``. With ``target``,
    that fault must also have it among its components (rules in the module doc).
    """
    return any(
        g.t_s <= end_s and ix.cleared_s.get(g.fault_id, math.inf) >= start_s
        and (target is None or target in ix.comps[g.fault_id])
        for g in later
    )


def _healthy(window: SloWindow, slo_target: float) -> bool:
    return window.requests <= 0 or window.good / window.requests >= slo_target


def _incidents(records: Sequence[Event]) -> dict[int, _Incident]:
    life: dict[int, list[IncidentRecord]] = defaultdict(list)
    approved: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if isinstance(r, IncidentRecord):
            life[r.incident_id].append(r)
        elif isinstance(r, ApprovalRecord) and r.phase == "approved":
            approved[r.incident_id].append(r.t_s)
    out: dict[int, _Incident] = {}
    for iid, recs in life.items():
        cands: tuple[str, ...] = ()
        for r in recs:
            if r.candidates:
                cands = tuple(c for c, _ in r.candidates)
            elif not cands and r.root_cause:
                cands = (r.root_cause,)
        resolved_s = next((r.t_s for r in recs if r.phase == "resolved"), math.inf)
        out[iid] = _Incident(
            alert_ids=frozenset(recs[-1].alert_ids),
            escalated=any(r.phase == "escalated" for r in recs),
            resolved=any(r.phase == "resolved" for r in recs),
            candidates=cands,
            human_approved=any(t < resolved_s for t in approved.get(iid, ())),
        )
    return out


def _rank(candidates: Sequence[str], target: str, kind: str) -> int | None:
    for i, cand in enumerate(candidates):
        component, _, fault_class = cand.strip().rpartition(":")
        if component == target and fault_class == kind:
            return i + 1
    return None


def _host_and_rack(target: str) -> tuple[str, str]:
    """The host and rack a fault's load can be moved away from ('' if none)."""
    kind, _, ident = target.rpartition("-")
    if kind in ("host", "link-host"):
        return f"host-{ident}", ""
    if kind in ("tor", "uplink", "rack"):
        return "", f"rack-{ident}"
    return "", ""


class _Health:
    """Physical state of a fault's components, replayed from the log."""

    def __init__(self, rack: str) -> None:
        self.rack = rack
        self.down: set[str] = set()
        self.unready: set[str] = set()
        self.compromised: set[str] = set()
        self.bad_disk: set[str] = set()
        self.out: set[str] = set()
        self.drained: set[str] = set()
        self.rack_failed_over = False

    def state(self, r: StateChange) -> None:
        c, s = r.target, r.state
        if s == "down":
            self.down.add(c)
        elif s == "up":
            self.down.discard(c)
        elif s == "not_ready":
            self.unready.add(c)
        elif s == "ready":
            self.unready.discard(c)
        elif s == "compromised":
            self.compromised.add(c)
        elif s == "rebuilt":
            self.compromised.discard(c)
        elif s in ("disk_degraded", "disk_failed"):
            self.bad_disk.add(c)
        elif s == "disk_ok":
            self.bad_disk.discard(c)
        elif s == "removed":
            # The slot's occupant is gone; a later scale-out reuses the name for a new one.
            self.out.discard(c)
            for group in (self.down, self.unready, self.compromised):
                group.discard(c)

    def action(self, r: ActionRecord) -> None:
        if r.kind in OUT_OF_ROTATION_ACTIONS:
            self.out.add(r.target)
        elif r.kind == "restore_traffic":
            self.out.discard(r.target)
        elif r.kind == "drain_host":
            self.drained.add(r.target)
        elif r.kind == "uncordon_host":
            self.drained.discard(r.target)
        elif r.kind == "failover_rack" and r.target == self.rack:
            self.rack_failed_over = True

    def healthy(self, c: str) -> bool:
        if c.startswith("inst-"):
            if c in self.out or self.rack_failed_over:
                return True
            return not (c in self.down or c in self.unready or c in self.compromised)
        if c in self.drained:
            return True
        return c not in self.down and c not in self.bad_disk


def _outcome(f: FaultRecord, ix: _Index, hold_s: float, deadline_s: float) -> FaultOutcome:
    fid, t0 = f.fault_id, f.t_s
    comps = ix.comps[fid]
    t_clear = ix.cleared_s.get(fid, math.inf)
    wide = f.target == "cluster"
    later = [g for g in ix.faults if g.t_s > t0] if wide else []

    alerts = sorted(
        (a for c in comps for a in ix.alerts.get(c, ()) if t0 <= a.t_s <= t_clear
         and not (later and _claimed_by_later(later, ix, a.t_s, a.t_s, a.target))),
        key=lambda a: (a.t_s, a.seq),
    )
    td = alerts[0].t_s if alerts else None

    def counts(r: StateChange) -> bool:
        return (
            r.state in IMPAIRING_STATES and t0 <= r.t_s <= t_clear
            and (r.fault_id is None or r.fault_id == fid)
        )

    states = sorted(
        (r for c in comps for r in ix.states.get(c, ())), key=lambda r: (r.t_s, r.seq)
    )
    evidence = [r.t_s for r in states if counts(r)][:1]
    if td is not None:
        evidence.append(td)
    if f.kind not in LATENT_KINDS:
        last_end = t_clear if f.kind in SLOW_ONSET_KINDS else t0 + deadline_s
        i = bisect.bisect_right(ix.bad_end, t0)
        if wide:  # the first dip no later-onset fault shares
            while (i < len(ix.bad_end) and ix.bad_start[i] < t_clear
                   and ix.bad_end[i] <= last_end
                   and _claimed_by_later(later, ix, ix.bad_start[i], ix.bad_end[i], None)):
                i += 1
        if i < len(ix.bad_end) and ix.bad_start[i] < t_clear and ix.bad_end[i] <= last_end:
            evidence.append(max(ix.bad_start[i], t0))
    t_imp = min(evidence) if evidence else None

    tr = None
    if t_imp is not None:
        tr = _recovery(f, comps, states, counts, ix, t_imp, t_clear, hold_s)

    # Alerts after the recovery are about something else that touched the same components
    # (a service alerted hours later, while a repaired host still awaits its technician).
    alert_ids = frozenset(a.alert_id for a in alerts if tr is None or a.t_s <= tr)
    incident_ids = sorted(iid for iid, inc in ix.incidents.items() if inc.alert_ids & alert_ids)
    escalated = any(ix.incidents[i].escalated for i in incident_ids)
    first_incident = (
        next((i for i in incident_ids if alerts[0].alert_id in ix.incidents[i].alert_ids), None)
        if alerts else None
    )
    rank = (
        _rank(ix.incidents[first_incident].candidates, f.target, f.kind)
        if first_incident is not None else None
    )
    auto = (
        tr is not None and t_imp is not None and tr <= t_imp + deadline_s and not escalated
        and not any(ix.incidents[i].human_approved for i in incident_ids)
    )
    return FaultOutcome(
        fault_id=fid, kind=f.kind, target=f.target, t0_s=t0, detected_s=td, recovered_s=tr,
        needed_healing=t_imp is not None, auto_recovered=auto, escalated=escalated,
        rca_rank=rank, impaired_s=t_imp, incident_id=first_incident,
        alert_ids=tuple(a.alert_id for a in alerts),
    )


def _recovery(
    f: FaultRecord,
    comps: set[str],
    states: list[StateChange],
    counts: Callable[[StateChange], bool],
    ix: _Index,
    t_imp: float,
    t_clear: float,
    hold_s: float,
) -> float | None:
    host, rack = _host_and_rack(f.target)
    moves = [a for c in (*comps, host, rack) if c for a in ix.done_actions.get(c, ())]
    timeline: list[StateChange | ActionRecord] = sorted(
        [*states, *moves], key=lambda r: (r.t_s, r.seq)
    )
    times = sorted({t_imp, *(r.t_s for r in timeline if r.t_s > t_imp)})
    if t_imp < t_clear < math.inf:
        times = sorted({*times, t_clear})
    health = _Health(rack)
    impaired: set[str] = set()
    must_clear = f.kind in MUST_CLEAR_KINDS

    # R(t) is piecewise constant between record times: its value after each time from t_imp.
    steps: list[tuple[float, bool]] = []
    i = 0
    for t in times:
        while i < len(timeline) and timeline[i].t_s <= t:
            r = timeline[i]
            if isinstance(r, StateChange):
                health.state(r)
                if counts(r):
                    impaired.add(r.target)
            else:
                health.action(r)
            i += 1
        repaired = t >= t_clear or host in health.drained or health.rack_failed_over
        insts = [c for c in impaired if c.startswith("inst-")]
        ok = (repaired or not must_clear) and all(
            health.healthy(c) for c in (insts or impaired)
        )
        steps.append((t, ok))

    end = math.inf
    ends: list[float] = []
    for t, ok in reversed(steps):
        ends.append(end)
        if not ok:
            end = t
    ends.reverse()
    previous_ok = False
    for (start, ok), end in zip(steps, ends, strict=True):
        if not ok or previous_ok:
            previous_ok = ok
            continue
        previous_ok = True
        t = start
        while t < end:
            j = bisect.bisect_right(ix.bad_end, t)
            if j < len(ix.bad_end) and ix.bad_start[j] < t + hold_s:
                t = ix.bad_end[j]
                continue
            if t + hold_s > ix.coverage_end_s:
                return None
            if t + hold_s <= end:
                return t
            break
    return None


def _check_params(slo_target: float, hold_s: float, deadline_s: float) -> None:
    if not 0.0 < slo_target <= 1.0:
        raise ValueError(f"slo_target must lie in (0, 1], got {slo_target!r}")
    if not (math.isfinite(hold_s) and hold_s >= 0.0):
        raise ValueError(f"hold_s must be a finite number >= 0, got {hold_s!r}")
    if not (math.isfinite(deadline_s) and deadline_s > 0.0):
        raise ValueError(f"deadline_s must be a finite positive number, got {deadline_s!r}")


def fault_outcomes(
    events: Iterable[Event],
    *,
    slo_target: float = 0.999,
    hold_s: float = 120.0,
    deadline_s: float = 900.0,
) -> list[FaultOutcome]:
    """Detection, recovery and diagnosis of every fault in a log (rules in the module doc).

    Args:
        events: Event records in any order (an :class:`~sim.events.EventLog` or a list).
        slo_target: Good-request share at or above which an SLO window is healthy.
        hold_s: How long the SLO must stay healthy to confirm a recovery, seconds.
        deadline_s: Time from first impairment within which a recovery counts as healed.

    Returns:
        One outcome per fault record, in order of onset.

    Raises:
        ValueError: a parameter out of range.
    """
    _check_params(slo_target, hold_s, deadline_s)
    ix = _Index(events, slo_target)
    return [_outcome(f, ix, hold_s, deadline_s) for f in ix.faults]


def lost_requests_by_kind(events: Iterable[Event]) -> tuple[dict[str, float], float]:
    """Requests that missed the SLO, charged to fault kinds; and all requests.

    Each SLO window's lost requests (``requests - good``) go to the kind of the fault with
    the latest onset active in the window: onset before the window's end, not cleared before
    its start. Concurrent faults share a window, so this is an attribution, not a cause;
    losses with no active fault are charged to ``"none"``.
    """
    records = list(events)
    cleared: dict[int, float] = {}
    for r in records:
        if isinstance(r, FaultCleared):
            cleared.setdefault(r.fault_id, r.t_s)
    faults = sorted((f for f in records if isinstance(f, FaultRecord)), key=lambda f: f.t_s)
    lost: dict[str, float] = defaultdict(float)
    total = 0.0
    for w in records:
        if not isinstance(w, SloWindow):
            continue
        total += w.requests
        bad = w.requests - w.good
        if bad <= 0.0:
            continue
        start = w.t_s - w.window_s
        latest = next((f for f in reversed(faults)
                       if f.t_s < w.t_s and cleared.get(f.fault_id, math.inf) > start), None)
        lost[latest.kind if latest is not None else "none"] += bad
    return dict(lost), total


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else NAN


def _rate(num: int, den: int) -> float:
    return num / den if den else NAN


def _human_intervention(records: Sequence[Event]) -> tuple[int, int]:
    """(human-gated actions, all actions) under the rule in the module docstring."""
    decisions = [r for r in records if isinstance(r, DecisionRecord)]
    executed = [d for d in decisions if d.executed]
    approvals: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    refused = 0
    for r in records:
        if isinstance(r, ApprovalRecord):
            if r.phase == "approved":
                approvals[(r.incident_id, r.action, r.target)].append(r.t_s)
            elif r.phase in HUMAN_NOT_EXECUTED:
                refused += 1
    gated = 0
    for d in executed:
        queue = approvals.get((d.incident_id, d.action, d.target), [])
        if queue and queue[0] <= d.t_s:
            queue.pop(0)
            gated += 1
    manual = 0
    if decisions:
        known = {d.action_id for d in executed}
        manual = sum(
            1 for r in records
            if isinstance(r, ActionRecord) and r.phase == "started" and r.action_id not in known
        )
    return gated + refused + manual, len(executed) + refused + manual


def compute_kpis(
    events: Iterable[Event],
    *,
    slo_target: float = 0.999,
    hold_s: float = 120.0,
    deadline_s: float = 900.0,
) -> dict[str, float]:
    """Every healing KPI of one run (definitions in the module docstring).

    Args:
        events: Event records in any order (an :class:`~sim.events.EventLog` or a list).
        slo_target: Good-request share at or above which an SLO window is healthy.
        hold_s: How long the SLO must stay healthy to confirm a recovery, seconds.
        deadline_s: Time from first impairment within which a recovery counts as healed.

    Returns:
        KPI name to value; rates in [0, 1], NaN where a denominator is 0.

    Raises:
        ValueError: a parameter out of range.
    """
    _check_params(slo_target, hold_s, deadline_s)
    ix = _Index(events, slo_target)
    outcomes = [_outcome(f, ix, hold_s, deadline_s) for f in ix.faults]
    needed = [o for o in outcomes if o.needed_healing]
    detected = [o for o in needed if o.detected_s is not None]
    recovered = [o for o in needed if o.recovered_s is not None]
    auto = [o for o in needed if o.auto_recovered]

    incidents = ix.incidents
    fault_by_alert: dict[int, list[FaultOutcome]] = defaultdict(list)
    for o in outcomes:
        for a in o.alert_ids:
            fault_by_alert[a].append(o)
    ranked: list[int | None] = []
    for inc in incidents.values():
        faults = {o.fault_id: o for a in inc.alert_ids for o in fault_by_alert.get(a, ())}
        if faults:
            ranks = [_rank(inc.candidates, o.target, o.kind) for o in faults.values()]
            ranked.append(min((r for r in ranks if r is not None), default=None))

    windows = ix.windows
    log_end = max((w.t_s for w in windows), default=-math.inf)
    censored = [
        o for o in needed
        if not o.auto_recovered and not o.escalated and o.impaired_s is not None
        and o.impaired_s + deadline_s + hold_s > log_end
    ]
    requests = sum(w.requests for w in windows)
    span_s = sum(w.window_s for w in windows)
    bad_s = sum(w.window_s for w in windows if not _healthy(w, slo_target))
    gated, all_actions = _human_intervention(ix.records)
    actions = [r for r in ix.records if isinstance(r, ActionRecord)]
    return {
        "mttd_s": _mean([o.detected_s - o.t0_s for o in detected if o.detected_s is not None]),
        "mttr_s": _mean([o.recovered_s - o.t0_s for o in recovered if o.recovered_s is not None]),
        "mttm_s": _mean([
            max(o.recovered_s - o.detected_s, 0.0) for o in recovered
            if o.recovered_s is not None and o.detected_s is not None
        ]),
        "healing_success_rate": _rate(len(auto), len(needed)),
        "auto_resolution_rate": _rate(
            sum(1 for i in incidents.values() if i.resolved and not i.escalated), len(incidents)
        ),
        "escalation_rate": _rate(sum(1 for i in incidents.values() if i.escalated), len(incidents)),
        "human_intervention_rate": _rate(gated, all_actions),
        "availability": sum(w.good for w in windows) / requests if requests > 0 else NAN,
        "time_availability": 1.0 - bad_s / span_s if span_s > 0 else NAN,
        "slo_violation_minutes": bad_s / 60.0,
        "rca_top1": _rate(sum(1 for r in ranked if r == 1), len(ranked)),
        "rca_top3": _rate(sum(1 for r in ranked if r is not None and r <= 3), len(ranked)),
        "faults": float(len(outcomes)),
        "faults_needing_healing": float(len(needed)),
        "faults_detected": float(len(detected)),
        "faults_recovered": float(len(recovered)),
        "faults_auto_recovered": float(len(auto)),
        "faults_censored": float(len(censored)),
        "incidents": float(len(incidents)),
        "incidents_unattributed": float(len(incidents) - len(ranked)),
        "actions": float(sum(1 for r in actions if r.phase == "started")),
        "action_cost_usd": float(sum(r.cost_usd for r in actions)),
    }


_UNIT_KPIS = frozenset({"availability", "time_availability", "rca_top1", "rca_top3"})


def _range(key: str) -> tuple[float, float]:
    if key.endswith("_rate") or key in _UNIT_KPIS:
        return 0.0, 1.0
    return 0.0, math.inf


def aggregate(runs: Sequence[Mapping[str, float]]) -> dict[str, float | list[float]]:
    """Mean and Student-t 95% interval of every KPI over independent runs.

    The interval is clipped to the KPI's range (rates, availabilities and RCA accuracies lie
    in [0, 1]; every other KPI is non-negative), since a skewed sample of a bounded quantity
    would otherwise give bounds it cannot take. NaN values (a rate with no denominator in
    that run) are left out of a key's statistics.
    With one finite value there is no interval: its bounds are NaN, as the mean is with none.
    Identical values (standard error 0) give [mean, mean].

    Args:
        runs: One KPI mapping per run, e.g. from :func:`compute_kpis`.

    Returns:
        For each key, ``key`` (the mean) and ``key_ci95`` ([low, high]); plus ``runs``.
        Only floats and lists of floats, so :func:`json.dumps` accepts it.

    Raises:
        TypeError: a value that is not a real number.
    """
    from scipy import stats  # scipy.stats takes most of a second to import; only this needs it

    keys = list(dict.fromkeys(k for run in runs for k in run))
    out: dict[str, float | list[float]] = {}
    for key in keys:
        values = []
        for run in runs:
            if key not in run:
                continue
            v = run[key]
            if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
                raise TypeError(f"KPI {key!r} must be a real number, got {v!r}")
            if not math.isnan(v):
                values.append(float(v))
        mean = float(np.mean(values)) if values else NAN
        if len(values) < 2:
            ci = [NAN, NAN]  # one value gives no interval; [x, x] would claim certainty
        else:
            sem = float(stats.sem(values))
            if sem == 0.0 or not math.isfinite(sem):
                ci = [mean, mean]
            else:
                low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
                lo_bound, hi_bound = _range(key)
                ci = [max(float(low), lo_bound), min(float(high), hi_bound)]
        out[key] = mean
        out[f"{key}_ci95"] = ci
    out["runs"] = float(len(runs))
    return out


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def to_markdown(kpis: Mapping[str, float | Sequence[float]]) -> str:
    """A Markdown table of KPIs: metric (with its unit in the key), value and 95% CI.

    Args:
        kpis: Output of :func:`compute_kpis` or :func:`aggregate`; ``<key>_ci95`` entries
            become the interval column of ``key``.

    Returns:
        The table, one row per KPI, ending with a newline.
    """
    has_ci = any(k.endswith("_ci95") for k in kpis)
    rows = ["| metric | value | 95% CI |", "|---|---|---|"] if has_ci else [
        "| metric | value |", "|---|---|"
    ]
    for key, value in kpis.items():
        if key.endswith("_ci95") and key[: -len("_ci95")] in kpis:
            continue
        label = f"{KPI_LABELS[key]} `{key}`" if key in KPI_LABELS else f"`{key}`"
        if isinstance(value, int | float):
            shown = _fmt(float(value))
        else:
            shown = ", ".join(_fmt(float(v)) for v in value)
        if has_ci:
            ci = kpis.get(f"{key}_ci95")
            ci_text = (
                f"[{_fmt(float(ci[0]))}, {_fmt(float(ci[1]))}]"
                if isinstance(ci, Sequence) and len(ci) == 2 else ""
            )
            rows.append(f"| {label} | {shown} | {ci_text} |")
        else:
            rows.append(f"| {label} | {shown} |")
    return "\n".join(rows) + "\n"


__all__ = ["FaultOutcome", "aggregate", "compute_kpis", "fault_outcomes", "to_markdown"]
