"""The remediation action library: the actuator side of the Plant.

Each action kind has a realistic duration, cost, success probability, risk class and
preconditions. :func:`check` validates a request against the current state and returns the
reason for rejection (or None); :mod:`sim.twin` runs accepted actions as SimPy processes
(:func:`sim.twin.execute_action`) and applies their effects on completion.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.state import DISK_OK

if TYPE_CHECKING:
    from sim.twin import Twin


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """Static properties of an action kind.

    ``risk`` is ``low``, ``medium`` or ``high`` (safety mode allows only low);
    ``disruptive`` actions take capacity away while they run.
    """

    kind: str
    target_type: str
    duration_s: float
    cost_usd: float
    success_prob: float
    risk: str
    disruptive: bool
    description: str


ACTION_SPECS: dict[str, ActionSpec] = {
    a.kind: a
    for a in (
        ActionSpec("noop", "cluster", 0.0, 0.0, 1.0, "low", False, "do nothing"),
        ActionSpec("restart_instance", "instance", 30.0, 0.2, 0.97, "low", True,
                   "restart the process: drops in-flight requests, clears leaks and hangs"),
        ActionSpec("live_migrate", "instance", 60.0, 1.0, 0.95, "medium", False,
                   "move a running VM to a healthy host; pauses it ~0.3 s at switch-over"),
        ActionSpec("cold_migrate", "instance", 120.0, 1.5, 0.98, "medium", True,
                   "rebuild the VM from its image on a healthy host"),
        ActionSpec("scale_out", "service", 90.0, 0.5, 0.98, "low", False,
                   "boot one more replica of a service (costs money per hour)"),
        ActionSpec("scale_in", "service", 10.0, 0.0, 1.0, "medium", False,
                   "remove one replica of a service"),
        ActionSpec("config_rollback", "service", 60.0, 0.3, 0.98, "low", False,
                   "roll every instance back to the last good configuration"),
        ActionSpec("reroute_traffic", "instance", 2.0, 0.0, 1.0, "low", False,
                   "take an instance out of load-balancer rotation"),
        ActionSpec("restore_traffic", "instance", 2.0, 0.0, 1.0, "low", False,
                   "put an instance back into rotation"),
        ActionSpec("failover_rack", "rack", 5.0, 0.0, 0.99, "medium", False,
                   "take every instance in a rack out of rotation"),
        ActionSpec("failback_rack", "rack", 5.0, 0.0, 1.0, "low", False,
                   "put a rack's instances back into rotation once its switch is up"),
        ActionSpec("drain_host", "host", 180.0, 2.0, 0.95, "medium", False,
                   "live-migrate every instance off a host and cordon it"),
        ActionSpec("add_cpu", "instance", 10.0, 0.1, 0.99, "low", False,
                   "give an instance two more vCPUs (workers) from its host"),
        ActionSpec("add_memory", "instance", 10.0, 0.1, 0.99, "low", False,
                   "raise an instance's memory limit by 50%"),
        ActionSpec("rolling_patch", "service", 240.0, 1.0, 0.97, "medium", False,
                   "patch and restart a service one instance at a time"),
        ActionSpec("quarantine_instance", "instance", 5.0, 0.5, 0.99, "medium", True,
                   "isolate an instance from traffic and the network"),
        ActionSpec("replace_disk", "host", 1800.0, 150.0, 0.99, "high", True,
                   "swap a host's disk; its instances are down meanwhile"),
        ActionSpec("reboot_host", "host", 300.0, 1.0, 0.95, "high", True,
                   "reboot a host; its instances are down meanwhile"),
        ActionSpec("repair_host", "host", 4 * 3600.0, 400.0, 0.98, "medium", True,
                   "hardware repair of a failed host"),
        ActionSpec("replace_fan", "host", 900.0, 60.0, 0.99, "medium", False,
                   "hot-swap a host's fan module"),
        ActionSpec("uncordon_host", "host", 5.0, 0.0, 1.0, "low", False,
                   "make a drained host schedulable again once it is repaired"),
        ActionSpec("repair_switch", "switch", 600.0, 100.0, 0.97, "medium", False,
                   "replace or reboot a failed switch"),
        ActionSpec("repair_link", "link", 300.0, 20.0, 0.98, "low", False,
                   "replace the optics / cable of a degraded link"),
        ActionSpec("evict_noisy_neighbour", "host", 60.0, 5.0, 0.95, "low", False,
                   "evict or throttle a co-tenant hogging a host's CPU"),
        ActionSpec("shed_load", "cluster", 1.0, 0.0, 1.0, "medium", False,
                   "rate-limit 20% of incoming requests at the gateway"),
        ActionSpec("stop_shedding", "cluster", 1.0, 0.0, 1.0, "low", False,
                   "stop rate-limiting"),
        ActionSpec("clear_cache", "service", 5.0, 0.0, 1.0, "medium", False,
                   "flush a service's in-memory cache; its memory returns to base"),
    )
}

INVERSE: dict[str, str] = {
    "scale_out": "scale_in",
    "reroute_traffic": "restore_traffic",
    "failover_rack": "failback_rack",
    "shed_load": "stop_shedding",
}

TARGET_PATTERN = re.compile(
    r"^(?:(?P<type>inst|host|svc|rack|tor|spine|link-host|uplink)-(?P<id>[A-Za-z0-9_]+)|cluster)$"
)
"""The target grammar: ``<prefix>-<id>`` or ``cluster``."""
TARGET_TYPES: dict[str | None, str] = {
    "inst": "instance", "host": "host", "svc": "service", "rack": "rack", "tor": "switch",
    "spine": "switch", "link-host": "link", "uplink": "link", None: "cluster",
}
"""Target type of each prefix (None is ``cluster``)."""


@dataclass(frozen=True, slots=True)
class Action:
    """A request to act: a kind from :data:`ACTION_SPECS` and a target name.

    Target names: ``inst-<i>``, ``host-<h>``, ``svc-<name>``, ``rack-<r>``, ``tor-<r>``,
    ``spine-<k>``, ``link-host-<h>``, ``uplink-<r>``, ``cluster``.
    """

    kind: str
    target: str = "cluster"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """Outcome of submitting an action: accepted (with its id and completion time) or not."""

    accepted: bool
    action_id: int
    kind: str
    target: str
    reason: str
    done_at_s: float


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A parsed target: its type, the name it was given, its index and its name prefix."""

    type: str
    name: str
    index: int
    prefix: str = ""


def resolve_target(
    target: str,
    *,
    service_names: Sequence[str],
    inst_used: np.ndarray,
    n_hosts: int,
    n_racks: int,
    n_spines: int | None = None,
) -> ResolvedTarget | str:
    """Resolve a target name against an inventory; a string is the reason it is invalid.

    Plant-agnostic: the twin passes its topology, a controller what it observes.
    ``n_spines`` of None leaves spine indices unchecked.
    """
    if not isinstance(target, str):
        return f"target must be a string, got {type(target).__name__}"
    m = TARGET_PATTERN.match(target)
    if m is None:
        return f"malformed target {target!r}; expected e.g. inst-3, host-0, svc-api, tor-1"
    kind, ident = m.group("type"), m.group("id")
    if kind is None:
        return ResolvedTarget("cluster", target, 0)
    if kind == "svc":
        if ident not in service_names:
            return f"unknown service {ident!r}; known: {list(service_names)}"
        return ResolvedTarget("service", target, list(service_names).index(ident), kind)
    if not ident.isdigit():
        return f"target {target!r} needs a numeric index"
    idx = int(ident)
    limit = {
        "inst": int(inst_used.size), "host": n_hosts, "link-host": n_hosts,
        "rack": n_racks, "tor": n_racks, "uplink": n_racks, "spine": n_spines,
    }[kind]
    if (limit is not None and idx >= limit) or (kind == "inst" and not inst_used[idx]):
        return f"unknown target {target!r}: no such {TARGET_TYPES[kind]}"
    return ResolvedTarget(TARGET_TYPES[kind], target, idx, kind)


def parse_target(twin: Twin, target: str) -> ResolvedTarget | str:
    """Resolve a target name against the twin; a string is the reason it is invalid."""
    topo = twin.topo
    return resolve_target(
        target, service_names=topo.service_names, inst_used=twin.state.inst_used,
        n_hosts=topo.n_hosts, n_racks=topo.n_racks, n_spines=topo.n_spines,
    )


def _destination(twin: Twin, inst: int) -> int:
    """Healthiest host with room for ``inst`` other than its own; -1 if none."""
    st = twin.state
    ok = (
        st.host_up
        & st.host_schedulable
        & (st.host_free_cores >= st.inst_workers[inst])
        & (st.host_free_mem_bytes >= st.inst_mem_limit_bytes[inst])
        & (st.throttle >= 1.0)
        & (st.disk_state == DISK_OK)
        & twin.tor_up_of_host()
    )
    ok[st.inst_host[inst]] = False
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        return -1
    return int(cand[np.argmax(st.host_free_cores[cand] - st.cpu_util[cand] * 4.0)])


def check(twin: Twin, action: Action) -> tuple[ActionSpec, ResolvedTarget] | str:
    """Validate an action; return its spec and target, or the reason it is rejected."""
    if not isinstance(action, Action):
        return f"expected an Action, got {type(action).__name__}"
    spec = ACTION_SPECS.get(action.kind)
    if spec is None:
        return f"unknown action kind {action.kind!r}; known: {sorted(ACTION_SPECS)}"
    tgt = parse_target(twin, action.target)
    if isinstance(tgt, str):
        return tgt
    if tgt.type != spec.target_type:
        article = "an" if spec.target_type[0] in "aeiou" else "a"
        return f"{spec.kind} needs {article} {spec.target_type} target, got {tgt.type} {tgt.name!r}"
    if twin.busy(tgt.name):
        return f"{tgt.name} already has an action in progress"
    st = twin.state
    i = tgt.index
    kind = spec.kind
    if spec.target_type == "instance":
        host = int(st.inst_host[i])
        if kind in ("restart_instance", "add_cpu", "add_memory") and not st.host_up[host]:
            return f"{tgt.name} runs on host-{host}, which is down; migrate it instead"
        if kind == "live_migrate" and not (st.inst_up[i] and st.host_up[host]):
            return f"live migration needs {tgt.name} running on an up host; use cold_migrate"
        if kind in ("live_migrate", "cold_migrate") and _destination(twin, i) < 0:
            return f"no healthy host has room for {tgt.name}"
        if kind == "reroute_traffic":
            if not st.inst_in_rotation[i]:
                return f"{tgt.name} is already out of rotation"
            svc = st.inst_service[i]
            others = st.inst_used & st.inst_in_rotation & (st.inst_service == svc)
            if others.sum() <= 1:
                return f"{tgt.name} is the last instance in rotation for its service"
        if kind == "restore_traffic" and (st.inst_in_rotation[i] or st.inst_isolated[i]):
            return f"{tgt.name} is already in rotation or is quarantined"
        if kind == "add_cpu" and st.host_free_cores[host] < 2:
            return f"host-{host} has no two free cores for {tgt.name}"
        if kind == "add_memory" and st.host_free_mem_bytes[host] < 0.5 * st.inst_mem_limit_bytes[i]:
            return f"host-{host} has not enough free memory for {tgt.name}"
    elif spec.target_type == "service":
        live = int((st.inst_used & (st.inst_service == i)).sum())
        if kind == "scale_in" and live <= int(twin.topo.svc_min_replicas[i]):
            return f"{tgt.name} is at its minimum of {live} replicas"
        if kind == "scale_out":
            if not (~st.inst_used).any():
                return "no free instance slot: the twin's scale-out head-room is used up"
            if twin.scale_out_host(i) < 0:
                return f"no healthy host has room for another replica of {tgt.name}"
        if kind == "config_rollback" and not (
            st.inst_used & (st.inst_service == i)
            & (st.inst_config_version != st.svc_good_config_version[i])
        ).any():
            return f"{tgt.name} already runs its last good configuration"
    elif spec.target_type == "host":
        if kind == "repair_host" and st.host_up[i]:
            return f"{tgt.name} is up; repair_host is for failed or shut-down hosts"
        if kind == "reboot_host" and st.host_hw_failed[i]:
            return f"{tgt.name} has failed hardware; it needs repair_host"
        if kind == "drain_host" and not st.host_up[i]:
            return f"{tgt.name} is down; cold-migrate its instances instead"
        if kind == "uncordon_host":
            if st.host_schedulable[i]:
                return f"{tgt.name} is schedulable; nothing to uncordon"
            if not st.host_up[i]:
                return f"{tgt.name} is down; repair it before uncordoning it"
            if st.disk_state[i] != DISK_OK:
                return f"{tgt.name} has a worn or failed disk; replace it before uncordoning"
            if st.fan_decay_per_s[i] > 0.0:
                return f"{tgt.name} has a failing fan; replace it before uncordoning"
    elif spec.target_type == "rack" and kind == "failback_rack":
        if not st.tor_up[i]:
            return f"tor-{i} is down; repair it before failing {tgt.name} back"
        out = st.inst_used & ~st.inst_in_rotation & ~st.inst_isolated
        if not (out & (twin.topo.host_rack[st.inst_host] == i)).any():
            return f"{tgt.name} has no instance out of rotation"
    elif spec.target_type == "switch":
        up = st.tor_up if tgt.name.startswith("tor") else st.spine_up
        if up[i]:
            return f"{tgt.name} is up; nothing to repair"
    elif spec.target_type == "link":
        loss = st.host_link_loss if tgt.name.startswith("link-host") else st.uplink_loss
        if loss[i] <= 0.0:
            return f"{tgt.name} is healthy; nothing to repair"
    elif kind == "shed_load" and st.shed_fraction >= 0.6:
        return "already shedding the maximum of 60% of requests"
    elif kind == "stop_shedding" and st.shed_fraction <= 0.0:
        return "not shedding any load"
    return spec, tgt
