"""Fault kinds, their ground truth, and the SimPy processes that inject them.

Following SimPy's machine-shop example, a fault is a process that interrupts its target:
:func:`inject_faults` draws Poisson arrivals, :func:`wear_out` ends a host's Weibull lifetime,
:func:`exploit` turns a disclosed vulnerability into a compromise. The state change itself is
done by :func:`strike`, which also writes the ground-truth :class:`sim.events.FaultRecord`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.config import canary_count
from sim.state import DISK_OK

if TYPE_CHECKING:
    import simpy

    from sim.twin import Twin

SECONDS_PER_YEAR = 365.25 * 86400.0


class FaultKind(enum.StrEnum):
    """Every fault the twin can inject."""

    SERVICE_CRASH = "service_crash"
    MEMORY_LEAK = "memory_leak"
    VM_FAILURE = "vm_failure"
    HOST_FAILURE = "host_failure"
    DISK_DEGRADATION = "disk_degradation"
    NETWORK_PARTITION = "network_partition"
    LINK_DEGRADATION = "link_degradation"
    LOAD_SURGE = "load_surge"
    NOISY_NEIGHBOUR = "noisy_neighbour"
    FAN_FAILURE = "fan_failure"
    BAD_CONFIG = "bad_config"
    SECURITY_VULNERABILITY = "security_vulnerability"


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """What a fault kind targets, whether it warns before failing, and its root cause."""

    kind: FaultKind
    target_type: str
    warning_signs: bool
    root_cause: str


FAULT_SPECS: dict[FaultKind, FaultSpec] = {
    s.kind: s
    for s in (
        FaultSpec(FaultKind.SERVICE_CRASH, "instance", False, "process crash"),
        FaultSpec(FaultKind.MEMORY_LEAK, "instance", True, "memory leak leading to OOM kill"),
        FaultSpec(FaultKind.VM_FAILURE, "instance", False, "virtual machine failure"),
        FaultSpec(FaultKind.HOST_FAILURE, "host", False, "host hardware failure"),
        FaultSpec(FaultKind.DISK_DEGRADATION, "host", True, "disk wear-out then failure"),
        FaultSpec(FaultKind.NETWORK_PARTITION, "switch", False, "top-of-rack switch failure"),
        FaultSpec(FaultKind.LINK_DEGRADATION, "link", False, "degraded link: packet loss"),
        FaultSpec(FaultKind.LOAD_SURGE, "cluster", True, "load surge beyond capacity"),
        FaultSpec(FaultKind.NOISY_NEIGHBOUR, "host", False, "noisy neighbour CPU contention"),
        FaultSpec(FaultKind.FAN_FAILURE, "host", True, "fan failure, thermal throttling"),
        FaultSpec(FaultKind.BAD_CONFIG, "service", False, "bad configuration deploy"),
        FaultSpec(
            FaultKind.SECURITY_VULNERABILITY, "service", False, "vulnerability exploited"
        ),
    )
}


def weibull_scale_s(annual_failure_rate: float, shape: float) -> float:
    """Weibull scale so a new unit fails within one year with probability ``annual_failure_rate``.

    F(t) = 1 - exp(-(t/scale)^shape); solving F(1 year) = AFR gives
    scale = 1 year / (-ln(1 - AFR))^(1/shape).
    """
    return SECONDS_PER_YEAR / (-math.log1p(-annual_failure_rate)) ** (1.0 / shape)


def draw_lifetimes_s(
    rng: np.random.Generator, n: int, annual_failure_rate: float, shape: float
) -> np.ndarray:
    """Weibull lifetimes (seconds from now) for ``n`` new units; +inf when AFR is 0."""
    if annual_failure_rate <= 0.0:
        return np.full(n, np.inf)
    return weibull_scale_s(annual_failure_rate, shape) * rng.weibull(shape, n)


def inject_faults(
    env: simpy.Environment, twin: Twin, kind: FaultKind, rate_per_s: float, rng: np.random.Generator
) -> Generator[simpy.Event, Any, None]:
    """Poisson arrivals of one fault kind at ``rate_per_s``, each striking a random target."""
    while True:
        yield env.timeout(float(rng.exponential(1.0 / rate_per_s)))
        strike(twin, kind, -1, rng)


def wear_out(
    env: simpy.Environment, twin: Twin, host: int, epoch: int
) -> Generator[simpy.Event, Any, None]:
    """End of a host's hardware lifetime; ignored if the host was replaced since (``epoch``)."""
    yield env.timeout(max(0.0, float(twin.state.hw_fail_at_s[host]) - env.now))
    if twin.state.hw_epoch[host] == epoch and not twin.state.host_hw_failed[host]:
        strike(twin, FaultKind.HOST_FAILURE, host, twin.rng_for("lifetime", host, epoch))


def exploit(
    env: simpy.Environment, twin: Twin, service: int, fault_id: int, rng: np.random.Generator
) -> Generator[simpy.Event, Any, None]:
    """Exploitation of a disclosed vulnerability, a Poisson hazard until the service is patched."""
    while True:
        hazard = float(twin.state.svc_exploit_hazard_per_s[service])
        if hazard <= 0.0:
            return
        yield env.timeout(float(rng.exponential(1.0 / hazard)))
        st = twin.state
        victims = np.flatnonzero(
            st.inst_used & st.inst_vulnerable & ~st.inst_compromised & (st.inst_service == service)
        )
        if victims.size == 0 or st.svc_exploit_hazard_per_s[service] <= 0.0:
            return
        inst = int(victims[int(rng.integers(victims.size))])
        st.inst_compromised[inst] = True
        st.inst_slowdown[inst] *= 0.4
        twin.record_state(twin.inst_name(inst), "compromised", fault_id, "vulnerability exploited")


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> int:
    return -1 if candidates.size == 0 else int(candidates[int(rng.integers(candidates.size))])


def strike(twin: Twin, kind: FaultKind, target: int, rng: np.random.Generator) -> int | None:
    """Inject one fault now; ``target`` of -1 picks a valid one with ``rng``.

    Returns the fault id, or None when no valid target exists (nothing is recorded then).
    """
    st = twin.state
    topo = twin.topo
    now = twin.now_s
    running = st.inst_used & st.inst_up
    if kind in (FaultKind.SERVICE_CRASH, FaultKind.MEMORY_LEAK, FaultKind.VM_FAILURE):
        pool = running if kind != FaultKind.MEMORY_LEAK else running & (st.inst_leak_bps == 0)
        tgt = target if target >= 0 else _pick(rng, np.flatnonzero(pool))
        if tgt < 0 or not st.inst_used[tgt]:
            return None
        name = twin.inst_name(tgt)
        detail: dict[str, float] = {}
        if kind == FaultKind.MEMORY_LEAK:
            hours = float(rng.uniform(3.0, 10.0)) * twin.config.faults.warning_scale
            headroom = st.inst_mem_limit_bytes[tgt] - st.inst_mem_bytes[tgt]
            st.inst_leak_bps[tgt] = max(headroom, 1.0) / (hours * 3600.0)
            detail = {"leak_bytes_per_s": float(st.inst_leak_bps[tgt]), "hours_to_oom": hours}
        fid = twin.record_fault(kind, name, detail)
        twin.fault_of[name] = fid
        if kind != FaultKind.MEMORY_LEAK:
            twin.take_instance_down(tgt, fid, kind.value, vm_down=kind == FaultKind.VM_FAILURE)
        return fid
    if kind in (FaultKind.HOST_FAILURE, FaultKind.NOISY_NEIGHBOUR, FaultKind.FAN_FAILURE,
                FaultKind.DISK_DEGRADATION):
        if kind == FaultKind.DISK_DEGRADATION:
            pool = st.host_up & (st.disk_state == DISK_OK)
        elif kind == FaultKind.FAN_FAILURE:
            pool = st.host_up & (st.fan_decay_per_s == 0)
        else:
            pool = st.host_up
        tgt = target if target >= 0 else _pick(rng, np.flatnonzero(pool))
        if tgt < 0 or tgt >= topo.n_hosts:
            return None
        name = f"host-{tgt}"
        if kind == FaultKind.HOST_FAILURE:
            fid = twin.record_fault(kind, name, {})
            twin.fault_of[name] = fid
            st.host_hw_failed[tgt] = True
            twin.take_host_down(tgt, fid, "hardware failure")
            return fid
        if kind == FaultKind.NOISY_NEIGHBOUR:
            share = float(rng.uniform(0.5, 0.9))
            hold_s = float(rng.uniform(3600.0, 4 * 3600.0))
            fid = twin.record_fault(kind, name, {"cpu_share": share, "duration_s": hold_s})
            twin.fault_of[name] = fid
            st.noisy_cores[tgt] = share * twin.config.topology.host.cores
            twin.schedule_clear(now + hold_s, fid, "noisy_end", tgt)
            return fid
        if kind == FaultKind.FAN_FAILURE:
            hours = float(rng.uniform(2.0, 6.0)) * twin.config.faults.warning_scale
            fid = twin.record_fault(kind, name, {"hours_to_stall": hours})
            st.fan_decay_per_s[tgt] = 0.9 / (hours * 3600.0)
            twin.fault_of[name] = fid
            return fid
        hours = float(rng.uniform(4.0, 12.0)) * twin.config.faults.warning_scale
        fid = twin.record_fault(kind, name, {"hours_to_wear_out": hours})
        st.disk_wear_rate_per_s[tgt] = max(0.0, 1.0 - st.disk_wear[tgt]) / (hours * 3600.0)
        twin.fault_of[name] = fid
        return fid
    if kind == FaultKind.NETWORK_PARTITION:
        tgt = target if target >= 0 else _pick(rng, np.flatnonzero(st.tor_up))
        if tgt < 0 or tgt >= topo.n_racks:
            return None
        fid = twin.record_fault(kind, f"tor-{tgt}", {})
        st.tor_up[tgt] = False
        twin.fault_of[f"tor-{tgt}"] = fid
        twin.record_state(f"tor-{tgt}", "down", fid, "switch failure")
        return fid
    if kind == FaultKind.LINK_DEGRADATION:
        n_links = topo.n_hosts + topo.n_racks
        tgt = target if target >= 0 else int(rng.integers(n_links))
        if tgt >= n_links:
            return None
        loss = float(rng.uniform(0.02, 0.15))
        if tgt < topo.n_hosts:
            name = f"link-host-{tgt}"
            st.host_link_loss[tgt] = loss
        else:
            name = f"uplink-{tgt - topo.n_hosts}"
            st.uplink_loss[tgt - topo.n_hosts] = loss
        fid = twin.record_fault(kind, name, {"loss": loss})
        twin.fault_of[name] = fid
        return fid
    if kind == FaultKind.LOAD_SURGE:
        if target < 0:
            warning = bool(rng.random() < twin.config.faults.surge_warning_share)
        else:
            warning = target == 1
        ramp_s = (
            float(rng.uniform(1.5, 2.5) * 3600.0) * twin.config.faults.warning_scale
            if warning
            else 60.0
        )
        mult = float(rng.uniform(1.6, 2.2))
        hold_s = float(rng.uniform(1.0, 3.0) * 3600.0)
        fid = twin.record_fault(
            kind, "cluster", {"multiplier": mult, "ramp_s": ramp_s, "hold_s": hold_s},
            warning_signs=warning,
        )
        down_s = min(ramp_s, 1800.0)
        twin.workload.surge(mult, now, ramp_s, hold_s, ramp_down_s=down_s)
        twin.schedule_clear(now + ramp_s + hold_s + down_s, fid, "surge_end", -1)
        return fid
    if kind == FaultKind.BAD_CONFIG:
        tgt = target if target >= 0 else int(rng.integers(topo.n_services))
        if tgt >= topo.n_services:
            return None
        err = float(rng.uniform(0.05, 0.3))
        deploys = twin.config.deploys
        mask = st.inst_used & (st.inst_service == tgt)
        replicas = np.flatnonzero(mask)
        n = canary_count(deploys.canary_share, replicas.size)
        detail = {"error_rate": err}
        if n < replicas.size:
            detail["canaries"] = float(n)
        fid = twin.record_fault(kind, f"svc-{topo.service_names[tgt]}", detail)
        # The canaries come from a stream of their own, so that staging deploys leaves the
        # fault schedule of a seed as it is.
        canaries = (
            np.sort(twin.rng_for("deploys", fid).choice(replicas, size=n, replace=False))
            if n < replicas.size else replicas
        )
        twin.apply_config(canaries, int(st.svc_good_config_version[tgt]) + 1, err)
        if n < replicas.size:
            twin.schedule_clear(twin.now_s + deploys.canary_bake_s, fid, "promote_config", tgt)
        twin.fault_of[f"svc-{topo.service_names[tgt]}"] = fid
        return fid
    tgt = target if target >= 0 else int(rng.integers(topo.n_services))
    if tgt >= topo.n_services:
        return None
    hours = float(rng.uniform(2.0, 12.0))
    fid = twin.record_fault(
        kind, f"svc-{topo.service_names[tgt]}", {"mean_hours_to_exploit": hours}
    )
    st.inst_vulnerable[st.inst_used & (st.inst_service == tgt)] = True
    st.svc_exploit_hazard_per_s[tgt] = 1.0 / (hours * 3600.0)
    # The advisory is public: operators see it, unlike the fault's ground truth.
    twin.record_state(f"svc-{topo.service_names[tgt]}", "vulnerable", fid, "CVE advisory")
    twin.fault_of[f"svc-{topo.service_names[tgt]}"] = fid
    twin.start_exploit(tgt, fid)
    return fid
