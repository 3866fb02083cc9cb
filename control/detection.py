"""Detection: turn what the controller observes into alerts.

Detectors read only what an operator could see, an :class:`sim.telemetry.Observation` and
the operational events of the plant (state changes such as ``down`` or ``vulnerable``, and
action records), never fault records or the ``fault_id`` / ``cause`` of a state change.

Every detector is edge-triggered: :meth:`Detector.update` returns a detection when a
condition starts to hold and stays silent while it keeps holding; the condition re-arms once
it has been clear for ``rearm_s`` seconds. One incident therefore writes one alert per
(component, signal), not one per sample.

Detectors:

* :class:`ProbeDetector`: liveness / readiness probes, VM and host power, whole racks
  unreachable and services left without a ready instance, from the probe state of the
  observation and from ``down`` state changes, so a crash is seen in the control step in which
  it happens.
* :class:`EventDetector`: operational state changes (CVE advisories, compromises, disk
  health).
* :class:`ThresholdDetector`: a table of :class:`ThresholdRule` s over hosts, instances and
  per-service / cluster aggregates.
* :class:`ZScoreDetector` and :class:`MADDetector`: streaming anomaly scores per (entity,
  feature), vectorised over all entities.
* :class:`TrendDetector`: least-squares trends projected to a limit, hours ahead of the
  failure they announce (memory leaks, disk wear, fan decay, load growth).

:class:`DetectionStage` runs a set of detectors once per control step, numbers their
detections and writes them to the plant's event log as :class:`sim.events.AlertRecord` s.
The first key of an alert's ``evidence`` is always the observed signal (see
:func:`alert_metric`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sim.events import ActionRecord, AlertRecord, Event, EventLog, StateChange
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

SOURCES: tuple[str, ...] = ("probe", "threshold", "zscore", "mad", "trend", "event")
"""Detector families, the ``source`` of a detection."""

SEVERITIES: tuple[str, ...] = ("critical", "warning")
"""Alert severities: critical means users are (or are about to be) hurt now."""

ENTITIES: tuple[str, ...] = ("host", "instance", "service", "cluster")
"""Entity kinds a metric rule can watch."""

SERVICE_FEATURES: tuple[str, ...] = (
    "rps", "cpu_util", "error_rate", "latency_s", "p99_latency_s", "ready_share",
)
"""Per-service aggregates over the service's live instances.

``rps`` is the sum, ``cpu_util`` the mean, ``error_rate``, ``latency_s`` and
``p99_latency_s`` are request-weighted means, ``ready_share`` is ready / placed instances.
"""

CLUSTER_FEATURES: tuple[str, ...] = SERVICE_FEATURES
"""The same aggregates over every live instance of the cluster (entity name ``cluster``)."""

FEATURES: dict[str, tuple[str, ...]] = {
    "host": HOST_FEATURES,
    "instance": INSTANCE_FEATURES,
    "service": SERVICE_FEATURES,
    "cluster": CLUSTER_FEATURES,
}
"""Feature names of each entity kind, in column order."""

FAN_NOMINAL_RPM = 12000.0
"""Rated fan speed of the default host model (``sim.config.HostSpec.fan_rpm``)."""

_H = {name: j for j, name in enumerate(HOST_FEATURES)}
_I = {name: j for j, name in enumerate(INSTANCE_FEATURES)}


def alert_metric(alert: AlertRecord) -> str:
    """The signal an alert is about: the first key of its evidence ("" if it has none)."""
    return next(iter(alert.evidence), "")


def component_index(name: str) -> int:
    """Index in a component name (``inst-12`` -> 12); -1 when it has none."""
    _, _, ident = name.rpartition("-")
    return int(ident) if ident.isdigit() else -1


def _check_choice(what: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Detection:
    """A condition that started to hold.

    Attributes:
        source: detector family, one of :data:`SOURCES`.
        target: component name (``inst-3``, ``host-2``, ``svc-api``, ``tor-1``, ``cluster``).
        metric: the signal (a feature name, or a state such as ``vulnerable``).
        severity: ``critical`` or ``warning``.
        evidence: the observed value under ``metric`` first, then what it was compared with.
    """

    source: str
    target: str
    metric: str
    severity: str
    evidence: dict[str, float] = field(default_factory=dict)


class Detector(Protocol):
    """A plug-in detector: fed once per control step, returns only new detections."""

    def update(self, obs: Observation, events: Sequence[Event]) -> list[Detection]:
        """Ingest the latest observation and the events since the last call.

        Args:
            obs: latest observation.
            events: operational events recorded since the previous call.

        Returns:
            Detections whose condition started to hold in this call.
        """
        ...

    def reset(self) -> None:
        """Forget all learnt statistics and latched conditions."""
        ...


# --------------------------------------------------------------------------- entity views
@dataclass(frozen=True, slots=True)
class EntityView:
    """The latest values of one entity kind, as one (entities x features) matrix.

    Attributes:
        names: component name of each row.
        values: float64 matrix, columns as in :data:`FEATURES`.
        valid: rows that are in service and measured (a host that is up, an instance that is
            placed, up and live, a service or cluster with a live instance).
        identity: changes when a row starts to describe another thing (an instance slot
            reused by another service or moved to another host); streaming statistics of a
            row are reset when it does.
    """

    names: tuple[str, ...]
    values: np.ndarray
    valid: np.ndarray
    identity: np.ndarray


@functools.lru_cache(maxsize=64)
def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}-{i}" for i in range(n))


def _aggregates(obs: Observation, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """:data:`SERVICE_FEATURES` per service and for the whole cluster, with validity.

    One matrix product of per-instance terms with the service one-hot matrix gives every
    per-service sum; the cluster sums are their totals.
    """
    used = obs.inst_used
    live = used & obs.inst_live & (inst[:, _I["up"]] > 0.5)
    n_s = len(obs.service_names)
    onehot = np.zeros((inst.shape[0], n_s))
    onehot[np.arange(inst.shape[0]), obs.inst_service] = 1.0
    x = np.where(live[:, None], inst[:, [_I["rps"], _I["cpu_util"], _I["error_rate"],
                                         _I["latency_s"], _I["p99_latency_s"]]], 0.0)
    rps = x[:, :1]
    terms = np.concatenate([
        live[:, None], x, x[:, 2:] * rps, used[:, None], (used & obs.inst_ready)[:, None],
    ], axis=1)
    by_svc = onehot.T @ terms
    sums = np.vstack([by_svc, by_svc.sum(axis=0, keepdims=True)])
    count, rps_sum = sums[:, 0], sums[:, 1]
    has_rps = rps_sum > 1e-9
    plain = sums[:, 3:6] / np.maximum(count, 1.0)[:, None]
    weighted = sums[:, 6:9] / np.where(has_rps, rps_sum, 1.0)[:, None]
    values = np.column_stack([
        rps_sum, sums[:, 2] / np.maximum(count, 1.0),
        np.where(has_rps[:, None], weighted, plain),
        sums[:, 10] / np.maximum(sums[:, 9], 1.0),
    ])
    return values[:n_s], count[:n_s] > 0, values[n_s:], count[n_s:] > 0


def _build_views(obs: Observation) -> dict[str, EntityView]:
    host = np.asarray(obs.host, dtype=np.float64)
    inst = np.asarray(obs.inst, dtype=np.float64)
    n_h = host.shape[0]
    used = obs.inst_used
    i_valid = used & obs.inst_live & (inst[:, _I["up"]] > 0.5)
    i_identity = np.where(used, obs.inst_service * (n_h + 1) + obs.inst_host, -1)
    n_s = len(obs.service_names)
    svc_values, svc_valid, cl_values, cl_valid = _aggregates(obs, inst)
    return {
        "host": EntityView(_names("host", n_h), host, host[:, _H["up"]] > 0.5,
                           np.zeros(n_h, dtype=np.int64)),
        "instance": EntityView(_names("inst", inst.shape[0]), inst, i_valid,
                               i_identity.astype(np.int64)),
        "service": EntityView(tuple(f"svc-{s}" for s in obs.service_names), svc_values,
                              svc_valid, np.zeros(n_s, dtype=np.int64)),
        "cluster": EntityView(("cluster",), cl_values, cl_valid, np.zeros(1, dtype=np.int64)),
    }


_VIEW_CACHE: list[tuple[Observation, dict[str, EntityView]]] = []


def entity_views(obs: Observation) -> dict[str, EntityView]:
    """Views of every entity kind for one observation (cached for the latest one)."""
    if _VIEW_CACHE and _VIEW_CACHE[0][0] is obs:
        return _VIEW_CACHE[0][1]
    views = _build_views(obs)
    _VIEW_CACHE[:] = [(obs, views)]
    return views


# --------------------------------------------------------------------------- latching
class EdgeLatch:
    """Vectorised edge trigger with re-arming.

    ``update(cond)`` returns the cells where ``cond`` became true while the latch was clear.
    A set cell clears once ``cond`` has been false for ``rearm_s`` seconds without a break.

    Args:
        rearm_s: how long a condition must stay clear before it can fire again, seconds.
    """

    def __init__(self, rearm_s: float) -> None:
        if not (math.isfinite(rearm_s) and rearm_s >= 0):
            raise ValueError(f"rearm_s must be a non-negative number, got {rearm_s!r}")
        self.rearm_s = rearm_s
        self.active = np.zeros(0, dtype=bool)
        self.clear_since = np.zeros(0)
        self._any_active = False

    def reset(self) -> None:
        """Clear every cell."""
        self.active = np.zeros(0, dtype=bool)
        self.clear_since = np.zeros(0)
        self._any_active = False

    def update(self, cond: np.ndarray, t_s: float) -> np.ndarray:
        """Cells that fire now (``cond`` true, latch clear); the latch state moves on."""
        if self.active.shape != cond.shape:
            self.active = np.zeros(cond.shape, dtype=bool)
            self.clear_since = np.full(cond.shape, np.nan)
            self._any_active = False
        if not self._any_active and not cond.any():
            return cond
        new = cond & ~self.active
        self.active |= cond
        clearing = self.active & ~cond
        started = clearing & np.isnan(self.clear_since)
        self.clear_since[started] = t_s
        self.clear_since[cond] = np.nan
        rearm = clearing & (t_s - self.clear_since >= self.rearm_s)
        self.active[rearm] = False
        self.clear_since[rearm] = np.nan
        self._any_active = bool(self.active.any())
        return new

    @property
    def any_active(self) -> bool:
        """Whether any cell is set."""
        return self._any_active

    def forget(self, rows: np.ndarray) -> None:
        """Clear the given rows (first axis), e.g. when an entity changed identity."""
        if self._any_active and rows.any():
            self.active[rows] = False
            self.clear_since[rows] = np.nan
            self._any_active = bool(self.active.any())


# --------------------------------------------------------------------------- probes
ADMISSION_ACTIONS = frozenset({"shed_load", "stop_shedding"})
"""Actions that change the share of requests admitted, and with it every host's load."""
_SILENCING_ACTIONS = frozenset({
    "restart_instance", "cold_migrate", "live_migrate", "scale_out", "scale_in",
    "reboot_host", "replace_disk", "repair_host", "drain_host", "quarantine_instance",
})


class ProbeDetector:
    """Liveness, readiness, VM, host, rack and service availability.

    Conditions (evaluated on the observation, and on ``down`` state changes that are newer
    than the observation, so a crash is reported in the step it happens):

    * ``inst-i`` / ``live`` (critical): a placed instance is not live (process down or
      unreachable);
    * ``inst-i`` / ``ready`` (warning): live but failing readiness;
    * ``inst-i`` / ``vm_up`` (critical): its virtual machine is down;
    * ``host-h`` / ``up`` (critical): the host is powered off;
    * ``tor-r`` / ``reachable`` (critical): every instance in the rack is unreachable while
      their hosts are up (at least ``min_rack_hosts`` hosts), or the switch reported down;
    * ``svc-x`` / ``ready_instances`` (critical): no instance of the service is ready.

    Instance alerts are inhibited while their host is down or their rack unreachable (the
    parent alert explains them). Instances that have never been ready (booting replicas) and
    targets of the controller's own disruptive actions, until ``grace_s`` after the action
    ends, are not alerted on.

    Args:
        rearm_s: clear time before a condition can fire again, seconds.
        grace_s: silence kept after a disruptive action on a target finishes, seconds.
        min_rack_hosts: hosts with instances a rack needs before it can be called unreachable.
    """

    def __init__(
        self, rearm_s: float = 0.0, grace_s: float = 60.0, min_rack_hosts: int = 2
    ) -> None:
        self.rearm_s = rearm_s
        self.grace_s = grace_s
        self.min_rack_hosts = min_rack_hosts
        self.reset()

    def reset(self) -> None:
        """Forget latched conditions, pending events, silences and boot tracking."""
        self._inst_latch = EdgeLatch(self.rearm_s)
        self._host_latch = EdgeLatch(self.rearm_s)
        self._rack_latch = EdgeLatch(self.rearm_s)
        self._svc_latch = EdgeLatch(self.rearm_s)
        self._identity: np.ndarray | None = None
        self._seen_ready = np.zeros(0, dtype=bool)
        self._pending: dict[str, float] = {}
        self._in_flight: dict[int, str] = {}
        self._silence_until: dict[str, float] = {}

    def _ingest(self, events: Sequence[Event]) -> None:
        for e in events:
            if isinstance(e, ActionRecord) and e.kind in _SILENCING_ACTIONS:
                if e.phase == "started":
                    self._in_flight[e.action_id] = e.target
                    self._silence_until[e.target] = math.inf
                elif e.phase in ("succeeded", "failed"):
                    target = self._in_flight.pop(e.action_id, e.target)
                    if target not in self._in_flight.values():
                        self._silence_until[target] = e.t_s + self.grace_s
        for e in events:
            if not isinstance(e, StateChange):
                continue
            if e.state == "down":
                self._pending[e.target] = e.t_s
            elif e.state in ("up", "ready", "removed"):
                self._pending.pop(e.target, None)

    def _silenced(self, prefix: str, n: int, now: float) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        for target, until in self._silence_until.items():
            if until >= now and target.startswith(prefix + "-"):
                k = component_index(target)
                if 0 <= k < n:
                    out[k] = True
        return out

    def _pending_mask(self, prefix: str, n: int, obs_t: float) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        for target, t in self._pending.items():
            if t >= obs_t and target.startswith(prefix + "-"):
                k = component_index(target)
                if 0 <= k < n:
                    out[k] = True
        return out

    def update(self, obs: Observation, events: Sequence[Event]) -> list[Detection]:
        """Probe-state transitions since the last call (see the class docstring)."""
        self._ingest(events)
        now = max([obs.t_s, *(e.t_s for e in events)])
        obs_t = obs.t_s if math.isfinite(obs.t_s) else -math.inf
        self._pending = {k: t for k, t in self._pending.items() if t >= obs_t}
        self._silence_until = {k: u for k, u in self._silence_until.items() if u >= now}
        inst = obs.inst
        n_i, n_h = inst.shape[0], obs.host.shape[0]
        n_r = int(obs.host_rack.max()) + 1 if n_h else 0
        used = obs.inst_used
        identity = np.where(used, obs.inst_service * (n_h + 1), -1)
        if self._identity is None or self._identity.shape != identity.shape:
            self._seen_ready = used.copy()
            self._inst_latch.reset()
        else:
            changed = identity != self._identity
            self._seen_ready[changed] = False
            self._inst_latch.forget(changed)
        self._identity = identity
        # A replica counts as booted once its telemetry sample shows it up as well: the probe
        # state can be fresher than the last sample, which still has it powered off.
        self._seen_ready |= used & obs.inst_ready & (obs.inst[:, _I["up"]] > 0.5) & (
            obs.inst[:, _I["vm_up"]] > 0.5
        )

        vm_up = inst[:, _I["vm_up"]] > 0.5
        latched = (self._inst_latch, self._host_latch, self._rack_latch, self._svc_latch)
        if (
            not self._pending and not self._silence_until
            and not any(latch.any_active for latch in latched)
            and (~used | (obs.inst_live & obs.inst_ready & vm_up)).all()
            and (inst[used, _I["up"]] > 0.5).all() and (obs.host[:, _H["up"]] > 0.5).all()
        ):
            return []
        host_down = (obs.host[:, _H["up"]] < 0.5) | self._pending_mask("host", n_h, obs_t)
        host_down &= ~self._silenced("host", n_h, now)
        watched = used & self._seen_ready & ~self._silenced("inst", n_i, now)
        watched &= ~self._silenced("host", n_h, now)[obs.inst_host]
        inst_host = obs.inst_host
        pending_i = self._pending_mask("inst", n_i, obs_t)
        not_live = watched & (~obs.inst_live | (inst[:, _I["up"]] < 0.5) | pending_i)

        # A rack is unreachable when every watched instance in it is down on hosts that are up.
        rack_of_inst = obs.host_rack[inst_host]
        in_rack = watched & ~host_down[inst_host]
        n_in = np.bincount(rack_of_inst[in_rack], minlength=n_r)
        n_dead = np.bincount(rack_of_inst[in_rack & not_live], minlength=n_r)
        hosts_hit = np.zeros(n_r, dtype=np.int64)
        if (in_rack & not_live).any():
            pairs = np.unique(inst_host[in_rack & not_live])
            hosts_hit = np.bincount(obs.host_rack[pairs], minlength=n_r)
        rack_down = (n_in > 0) & (n_dead == n_in) & (hosts_hit >= self.min_rack_hosts)
        rack_down |= self._pending_mask("tor", n_r, obs_t)

        inhibited = host_down[inst_host] | rack_down[rack_of_inst]
        cond_i = np.stack([
            not_live,
            watched & obs.inst_live & ~obs.inst_ready & ~pending_i,
            watched & ~vm_up,
        ], axis=1)
        new_i = self._inst_latch.update(cond_i, now) & ~inhibited[:, None]
        new_h = self._host_latch.update(host_down, now)
        new_r = self._rack_latch.update(rack_down, now)

        n_s = len(obs.service_names)
        svc_watched = np.bincount(obs.inst_service[watched], minlength=n_s)
        svc_ready = np.bincount(obs.inst_service[watched & obs.inst_ready & ~pending_i],
                                minlength=n_s)
        new_s = self._svc_latch.update((svc_watched > 0) & (svc_ready == 0), now)

        out: list[Detection] = []
        for h in np.flatnonzero(new_h):
            n_on = int((used & (inst_host == h)).sum())
            out.append(Detection("probe", f"host-{h}", "up", "critical",
                                 {"up": 0.0, "instances": float(n_on)}))
        for r in np.flatnonzero(new_r):
            out.append(Detection("probe", f"tor-{r}", "reachable", "critical", {
                "reachable": 0.0, "instances": float(n_dead[r]), "hosts": float(hosts_hit[r]),
            }))
        metrics = (("live", "critical"), ("ready", "warning"), ("vm_up", "critical"))
        for i, j in zip(*np.nonzero(new_i), strict=True):
            metric, severity = metrics[j]
            out.append(Detection("probe", f"inst-{i}", metric, severity, {
                metric: 0.0,
                "host": float(inst_host[i]),
                "vm_up": float(vm_up[i]),
            }))
        for s in np.flatnonzero(new_s):
            out.append(Detection("probe", f"svc-{obs.service_names[s]}", "ready_instances",
                                 "critical", {"ready_instances": 0.0,
                                              "instances": float(svc_watched[s])}))
        return out


# --------------------------------------------------------------------------- events
EVENT_STATES: dict[str, str] = {
    "vulnerable": "warning",
    "compromised": "critical",
    "disk_degraded": "warning",
    "disk_failed": "critical",
}
"""Operational states the :class:`EventDetector` alerts on, with their severity."""

CLEARING_STATES: dict[str, frozenset[str]] = {
    "compromised": frozenset({"rebuilt", "removed"}),
    "disk_degraded": frozenset({"disk_ok"}),
    "disk_failed": frozenset({"disk_ok"}),
    "vulnerable": frozenset({"patched"}),
}
"""States that end an alerted state, so that it can be alerted on again."""


class EventDetector:
    """Alerts on operational state changes (advisories, compromises, disk health).

    A ``vulnerable`` advisory on ``svc-x`` alerts on the service, ``compromised`` on the
    instance, ``disk_degraded`` / ``disk_failed`` on the host. A (target, state) pair alerts
    once until a clearing state (:data:`CLEARING_STATES`) is seen for the target; events
    older than ``max_age_s`` when first seen (history read by a stage attached mid-run) are
    ignored, and so is a state cleared later among the events read in the same step.

    Args:
        states: alerted state -> severity.
        max_age_s: oldest event still alerted on, seconds before the newest one seen.
    """

    def __init__(
        self, states: dict[str, str] | None = None, max_age_s: float = 600.0
    ) -> None:
        self.states = dict(EVENT_STATES if states is None else states)
        for state, severity in self.states.items():
            _check_choice(f"severity of {state!r}", severity, SEVERITIES)
        self.max_age_s = max_age_s
        self.reset()

    def reset(self) -> None:
        """Forget which states were alerted."""
        self._active: set[tuple[str, str]] = set()

    def update(self, obs: Observation, events: Sequence[Event]) -> list[Detection]:
        """New alerted states among ``events``."""
        changes = [e for e in events if isinstance(e, StateChange)]
        if not changes:
            return []
        newest = max(obs.t_s if math.isfinite(obs.t_s) else -math.inf,
                     max(e.t_s for e in changes))
        # A state cleared later in the same batch is not alerted on: a stage reading the
        # history (a restarted controller) would otherwise alert on an advisory whose patch
        # it reads a few records further on.
        out: dict[tuple[str, str], Detection] = {}
        for e in changes:
            for state, ends in CLEARING_STATES.items():
                if e.state in ends:
                    self._active.discard((e.target, state))
                    out.pop((e.target, state), None)
            severity = self.states.get(e.state)
            if severity is None or (e.target, e.state) in self._active:
                continue
            if newest - e.t_s > self.max_age_s:
                continue
            self._active.add((e.target, e.state))
            out[(e.target, e.state)] = Detection("event", e.target, e.state, severity,
                                                 {e.state: 1.0, "age_s": newest - e.t_s})
        return list(out.values())


# --------------------------------------------------------------------------- metric rules
@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """A static limit on one feature of one entity kind.

    Attributes:
        entity: ``host``, ``instance``, ``service`` or ``cluster``.
        feature: a feature of that entity kind (:data:`FEATURES`).
        op: ``>``, ``>=``, ``<`` or ``<=``: the comparison that means trouble.
        value: the limit, in the feature's unit.
        severity: ``critical`` or ``warning``.
    """

    entity: str
    feature: str
    op: str
    value: float
    severity: str = "warning"

    def __post_init__(self) -> None:
        _check_choice("entity", self.entity, ENTITIES)
        _check_choice(f"{self.entity} feature", self.feature, FEATURES[self.entity])
        _check_choice("op", self.op, (">", ">=", "<", "<="))
        _check_choice("severity", self.severity, SEVERITIES)


def default_threshold_rules(fan_nominal_rpm: float = FAN_NOMINAL_RPM) -> tuple[ThresholdRule, ...]:
    """The default rules table.

    Hosts: die temperature above 75 degC (throttling starts at 80), any thermal throttling,
    fans below 70% of ``fan_nominal_rpm``, CPU above 90% busy, disk wear above 60% of its
    endurance, disk latency above 5 ms (50 times the healthy 0.1 ms), link loss above 1%.
    Instances: memory above 85% of the limit, error rate above 5%, p99 latency above 1 s.
    Services (request-weighted over live instances): error rate above 2%, p99 above 1 s. A
    calm twin stays below every one of them, at night and at its daily peak.

    Args:
        fan_nominal_rpm: rated fan speed of the hosts, rpm.
    """
    r = ThresholdRule
    return (
        r("host", "temp_c", ">", 75.0, "warning"),
        r("host", "throttle", "<", 0.99, "warning"),
        r("host", "fan_rpm", "<", 0.7 * fan_nominal_rpm, "warning"),
        r("host", "cpu_util", ">", 0.9, "warning"),
        r("host", "disk_wear", ">", 0.6, "warning"),
        r("host", "disk_latency_s", ">", 0.005, "warning"),
        r("host", "link_loss", ">", 0.01, "warning"),
        r("instance", "mem_util", ">", 0.85, "warning"),
        r("instance", "error_rate", ">", 0.05, "critical"),
        r("instance", "p99_latency_s", ">", 1.0, "warning"),
        r("service", "error_rate", ">", 0.02, "critical"),
        r("service", "p99_latency_s", ">", 1.0, "critical"),
    )


def _group_by_entity(rules: Sequence[ThresholdRule | AnomalySpec | TrendRule]) -> dict[
    str, list[int]
]:
    groups: dict[str, list[int]] = {}
    for k, rule in enumerate(rules):
        groups.setdefault(rule.entity, []).append(k)
    return groups


def _emit(
    out: list[Detection], source: str, new: np.ndarray, names: Sequence[str],
    rules: Sequence[ThresholdRule | AnomalySpec | TrendRule], x: np.ndarray,
    extra: dict[str, np.ndarray],
) -> None:
    for i, j in zip(*np.nonzero(new), strict=True):
        rule = rules[j]
        evidence = {rule.feature: float(x[i, j])}
        evidence.update({key: float(v[i, j]) for key, v in extra.items()})
        out.append(Detection(source, names[i], rule.feature, rule.severity, evidence))


class _Cells:
    """A flat layout of (entity row, rule) cells over every entity kind the rules watch.

    Lets a detector run one set of vectorised operations over all its cells instead of one
    per entity kind. The layout is rebuilt when an entity count changes.
    """

    def __init__(
        self, rules: Sequence[ThresholdRule | AnomalySpec], views: dict[str, EntityView]
    ) -> None:
        groups = _group_by_entity(rules)
        self.entities = tuple(groups)
        self.parts: list[tuple[str, np.ndarray, np.ndarray]] = []
        rule_of: list[np.ndarray] = []
        self.entity_of: list[str] = []
        for entity, ks in groups.items():
            n = len(views[entity].names)
            cols = np.array([FEATURES[entity].index(rules[k].feature) for k in ks])
            rows = np.repeat(np.arange(n), len(ks))
            self.parts.append((entity, rows, np.tile(cols, n)))
            rule_of.append(np.tile(np.array(ks), n))
            self.entity_of += [entity] * (n * len(ks))
        self.rule = np.concatenate(rule_of) if rule_of else np.zeros(0, dtype=np.int64)
        self.row = (np.concatenate([rows for _, rows, _ in self.parts]) if self.parts
                    else np.zeros(0, dtype=np.int64))
        self.key = self.key_on(views)
        self.host_cells = np.array([e == "host" for e in self.entity_of], dtype=bool)
        """Cells that watch a host."""

    def key_on(self, views: dict[str, EntityView]) -> tuple[int, ...]:
        """Entity counts of the views, which the layout depends on."""
        return tuple(len(views[e].names) for e in self.entities)

    def gather(self, views: dict[str, EntityView]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values, validity and identity of every cell."""
        if not self.parts:
            empty = np.zeros(0)
            return empty, empty.astype(bool), empty.astype(np.int64)
        xs, valid, ident = [], [], []
        for entity, rows, cols in self.parts:
            v = views[entity]
            xs.append(v.values[rows, cols])
            valid.append(v.valid[rows])
            ident.append(v.identity[rows])
        return np.concatenate(xs), np.concatenate(valid), np.concatenate(ident)

    def per_rule(self, values: np.ndarray) -> np.ndarray:
        """A per-rule parameter spread over the cells."""
        return values[self.rule]

    def name(self, views: dict[str, EntityView], cell: int) -> str:
        """Component name of a cell."""
        return views[self.entity_of[cell]].names[self.row[cell]]


def _emit_cells(
    out: list[Detection], source: str, new: np.ndarray, cells: _Cells,
    views: dict[str, EntityView], rules: Sequence[ThresholdRule | AnomalySpec], x: np.ndarray,
    extra: dict[str, np.ndarray],
) -> None:
    for c in np.flatnonzero(new):
        rule = rules[cells.rule[c]]
        evidence = {rule.feature: float(x[c])}
        evidence.update({key: float(v[c]) for key, v in extra.items()})
        out.append(Detection(source, cells.name(views, int(c)), rule.feature, rule.severity,
                             evidence))


class ThresholdDetector:
    """Static limits from a rules table, vectorised over every entity the rules watch.

    Rows that are not in service (hosts down, instances down or unreachable) are not
    checked: the probe detector reports those.

    Args:
        rules: the rules table; :func:`default_threshold_rules` when None.
        rearm_s: clear time before a rule can fire again on an entity, seconds.
    """

    def __init__(
        self, rules: Sequence[ThresholdRule] | None = None, rearm_s: float = 60.0
    ) -> None:
        self.rules = tuple(default_threshold_rules() if rules is None else rules)
        self.rearm_s = rearm_s
        self._limit = np.array([r.value for r in self.rules])
        self._sign = np.array([1.0 if r.op[0] == ">" else -1.0 for r in self.rules])
        self._inclusive = np.array([r.op.endswith("=") for r in self.rules])
        self.reset()

    def reset(self) -> None:
        """Clear every latched rule."""
        self._latch = EdgeLatch(self.rearm_s)
        self._cells: _Cells | None = None
        self._last_t = -math.inf

    def update(self, obs: Observation, events: Sequence[Event]) -> list[Detection]:
        """Rules that started to be violated."""
        if not obs.t_s > self._last_t:
            return []
        self._last_t = obs.t_s
        views = entity_views(obs)
        if self._cells is None or self._cells.key != self._cells.key_on(views):
            self._cells = _Cells(self.rules, views)
            self._latch.reset()
        cells = self._cells
        x, valid, _ = cells.gather(views)
        lim = cells.per_rule(self._limit)
        excess = (x - lim) * cells.per_rule(self._sign)
        cond = ((excess > 0) | (cells.per_rule(self._inclusive) & (excess == 0))) & valid
        new = self._latch.update(cond, obs.t_s)
        out: list[Detection] = []
        if new.any():
            _emit_cells(out, "threshold", new, cells, views, self.rules, x, {"threshold": lim})
        return out


@dataclass(frozen=True, slots=True)
class AnomalySpec:
    """One streamed (entity kind, feature) for the z-score and MAD detectors.

    The score's scale is floored at ``max(min_std, rel_std * |centre|)`` so that near
    constant signals (an error rate of exactly 0) do not turn rounding into alarms.

    Attributes:
        entity: ``host``, ``instance``, ``service`` or ``cluster``.
        feature: a feature of that entity kind.
        direction: ``up``, ``down`` or ``both``: which deviations are anomalies.
        min_std: absolute floor of the scale, in the feature's unit.
        rel_std: floor of the scale relative to the centre (mean or median).
        severity: ``critical`` or ``warning``.
    """

    entity: str
    feature: str
    direction: str = "up"
    min_std: float = 0.0
    rel_std: float = 0.0
    severity: str = "warning"

    def __post_init__(self) -> None:
        _check_choice("entity", self.entity, ENTITIES)
        _check_choice(f"{self.entity} feature", self.feature, FEATURES[self.entity])
        _check_choice("direction", self.direction, ("up", "down", "both"))
        _check_choice("severity", self.severity, SEVERITIES)
        if self.min_std < 0 or self.rel_std < 0 or (self.min_std == 0 and self.rel_std == 0):
            raise ValueError(f"{self.feature}: scale floors must be >= 0 and not both 0")


DEFAULT_ZSCORE_SPECS: tuple[AnomalySpec, ...] = (
    AnomalySpec("cluster", "rps", "up", rel_std=0.08),
    AnomalySpec("host", "cpu_util", "up", min_std=0.04),
    AnomalySpec("instance", "latency_s", "up", rel_std=0.2, min_std=0.002),
    AnomalySpec("service", "error_rate", "up", min_std=0.002, severity="critical"),
)
"""Z-score defaults: with k = 6 they fire on cluster load 48% above its recent mean (a
surge; the workload's own 1.3x bursts, times its noise, stay below), a host 24 points
busier, an instance 2.2 times slower, a service error rate up by 1.2 points."""

DEFAULT_MAD_SPECS: tuple[AnomalySpec, ...] = (
    AnomalySpec("host", "cpu_util", "up", min_std=0.04),
    AnomalySpec("instance", "error_rate", "up", min_std=0.0015),
    AnomalySpec("service", "latency_s", "up", rel_std=0.2, min_std=0.002),
)
"""MAD defaults: with k = 6, a host 24 points busier, an instance error rate up by 0.9
points (1% packet loss on a rack uplink), a service 2.2 times slower than its recent median
(a load burst at the daily peak can double a service's latency)."""


class _AnomalyBank:
    """Shared plumbing of the streaming detectors: flat cells, floors, identities."""

    def __init__(self, specs: Sequence[AnomalySpec], k: float, rearm_s: float) -> None:
        if not (math.isfinite(k) and k > 0):
            raise ValueError(f"k must be a positive number, got {k!r}")
        self.specs = tuple(specs)
        self.k = k
        self.rearm_s = rearm_s
        self._min_std = np.array([s.min_std for s in self.specs])
        self._rel_std = np.array([s.rel_std for s in self.specs])
        self._is_up = np.array([s.direction in ("up", "both") for s in self.specs])
        self._is_down = np.array([s.direction in ("down", "both") for s in self.specs])
        self._clear()

    def _clear(self) -> None:
        self._last_t = -math.inf
        self._cells: _Cells | None = None
        self._identity = np.zeros(0, dtype=np.int64)
        self._latch = EdgeLatch(self.rearm_s)
        self._admission = 0

    def _prepare(
        self, obs: Observation, events: Sequence[Event] = ()
    ) -> tuple[dict[str, EntityView], _Cells, np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Views, layout, values, validity and restarted cells (None: all) of a new sample."""
        self._admission += sum(1 for e in events if isinstance(e, ActionRecord)
                               and e.kind in ADMISSION_ACTIONS and e.phase == "succeeded")
        if not obs.t_s > self._last_t:
            return None
        self._last_t = obs.t_s
        views = entity_views(obs)
        rebuilt = self._cells is None or self._cells.key != self._cells.key_on(views)
        if rebuilt:
            self._cells = _Cells(self.specs, views)
            self._floor_abs = self._cells.per_rule(self._min_std)
            self._floor_rel = self._cells.per_rule(self._rel_std)
            self._up = self._cells.per_rule(self._is_up)
            self._down = self._cells.per_rule(self._is_down)
            self._latch.reset()
        assert self._cells is not None
        x, valid, identity = self._cells.gather(views)
        if self._cells.host_cells.any():
            # A host's load steps when instances are placed on it or moved off it (a
            # scale-out landing there, a migration, a drain), and every host's when the share
            # of requests admitted changes (load shed or let in again): what it serves changed,
            # so its statistics start over instead of reading the controller's own move as an
            # anomaly.
            placed = np.bincount(obs.inst_host[obs.inst_used], minlength=len(views["host"].names))
            hc = self._cells.host_cells
            # gather returns a fresh array
            identity[hc] = placed[self._cells.row[hc]] + (self._admission << 20)
        changed = None if rebuilt else identity != self._identity
        self._identity = identity
        if changed is not None:
            self._latch.forget(changed)
        return views, self._cells, x, valid & np.isfinite(x), changed

    def _scale(self, centre: np.ndarray, spread: np.ndarray) -> np.ndarray:
        return np.maximum(np.maximum(spread, self._floor_abs), self._floor_rel * np.abs(centre))

    def _fires(self, z: np.ndarray) -> np.ndarray:
        return (self._up & (z > self.k)) | (self._down & (z < -self.k))


class ZScoreDetector(_AnomalyBank):
    """Streaming z-score on an exponentially weighted mean and variance.

    For each (entity, feature), ``z = (x - m) / s`` is computed against the statistics from
    before ``x``; then ``d = x - m; m += a d; v = (1 - a) (v + a d^2)`` (exponentially
    weighted form of Welford / West updating; T. Finch, "Incremental calculation of weighted
    mean and variance", 2009, section 9) and ``s = sqrt(v)`` floored as :class:`AnomalySpec`
    says. The weight ``a = 1 - exp(-dt / memory_s)`` follows the time ``dt`` since the
    previous sample, so the statistics mean the same at any telemetry interval. One update
    per new telemetry sample; rows out of service are skipped and rows that change identity
    start over (a host's rows also when the number of instances placed on it changes).

    Outliers must not teach the statistics that they are normal, or a step would inflate
    the variance and hide itself within a few samples: a sample with ``|z| > clip`` leaves
    the variance alone and moves the mean with a tenth of the weight only. A lasting level
    shift is therefore absorbed over about ``10 * memory_s``, after which the condition
    clears and re-arms.

    Args:
        specs: streamed features; :data:`DEFAULT_ZSCORE_SPECS` when None.
        memory_s: time constant of the exponential weighting, seconds.
        k: alarm threshold on ``|z|``.
        warmup_s: how long a row must have been observed before it can fire, seconds.
        clip: ``|z|`` above which a sample counts as an outlier for the updates.
        rearm_s: clear time before a row can fire again, seconds.
    """

    def __init__(
        self,
        specs: Sequence[AnomalySpec] | None = None,
        *,
        memory_s: float = 200.0,
        k: float = 6.0,
        warmup_s: float = 600.0,
        clip: float = 3.0,
        rearm_s: float = 60.0,
    ) -> None:
        if not (math.isfinite(memory_s) and memory_s > 0):
            raise ValueError(f"memory_s must be a positive number, got {memory_s!r}")
        if not warmup_s >= 0:
            raise ValueError(f"warmup_s must be non-negative, got {warmup_s!r}")
        if not clip > 0:
            raise ValueError(f"clip must be positive, got {clip!r}")
        super().__init__(DEFAULT_ZSCORE_SPECS if specs is None else specs, k, rearm_s)
        self.memory_s = memory_s
        self.warmup_s = warmup_s
        self.clip = clip
        self.reset()

    def reset(self) -> None:
        """Forget every mean, variance, start time and latch."""
        self._clear()
        self._mean = np.zeros(0)
        self._var = np.zeros(0)
        self._since = np.zeros(0)

    def update(self, obs: Observation, events: Sequence[Event]) -> list[Detection]:
        """Score the newest sample of every row, then fold it in."""
        prev_t = self._last_t
        prepared = self._prepare(obs, events)
        if prepared is None:
            return []
        views, cells, x, ok, changed = prepared
        if changed is None:
            self._mean = np.zeros(x.shape)
            self._var = np.zeros(x.shape)
            self._since = np.full(x.shape, np.nan)
        elif changed.any():
            self._mean[changed] = 0.0
            self._var[changed] = 0.0
            self._since[changed] = np.nan
        mean, var, since = self._mean, self._var, self._since
        first = ok & np.isnan(since)
        warm = ok & (obs.t_s - since >= self.warmup_s)
        std = self._scale(mean, np.sqrt(var))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 0, (x - mean) / std, 0.0)
        new = self._latch.update(warm & self._fires(z), obs.t_s)
        out: list[Detection] = []
        if new.any():
            _emit_cells(out, "zscore", new, cells, views, self.specs, x,
                        {"z": z, "mean": mean.copy(), "std": std})
        dt = obs.t_s - prev_t if math.isfinite(prev_t) else self.memory_s
        alpha = -math.expm1(-max(dt, 0.0) / self.memory_s)
        d = np.where(ok, x - mean, 0.0)
        # Outliers only during warm-up are learnt from: the floor is no scale yet.
        outlier = (np.abs(z) > self.clip) & warm
        a = np.where(outlier, 0.1 * alpha, alpha)
        mean += np.where(first, d, a * d)
        np.copyto(var, (1.0 - a) * (var + a * d * d), where=ok & ~first & ~outlier)
        since[first] = obs.t_s
        return out


def _nan_median(a: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN; NaN for all-NaN columns. ``a`` is (window, m)."""
    out = np.full(a.shape[1], np.nan)
    finite = np.isfinite(a)
    full = finite.all(axis=0)
    if full.any():
        out[full] = np.median(a[:, full], axis=0)
    part = ~full & finite.any(axis=0)
    if part.any():
        out[part] = np.nanmedian(a[:, part], axis=0)
    return out


class MADDetector(_AnomalyBank):
    """Robust z-score against the median and median absolute deviation of a rolling window.

    ``z = 0.6745 (x - med) / MAD`` (Iglewicz and Hoaglin, "How to Detect and Handle
    Outliers", ASQC 1993: the modified z-score), i.e. ``(x - med) / s`` with the robust
    scale ``s = MAD / 0.6745``, floored as :class:`AnomalySpec` says. The window holds the
    last ``window`` telemetry samples of rows in service; the reference median and MAD are
    recomputed every ``refresh`` samples, and every new sample is scored against the latest
    reference in the step it arrives. Rows start over as for :class:`ZScoreDetector`.

    Args:
        specs: streamed features; :data:`DEFAULT_MAD_SPECS` when None.
        window: samples in the rolling window.
        k: alarm threshold on ``|z|``.
        min_samples: samples of a row the window needs before the row can fire.
        refresh: new samples between recomputations of the reference.
        rearm_s: clear time before a row can fire again, seconds.
    """

    def __init__(
        self,
        specs: Sequence[AnomalySpec] | None = None,
        *,
        window: int = 300,
        k: float = 6.0,
        min_samples: int = 60,
        refresh: int = 30,
        rearm_s: float = 60.0,
    ) -> None:
        if window < 3 or not 1 <= min_samples <= window or refresh < 1:
            raise ValueError("need window >= 3, 1 <= min_samples <= window and refresh >= 1")
        super().__init__(DEFAULT_MAD_SPECS if specs is None else specs, k, rearm_s)
        self.window = window
        self.min_samples = min_samples
        self.refresh = refresh
        self.reset()

    def reset(self) -> None:
        """Forget the window, the reference and every latch."""
        self._clear()
        self._buf = np.zeros((self.window, 0))
        self._med = np.zeros(0)
        self._spread = np.zeros(0)
        self._n = np.zeros(0, dtype=np.int64)
        self._pos = 0
        self._since_refresh = 0

    def update(self, obs: Observation, events: Sequence[Event]) -> list[Detection]:
        """Score the newest sample of every row against the window, then add it."""
        prepared = self._prepare(obs, events)
        if prepared is None:
            return []
        views, cells, x, ok, changed = prepared
        if changed is None:
            self._buf = np.full((self.window, x.shape[0]), np.nan)
            self._med = np.full(x.shape, np.nan)
            self._spread = np.full(x.shape, np.nan)
            self._n = np.zeros(x.shape, dtype=np.int64)
        elif changed.any():
            self._buf[:, changed] = np.nan
            self._n[changed] = 0
            self._med[changed] = np.nan
        med, spread = self._med, self._spread
        known = np.isfinite(med)
        ready = ok & (self._n >= self.min_samples) & known
        centre = np.where(known, med, 0.0)
        scale = self._scale(centre, np.where(known, spread, 0.0))
        z = np.where(ready, (x - centre) / scale, 0.0)
        new = self._latch.update(ready & self._fires(z), obs.t_s)
        out: list[Detection] = []
        if new.any():
            _emit_cells(out, "mad", new, cells, views, self.specs, x,
                        {"robust_z": z, "median": med, "mad": spread * 0.6745})
        slot = self._pos % self.window
        self._pos += 1
        self._n += ok.astype(np.int64) - np.isfinite(self._buf[slot])
        self._buf[slot] = np.where(ok, x, np.nan)
        self._since_refresh += 1
        if self._since_refresh >= self.refresh or changed is None or changed.any():
            self._since_refresh = 0
            self._med = _nan_median(self._buf)
            self._spread = _nan_median(np.abs(self._buf - self._med)) / 0.6745
        return out


# --------------------------------------------------------------------------- trends
@dataclass(frozen=True, slots=True)
class TrendRule:
    """A limit a feature must not reach, and how far ahead a projected crossing is reported.

    Attributes:
        entity: ``host``, ``instance``, ``service`` or ``cluster``.
        feature: a feature of that entity kind.
        limit: the value at which the component fails, in the feature's unit.
        horizon_s: report when the projected time to reach ``limit`` is below this, seconds.
        direction: ``up`` (the feature rises to the limit) or ``down``.
        window_s: length of the regression window, seconds.
        severity: ``critical`` or ``warning``.
    """

    entity: str
    feature: str
    limit: float
    horizon_s: float
    direction: str = "up"
    window_s: float = 1800.0
    severity: str = "warning"

    def __post_init__(self) -> None:
        _check_choice("entity", self.entity, ENTITIES)
        _check_choice(f"{self.entity} feature", self.feature, FEATURES[self.entity])
        _check_choice("direction", self.direction, ("up", "down"))
        _check_choice("severity", self.severity, SEVERITIES)
        if not (self.horizon_s > 0 and self.window_s > 0):
            raise ValueError(f"{self.feature}: horizon_s and window_s must be positive")


FAST_TREND_WINDOW_S = 300.0
"""Regression window of the trends that move only with their fault (memory, wear, fans)."""
FAST_TREND_SAMPLE_S = 10.0
"""Sample spacing of the default detector of those trends: 31 samples in the window."""


def default_trend_rules(fan_nominal_rpm: float = FAN_NOMINAL_RPM) -> tuple[TrendRule, ...]:
    """The default trend rules.

    Instance memory reaching its limit (the OOM kill) within 12 h; disk wear reaching its
    endurance within 24 h; fans falling to 30% of ``fan_nominal_rpm`` within 6 h; a host
    reaching the 80 degC throttling point within 30 min; a service's mean utilisation
    reaching 90% (saturation) within 1 h. Memory, wear and fans, which move only with
    their fault, are fitted over 5 min, so a leak is reported about 4 minutes after it
    starts (over 2 min, the step in in-flight memory of a sudden load surge, spread across
    both halves of the window, read as a leak); heat over 30 min; utilisation over 1 h, whose
    short load bursts would otherwise read as trends.

    Args:
        fan_nominal_rpm: rated fan speed of the hosts, rpm.
    """
    return (
        TrendRule("instance", "mem_util", 1.0, 12 * 3600.0, window_s=FAST_TREND_WINDOW_S),
        TrendRule("host", "disk_wear", 1.0, 24 * 3600.0, window_s=FAST_TREND_WINDOW_S),
        TrendRule(
            "host", "fan_rpm", 0.3 * fan_nominal_rpm, 6 * 3600.0, "down",
            window_s=FAST_TREND_WINDOW_S,
        ),
        TrendRule("host", "temp_c", 80.0, 1800.0),
        TrendRule("service", "cpu_util", 0.9, 3600.0, window_s=3600.0),
    )


class TrendDetector:
    """Least-squares trend over a rolling window, projected to a limit.

    Every ``sample_interval_s`` the latest value of each (entity, feature) joins a window of
    its rule's ``window_s``. The ordinary least-squares slope
    ``b = sum((t - t_mean)(y - y_mean)) / sum((t - t_mean)^2)``, its standard error
    ``sqrt(s^2 / sum((t - t_mean)^2))`` with ``s^2`` the residual variance over ``n - 2``
    degrees of freedom, and the fitted value now ``y_hat`` give the time to the limit
    ``eta = (limit - y_hat) / b``. A rule fires when the slope points
    to the limit, its t statistic is at least ``min_t`` and ``eta <= horizon_s``.

    A step inside the window (a load burst) tilts a least-squares line as much as a trend
    does, but only a trend tilts both halves of the window the same way: each half is fitted
    too, all three slopes must point to the limit, and ``eta`` is the latest of the three
    projections.

    Args:
        rules: trend rules; :func:`default_trend_rules` when None.
        sample_interval_s: spacing of the samples taken into the window, seconds.
        min_samples: samples of a row the window needs before the row can fire.
        min_t: least t statistic of the slope.
        rearm_s: clear time before a row can fire again, seconds.
    """

    def __init__(
        self,
        rules: Sequence[TrendRule] | None = None,
        *,
        sample_interval_s: float = 30.0,
        min_samples: int = 10,
        min_t: float = 4.0,
        rearm_s: float = 600.0,
    ) -> None:
        self.rules = tuple(default_trend_rules() if rules is None else rules)
        longest = max((r.window_s for r in self.rules), default=sample_interval_s * 4)
        if not (0 < sample_interval_s < longest) or min_samples < 3:
            raise ValueError("need 0 < sample_interval_s < every window_s and min_samples >= 3")
        self.sample_interval_s = sample_interval_s
        self.min_samples = min_samples
        self.min_t = min_t
        self.rearm_s = rearm_s
        self._size = math.ceil(longest / sample_interval_s) + 1
        self._groups = _group_by_entity(self.rules)
        self._cols = {e: np.array([FEATURES[e].index(self.rules[k].feature) for k in ks])
                      for e, ks in self._groups.items()}
        self._window = {e: np.array([self.rules[k].window_s for k in ks])
                        for e, ks in self._groups.items()}
        self._limit = {e: np.array([self.rules[k].limit for k in ks])
                       for e, ks in self._groups.items()}
        self._horizon = {e: np.array([self.rules[k].horizon_s for k in ks])
                         for e, ks in self._groups.items()}
        self._sign = {e: np.array([1.0 if self.rules[k].direction == "up" else -1.0
                                   for k in ks]) for e, ks in self._groups.items()}
        self.reset()

    def reset(self) -> None:
        """Forget every window and latch."""
        self._times = np.full(self._size, np.nan)
        self._buf: dict[str, np.ndarray] = {}
        self._identity: dict[str, np.ndarray] = {}
        self._latches = {e: EdgeLatch(self.rearm_s) for e in self._groups}
        self._pos = 0
        self._last_t = -math.inf

    def update(self, obs: Observation, events: Sequence[Event]) -> list[Detection]:
        """Take a sample when one is due, refit every row and report projected crossings."""
        t = obs.t_s
        if not t >= self._last_t + self.sample_interval_s - 1e-9:
            return []
        self._last_t = t
        slot = self._pos % self._size
        self._pos += 1
        self._times[slot] = t
        views = entity_views(obs)
        out: list[Detection] = []
        for entity, ks in self._groups.items():
            view = views[entity]
            x = view.values[:, self._cols[entity]]
            prev = self._identity.get(entity)
            self._identity[entity] = view.identity
            if entity not in self._buf or prev is None or prev.shape != view.identity.shape:
                self._buf[entity] = np.full((self._size, *x.shape), np.nan)
                self._latches[entity].reset()
            else:
                changed = prev != view.identity
                if changed.any():
                    self._buf[entity][:, changed] = np.nan
                    self._latches[entity].forget(changed)
            buf = self._buf[entity]
            ok = view.valid[:, None] & np.isfinite(x)
            buf[slot] = np.where(ok, x, np.nan)
            rel = (self._times - t)[:, None, None]
            rel_t = np.where(rel >= -self._window[entity] - 1e-9, rel, np.nan)
            slope, y_now, t_stat, n = _fit(rel_t, buf)
            # A step inside the window also tilts a least-squares line; a trend tilts both
            # halves of the window the same way and they project to the same time.
            t_mid = 0.5 * np.nanmin(rel_t, axis=0, keepdims=True)
            early, y_early, _, n_early = _fit(np.where(rel_t <= t_mid, rel_t, np.nan), buf)
            late, y_late, _, n_late = _fit(np.where(rel_t > t_mid, rel_t, np.nan), buf)
            sign = self._sign[entity]
            limit = self._limit[entity]
            towards = (slope * sign > 0) & (early * sign > 0) & (late * sign > 0)
            towards &= (n_early >= 3) & (n_late >= 3)
            with np.errstate(divide="ignore", invalid="ignore"):
                etas = [np.where(towards, (limit - y) / b, np.inf)
                        for b, y in ((slope, y_now), (early, y_early), (late, y_late))]
            eta = np.maximum(np.maximum(np.maximum(etas[0], etas[1]), etas[2]), 0.0)
            cond = (ok & (n >= self.min_samples) & towards & (np.abs(t_stat) >= self.min_t)
                    & (eta <= self._horizon[entity]))
            new = self._latches[entity].update(cond, t)
            if new.any():
                _emit(out, "trend", new, view.names, [self.rules[k] for k in ks], x, {
                    "eta_s": eta, "slope_per_s": slope, "t_stat": t_stat,
                    "limit": np.broadcast_to(self._limit[entity], x.shape),
                })
        return out


def _fit(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column OLS of ``y`` (window, ...) on ``t`` (broadcastable to ``y``), NaN skipped.

    From the sums ``S_t, S_y, S_tt, S_ty, S_yy`` over the finite samples:
    ``Sxx = S_tt - n t_mean^2``, ``Sxy = S_ty - n t_mean y_mean``, slope ``Sxy / Sxx`` and
    residual sum of squares ``S_yy - n y_mean^2 - slope Sxy``.

    Returns slope, fitted value at ``t = 0``, t statistic of the slope and sample count.
    """
    m = np.isfinite(y) & np.isfinite(t)
    tm = np.where(m, t, 0.0)
    ym = np.where(m, y, 0.0)
    n = m.sum(axis=0)
    inv_n = 1.0 / np.maximum(n, 1)
    t_mean = tm.sum(axis=0) * inv_n
    y_mean = ym.sum(axis=0) * inv_n
    sxx = (tm * tm).sum(axis=0) - n * t_mean * t_mean
    sxy = (tm * ym).sum(axis=0) - n * t_mean * y_mean
    syy = (ym * ym).sum(axis=0) - n * y_mean * y_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(sxx > 0, sxy / sxx, 0.0)
        s2 = np.maximum(syy - slope * sxy, 0.0) / np.maximum(n - 2, 1)
        se = np.sqrt(s2 / sxx)
        t_stat = np.where(se > 0, slope / se, np.where(slope != 0, np.inf * np.sign(slope), 0.0))
    y_now = y_mean - slope * t_mean
    return slope, y_now, np.nan_to_num(t_stat, nan=0.0), n


# --------------------------------------------------------------------------- the stage
def default_detectors(fan_nominal_rpm: float = FAN_NOMINAL_RPM) -> list[Detector]:
    """One detector of each family with its defaults.

    The trends take two detectors: one detector keeps its longest window's samples at one
    spacing, and the 5-minute windows are sampled every 10 s where the 1-hour one needs a
    sample only every 30 s.

    Args:
        fan_nominal_rpm: rated fan speed of the hosts, rpm.
    """
    trends = default_trend_rules(fan_nominal_rpm)
    fast = [r for r in trends if r.window_s <= FAST_TREND_WINDOW_S]
    slow = [r for r in trends if r.window_s > FAST_TREND_WINDOW_S]
    return [
        ProbeDetector(),
        EventDetector(),
        ThresholdDetector(default_threshold_rules(fan_nominal_rpm)),
        ZScoreDetector(),
        MADDetector(),
        TrendDetector(fast, sample_interval_s=FAST_TREND_SAMPLE_S),
        TrendDetector(slow),
    ]


class LoggedPlant(Protocol):
    """What the stage needs from a plant: observations, events, time and its event log."""

    @property
    def now_s(self) -> float:
        """Current time of the plant, seconds."""
        ...

    @property
    def log(self) -> EventLog:
        """The plant's event log, where alerts are written."""
        ...

    def observe(self) -> Observation:
        """Latest telemetry and probe state."""
        ...

    def events(self, since: int = 0) -> Sequence[Event]:
        """Event records with sequence number >= ``since``."""
        ...


class DetectionStage:
    """Runs detectors once per control step and writes their detections as alerts.

    Detections of one source, signal and severity on ``collapse_at`` or more instances of one
    service in the same step are written as one alert on the service (with the count), or
    not at all when a service-level rule of that source raised the same signal in that step,
    so a service-wide problem is one alert, not one per replica.

    Args:
        detectors: the detectors; :func:`default_detectors` when None.
        collapse_at: instances of one service at which detections are rolled up (0: never).
    """

    def __init__(
        self, detectors: Sequence[Detector] | None = None, *, collapse_at: int = 3
    ) -> None:
        self.detectors = list(default_detectors() if detectors is None else detectors)
        self.collapse_at = collapse_at
        self.reset()

    def reset(self) -> None:
        """Reset every detector and start reading the log from its beginning."""
        for d in self.detectors:
            d.reset()
        self._next_seq = 0
        self._next_alert_id = 0

    def step(self, plant: LoggedPlant) -> list[AlertRecord]:
        """Observe, run every detector, and append one alert per new detection to the log.

        Returns:
            The alerts written in this step, in order.
        """
        obs = plant.observe()
        events = list(plant.events(self._next_seq))
        for e in events:
            if isinstance(e, AlertRecord):
                self._next_alert_id = max(self._next_alert_id, e.alert_id + 1)
        detections: list[Detection] = []
        for detector in self.detectors:
            detections.extend(detector.update(obs, events))
        detections = self._collapse(detections, obs)
        log = plant.log
        now = plant.now_s
        out: list[AlertRecord] = []
        for d in detections:
            evidence = {d.metric: d.evidence.get(d.metric, math.nan)}
            evidence.update(d.evidence)
            record = AlertRecord(log.next_seq, now, self._next_alert_id, d.source, d.target,
                                 d.severity, evidence)
            log.add(record)
            out.append(record)
            self._next_alert_id += 1
        self._next_seq = log.next_seq
        return out

    def _collapse(self, detections: list[Detection], obs: Observation) -> list[Detection]:
        if self.collapse_at <= 0 or len(detections) < self.collapse_at:
            return detections
        buckets: dict[tuple[str, str, str, int], list[int]] = {}
        for k, d in enumerate(detections):
            i = component_index(d.target)
            if d.target.startswith("inst-") and 0 <= i < obs.inst_service.shape[0]:
                key = (d.source, d.metric, d.severity, int(obs.inst_service[i]))
                buckets.setdefault(key, []).append(k)
        rolled: dict[int, Detection] = {}
        drop: set[int] = set()
        said = {(d.source, d.target, d.metric) for d in detections}
        for (source, metric, severity, svc), ks in buckets.items():
            if len(ks) < self.collapse_at:
                continue
            target = f"svc-{obs.service_names[svc]}"
            drop.update(ks[1:])
            if (source, target, metric) in said:
                # A service-level rule said the same in this step.
                drop.add(ks[0])
                continue
            values = [detections[k].evidence.get(metric, math.nan) for k in ks]
            finite = [v for v in values if math.isfinite(v)]
            rolled[ks[0]] = Detection(source, target, metric, severity, {
                metric: max(finite) if finite else math.nan, "instances": float(len(ks)),
            })
        return [rolled.get(k, d) for k, d in enumerate(detections) if k not in drop]
