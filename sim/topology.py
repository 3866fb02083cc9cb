"""Inventory and topology built from a :class:`sim.config.TwinConfig`.

The static part of the cluster lives here as read-only numpy arrays: racks, hosts, the
leaf-spine fabric (a ToR switch per rack, ``spines`` spine switches, a link per host and an
uplink per rack and spine), services and request classes, and the initial placement of
service instances (one VM each) on hosts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.config import TwinConfig
from sim.errors import ConfigError

FloatArray = np.ndarray


@dataclass(frozen=True, slots=True)
class Topology:
    """Static inventory: arrays are indexed by host, rack, service or request class."""

    n_hosts: int
    n_racks: int
    n_spines: int
    host_rack: np.ndarray
    rack_inlet_c: np.ndarray
    host_inlet_c: np.ndarray
    host_background_cores: np.ndarray
    service_names: tuple[str, ...]
    class_names: tuple[str, ...]
    svc_cpu_s: np.ndarray
    svc_workers: np.ndarray
    svc_max_servers: np.ndarray
    svc_mem_base_bytes: np.ndarray
    svc_mem_limit_bytes: np.ndarray
    svc_mem_per_req_bytes: np.ndarray
    svc_iops_per_req: np.ndarray
    svc_write_share: np.ndarray
    svc_bytes_per_req: np.ndarray
    svc_timeout_s: np.ndarray
    svc_min_replicas: np.ndarray
    class_share: np.ndarray
    class_slo_s: np.ndarray
    path_matrix: np.ndarray
    visit_ratio: np.ndarray
    call_edges: tuple[tuple[str, str], ...]
    initial_service: np.ndarray
    initial_host: np.ndarray

    @property
    def n_services(self) -> int:
        """Number of services."""
        return len(self.service_names)

    def switch_names(self) -> list[str]:
        """Names of every switch: ``tor-<rack>`` then ``spine-<k>``."""
        return [f"tor-{r}" for r in range(self.n_racks)] + [
            f"spine-{k}" for k in range(self.n_spines)
        ]


def peak_offered_rps(config: TwinConfig) -> float:
    """External request rate at the daily peak of the default workload shape."""
    w = config.workload
    return w.base_rps_per_host * config.topology.hosts * (1.0 + w.diurnal_amplitude)


def size_replicas(config: TwinConfig, visit_ratio: np.ndarray) -> np.ndarray:
    """Replicas per service so each instance runs at ``target_peak_util`` at the daily peak."""
    peak = peak_offered_rps(config)
    out = np.empty(len(config.app.services), dtype=np.int64)
    for i, s in enumerate(config.app.services):
        if s.replicas:
            out[i] = s.replicas
            continue
        busy = peak * visit_ratio[i] * s.cpu_s_per_req
        need = math.ceil(busy / (s.workers * config.app.target_peak_util))
        out[i] = max(s.min_replicas, need)
    return out


def place_instances(
    config: TwinConfig,
    replicas: np.ndarray,
    host_rack: np.ndarray,
    n_racks: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Place every instance on a host, spreading each service across racks.

    Each service's replicas go round-robin over racks; within a rack the host with the most
    free cores that holds no replica of that service yet is chosen, else the one with the most
    free cores. vCPUs and memory are reserved without over-commit.

    Raises:
        ConfigError: when some instance fits on no host.
    """
    topo = config.topology
    n_hosts = topo.hosts
    free_cores = np.full(n_hosts, float(topo.host.cores))
    free_mem = np.full(n_hosts, float(topo.host.mem_bytes))
    racks = [np.flatnonzero(host_rack == r) for r in range(n_racks)]
    services: list[int] = []
    hosts: list[int] = []
    rack_cursor = 0
    for s_idx, spec in enumerate(config.app.services):
        holders: set[int] = set()
        for _ in range(int(replicas[s_idx])):
            placed = -1
            for attempt in range(n_racks):
                members = racks[(rack_cursor + attempt) % n_racks]
                fits = (free_cores[members] >= spec.workers) & (
                    free_mem[members] >= spec.mem_limit_bytes
                )
                if not fits.any():
                    continue
                cand = members[fits]
                fresh = np.array([h not in holders for h in cand])
                pool = cand[fresh] if fresh.any() else cand
                placed = int(pool[np.argmax(free_cores[pool])])
                rack_cursor = (rack_cursor + attempt + 1) % n_racks
                break
            if placed < 0:
                total_cores = int(replicas @ np.array([s.workers for s in config.app.services]))
                raise ConfigError(
                    f"impossible placement: no host has {spec.workers} free cores and "
                    f"{spec.mem_limit_bytes / 2**30:.0f} GiB free memory for a replica of "
                    f"{spec.name!r}; the application needs {total_cores} vCPUs in all and the "
                    f"cluster has {n_hosts} hosts x {topo.host.cores} cores"
                )
            free_cores[placed] -= spec.workers
            free_mem[placed] -= spec.mem_limit_bytes
            holders.add(placed)
            services.append(s_idx)
            hosts.append(placed)
    return np.asarray(services, dtype=np.int64), np.asarray(hosts, dtype=np.int64)


def build_topology(config: TwinConfig, rng: np.random.Generator) -> Topology:
    """Build the static inventory; ``rng`` draws per-rack inlet temperatures and background load."""
    topo = config.topology
    app = config.app
    n_hosts = topo.hosts
    n_racks = topo.racks
    host_rack = np.arange(n_hosts, dtype=np.int64) // topo.hosts_per_rack
    rack_inlet_c = topo.inlet_temp_c + rng.uniform(-0.5, 0.5, n_racks) * topo.inlet_spread_c
    host_background = np.clip(
        rng.normal(topo.background_util, topo.background_util / 3.0, n_hosts), 0.0, 0.9
    ) * topo.host.cores

    names = tuple(s.name for s in app.services)
    path_matrix = np.zeros((len(app.classes), len(names)))
    edges: set[tuple[str, str]] = set()
    for k, rc in enumerate(app.classes):
        for a, b in zip(rc.path, rc.path[1:], strict=False):
            edges.add((a, b))
        for name in rc.path:
            path_matrix[k, app.service_index(name)] += 1.0
    class_share = np.array([rc.share for rc in app.classes])
    visit = class_share @ path_matrix
    unused = [n for n, v in zip(names, visit, strict=True) if v == 0]
    if unused:
        raise ConfigError(f"app: services {unused} are on no request class path")

    replicas = size_replicas(config, visit)
    inst_service, inst_host = place_instances(config, replicas, host_rack, n_racks)

    def arr(attr: str) -> np.ndarray:
        return np.array([float(getattr(s, attr)) for s in app.services])

    return Topology(
        n_hosts=n_hosts,
        n_racks=n_racks,
        n_spines=topo.spines,
        host_rack=host_rack,
        rack_inlet_c=rack_inlet_c,
        host_inlet_c=rack_inlet_c[host_rack],
        host_background_cores=host_background,
        service_names=names,
        class_names=tuple(rc.name for rc in app.classes),
        svc_cpu_s=arr("cpu_s_per_req"),
        svc_workers=np.array([s.workers for s in app.services], dtype=np.int64),
        svc_max_servers=np.array([s.max_servers for s in app.services], dtype=np.int64),
        svc_mem_base_bytes=arr("mem_base_bytes"),
        svc_mem_limit_bytes=arr("mem_limit_bytes"),
        svc_mem_per_req_bytes=arr("mem_per_req_bytes"),
        svc_iops_per_req=arr("disk_iops_per_req"),
        svc_write_share=arr("write_share"),
        svc_bytes_per_req=arr("bytes_per_req"),
        svc_timeout_s=arr("timeout_s"),
        svc_min_replicas=np.array([s.min_replicas for s in app.services], dtype=np.int64),
        class_share=class_share,
        class_slo_s=np.array([rc.slo_latency_s for rc in app.classes]),
        path_matrix=path_matrix,
        visit_ratio=visit,
        call_edges=tuple(sorted(edges)),
        initial_service=inst_service,
        initial_host=inst_host,
    )
