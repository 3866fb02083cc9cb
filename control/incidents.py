"""Incidents: lifecycle, priority from impact, and post-mortems reconstructed from the log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sim.events import (
    ActionRecord,
    AlertRecord,
    ApprovalRecord,
    ControlRecord,
    DecisionRecord,
    Event,
    FaultRecord,
    IncidentRecord,
    StateChange,
)

PRIORITIES = ("P0", "P1", "P2", "P3", "P4")


@dataclass(frozen=True, slots=True)
class Impact:
    """What an incident does to users and data, as observed when it is assessed."""

    requests_affected_share: float
    slo_burn: float
    blast_radius_share: float
    data_risk: bool


def priority(impact: Impact) -> str:
    """P0 (catastrophic) to P4 (no user impact) from an incident's impact.

    P0: half the requests failing, or data at risk with a tenth failing. P1: a tenth of the
    requests, a fifth of the fleet, or data at risk. P2: 1% of requests or 5% of the fleet.
    P3: any SLO burn. P4: warnings only (e.g. a leak or wear caught before it hurts).
    """
    share = impact.requests_affected_share
    if share >= 0.5 or (impact.data_risk and share >= 0.1):
        return "P0"
    if share >= 0.1 or impact.blast_radius_share >= 0.2 or impact.data_risk:
        return "P1"
    if share >= 0.01 or impact.blast_radius_share >= 0.05:
        return "P2"
    if impact.slo_burn > 0.0:
        return "P3"
    return "P4"


POLICY = {
    "P0": "escalate at once to the on-call human, who runs the runbook",
    "P1": "automated remediation with monitoring; a human is notified",
    "P2": "fully automated",
    "P3": "fully automated",
    "P4": "fully automated",
}


@dataclass(slots=True)
class Incident:
    """Mutable engine-side view of one incident; every change is also logged."""

    incident_id: int
    opened_s: float
    priority: str
    components: set[str]
    alert_ids: list[int]
    candidates: list[tuple[str, float]] = field(default_factory=list)
    phase: str = "opened"
    step: int = 0
    step_started_s: float = 0.0
    action_ids: list[int] = field(default_factory=list)
    step_action_ids: list[int] = field(default_factory=list)
    step_refused: int = 0
    waiting_for: set[int] = field(default_factory=set)
    verify_after_s: float = 0.0
    resolved_s: float | None = None
    human_reruns: int = 0
    hypothesis: int = 0
    relapses: int = 0
    """Times what a step restored went down again while it was verified (the first
    relapse runs the step again, a later one moves on: see ``HealingEngine._relapsed``)."""

    @property
    def root_cause(self) -> str:
        """The candidate being acted on, ``component:fault_class``, or empty when unknown.

        The top-ranked one, unless its runbook was exhausted and a runner-up is being tried
        (:attr:`hypothesis` indexes :attr:`candidates`, whose ranking is kept as diagnosed).
        """
        if not self.candidates:
            return ""
        return self.candidates[min(self.hypothesis, len(self.candidates) - 1)][0]


def _fmt_t(t_s: float) -> str:
    h, rem = divmod(t_s, 3600.0)
    m, s = divmod(rem, 60.0)
    return f"{int(h):02d}:{int(m):02d}:{s:06.3f}"


def incident_records(events: Sequence[Event], incident_id: int) -> list[Event]:
    """Records that belong to one incident, in log order.

    Its lifecycle, alerts, decisions and approvals, the actions and state changes of the
    components it covers, and operator commands (emergency stop, resume) while it was open,
    including a stop already in force when it opened.
    """
    lifecycle = [
        r for r in events if isinstance(r, IncidentRecord) and r.incident_id == incident_id
    ]
    if not lifecycle:
        raise KeyError(f"no incident {incident_id} in the log")
    alert_ids = {a for r in lifecycle for a in r.alert_ids}
    alerts = [r for r in events if isinstance(r, AlertRecord) and r.alert_id in alert_ids]
    decisions = [r for r in events if isinstance(r, DecisionRecord | ApprovalRecord)
                 and r.incident_id == incident_id]
    action_ids = {r.action_id for r in decisions if isinstance(r, DecisionRecord)}
    actions = [r for r in events if isinstance(r, ActionRecord) and r.action_id in action_ids
               and r.action_id >= 0]
    targets = {a.target for a in alerts} | {r.target for r in actions}
    start = lifecycle[0].t_s
    end = lifecycle[-1].t_s
    changes = [r for r in events if isinstance(r, StateChange) and r.target in targets
               and start - 600.0 <= r.t_s <= end]
    commands = [r for r in events if isinstance(r, ControlRecord) and r.t_s <= end]
    before = [r for r in commands if r.t_s < start][-1:]  # a stop already in force counts
    controls = [r for r in before if r.command == "emergency_stop"]
    controls += [r for r in commands if r.t_s >= start]
    return sorted([*lifecycle, *alerts, *decisions, *actions, *changes, *controls],
                  key=lambda r: r.seq)


def postmortem(events: Sequence[Event], incident_id: int) -> str:
    """A Markdown post-mortem of one incident, reconstructed from the event log.

    Sections: summary, impact and numbers, timeline, root cause with evidence, actions and
    outcomes, follow-up items. Where the log holds ground truth (in simulation), the true
    fault is reported beside the diagnosed one.
    """
    records = incident_records(events, incident_id)
    life = [r for r in records if isinstance(r, IncidentRecord)]
    opened, last = life[0], life[-1]
    alerts = [r for r in records if isinstance(r, AlertRecord)]
    actions = [r for r in records if isinstance(r, ActionRecord)]
    decisions = [r for r in records if isinstance(r, DecisionRecord)]
    first_alert = min((a.t_s for a in alerts), default=opened.t_s)
    components = {a.target for a in alerts}
    truth = [f for f in events if isinstance(f, FaultRecord)
             and f.t_s <= first_alert and components & set(f.affected)]
    fault = max(truth, key=lambda f: f.t_s) if truth else None
    ended = last.phase in ("resolved", "escalated")
    lines = [f"# Post-mortem: incident {incident_id} ({opened.priority})", ""]
    status = last.phase if ended else "still open"
    lines += [
        "## Summary",
        "",
        f"Opened at {_fmt_t(opened.t_s)} on {len(alerts)} alert(s) about "
        f"{', '.join(sorted(components)) or 'no component'}; {status} at {_fmt_t(last.t_s)}. "
        f"Diagnosed root cause: `{last.root_cause or opened.root_cause or 'unknown'}`. "
        f"Policy for {opened.priority}: {POLICY.get(opened.priority, 'n/a')}.",
        "",
        "## Impact and numbers",
        "",
    ]
    if fault is not None:
        t0 = fault.t_s
        ttd = first_alert - t0
        lines.append(f"- Fault onset (ground truth): {_fmt_t(t0)}, `{fault.kind}` on "
                     f"`{fault.target}` ({fault.root_cause}).")
        lines.append(f"- Time to detect: {ttd:.1f} s.")
        if ended and last.phase == "resolved":
            lines.append(
                f"- Time to restore (onset to resolution): {last.t_s - t0:.1f} s; time to "
                f"mitigate (detection to resolution): {last.t_s - first_alert:.1f} s."
            )
    lines.append(f"- Duration: {last.t_s - opened.t_s:.1f} s from opening.")
    lines.append(f"- Actions executed: {sum(1 for d in decisions if d.executed)}; "
                 f"cost ${sum(a.cost_usd for a in actions):.2f}.")
    lines += ["", "## Timeline", "", "| time | event |", "|---|---|"]
    for r in records:
        lines.append(f"| {_fmt_t(r.t_s)} | {_describe(r)} |")
    lines += ["", "## Root cause", ""]
    if last.candidates or opened.candidates:
        cands = last.candidates or opened.candidates
        lines.append("Ranked candidates (confidence):")
        lines += [f"{i}. `{c}` ({p:.2f})" for i, (c, p) in enumerate(cands[:3], start=1)]
    lines.append("")
    lines.append("Evidence: " + "; ".join(
        f"{a.source} alert on {a.target}"
        + (" (" + ", ".join(f"{k}={v:.3g}" for k, v in list(a.evidence.items())[:3]) + ")"
           if a.evidence else "")
        for a in alerts[:6]) + ".")
    if fault is not None:
        diagnosed = (last.root_cause or opened.root_cause).split(":")
        right = len(diagnosed) == 2 and diagnosed[1] == fault.kind and diagnosed[0] == fault.target
        lines.append("")
        lines.append(f"Ground truth: `{fault.target}:{fault.kind}` — the diagnosis was "
                     f"{'right' if right else 'wrong'}.")
    lines += ["", "## Actions and outcomes", ""]
    lines += (["| action | target | verdict | outcome |", "|---|---|---|---|"] if decisions
              else [f"No action was decided: the incident {status} without one."])
    outcome = {r.action_id: r.phase for r in actions if r.phase in ("succeeded", "failed")}
    for d in decisions:
        result = (outcome.get(d.action_id, "-") if d.executed or d.verdict == "shared"
                  else "not executed")
        lines.append(f"| {d.action} | {d.target} | {d.verdict} | {result} |")
    lines += ["", "## Follow-up items", ""]
    items = _follow_ups(last, decisions, outcome, fault)
    lines += [f"- [ ] {item}" for item in items]
    return "\n".join(lines) + "\n"


def _describe(r: Event) -> str:
    if isinstance(r, IncidentRecord):
        extra = f" — {r.note}" if r.note else ""
        return f"incident {r.phase} ({r.priority}, root cause `{r.root_cause or '?'}`){extra}"
    if isinstance(r, AlertRecord):
        return f"{r.severity} {r.source} alert on {r.target}"
    if isinstance(r, DecisionRecord):
        return f"decision: {r.action} on {r.target} — {r.verdict} ({r.reason})"
    if isinstance(r, ApprovalRecord):
        return f"approval {r.phase}: {r.action} on {r.target} ({r.operator})"
    if isinstance(r, ActionRecord):
        return f"action {r.kind} on {r.target} {r.phase}"
    if isinstance(r, ControlRecord):
        return f"operator: {r.command.replace('_', ' ')}" + (f" ({r.reason})" if r.reason else "")
    if isinstance(r, StateChange):
        return f"{r.target} {r.state}"
    return r.type


def _follow_ups(
    last: IncidentRecord, decisions: Sequence[DecisionRecord], outcome: dict[int, str],
    fault: FaultRecord | None,
) -> list[str]:
    items: list[str] = []
    if last.phase == "escalated":
        items.append("Review why automation escalated; extend the runbook or its deadlines.")
    failed = [d for d in decisions if outcome.get(d.action_id) == "failed"]
    if failed:
        items.append(f"Investigate {len(failed)} failed action(s): "
                     + ", ".join(f"{d.action} on {d.target}" for d in failed[:3]) + ".")
    blocked = [d for d in decisions if d.verdict == "blocked"]
    if blocked:
        items.append(f"{len(blocked)} action(s) were blocked by safety controls; check limits.")
    cause = (last.root_cause or "").split(":")[-1]
    hints = {
        "memory_leak": "Fix the leak in the service code; add a memory-growth canary test.",
        "bad_config": "Add validation and a canary stage to configuration deploys.",
        "security_vulnerability": "Track the CVE in the dependency inventory; patch SLA review.",
        "host_failure": "Check the host's hardware history; consider retiring the batch.",
        "disk_degradation": "Schedule proactive disk replacement at the observed wear level.",
        "fan_failure": "Inspect the chassis cooling; review fan-speed alert thresholds.",
        "network_partition": "Review switch redundancy for the affected rack.",
        "load_surge": "Revisit capacity plan and autoscaling thresholds.",
    }
    if cause == "bad_config" and fault is not None and "canaries" in fault.detail:
        hints[cause] = (f"The canary stage held this deploy to {fault.detail['canaries']:.0f} "
                        "replica(s); validate configurations before they ship.")
    if cause in hints:
        items.append(hints[cause])
    if fault is not None and cause != fault.kind:
        items.append(f"Diagnosis `{cause}` differed from the true cause `{fault.kind}`: "
                     "improve RCA rules for this pattern.")
    return items or ["None beyond monitoring."]
