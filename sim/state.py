"""Mutable cluster state: plain numpy arrays, copied wholesale by ``fork``.

Instance arrays are allocated with head-room for scale-out; ``inst_used`` marks live slots.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import numpy as np

from sim.topology import Topology

DISK_OK, DISK_DEGRADED, DISK_FAILED = 0, 1, 2


@dataclass(slots=True)
class ClusterState:
    """Dynamic state of hosts, network, instances and services."""

    # hosts
    host_up: np.ndarray
    host_hw_failed: np.ndarray
    host_schedulable: np.ndarray
    host_free_cores: np.ndarray
    host_free_mem_bytes: np.ndarray
    temp_c: np.ndarray
    fan_health: np.ndarray
    fan_decay_per_s: np.ndarray
    throttle: np.ndarray
    power_w: np.ndarray
    cpu_util: np.ndarray
    noisy_cores: np.ndarray
    disk_wear: np.ndarray
    disk_wear_rate_per_s: np.ndarray
    disk_hazard_acc: np.ndarray
    disk_fail_threshold: np.ndarray
    disk_state: np.ndarray
    disk_util: np.ndarray
    disk_latency_s: np.ndarray
    net_bps: np.ndarray
    host_link_loss: np.ndarray
    hw_fail_at_s: np.ndarray
    hw_epoch: np.ndarray
    # network
    tor_up: np.ndarray
    spine_up: np.ndarray
    uplink_loss: np.ndarray
    uplink_util: np.ndarray
    # instances
    inst_used: np.ndarray
    inst_service: np.ndarray
    inst_host: np.ndarray
    inst_workers: np.ndarray
    inst_servers: np.ndarray
    """Servers of each instance's M/M/c queue: its vCPUs, or fewer under its service's
    ``max_servers`` (see :func:`mmc_servers`)."""
    inst_mem_limit_bytes: np.ndarray
    inst_up: np.ndarray
    inst_vm_up: np.ndarray
    inst_boot_until_s: np.ndarray
    inst_in_rotation: np.ndarray
    inst_ready: np.ndarray
    inst_live: np.ndarray
    inst_probe_fails: np.ndarray
    inst_probe_passes: np.ndarray
    inst_mem_bytes: np.ndarray
    inst_leak_bps: np.ndarray
    inst_backlog: np.ndarray
    inst_slowdown: np.ndarray
    inst_cfg_error: np.ndarray
    inst_config_version: np.ndarray
    inst_vulnerable: np.ndarray
    inst_compromised: np.ndarray
    inst_isolated: np.ndarray
    inst_rps: np.ndarray
    inst_util: np.ndarray
    inst_latency_s: np.ndarray
    inst_p99_s: np.ndarray
    inst_error_rate: np.ndarray
    # services
    svc_exploit_hazard_per_s: np.ndarray
    svc_good_config_version: np.ndarray
    svc_extra_load: np.ndarray
    # cluster-wide
    shed_fraction: float = 0.0
    requests_total: float = 0.0
    requests_good: float = 0.0
    window_requests: float = 0.0
    window_good: float = 0.0
    window_class_good: np.ndarray = field(default_factory=lambda: np.zeros(0))
    window_class_requests: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def copy(self) -> ClusterState:
        """Deep copy of every array."""
        return ClusterState(**{f.name: copy.copy(getattr(self, f.name)) for f in fields(self)})

    @property
    def capacity(self) -> int:
        """Number of instance slots."""
        return int(self.inst_used.shape[0])


def mmc_servers(workers: np.ndarray | int, max_servers: np.ndarray | int) -> np.ndarray:
    """M/M/c servers of instances with ``workers`` vCPUs under a cap (0: no cap)."""
    w = np.asarray(workers, dtype=np.int64)
    cap = np.asarray(max_servers, dtype=np.int64)
    return np.where(cap > 0, np.minimum(w, cap), w)


def initial_state(
    topo: Topology,
    host_cores: float,
    host_mem_bytes: float,
    disk_fail_threshold: np.ndarray,
    hw_fail_at_s: np.ndarray,
    spare_slots: int,
) -> ClusterState:
    """Fresh state: every host up and cool, every instance running and in rotation."""
    n_h, n_r = topo.n_hosts, topo.n_racks
    n0 = topo.initial_service.shape[0]
    cap = n0 + spare_slots
    svc = np.zeros(cap, dtype=np.int64)
    svc[:n0] = topo.initial_service
    host = np.zeros(cap, dtype=np.int64)
    host[:n0] = topo.initial_host
    used = np.zeros(cap, dtype=bool)
    used[:n0] = True
    # Spare slots carry the smallest worker count so queueing maths over all slots stays
    # within the server counts actually in use.
    workers = np.full(cap, int(topo.svc_workers.min()), dtype=np.int64)
    workers[:n0] = topo.svc_workers[topo.initial_service]
    n_servers = workers.copy()
    n_servers[:n0] = mmc_servers(workers[:n0], topo.svc_max_servers[topo.initial_service])
    mem_limit = np.ones(cap)
    mem_limit[:n0] = topo.svc_mem_limit_bytes[topo.initial_service]
    mem = np.zeros(cap)
    mem[:n0] = topo.svc_mem_base_bytes[topo.initial_service]
    free_cores = np.full(n_h, float(host_cores))
    np.subtract.at(free_cores, host[:n0], workers[:n0])
    free_mem = np.full(n_h, float(host_mem_bytes))
    np.subtract.at(free_mem, host[:n0], mem_limit[:n0])
    n_s = topo.n_services
    k = topo.class_share.shape[0]

    def zeros_h() -> np.ndarray:
        return np.zeros(n_h)

    def zeros_i() -> np.ndarray:
        return np.zeros(cap)

    return ClusterState(
        host_up=np.ones(n_h, dtype=bool),
        host_hw_failed=np.zeros(n_h, dtype=bool),
        host_schedulable=np.ones(n_h, dtype=bool),
        host_free_cores=free_cores,
        host_free_mem_bytes=free_mem,
        temp_c=topo.host_inlet_c.copy(),
        fan_health=np.ones(n_h),
        fan_decay_per_s=zeros_h(),
        throttle=np.ones(n_h),
        power_w=zeros_h(),
        cpu_util=zeros_h(),
        noisy_cores=zeros_h(),
        disk_wear=zeros_h(),
        disk_wear_rate_per_s=zeros_h(),
        disk_hazard_acc=zeros_h(),
        disk_fail_threshold=disk_fail_threshold,
        disk_state=np.zeros(n_h, dtype=np.int64),
        disk_util=zeros_h(),
        disk_latency_s=zeros_h(),
        net_bps=zeros_h(),
        host_link_loss=zeros_h(),
        hw_fail_at_s=hw_fail_at_s,
        hw_epoch=np.zeros(n_h, dtype=np.int64),
        tor_up=np.ones(n_r, dtype=bool),
        spine_up=np.ones(topo.n_spines, dtype=bool),
        uplink_loss=np.zeros(n_r),
        uplink_util=np.zeros(n_r),
        inst_used=used,
        inst_service=svc,
        inst_host=host,
        inst_workers=workers,
        inst_servers=n_servers,
        inst_mem_limit_bytes=mem_limit,
        inst_up=used.copy(),
        inst_vm_up=used.copy(),
        inst_boot_until_s=zeros_i(),
        inst_in_rotation=used.copy(),
        inst_ready=used.copy(),
        inst_live=used.copy(),
        inst_probe_fails=np.zeros(cap, dtype=np.int64),
        inst_probe_passes=np.zeros(cap, dtype=np.int64),
        inst_mem_bytes=mem,
        inst_leak_bps=zeros_i(),
        inst_backlog=zeros_i(),
        inst_slowdown=np.ones(cap),
        inst_cfg_error=zeros_i(),
        inst_config_version=np.zeros(cap, dtype=np.int64),
        inst_vulnerable=np.zeros(cap, dtype=bool),
        inst_compromised=np.zeros(cap, dtype=bool),
        inst_isolated=np.zeros(cap, dtype=bool),
        inst_rps=zeros_i(),
        inst_util=zeros_i(),
        inst_latency_s=zeros_i(),
        inst_p99_s=zeros_i(),
        inst_error_rate=zeros_i(),
        svc_exploit_hazard_per_s=np.zeros(n_s),
        svc_good_config_version=np.zeros(n_s, dtype=np.int64),
        svc_extra_load=np.zeros(n_s),
        window_class_good=np.zeros(k),
        window_class_requests=np.zeros(k),
    )
