"""Root-cause analysis: group alerts into incidents and rank root-cause candidates.

Two steps, both reading only alerts and what the controller observes:

* :func:`correlate` de-duplicates alerts and gathers them into :class:`AlertGroup` s: an
  alert joins an open group when it is topologically next to one of the group's components
  (the same instance, an instance and its host, a host and its rack's switch or uplink, an
  instance and its service, two services on a call edge, anything and the cluster) and
  arrives within ``window_s`` of the group's latest alert.
* :func:`rank_root_causes` scores (component, fault class) hypotheses for one group with
  explainable rules over the alerts, the topology and the current observation, and returns
  the best ones with confidences that sum to 1. Every candidate carries the alert ids and
  the short facts that support it.

Components are named as the fault records name their targets: ``inst-3``, ``host-7``,
``tor-1``, ``link-host-5``, ``uplink-1``, ``svc-api`` and ``cluster``; fault classes are
:class:`sim.faults.FaultKind` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from control.detection import alert_metric, component_index
from sim.events import AlertRecord
from sim.faults import FaultKind
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

_H = {name: j for j, name in enumerate(HOST_FEATURES)}
_I = {name: j for j, name in enumerate(INSTANCE_FEATURES)}

ERROR_ELEVATED = 0.005
"""Error rate above which a live instance counts as failing requests (calm: 0)."""

MEMORY_EXHAUSTED = 0.97
"""Memory share of the limit at which a stopped instance is taken to have been OOM-killed."""

CPU_OUTLIER = 0.2
"""How far above the median host a host's CPU must be to call it contended by a neighbour."""

SATURATED_UTIL = 0.9
"""Utilisation at which an instance counts as at capacity."""

SLOW_P99_S = 1.0
"""Tail latency past which a busy instance counts as saturated, seconds."""

SUPPORT_WEIGHT = 0.25
"""Weight of the supporting rules behind a hypothesis, after its strongest one."""

STANDALONE_SIGNALS = frozenset({"vulnerable"})
"""Signals with causes outside the cluster (a published advisory): they always open a group."""

FAILURE_SOURCES = frozenset({"probe", "event"})
"""Alert sources that report a component failing outright, rather than a metric drifting."""

_PROBE_DOWN = frozenset({"live", "ready", "vm_up"})

SLOW_RESPONSE = "slow_response"
ERROR_RESPONSES = "error_responses"
SERVICE_HANG = "service_hang"
"""Root-cause classes of one instance misbehaving on its own (slow, failing requests, or
hung: not answering while its process still holds memory) while the rest of its service is
well, on a plant without host telemetry (the live fleet; named as its chaos kinds). The
twin's hosts report their sensors, and there slowness and errors are traced to a host,
link, disk, configuration or load instead, and a stopped process to a crash, VM or leak;
the twin injects no such fault, so these are not :class:`sim.faults.FaultKind` members."""

SERVICE_SYMPTOMS: Mapping[str, frozenset[str]] = {
    FaultKind.BAD_CONFIG.value: frozenset({"error_rate", "ready", "ready_instances"}),
}
"""What a service-wide cause shows on its replicas: a bad configuration fails requests and
readiness, so a replica's errors under it are its doing, while a replica slow on its own is
not (:func:`second_problem`, ``HealingEngine._split_off``)."""


def produces(fault_class: str, alerts: Iterable[AlertRecord]) -> bool:
    """Whether a cause of ``fault_class`` shows as every one of ``alerts``' metrics."""
    shown = SERVICE_SYMPTOMS.get(fault_class, frozenset())
    return all(alert_metric(a) in shown for a in alerts)


NO_SENSOR_TEMP_C = 1.0
"""A plant whose hosts all report a temperature at or below this reports no host sensors."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A ranked root-cause hypothesis.

    Attributes:
        component: the component at fault, named like a fault record's target.
        fault_class: a :class:`sim.faults.FaultKind` value, or on a plant without host
            telemetry :data:`SLOW_RESPONSE` / :data:`ERROR_RESPONSES` / :data:`SERVICE_HANG`.
        confidence: share of the evidence, in [0, 1]; a ranking's confidences sum to 1.
        evidence: supporting alert ids and short facts, strongest first.
    """

    component: str
    fault_class: str
    confidence: float
    evidence: tuple[int | str, ...] = ()

    @property
    def label(self) -> str:
        """``component:fault_class``, the form incident records and KPIs use."""
        return f"{self.component}:{self.fault_class}"


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """Alerts believed to share one cause.

    Attributes:
        group_id: stable id, in order of creation.
        alert_ids: member alert ids, in arrival order.
        components: targets of the member alerts.
        keys: the components and their topological neighbours, which new alerts are
            matched against.
        first_t_s: time of the first member alert, seconds.
        last_t_s: time of the latest member alert, seconds.
        failure: whether a member reports a component failing outright (a probe or an
            operational event, rather than a metric).
    """

    group_id: int
    alert_ids: tuple[int, ...]
    components: frozenset[str]
    keys: frozenset[str]
    first_t_s: float
    last_t_s: float
    failure: bool = False

    def is_open(self, now_s: float, window_s: float) -> bool:
        """Whether an alert at ``now_s`` can still join the group."""
        return now_s - self.last_t_s <= window_s

    def members(self, alerts: Mapping[int, AlertRecord] | Iterable[AlertRecord]) -> list[
        AlertRecord
    ]:
        """The group's alerts among ``alerts`` (a mapping by id or any iterable)."""
        by_id = alerts if isinstance(alerts, Mapping) else {a.alert_id: a for a in alerts}
        return [by_id[i] for i in self.alert_ids if i in by_id]


class Topology:
    """Placement and dependencies as the controller sees them in one observation."""

    def __init__(self, obs: Observation) -> None:
        used = np.flatnonzero(obs.inst_used)
        self.obs = obs
        self.service_names = obs.service_names
        self.inst_host = {int(i): int(obs.inst_host[i]) for i in used}
        self.inst_service = {int(i): obs.service_names[obs.inst_service[i]] for i in used}
        self.host_rack = [int(r) for r in obs.host_rack]
        self.host_insts: dict[int, list[int]] = {}
        self.svc_insts: dict[str, list[int]] = {name: [] for name in obs.service_names}
        for i, h in self.inst_host.items():
            self.host_insts.setdefault(h, []).append(i)
            self.svc_insts[self.inst_service[i]].append(i)
        self.rack_hosts: dict[int, list[int]] = {}
        for h, r in enumerate(self.host_rack):
            self.rack_hosts.setdefault(r, []).append(h)
        self.callees: dict[str, set[str]] = {name: set() for name in obs.service_names}
        self.callers: dict[str, set[str]] = {name: set() for name in obs.service_names}
        for caller, callee in obs.call_edges:
            self.callees.setdefault(caller, set()).add(callee)
            self.callers.setdefault(callee, set()).add(caller)

    def service_of(self, component: str) -> str:
        """Service name of an instance or service component ("" for others)."""
        if component.startswith("svc-"):
            return component[4:]
        return self.inst_service.get(component_index(component), "") if component.startswith(
            "inst-") else ""

    def rack_of_host(self, host: int) -> int:
        """Rack of a host (-1 when unknown)."""
        return self.host_rack[host] if 0 <= host < len(self.host_rack) else -1

    def descendants(self, service: str) -> set[str]:
        """Services ``service`` calls, directly or through others."""
        seen: set[str] = set()
        todo = list(self.callees.get(service, ()))
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(self.callees.get(s, ()))
        return seen

    def near(self, component: str) -> set[str]:
        """Topological neighbours of a component (not the component itself)."""
        kind, _, ident = component.rpartition("-")
        idx = int(ident) if ident.isdigit() else -1
        out: set[str] = set()
        if kind == "inst" and idx in self.inst_host:
            out = {f"host-{self.inst_host[idx]}", f"svc-{self.inst_service[idx]}"}
        elif kind in ("host", "link-host"):
            out = {"host-" + ident, "link-host-" + ident}
            r = self.rack_of_host(idx)
            out |= {f"tor-{r}", f"uplink-{r}"}
            for i in self.host_insts.get(idx, ()):
                out |= {f"inst-{i}", f"svc-{self.inst_service[i]}"}
        elif kind in ("tor", "uplink", "rack"):
            out = {f"tor-{idx}", f"uplink-{idx}", f"rack-{idx}"}
            for h in self.rack_hosts.get(idx, ()):
                out |= {f"host-{h}", f"link-host-{h}"}
                for i in self.host_insts.get(h, ()):
                    out |= {f"inst-{i}", f"svc-{self.inst_service[i]}"}
        elif kind == "svc" and ident in self.svc_insts:
            out = {f"inst-{i}" for i in self.svc_insts[ident]} | {"cluster"}
            out |= {f"svc-{s}" for s in self.callees[ident] | self.callers[ident]}
        elif component == "cluster":
            out = {f"svc-{s}" for s in self.service_names}
            out |= {f"host-{h}" for h in range(len(self.host_rack))}
            out |= {f"inst-{i}" for i in self.inst_host}
        out.discard(component)
        return out


def correlate(
    alerts: Sequence[AlertRecord],
    open_groups: Sequence[AlertGroup],
    *,
    obs: Observation,
    window_s: float = 120.0,
    lead_s: float = 5.0,
) -> list[AlertGroup]:
    """Add alerts to incident groups by topological proximity and time.

    An alert already in a group is skipped (de-duplication). Otherwise it joins the oldest
    group that is still open at the alert's time (latest member at most ``window_s`` before)
    and that it touches: the alert's target is one of the group's components or their
    neighbours, or one of the target's neighbours is a group component. An alert that
    touches no open group starts a new one. Alerts of one instant are taken from the widest
    component down (cluster, switches and uplinks, hosts and links, services, instances), so
    a cause seen in the same step as its symptoms gathers them. A failure cannot explain
    symptoms that came before it: an alert of an outright failure (probe or event source)
    joins a group of metric alerts only within ``lead_s`` of the group's start, and an
    advisory (:data:`STANDALONE_SIGNALS`) always opens its own group. Groups are never
    merged, so a group id, once handed out, keeps naming the same incident.

    Args:
        alerts: new alerts, in any order (processed by time, then sequence number).
        open_groups: the groups so far (closed ones are returned unchanged).
        obs: an observation, for placement and call edges.
        window_s: how long a group stays open after its latest alert, seconds.
        lead_s: how long after a group of metric alerts starts a failure may still join it,
            seconds.

    Returns:
        Every group, updated and new, ordered by group id.
    """
    topo = Topology(obs)
    groups = {g.group_id: g for g in open_groups}
    seen = {i for g in open_groups for i in g.alert_ids}
    next_id = max(groups, default=-1) + 1
    for alert in sorted(alerts, key=lambda a: (a.t_s, _breadth(a.target), a.seq)):
        if alert.alert_id in seen:
            continue
        seen.add(alert.alert_id)
        target = alert.target
        near = topo.near(target)
        failure = alert.source in FAILURE_SOURCES
        home = None if alert_metric(alert) in STANDALONE_SIGNALS else next(
            (g for _, g in sorted(groups.items())
             if g.is_open(alert.t_s, window_s)
             and (target in g.keys or not near.isdisjoint(g.components))
             and (not failure or g.failure or alert.t_s - g.first_t_s <= lead_s)),
            None,
        )
        if home is None:
            groups[next_id] = AlertGroup(
                next_id, (alert.alert_id,), frozenset({target}), frozenset(near | {target}),
                alert.t_s, alert.t_s, failure,
            )
            next_id += 1
            continue
        groups[home.group_id] = AlertGroup(
            home.group_id, (*home.alert_ids, alert.alert_id), home.components | {target},
            home.keys | near | {target}, home.first_t_s, max(home.last_t_s, alert.t_s),
            home.failure or failure,
        )
    return [groups[k] for k in sorted(groups)]


def _breadth(component: str) -> int:
    """Order of components of one instant in :func:`correlate`: widest first."""
    kind = component.rpartition("-")[0] if component != "cluster" else "cluster"
    return {"cluster": 0, "tor": 1, "uplink": 1, "rack": 1, "host": 2, "link-host": 2,
            "svc": 3}.get(kind, 4)


# --------------------------------------------------------------------------- ranking
class _Hypotheses:
    """Scores per (component, fault class), one per rule, with their evidence."""

    def __init__(self) -> None:
        self.scores: dict[tuple[str, str], dict[str, float]] = {}
        self.evidence: dict[tuple[str, str], list[int | str]] = {}

    def add(self, component: str, kind: FaultKind | str, score: float, rule: str,
            *evidence: int | str) -> None:
        key = (component, kind.value if isinstance(kind, FaultKind) else kind)
        rules = self.scores.setdefault(key, {})
        rules[rule] = max(rules.get(rule, 0.0), score)
        ev = self.evidence.setdefault(key, [])
        for e in evidence:
            if e not in ev:
                ev.append(e)

    def scale(self, component: str, kind: FaultKind, factor: float, why: str) -> None:
        key = (component, kind.value)
        if key in self.scores:
            self.scores[key] = {r: s * factor for r, s in self.scores[key].items()}
            self.evidence[key].append(why)

    def total(self, key: tuple[str, str]) -> float:
        values = sorted(self.scores[key].values(), reverse=True)
        return values[0] + SUPPORT_WEIGHT * sum(values[1:])


class _Facts:
    """The alerts of a group, indexed for the rules."""

    def __init__(self, alerts: Sequence[AlertRecord]) -> None:
        self.alerts = list(alerts)
        self.by_target: dict[str, list[AlertRecord]] = {}
        for a in self.alerts:
            self.by_target.setdefault(a.target, []).append(a)

    def of(self, target: str, *metrics: str) -> list[AlertRecord]:
        return [a for a in self.by_target.get(target, ()) if not metrics
                or alert_metric(a) in metrics]

    def with_metric(self, *metrics: str) -> list[AlertRecord]:
        return [a for a in self.alerts if alert_metric(a) in metrics]

    def ids(self, alerts: Iterable[AlertRecord]) -> list[int]:
        return [a.alert_id for a in alerts]


def rank_root_causes(
    group_alerts: Sequence[AlertRecord],
    obs: Observation,
    *,
    top_k: int = 5,
    fan_nominal_rpm: float | None = None,
) -> list[Candidate]:
    """Rank root-cause candidates for one group of alerts.

    Rules (each scores hypotheses; a hypothesis keeps its strongest rule's score plus
    :data:`SUPPORT_WEIGHT` times its other rules'):

    * a switch reported down or a whole rack unreachable: ``network_partition`` on
      ``tor-r``;
    * a host down: ``disk_degradation`` when its disk failed, ``fan_failure`` when it ran hot
      with failing fans, else ``host_failure``;
    * an instance down (host and rack fine): ``vm_failure`` with its VM down, else
      ``memory_leak`` when its memory was at the limit or trending there, else
      ``service_crash`` (less sure, with ``vm_failure`` runner-up, while the observation
      predates the stop and the VM's state is unknown); all instances of an up host down
      also suggests ``host_failure``;
    * memory trending to the limit: ``memory_leak``;
    * a CVE advisory or a compromised instance: ``security_vulnerability`` on the service;
    * disk wear, latency or degradation: ``disk_degradation``; fans slowing, heat or
      throttling: ``fan_failure``; a host link losing packets: ``link_degradation`` on
      ``link-host-h``;
    * failing requests confined to one rack across services: ``link_degradation`` on its
      ``uplink-r``; failing requests on (nearly) all instances of a service across hosts:
      ``bad_config`` on the service, preferring the deepest callee among the failing
      services (a caller's errors are often its callee's);
    * one or two hosts far busier than the rest: ``noisy_neighbour``; load up cluster-wide
      (cluster request rate, services heading for or at saturation, many busy hosts):
      ``load_surge`` on ``cluster``, discounted when the group also shows capacity lost to
      an outage, which explains saturation as well; a service that fails requests on
      instances that are not saturated is not counted as saturated by load;
    * slow instances on a throttled host: ``fan_failure``; on a host far busier than the
      rest: ``noisy_neighbour``; slowness with no such host: weakly ``load_surge``;
    * on a plant without host sensors (:func:`_degraded_instances`): one replica slow,
      failing or hung on its own; a replica answering its probes yet failing readiness
      (more weight when every live replica of the service does): ``bad_config`` on the
      service;
    * nothing matched: every cause that can sit on an alerted component, weakly.

    Args:
        group_alerts: the alerts of one group.
        obs: the latest observation.
        top_k: most candidates returned (at least 3 when there are alternatives).
        fan_nominal_rpm: rated fan speed; the median of the hosts that are up when None.

    Returns:
        Candidates, best first, confidences summing to 1 (empty without alerts).
    """
    if not group_alerts:
        return []
    topo = Topology(obs)
    facts = _Facts(group_alerts)
    hyp = _Hypotheses()
    host = np.asarray(obs.host, dtype=np.float64)
    inst = np.asarray(obs.inst, dtype=np.float64)
    host_up = host[:, _H["up"]] > 0.5
    fan_nominal = fan_nominal_rpm or float(
        np.median(host[host_up, _H["fan_rpm"]]) if host_up.any() else 1.0
    )

    partitioned = _switches(facts, hyp)
    down_hosts = _hosts_down(facts, hyp, host, fan_nominal)
    stopped = _instances_down(facts, hyp, topo, inst, down_hosts, partitioned)
    _memory(facts, hyp)
    _security(facts, hyp, topo)
    _hardware(facts, hyp, host, fan_nominal)
    defective = _errors(facts, hyp, topo, inst, host, obs)
    _degraded_instances(facts, hyp, inst, host, obs)
    _canaries(facts, hyp, inst, obs)
    _load(facts, hyp, topo, host, inst, bool(partitioned or down_hosts or stopped), defective)

    if not hyp.scores:
        _fallback(facts, hyp)
    keys = sorted(hyp.scores, key=lambda k: (-hyp.total(k), k))
    if len(keys) < 3:
        _alternatives(keys, hyp)
        keys = sorted(hyp.scores, key=lambda k: (-hyp.total(k), k))
    chosen = keys[:max(top_k, 1)]
    total = sum(hyp.total(k) for k in chosen) or 1.0
    return [
        Candidate(c, kind, hyp.total((c, kind)) / total, tuple(hyp.evidence[(c, kind)]))
        for c, kind in chosen
    ]


def _switches(facts: _Facts, hyp: _Hypotheses) -> set[int]:
    racks: set[int] = set()
    for a in facts.alerts:
        if a.target.startswith("tor-"):
            r = component_index(a.target)
            racks.add(r)
            hyp.add(a.target, FaultKind.NETWORK_PARTITION, 10.0, "switch", a.alert_id,
                    "whole rack unreachable")
    return racks


def _hosts_down(
    facts: _Facts, hyp: _Hypotheses, host: np.ndarray, fan_nominal: float
) -> set[int]:
    down: set[int] = set()
    for a in facts.alerts:
        h = component_index(a.target)
        if not (a.target.startswith("host-") and 0 <= h < host.shape[0]):
            continue
        if not (alert_metric(a) == "up" or host[h, _H["up"]] < 0.5):
            continue
        down.add(h)
        name = a.target
        disk = facts.of(name, "disk_failed", "disk_degraded", "disk_wear", "disk_latency_s")
        hot = facts.of(name, "fan_rpm", "temp_c", "throttle")
        fan_low = host[h, _H["fan_rpm"]] < 0.5 * fan_nominal
        if disk or host[h, _H["disk_wear"]] >= 0.95:
            hyp.add(name, FaultKind.DISK_DEGRADATION, 10.0, "host down", a.alert_id,
                    *facts.ids(disk), f"host down, disk wear {host[h, _H['disk_wear']]:.2f}")
            hyp.add(name, FaultKind.HOST_FAILURE, 2.0, "host down", a.alert_id)
        elif hot or fan_low or host[h, _H["temp_c"]] >= 85.0:
            hyp.add(name, FaultKind.FAN_FAILURE, 9.0, "host down", a.alert_id, *facts.ids(hot),
                    "host down after running hot")
            hyp.add(name, FaultKind.HOST_FAILURE, 2.0, "host down", a.alert_id)
        else:
            hyp.add(name, FaultKind.HOST_FAILURE, 10.0, "host down", a.alert_id,
                    "host powered off, disk and fans fine")
            hyp.add(name, FaultKind.DISK_DEGRADATION, 1.0, "host down", a.alert_id)
            hyp.add(name, FaultKind.FAN_FAILURE, 0.5, "host down", a.alert_id)
    return down


def _instances_down(
    facts: _Facts, hyp: _Hypotheses, topo: Topology, inst: np.ndarray, down_hosts: set[int],
    partitioned: set[int],
) -> int:
    """Score instances that stopped; returns how many stopped (any cause)."""
    stopped: dict[int, list[int]] = {}
    for a in facts.alerts:
        metric = alert_metric(a)
        if metric not in _PROBE_DOWN:
            continue
        if a.target.startswith("svc-"):
            svc = a.target[4:]
            members = [i for i in topo.svc_insts.get(svc, ()) if not topo.obs.inst_live[i]]
        else:
            members = [component_index(a.target)]
        for i in members:
            if i in topo.inst_host:
                stopped.setdefault(i, []).append(a.alert_id)
    by_host: dict[int, list[int]] = {}
    for i, ids in stopped.items():
        h = topo.inst_host[i]
        if h in down_hosts or topo.rack_of_host(h) in partitioned:
            continue
        by_host.setdefault(h, []).append(i)
        name = f"inst-{i}"
        vm_down = inst[i, _I["vm_up"]] < 0.5 or bool(facts.of(name, "vm_up"))
        mem = inst[i, _I["mem_util"]]
        mem_alerts = facts.of(name, "mem_util")
        if vm_down:
            hyp.add(name, FaultKind.VM_FAILURE, 9.0, "instance down", *ids, "VM down")
            hyp.add(name, FaultKind.SERVICE_CRASH, 2.0, "instance down", *ids)
        elif mem >= MEMORY_EXHAUSTED or mem_alerts:
            hyp.add(name, FaultKind.MEMORY_LEAK, 9.0, "instance down", *ids,
                    *facts.ids(mem_alerts), f"process died at {mem:.0%} of its memory limit")
            hyp.add(name, FaultKind.SERVICE_CRASH, 2.0, "instance down", *ids)
        elif topo.obs.inst_live[i] and inst[i, _I["up"]] > 0.5:
            # The stop was reported before the next sample: the VM's state is not known yet.
            hyp.add(name, FaultKind.SERVICE_CRASH, 6.0, "instance down", *ids,
                    "process reported down; VM state not sampled yet")
            hyp.add(name, FaultKind.VM_FAILURE, 3.0, "instance down", *ids)
            hyp.add(name, FaultKind.MEMORY_LEAK, 1.5 if mem > 0.7 else 0.5, "instance down")
        else:
            hyp.add(name, FaultKind.SERVICE_CRASH, 9.0, "instance down", *ids,
                    f"process down, VM up, memory {mem:.0%}")
            hyp.add(name, FaultKind.MEMORY_LEAK, 1.5 if mem > 0.7 else 0.5, "instance down")
            hyp.add(name, FaultKind.VM_FAILURE, 1.0, "instance down")
    for h, members in by_host.items():
        if len(members) >= 2 and len(members) == len(topo.host_insts.get(h, ())):
            hyp.add(f"host-{h}", FaultKind.HOST_FAILURE, 5.0, "all instances of a host down",
                    f"all {len(members)} instances on host-{h} down")
    return len(stopped)


def _memory(facts: _Facts, hyp: _Hypotheses) -> None:
    for a in facts.with_metric("mem_util"):
        if a.target.startswith("inst-"):
            eta = a.evidence.get("eta_s")
            why = f"memory at limit in {eta / 3600:.1f} h" if eta is not None else "memory high"
            hyp.add(a.target, FaultKind.MEMORY_LEAK, 8.0, "memory", a.alert_id, why)
            hyp.add(a.target, FaultKind.SERVICE_CRASH, 0.5, "memory", a.alert_id)


def _security(facts: _Facts, hyp: _Hypotheses, topo: Topology) -> None:
    for a in facts.with_metric("vulnerable"):
        hyp.add(a.target, FaultKind.SECURITY_VULNERABILITY, 10.0, "advisory", a.alert_id,
                "CVE advisory")
    for a in facts.with_metric("compromised"):
        i = component_index(a.target)
        if i in topo.inst_service:
            hyp.add(f"svc-{topo.inst_service[i]}", FaultKind.SECURITY_VULNERABILITY, 10.0,
                    "compromise", a.alert_id, f"{a.target} compromised")


def _hardware(facts: _Facts, hyp: _Hypotheses, host: np.ndarray, fan_nominal: float) -> None:
    hot_hosts: set[str] = set()
    for a in facts.alerts:
        h = component_index(a.target)
        if not (a.target.startswith("host-") and 0 <= h < host.shape[0]):
            continue
        metric = alert_metric(a)
        if metric in ("disk_degraded", "disk_failed", "disk_wear", "disk_latency_s"):
            hyp.add(a.target, FaultKind.DISK_DEGRADATION, 8.0, "disk", a.alert_id,
                    f"{metric} on {a.target}")
            hyp.add(a.target, FaultKind.HOST_FAILURE, 0.5, "disk", a.alert_id)
        elif metric == "fan_rpm":
            hyp.add(a.target, FaultKind.FAN_FAILURE, 9.0, "fan", a.alert_id,
                    f"fans at {host[h, _H['fan_rpm']] / fan_nominal:.0%} of nominal")
        elif metric in ("temp_c", "throttle"):
            hot_hosts.add(a.target)
            fan_low = host[h, _H["fan_rpm"]] < 0.9 * fan_nominal
            hyp.add(a.target, FaultKind.FAN_FAILURE, 8.0 if fan_low else 4.0, "heat",
                    a.alert_id, f"{metric} {a.evidence.get(metric, float('nan')):.3g}")
            if not fan_low:
                hyp.add(a.target, FaultKind.NOISY_NEIGHBOUR, 2.0, "heat", a.alert_id)
        elif metric == "link_loss":
            hyp.add(f"link-{a.target}", FaultKind.LINK_DEGRADATION, 9.0, "link loss",
                    a.alert_id, f"{a.evidence.get(metric, float('nan')):.1%} loss on the link")
    if len(hot_hosts) >= 3:
        hyp.add("cluster", FaultKind.LOAD_SURGE, 4.0, "many hot hosts",
                f"{len(hot_hosts)} hosts hot")


def _errors(
    facts: _Facts, hyp: _Hypotheses, topo: Topology, inst: np.ndarray, host: np.ndarray,
    obs: Observation,
) -> set[str]:
    """Score error-driven causes; returns the services failing requests across the board."""
    alerts = facts.with_metric("error_rate")
    if not alerts:
        return set()
    ids = facts.ids(alerts)
    live = obs.inst_used & obs.inst_live & (inst[:, _I["up"]] > 0.5)
    # Requests a saturated instance times out are load's doing, not a defect's.
    bad = live & (inst[:, _I["error_rate"]] > ERROR_ELEVATED) & ~_saturated(inst)
    if not bad.any():
        return set()
    bad_idx = np.flatnonzero(bad)
    hosts = {int(h) for h in obs.inst_host[bad_idx]}
    racks = {topo.rack_of_host(h) for h in hosts}
    services = {int(s) for s in obs.inst_service[bad_idx]}
    loss = host[:, _H["link_loss"]]
    if len(hosts) == 1:
        h = next(iter(hosts))
        if loss[h] > 0:
            hyp.add(f"link-host-{h}", FaultKind.LINK_DEGRADATION, 9.0, "errors", *ids,
                    f"errors only on host-{h}, which loses packets")
    if len(racks) == 1 and len(hosts) >= 2 and len(services) >= 2:
        r = next(iter(racks))
        in_rack = live & (obs.host_rack[obs.inst_host] == r)
        share = float((bad & in_rack).sum() / max(in_rack.sum(), 1))
        if share >= 0.8 and not (loss[topo.rack_hosts.get(r, [])] > 0).any():
            hyp.add(f"uplink-{r}", FaultKind.LINK_DEGRADATION, 8.0 + share, "errors", *ids,
                    f"errors on {share:.0%} of rack {r}'s instances, all services, no host "
                    "link loss")
    failing: list[str] = []
    for s in services:
        members = live & (obs.inst_service == s)
        n_members = int(members.sum())
        n_bad = int((bad & members).sum())
        spread = len({int(h) for h in obs.inst_host[bad & members]})
        if n_members and n_bad / n_members >= 0.8 and (spread >= 2 or n_members == 1):
            name = obs.service_names[s]
            failing.append(name)
            whole = len({topo.rack_of_host(int(h)) for h in obs.inst_host[members]})
            bad_racks = len({topo.rack_of_host(int(h)) for h in obs.inst_host[bad & members]})
            score = 8.0 if bad_racks == whole else 5.0
            hyp.add(f"svc-{name}", FaultKind.BAD_CONFIG, score, "errors", *ids,
                    f"errors on {n_bad}/{n_members} instances of {name} across {spread} hosts")
    for name in failing:
        deeper = topo.descendants(name) & set(failing)
        if deeper:
            hyp.scale(f"svc-{name}", FaultKind.BAD_CONFIG, 0.5,
                      f"callee {'/'.join(sorted(deeper))} fails too")
    return set(failing)


def _degraded_instances(
    facts: _Facts, hyp: _Hypotheses, inst: np.ndarray, host: np.ndarray, obs: Observation
) -> None:
    """On a plant without host sensors, an alerted instance slow or failing alone is at fault.

    Applies only when no host reports a temperature (:data:`NO_SENSOR_TEMP_C`): with host
    telemetry the hardware, link and load rules explain such symptoms, so the twin's
    diagnoses never change here. An instance counts when an alert names it for tail
    latency (``slow_response``) or errors (``error_responses``) and at most half of its
    service's live instances show the same symptom (more is a service-wide cause, e.g. a
    bad configuration or load); a replica that fails readiness as well as requests is
    rejecting its configuration, so its errors are not counted as its own fault. A probe
    alert on an instance that stopped answering while its process still holds memory below
    the limit is a hang (``service_hang``), ranked above the crash the instance-down rule
    proposes (an exited process holds none). A
    readiness alert on a service whose live instances (at least two, or all of them) all
    answer their probes yet fail readiness is a ``bad_config`` of the service: every
    replica reads the same configuration, and a crash, hang or leak takes the process's
    liveness with it; so is one such replica alone, its crash read as unlikely
    (:func:`_unready_answering`).
    """
    if host.shape[0] and float(host[:, _H["temp_c"]].max()) > NO_SENSOR_TEMP_C:
        return
    live = obs.inst_used & obs.inst_live & (inst[:, _I["up"]] > 0.5)
    _unready_everywhere(facts, hyp, obs)
    _unready_answering(facts, hyp, live, obs)
    for a in facts.alerts:
        i = component_index(a.target)
        if (alert_metric(a) in _PROBE_DOWN and a.target.startswith("inst-")
                and 0 <= i < inst.shape[0] and inst[i, _I["up"]] < 0.5
                and inst[i, _I["vm_up"]] > 0.5
                and 0.0 < inst[i, _I["mem_util"]] < MEMORY_EXHAUSTED):
            hyp.add(a.target, SERVICE_HANG, 10.0, "hung process", a.alert_id,
                    f"{a.target} answers nothing; its process still holds "
                    f"{inst[i, _I['mem_util']]:.0%} of its memory limit")
            hyp.scale(a.target, FaultKind.SERVICE_CRASH, 0.2, "its process has not exited")
    symptoms = (
        (SLOW_RESPONSE, ("latency_s", "p99_latency_s"),
         inst[:, _I["p99_latency_s"]] >= SLOW_P99_S),
        (ERROR_RESPONSES, ("error_rate",), inst[:, _I["error_rate"]] > ERROR_ELEVATED),
    )
    for kind, metrics, showing in symptoms:
        for a in facts.with_metric(*metrics):
            i = component_index(a.target)
            if not (a.target.startswith("inst-") and 0 <= i < live.size and live[i]):
                continue
            if kind == ERROR_RESPONSES and not obs.inst_ready[i]:
                continue  # failing readiness too: a configuration it rejects (bad_config)
            members = live & (obs.inst_service == obs.inst_service[i])
            n_members, n_showing = int(members.sum()), int((showing & members).sum())
            if n_members >= 2 and n_showing * 2 <= n_members:
                hyp.add(a.target, kind, 6.0, "degraded instance", a.alert_id,
                        f"{alert_metric(a)} on {a.target} alone: {n_showing} of "
                        f"{n_members} instances of its service affected")


def _canaries(facts: _Facts, hyp: _Hypotheses, inst: np.ndarray, obs: Observation) -> None:
    """Replicas that run a newer configuration than their siblings and fail: a bad canary.

    Applies where the plant reports each replica's configuration version
    (``obs.inst_config_version``). For each service an alert of the group names (itself, or
    one of its replicas on the service's newest version): while some of its replicas run a
    newer version than the rest (a canary stage), and most of those fail readiness or
    requests while most of the others do not, the new configuration is at fault:
    ``bad_config`` on the service, ahead of the crash, VM failure or leak the instance-down
    rule reads into a readiness alert and of the load a service's errors suggest.
    """
    versions = obs.inst_config_version
    if versions is None:
        return
    live = obs.inst_used & obs.inst_live & (inst[:, _I["up"]] > 0.5)
    newest: dict[int, int] = {}
    for svc in np.unique(obs.inst_service[live]):
        newest[int(svc)] = int(versions[live & (obs.inst_service == svc)].max())
    alerted: dict[int, list[AlertRecord]] = {}
    for a in facts.alerts:
        i = component_index(a.target)
        if a.target.startswith("svc-") and a.target[4:] in obs.service_names:
            alerted.setdefault(obs.service_names.index(a.target[4:]), []).append(a)
        elif (a.target.startswith("inst-") and 0 <= i < versions.size and live[i]
              and versions[i] == newest.get(int(obs.inst_service[i]))):
            # An instance alert counts only when it names a replica on the newest version:
            # another replica's crash during a canary stage is that replica's own fault.
            alerted.setdefault(int(obs.inst_service[i]), []).append(a)
    failing = live & ((inst[:, _I["error_rate"]] > ERROR_ELEVATED) | ~obs.inst_ready)
    for svc, found in sorted(alerted.items()):
        members = live & (obs.inst_service == svc)
        if not members.any():
            continue
        canary = members & (versions == newest[svc])
        rest = members & (versions < newest[svc])
        n_canary, n_rest = int(canary.sum()), int(rest.sum())
        if not n_rest:
            continue
        bad_canary, bad_rest = int((failing & canary).sum()), int((failing & rest).sum())
        if bad_canary * 2 <= n_canary or bad_rest * 2 > n_rest:
            continue
        name = obs.service_names[svc]
        hyp.add(f"svc-{name}", FaultKind.BAD_CONFIG, 11.0, "canary", *facts.ids(found),
                f"{bad_canary} of the {n_canary} replicas of {name} on configuration "
                f"v{newest[svc]} fail readiness or requests, {bad_rest} of the {n_rest} on "
                "older ones")
        for slot in np.flatnonzero(canary):
            for kind in (FaultKind.SERVICE_CRASH, FaultKind.VM_FAILURE, FaultKind.MEMORY_LEAK):
                hyp.scale(f"inst-{slot}", kind, 0.2, f"inst-{slot} answers its probes: its "
                          "process runs")


def _unready_everywhere(facts: _Facts, hyp: _Hypotheses, obs: Observation) -> None:
    """Services whose live instances all fail readiness while answering probes: bad_config."""
    alerts: dict[int, list[AlertRecord]] = {}
    for a in facts.with_metric("ready", "ready_instances"):
        i = component_index(a.target)
        if a.target.startswith("svc-") and a.target[4:] in obs.service_names:
            svc = obs.service_names.index(a.target[4:])
        elif a.target.startswith("inst-") and 0 <= i < obs.inst_used.size:
            svc = int(obs.inst_service[i])
        else:
            continue
        alerts.setdefault(svc, []).append(a)
    for svc, found in sorted(alerts.items()):
        used = obs.inst_used & (obs.inst_service == svc)
        live = used & obs.inst_live
        n_used, n_live = int(used.sum()), int(live.sum())
        if n_live == 0 or (obs.inst_ready & live).any() or not (n_live >= 2 or n_live == n_used):
            continue
        name = obs.service_names[svc]
        hyp.add(f"svc-{name}", FaultKind.BAD_CONFIG, 9.0, "unready everywhere",
                *facts.ids(found), f"{n_live} of {n_used} instances of {name} answer probes "
                "but fail readiness: a configuration they share")


def _unready_answering(
    facts: _Facts, hyp: _Hypotheses, live: np.ndarray, obs: Observation
) -> None:
    """A replica that answers its probes yet fails readiness: its service's configuration.

    The instance-down rule reads a readiness alert like a stop not yet confirmed by the next
    sample (``service_crash`` first). Once that sample shows the replica answering, its
    process runs: a crash, a VM failure or a leak's kill would have taken its liveness too,
    so those are scaled down and ``bad_config`` on the service leads. This holds for the
    first replica to reject a bad deploy as much as for all of them: each rereads the
    shared configuration on its own, and a loaded machine can leave a sibling's probe
    unanswered (its readiness not yet known) for a tick or two, so the rule does not wait
    for every replica to fail (:func:`_unready_everywhere` adds its weight when they do).
    ``live``: instances in use, live and answering in the latest sample.
    """
    for a in facts.with_metric("ready"):
        i = component_index(a.target)
        if not (a.target.startswith("inst-") and 0 <= i < live.size and live[i]
                and not obs.inst_ready[i]):
            continue
        name = obs.service_names[int(obs.inst_service[i])]
        hyp.add(f"svc-{name}", FaultKind.BAD_CONFIG, 8.0, "unready while answering",
                a.alert_id, f"{a.target} answers its probes but fails readiness")
        for kind in (FaultKind.SERVICE_CRASH, FaultKind.VM_FAILURE, FaultKind.MEMORY_LEAK):
            hyp.scale(a.target, kind, 0.2, f"{a.target} answers its probes: its process runs")


def _saturated(inst: np.ndarray) -> np.ndarray:
    """Instances at their capacity: busy and with a tail latency past :data:`SLOW_P99_S`."""
    return (inst[:, _I["cpu_util"]] >= SATURATED_UTIL) & (inst[:, _I["p99_latency_s"]]
                                                          >= SLOW_P99_S)


def _load(
    facts: _Facts, hyp: _Hypotheses, topo: Topology, host: np.ndarray, inst: np.ndarray,
    capacity_lost: bool, defective: set[str],
) -> None:
    for a in facts.of("cluster"):
        hyp.add("cluster", FaultKind.LOAD_SURGE, 9.0, "cluster load", a.alert_id,
                f"cluster {alert_metric(a)} {a.evidence.get(alert_metric(a), 0.0):.4g}")
    util = [a for a in facts.with_metric("cpu_util") if a.target.startswith("svc-")]
    if util:
        services = {a.target for a in util}
        hyp.add("cluster", FaultKind.LOAD_SURGE, 5.0 + min(len(services), 4), "saturation",
                *facts.ids(util), f"{len(services)} services heading for saturation")
    slow = {a.target for a in facts.with_metric("latency_s", "p99_latency_s")
            if a.target.startswith("svc-")}
    if len(slow) >= 2:
        hyp.add("cluster", FaultKind.LOAD_SURGE, 1.0 if capacity_lost else 4.0, "latency",
                f"{len(slow)} services slow")
    hurt = facts.with_metric("latency_s", "p99_latency_s", "error_rate")
    services = {topo.service_of(a.target) for a in hurt} - {""}
    live = topo.obs.inst_used & topo.obs.inst_live
    busy = []
    # A service failing requests on instances that are not saturated has a defect; its
    # being busy as well does not make this group's symptoms a surge's.
    for name in sorted(services - defective):
        members = np.array(topo.svc_insts.get(name, []), dtype=np.int64)
        members = members[live[members]] if members.size else members
        if members.size and inst[members, _I["cpu_util"]].mean() >= SATURATED_UTIL - 0.05:
            busy.append(name)
    if busy:
        # Saturation right after capacity was lost is the outage's doing, not more demand.
        weight = 0.3 if capacity_lost else 1.0
        hyp.add("cluster", FaultKind.LOAD_SURGE, weight * (5.0 + min(len(busy), 4)),
                "saturated", *facts.ids(hurt), f"{', '.join(busy)} at capacity"
                + (" after capacity was lost" if capacity_lost else ""))
    busy_alerts = [a for a in facts.with_metric("cpu_util") if a.target.startswith("host-")]
    busy_hosts = {a.target for a in busy_alerts}
    up = host[:, _H["up"]] > 0.5
    median = float(np.median(host[up, _H["cpu_util"]])) if up.any() else 0.0
    if 0 < len(busy_hosts) <= 2:
        for name in busy_hosts:
            h = component_index(name)
            excess = host[h, _H["cpu_util"]] - median
            if excess >= CPU_OUTLIER:
                hyp.add(name, FaultKind.NOISY_NEIGHBOUR, 8.0, "contention",
                        *facts.ids(a for a in busy_alerts if a.target == name),
                        f"host CPU {excess:+.0%} above the median host")
                hyp.add("cluster", FaultKind.LOAD_SURGE, 1.0, "contention")
    elif len(busy_hosts) > 2:
        hyp.add("cluster", FaultKind.LOAD_SURGE, 6.0, "busy hosts", *facts.ids(busy_alerts),
                f"{len(busy_hosts)} hosts busy at once")
    _slowdown(facts, hyp, topo, host, median, capacity_lost)


def _slowdown(
    facts: _Facts, hyp: _Hypotheses, topo: Topology, host: np.ndarray, median_cpu: float,
    capacity_lost: bool,
) -> None:
    """Latency without a harder explanation: look at the hosts under the slow instances."""
    slow = facts.with_metric("latency_s", "p99_latency_s")
    if not slow:
        return
    ids = facts.ids(slow)
    services = {topo.service_of(a.target) for a in slow} - {""}
    insts = {component_index(a.target) for a in slow if a.target.startswith("inst-")}
    hosts = {topo.inst_host[i] for i in insts if i in topo.inst_host}
    for h in sorted(hosts):
        name = f"host-{h}"
        if host[h, _H["throttle"]] < 0.99:
            hyp.add(name, FaultKind.FAN_FAILURE, 5.0, "slow host", *ids,
                    f"instances slow on throttled {name}")
        elif host[h, _H["cpu_util"]] - median_cpu >= CPU_OUTLIER and len(hosts) <= 2:
            hyp.add(name, FaultKind.NOISY_NEIGHBOUR, 5.0, "slow host", *ids,
                    f"instances slow on {name}, which is far busier than the rest")
    if not capacity_lost and (len(services) >= 2 or len(hosts) >= 3 or not insts):
        hyp.add("cluster", FaultKind.LOAD_SURGE, 2.0 + min(len(services), 4) / 2, "slowdown",
                *ids, f"{len(services)} service(s) slower than usual")
    for name in sorted(services):
        hyp.add(f"svc-{name}", FaultKind.BAD_CONFIG, 1.0, "slowdown", *ids,
                f"{name} slower than usual")


_ALTERNATIVES: dict[str, tuple[FaultKind, ...]] = {
    "inst": (FaultKind.SERVICE_CRASH, FaultKind.MEMORY_LEAK, FaultKind.VM_FAILURE),
    "host": (FaultKind.HOST_FAILURE, FaultKind.DISK_DEGRADATION, FaultKind.FAN_FAILURE,
             FaultKind.NOISY_NEIGHBOUR),
    "svc": (FaultKind.BAD_CONFIG, FaultKind.SECURITY_VULNERABILITY),
    "tor": (FaultKind.NETWORK_PARTITION,),
    "link-host": (FaultKind.LINK_DEGRADATION,),
    "uplink": (FaultKind.LINK_DEGRADATION,),
    "cluster": (FaultKind.LOAD_SURGE,),
}


def _fallback(facts: _Facts, hyp: _Hypotheses) -> None:
    """No rule matched: every cause that could sit on an alerted component, weakly."""
    for a in facts.alerts:
        component = a.target
        if component.startswith("rack-"):
            component = "tor-" + component[5:]
        kind = component.rpartition("-")[0] if component != "cluster" else "cluster"
        for alt in _ALTERNATIVES.get(kind, ()):
            hyp.add(component, alt, 1.0, "fallback", a.alert_id,
                    f"{alert_metric(a)} on {a.target}, no rule matched")


def _alternatives(keys: list[tuple[str, str]], hyp: _Hypotheses) -> None:
    """Weak alternatives on the leading components, so a ranking offers a second opinion."""
    for component, _ in list(keys):
        kind = component.rpartition("-")[0] if component != "cluster" else "cluster"
        for alt in _ALTERNATIVES.get(kind, ()):
            if (component, alt.value) not in hyp.scores:
                hyp.add(component, alt, 0.2, "alternative", "same component, other cause")


def second_problem(
    group_alerts: Sequence[AlertRecord], obs: Observation, *, confident: float = 0.7,
    leader: str | None = None, fan_nominal_rpm: float | None = None,
) -> list[AlertRecord]:
    """The alerts of a second, independent problem caught in the same group, if any.

    A ranking shares one group's evidence among every hypothesis, so two problems
    correlated into one group (a bad deploy of a service and, beside it, one slow replica
    of that service) lower each other's confidence as two readings of one problem would.
    They are two problems when the runner-up sits on another, alerted component whose
    alerts are not what the leader's cause shows anyway (:data:`SERVICE_SYMPTOMS`: a
    replica failing requests under a bad deploy is the deploy's), and each side alone is
    diagnosed with confidence: the group without that component's alerts still names the
    leader, and those alerts alone name the runner-up.

    Args:
        group_alerts: the alerts of one group.
        obs: the latest observation.
        confident: the confidence each side must reach alone.
        leader: when given, the label the group must rank first (none is returned if not).
        fan_nominal_rpm: as for :func:`rank_root_causes`.

    Returns:
        The runner-up's alerts, or an empty list when the leader has a rival for the same
        evidence.
    """
    ranked = rank_root_causes(group_alerts, obs, fan_nominal_rpm=fan_nominal_rpm)
    if len(ranked) < 2 or ranked[1].component == ranked[0].component or (
        leader is not None and ranked[0].label != leader
    ):
        return []
    top, rival = ranked[0], ranked[1]
    theirs = [a for a in group_alerts if a.target == rival.component]
    rest = [a for a in group_alerts if a.target != rival.component]
    if not theirs or not rest or produces(top.fault_class, theirs):
        return []
    lead = rank_root_causes(rest, obs, fan_nominal_rpm=fan_nominal_rpm)
    own = rank_root_causes(theirs, obs, fan_nominal_rpm=fan_nominal_rpm)
    if (lead and own and lead[0].label == top.label and lead[0].confidence >= confident
            and own[0].label == rival.label and own[0].confidence >= confident):
        return theirs
    return []
