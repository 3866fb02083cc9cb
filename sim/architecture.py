"""The architecture problem: a genome describing a deployment, compiled into the twin.

A genome is an integer vector over a :class:`GenomeSpace`. It decodes into an
:class:`Architecture` (replicas, instance size and rack spread per service, a cache layer and
its size, database read replicas, the load-balancing policy and autoscaling thresholds), which
compiles into the twin's own config types by transforming the service graph:

* **Cache layer.** Browse requests read catalogue data through the cache. With the layer
  present, a share ``h`` of them hit it (path ``gateway, frontend, api, cache``) and the rest
  miss and go on to the database (``..., cache, database``). The hit ratio follows the usual
  exponential working-set curve ``h = H_MAX (1 - exp(-S / W))`` with ``S`` the cache memory
  over all replicas (they shard the key space), ``W = WORKING_SET_GIB`` and
  ``H_MAX = MAX_HIT_RATIO``. Without the layer every browse request reads the database.
* **Read replicas.** With ``k > 0`` read replicas a ``db_replica`` service of ``k`` instances
  (the database's size, no writes) is added, and each request class that visits the database
  is split into its read part (share ``1 - write_share``, served by the replicas) and its
  write part (served by the primary). Replication lag is not modelled.
* **Load-balancing policy.** The twin balances uniformly over ready instances
  (``round_robin``). ``least_request`` is modelled by its best case: join-the-shortest-queue
  over pairs of replicas behaves at most as well as one pooled queue, so each pair of
  replicas becomes one instance with twice the workers and memory, and the balancer's
  bookkeeping adds ``LEAST_REQUEST_CPU_S`` of gateway CPU per request. The price is the blast
  radius: one crash takes out a pair's capacity.
* **Rack spread.** Each service's replicas are placed round-robin over only its first
  ``spread`` racks (starting at a per-service offset), with host anti-affinity.
* **Autoscaling thresholds** drive :class:`Autoscaler` during the evaluation through the
  plant's ``scale_out`` / ``scale_in`` actions, which cost money like any action.

Replicas are encoded by a target peak utilisation per service (``replicas = ceil(busy / (w u))``
where ``busy`` is the service's CPU demand at the daily peak), so a mutation step adds or
removes a few percent of a service's nodes whatever the instance size; ``u = 0.6`` is the
twin's own sizing rule, so the default genome is the twin's default deployment.

:func:`repair` turns any integer vector into a deployable genome (genes clipped to their
bounds, then capacity reduced and spread widened until every instance fits), so variation
operators never produce an invalid deployment. :func:`evaluate` runs the twin in fast mode
under a fault regime and returns the three objectives.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.actions import Action
from sim.config import GIB, AppSpec, RequestClass, ServiceSpec, TwinConfig
from sim.errors import ConfigError
from sim.physics.serving import mmc_fluid_latency_s
from sim.scenarios import SCENARIOS, make_config
from sim.state import mmc_servers
from sim.topology import peak_offered_rps, place_instances
from sim.twin import Twin, window_kpis

SIZED_SERVICES = ("gateway", "frontend", "api", "auth", "database")
"""Services whose replicas, instance size and spread the genome sets (the cache has its own)."""
TARGET_UTIL_LEVELS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35,
                      0.3)
"""Target peak utilisation per capacity level; more capacity at higher levels."""
SIZE_WORKERS = (2, 4, 8, 16)
"""vCPUs per instance at each size level; memory scales with them."""
CACHE_GIB_LEVELS = (4, 8, 16, 24, 32, 64, 96)
"""Cache memory per cache replica, GiB, at each size level."""
LB_POLICIES = ("round_robin", "least_request")
SCALE_UP_LEVELS = (0.0, 0.6, 0.7, 0.8, 0.9)
"""Utilisation above which the autoscaler adds replicas; 0 turns scaling out off."""
SCALE_DOWN_LEVELS = (0.0, 0.1, 0.2, 0.3)
"""Utilisation below which the autoscaler removes a replica; 0 turns scaling in off."""
MAX_CACHE_REPLICAS = 8
MAX_READ_REPLICAS = 16
WORKING_SET_GIB = 24.0
MAX_HIT_RATIO = 0.95
CACHE_BASE_GIB = 8.0
LEAST_REQUEST_CPU_S = 0.0005
AUTOSCALE_COOLDOWN_S = 300.0


class ArchitectureError(ConfigError):
    """A genome or search space that cannot describe a deployment."""


@dataclass(frozen=True, slots=True)
class Gene:
    """One integer gene with inclusive bounds."""

    name: str
    low: int
    high: int

    def __post_init__(self) -> None:
        if not self.name:
            raise ArchitectureError("gene name must be non-empty")
        if self.low > self.high:
            raise ArchitectureError(
                f"gene {self.name!r}: bounds inverted (low {self.low} > high {self.high})"
            )


@dataclass(frozen=True, slots=True)
class Architecture:
    """A decoded deployment. Per-service tuples follow :data:`SIZED_SERVICES`."""

    replicas: tuple[int, ...]
    workers: tuple[int, ...]
    mem_limit_bytes: tuple[int, ...]
    spread_racks: tuple[int, ...]
    cache_replicas: int
    cache_gib: float
    read_replicas: int
    lb_policy: str
    scale_up_util: float
    scale_down_util: float
    timeout_s: tuple[float, ...] = ()
    max_servers: tuple[int, ...] = ()
    """Per service, the cap on requests an instance serves at once that its worker threads
    and connection pool set (``ServiceSpec.max_servers``; 0 or empty: its vCPUs)."""

    @property
    def cache_hit_ratio(self) -> float:
        """Hit ratio of browse reads on the cache layer (0 without one)."""
        if self.cache_replicas == 0:
            return 0.0
        total = self.cache_replicas * self.cache_gib
        return MAX_HIT_RATIO * (1.0 - math.exp(-total / WORKING_SET_GIB))


class GenomeSpace:
    """The genes of a deployment of ``base``'s application on ``base``'s cluster.

    Args:
        base: the twin config whose application and cluster are deployed; its services must
            include :data:`SIZED_SERVICES` and ``cache``.
        genes: the genes, in order; ``None`` builds the standard layout for ``base``. A custom
            list may narrow bounds (it must keep every standard gene, in order).

    Raises:
        ArchitectureError: an empty or inconsistent space.
    """

    def __init__(self, base: TwinConfig, genes: Sequence[Gene] | None = None) -> None:
        names = [s.name for s in base.app.services]
        missing = [n for n in (*SIZED_SERVICES, "cache") if n not in names]
        if missing:
            raise ArchitectureError(f"the application lacks services {missing} the genome sets")
        self.base = base
        self.n_racks = base.topology.racks
        standard = self._standard_genes()
        if genes is None:
            genes = standard
        genes = tuple(genes)
        if not genes:
            raise ArchitectureError("the search space is empty: no genes")
        if [g.name for g in genes] != [g.name for g in standard]:
            raise ArchitectureError(
                "the search space must list the standard genes in order: "
                f"{[g.name for g in standard]}"
            )
        for g, s in zip(genes, standard, strict=True):
            if g.low < s.low or g.high > s.high:
                raise ArchitectureError(
                    f"gene {g.name!r}: bounds [{g.low}, {g.high}] leave [{s.low}, {s.high}]"
                )
        self.genes: tuple[Gene, ...] = genes
        self.names = tuple(g.name for g in genes)
        self.low = np.array([g.low for g in genes], dtype=np.int64)
        self.high = np.array([g.high for g in genes], dtype=np.int64)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._services = {s.name: s for s in base.app.services}

    def _standard_genes(self) -> tuple[Gene, ...]:
        genes: list[Gene] = []
        for s in SIZED_SERVICES:
            genes.append(Gene(f"{s}.capacity", 0, len(TARGET_UTIL_LEVELS) - 1))
            genes.append(Gene(f"{s}.size", 0, len(SIZE_WORKERS) - 1))
            genes.append(Gene(f"{s}.spread", 1, self.n_racks))
        genes += [
            Gene("cache.present", 0, 1),
            Gene("cache.replicas", 1, MAX_CACHE_REPLICAS),
            Gene("cache.size", 0, len(CACHE_GIB_LEVELS) - 1),
            Gene("database.read_replicas", 0, MAX_READ_REPLICAS),
            Gene("lb.policy", 0, len(LB_POLICIES) - 1),
            Gene("autoscale.up", 0, len(SCALE_UP_LEVELS) - 1),
            Gene("autoscale.down", 0, len(SCALE_DOWN_LEVELS) - 1),
        ]
        return tuple(genes)

    @property
    def n_genes(self) -> int:
        """Length of a genome."""
        return len(self.genes)

    def index(self, name: str) -> int:
        """Position of gene ``name``."""
        if name not in self._index:
            raise ArchitectureError(f"unknown gene {name!r}; known: {list(self.names)}")
        return self._index[name]

    def default_genome(self) -> np.ndarray:
        """The twin's default deployment: sized for 60% at peak, default sizes, full spread."""
        g = np.zeros(self.n_genes, dtype=np.int64)
        for s in SIZED_SERVICES:
            g[self.index(f"{s}.capacity")] = TARGET_UTIL_LEVELS.index(0.6)
            g[self.index(f"{s}.size")] = SIZE_WORKERS.index(self._services[s].workers)
            g[self.index(f"{s}.spread")] = self.n_racks
        cache = self._services["cache"]
        g[self.index("cache.present")] = 1
        g[self.index("cache.replicas")] = max(cache.min_replicas, 1)
        g[self.index("cache.size")] = CACHE_GIB_LEVELS.index(
            round((cache.mem_limit_bytes - cache.mem_base_bytes) / GIB)
        )
        return np.clip(g, self.low, self.high)

    def random_genomes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniform random genomes within the bounds (not yet repaired)."""
        return rng.integers(self.low, self.high + 1, size=(n, self.n_genes))

    def check(self, genome: np.ndarray) -> np.ndarray:
        """``genome`` as an int vector of the right length, within bounds.

        Raises:
            ArchitectureError: wrong length, non-integer values or values out of bounds.
        """
        arr = np.asarray(genome)
        if arr.shape != (self.n_genes,):
            raise ArchitectureError(
                f"a genome has {self.n_genes} genes, got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr.astype(float))) or not np.all(arr == np.round(arr)):
            raise ArchitectureError("a genome must hold integers")
        ints = arr.astype(np.int64)
        bad = np.flatnonzero((ints < self.low) | (ints > self.high))
        if bad.size:
            i = int(bad[0])
            raise ArchitectureError(
                f"gene {self.names[i]!r} = {ints[i]} lies outside [{self.low[i]}, {self.high[i]}]"
            )
        return ints

    def decode(self, genome: np.ndarray) -> Architecture:
        """The deployment a genome describes (replicas sized for the transformed graph)."""
        g = self.check(genome)

        def val(name: str) -> int:
            return int(g[self._index[name]])

        lb = LB_POLICIES[val("lb.policy")]
        cache_on = bool(val("cache.present"))
        cache_gib = float(CACHE_GIB_LEVELS[val("cache.size")])
        cache_replicas = val("cache.replicas") if cache_on else 0
        read_replicas = val("database.read_replicas")
        shell = Architecture(
            replicas=(1,) * len(SIZED_SERVICES), workers=(1,) * len(SIZED_SERVICES),
            mem_limit_bytes=(1,) * len(SIZED_SERVICES), spread_racks=(1,) * len(SIZED_SERVICES),
            cache_replicas=cache_replicas, cache_gib=cache_gib, read_replicas=read_replicas,
            lb_policy=lb, scale_up_util=SCALE_UP_LEVELS[val("autoscale.up")],
            scale_down_util=SCALE_DOWN_LEVELS[val("autoscale.down")],
        )
        workers = tuple(SIZE_WORKERS[val(f"{s}.size")] for s in SIZED_SERVICES)
        mem = []
        for s, w in zip(SIZED_SERVICES, workers, strict=True):
            spec = self._services[s]
            per_worker = spec.mem_limit_bytes / spec.workers
            mem.append(int(max(per_worker * w, spec.mem_base_bytes + GIB)))
        spread = tuple(min(val(f"{s}.spread"), self.n_racks) for s in SIZED_SERVICES)
        shell = dataclasses.replace(shell, workers=workers, mem_limit_bytes=tuple(mem),
                                    spread_racks=spread)
        utils = tuple(TARGET_UTIL_LEVELS[val(f"{s}.capacity")] for s in SIZED_SERVICES)
        return self.sized(shell, utils)

    def sized(self, arch: Architecture, target_util: Sequence[float]) -> Architecture:
        """``arch`` with replicas per service for ``target_util`` at the daily peak.

        ``replicas = max(1, ceil(busy / (workers * u)))``, ``busy`` being the service's CPU
        demand at the peak on the transformed graph (cache hits and read replicas included).
        """
        if len(target_util) != len(SIZED_SERVICES) or not all(
                0.0 < u <= 1.0 for u in target_util):
            raise ArchitectureError(
                f"target_util needs {len(SIZED_SERVICES)} values in (0, 1], got {target_util}"
            )
        visits = _visits(_transformed_classes(self.base.app, arch))
        peak = peak_offered_rps(self.base)
        replicas = []
        for s, w, u in zip(SIZED_SERVICES, arch.workers, target_util, strict=True):
            spec = self._services[s]
            cpu_s = spec.cpu_s_per_req + (LEAST_REQUEST_CPU_S if s == "gateway" and
                                          arch.lb_policy == "least_request" else 0.0)
            busy = peak * visits.get(s, 0.0) * cpu_s
            replicas.append(max(1, math.ceil(busy / (w * u))))
        return dataclasses.replace(arch, replicas=tuple(replicas))


def _transformed_classes(app: AppSpec, arch: Architecture) -> tuple[RequestClass, ...]:
    """Request classes after the cache and read-replica transformations."""
    h = arch.cache_hit_ratio
    out: list[RequestClass] = []
    for rc in app.classes:
        if "cache" in rc.path:
            base_path = tuple(p for p in rc.path if p != "cache")
            if arch.cache_replicas == 0:
                out.append(RequestClass(rc.name, rc.share, (*base_path, "database"),
                                        rc.slo_latency_s))
            else:
                out.append(RequestClass(rc.name, rc.share * h, rc.path, rc.slo_latency_s))
                out.append(RequestClass(f"{rc.name}_miss", rc.share * (1.0 - h),
                                        (*rc.path, "database"), rc.slo_latency_s))
        else:
            out.append(rc)
    out = [rc for rc in out if rc.share > 0]
    if arch.read_replicas == 0:
        return tuple(out)
    db = next(s for s in app.services if s.name == "database")
    split: list[RequestClass] = []
    for rc in out:
        if "database" not in rc.path:
            split.append(rc)
            continue
        read_path = tuple("db_replica" if p == "database" else p for p in rc.path)
        split.append(RequestClass(f"{rc.name}_read", rc.share * (1.0 - db.write_share),
                                  read_path, rc.slo_latency_s))
        if db.write_share > 0:
            split.append(RequestClass(f"{rc.name}_write", rc.share * db.write_share, rc.path,
                                      rc.slo_latency_s))
    return tuple(split)


def _visits(classes: Sequence[RequestClass]) -> dict[str, float]:
    out: dict[str, float] = {}
    for rc in classes:
        for p in rc.path:
            out[p] = out.get(p, 0.0) + rc.share
    return out


def compile_config(arch: Architecture, base: TwinConfig) -> TwinConfig:
    """The twin config that deploys ``arch`` on ``base``'s cluster (placement aside).

    Raises:
        ArchitectureError: the architecture cannot be expressed (e.g. an instance larger than
            a host).
    """
    host = base.topology.host
    specs = {s.name: s for s in base.app.services}
    pooled = arch.lb_policy == "least_request"
    services: list[ServiceSpec] = []
    for i, name in enumerate(SIZED_SERVICES):
        spec = specs[name]
        replicas, workers, mem = arch.replicas[i], arch.workers[i], arch.mem_limit_bytes[i]
        if pooled and replicas > 1:
            replicas, workers, mem = math.ceil(replicas / 2), workers * 2, mem * 2
        if workers > min(host.cores, 64) or mem > host.mem_bytes:
            raise ArchitectureError(
                f"{name}: an instance of {workers} vCPUs and {mem / GIB:.0f} GiB does not fit "
                f"a host of {host.cores} cores and {host.mem_bytes / GIB:.0f} GiB"
            )
        cpu_s = spec.cpu_s_per_req + (LEAST_REQUEST_CPU_S if name == "gateway" and pooled
                                      else 0.0)
        timeout = arch.timeout_s[i] if arch.timeout_s else spec.timeout_s
        max_servers = arch.max_servers[i] if arch.max_servers else 0
        if pooled and arch.replicas[i] > 1:
            max_servers *= 2  # the pair's threads and connections, pooled like its vCPUs
        services.append(dataclasses.replace(
            spec, workers=workers, mem_limit_bytes=int(mem), replicas=replicas,
            min_replicas=min(replicas, 2), cpu_s_per_req=cpu_s, timeout_s=timeout,
            max_servers=max_servers,
        ))
    if arch.cache_replicas:
        cache = specs["cache"]
        services.append(dataclasses.replace(
            cache, replicas=arch.cache_replicas, min_replicas=min(arch.cache_replicas, 2),
            mem_base_bytes=int(CACHE_BASE_GIB * GIB),
            mem_limit_bytes=int((CACHE_BASE_GIB + arch.cache_gib) * GIB),
        ))
    if arch.read_replicas:
        db = services[SIZED_SERVICES.index("database")]
        services.append(dataclasses.replace(
            db, name="db_replica", replicas=arch.read_replicas,
            min_replicas=min(arch.read_replicas, 2), write_share=0.0,
        ))
    order = [s.name for s in base.app.services] + ["db_replica"]
    services.sort(key=lambda s: order.index(s.name))
    app = AppSpec(services=tuple(services), classes=_transformed_classes(base.app, arch),
                  target_peak_util=base.app.target_peak_util)
    return dataclasses.replace(base, app=app)


def _spread_racks(arch: Architecture, config: TwinConfig) -> dict[str, int]:
    out = dict(zip(SIZED_SERVICES, arch.spread_racks, strict=True))
    if "db_replica" in [s.name for s in config.app.services]:
        out["db_replica"] = out["database"]
    return out


def place(config: TwinConfig, spread: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Host of every instance, each service confined to ``spread[name]`` racks.

    A service's racks start at an offset that differs between services, so confined services
    do not all crowd the first rack. Within the allowed racks replicas go round-robin, each to
    the host with the most free cores that holds no replica of the service yet.

    Raises:
        ArchitectureError: some instance fits on no host of its racks.
    """
    topo = config.topology
    n_racks = topo.racks
    host_rack = np.arange(topo.hosts, dtype=np.int64) // topo.hosts_per_rack
    racks = [np.flatnonzero(host_rack == r) for r in range(n_racks)]
    free_cores = np.full(topo.hosts, float(topo.host.cores))
    free_mem = np.full(topo.hosts, float(topo.host.mem_bytes))
    services: list[int] = []
    hosts: list[int] = []
    for s_idx, spec in enumerate(config.app.services):
        k = max(1, min(spread.get(spec.name, n_racks), n_racks))
        allowed = [racks[(s_idx + j) % n_racks] for j in range(k)]
        holders = np.zeros(topo.hosts, dtype=bool)
        for r in range(spec.replicas):
            placed = -1
            for attempt in range(k):
                members = allowed[(r + attempt) % k]
                fits = (free_cores[members] >= spec.workers) & (
                    free_mem[members] >= spec.mem_limit_bytes
                )
                if not fits.any():
                    continue
                cand = members[fits]
                fresh = cand[~holders[cand]]
                pool = fresh if fresh.size else cand
                placed = int(pool[np.argmax(free_cores[pool])])
                break
            if placed < 0:
                raise ArchitectureError(
                    f"cannot place replica {r + 1} of {spec.replicas} of {spec.name!r} "
                    f"({spec.workers} vCPUs, {spec.mem_limit_bytes / GIB:.0f} GiB) on its "
                    f"{k} rack(s)"
                )
            free_cores[placed] -= spec.workers
            free_mem[placed] -= spec.mem_limit_bytes
            holders[placed] = True
            services.append(s_idx)
            hosts.append(placed)
    return np.asarray(services, dtype=np.int64), np.asarray(hosts, dtype=np.int64)


def deployable(space: GenomeSpace, genome: np.ndarray) -> str | None:
    """None if ``genome`` deploys on the cluster, else the reason it does not."""
    try:
        arch = space.decode(genome)
        config = compile_config(arch, space.base)
        place(config, _spread_racks(arch, config))
        _twin_places(config)
    except ArchitectureError as err:
        return str(err)
    return None


def _twin_places(config: TwinConfig) -> None:
    """The twin's own initial placement must succeed too (it runs before :func:`place`)."""
    topo = config.topology
    host_rack = np.arange(topo.hosts, dtype=np.int64) // topo.hosts_per_rack
    replicas = np.array([s.replicas for s in config.app.services], dtype=np.int64)
    try:
        place_instances(config, replicas, host_rack, topo.racks)
    except ConfigError as err:
        raise ArchitectureError(str(err)) from None


def repair(space: GenomeSpace, genome: np.ndarray) -> np.ndarray:
    """A deployable genome close to ``genome``.

    Genes are rounded and clipped to their bounds; then, while the deployment does not fit,
    the spread of the service that failed is widened, else the capacity of the service with
    the most vCPUs is lowered one level, else read and cache replicas, cache size and instance
    sizes are reduced.

    Raises:
        ArchitectureError: nothing deploys even at the smallest capacity (a cluster too
            small for the application).
    """
    g = np.clip(np.round(np.asarray(genome, dtype=float)), space.low, space.high).astype(np.int64)
    for _ in range(4 * space.n_genes * len(TARGET_UTIL_LEVELS)):
        reason = deployable(space, g)
        if reason is None:
            return g
        arch = space.decode(g)
        failed = next((s for s in SIZED_SERVICES if f"'{s}'" in reason), None)
        if failed is not None:
            i = space.index(f"{failed}.spread")
            if g[i] < space.high[i]:
                g[i] += 1
                continue
        vcpus = [r * w for r, w in zip(arch.replicas, arch.workers, strict=True)]
        lowered = False
        for s_i in np.argsort(vcpus)[::-1]:
            j = space.index(f"{SIZED_SERVICES[int(s_i)]}.capacity")
            if g[j] > space.low[j]:
                g[j] -= 1
                lowered = True
                break
        if lowered:
            continue
        shrink = ["database.read_replicas", "cache.replicas", "cache.size"]
        shrink += [f"{SIZED_SERVICES[int(i)]}.size" for i in np.argsort(arch.workers)[::-1]]
        for name in shrink:
            j = space.index(name)
            if g[j] > space.low[j]:
                g[j] -= 1
                lowered = True
                break
        if not lowered:
            break
    raise ArchitectureError(
        f"no deployable architecture near the genome: {deployable(space, g)}"
    )


def deploy(arch: Architecture, base: TwinConfig, seed: int) -> Twin:
    """A twin running ``arch``: compiled config, then instances placed by their spread."""
    config = compile_config(arch, base)
    svc, hosts = place(config, _spread_racks(arch, config))
    twin = Twin(config, seed)
    st = twin.state
    n0 = svc.shape[0]
    if not np.array_equal(st.inst_service[:n0], svc):
        raise ArchitectureError("placement and the twin disagree on the instance order")
    st.inst_host[:n0] = hosts
    cores = float(config.topology.host.cores)
    st.host_free_cores[:] = cores - np.bincount(hosts, st.inst_workers[:n0],
                                                minlength=twin.topo.n_hosts)
    st.host_free_mem_bytes[:] = float(config.topology.host.mem_bytes) - np.bincount(
        hosts, st.inst_mem_limit_bytes[:n0], minlength=twin.topo.n_hosts)
    twin.invalidate()
    return twin


@dataclass(frozen=True, slots=True)
class Autoscaler:
    """Threshold autoscaler on mean instance utilisation per service, with a cooldown.

    Scales out (the plant's ``scale_out``, sized like a horizontal autoscaler) above
    ``up_util`` and in by one replica below ``down_util``; 0 turns a direction off.
    """

    up_util: float
    down_util: float
    cooldown_s: float = AUTOSCALE_COOLDOWN_S

    def __post_init__(self) -> None:
        if not 0.0 <= self.down_util < 1.0 or not 0.0 <= self.up_util <= 1.0:
            raise ArchitectureError("autoscaler thresholds must lie in [0, 1]")
        if self.up_util and self.down_util >= self.up_util:
            raise ArchitectureError(
                f"autoscaler down_util ({self.down_util}) must be below up_util ({self.up_util})"
            )

    def step(self, twin: Twin, last_s: dict[int, float]) -> int:
        """Act on every service out of its band and out of cooldown; returns actions taken."""
        st = twin.state
        used = st.inst_used & st.inst_up
        n_s = twin.topo.n_services
        count = np.bincount(st.inst_service[used], minlength=n_s)
        util = np.bincount(st.inst_service[used], st.inst_util[used], minlength=n_s) / np.maximum(
            count, 1)
        taken = 0
        now = twin.now_s
        for s in range(n_s):
            if now - last_s.get(s, -math.inf) < self.cooldown_s or count[s] == 0:
                continue
            kind = None
            if self.up_util and util[s] > self.up_util:
                kind = "scale_out"
            elif self.down_util and util[s] < self.down_util:
                kind = "scale_in"
            if kind is None:
                continue
            result = twin.apply(Action(kind, f"svc-{twin.topo.service_names[s]}"))
            if result.accepted:
                last_s[s] = now
                taken += 1
        return taken


@dataclass(frozen=True, slots=True)
class EvalSpec:
    """How an architecture is evaluated on the twin.

    The evaluated window is centred on the daily peak (the workload's ``peak_hour`` is moved
    to its middle) and the scenario's fault rates are multiplied by ``fault_rate_scale`` so a
    short window sees a day's worth of faults. There is no healing agent: reliability is what
    the architecture itself withstands. Resource prices are per vCPU-hour and GiB-hour of the
    instances' reservations, sampled every ``step_s``.
    """

    scenario: str = "mixed"
    hosts: int = 100
    hours: float = 1.0
    tick_s: float = 10.0
    step_s: float = 60.0
    fault_rate_scale: float = 8.0
    usd_per_vcpu_h: float = 0.04
    usd_per_gib_h: float = 0.005
    slo_target: float = 0.99
    replicates: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.replicates, int) or self.replicates < 1:
            raise ArchitectureError(
                f"eval.replicates must be a positive integer, got {self.replicates!r}"
            )
        if self.scenario not in SCENARIOS:
            raise ArchitectureError(
                f"eval.scenario: unknown scenario {self.scenario!r}; known: {sorted(SCENARIOS)}"
            )
        for name in ("hours", "tick_s", "step_s", "usd_per_vcpu_h", "usd_per_gib_h"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ArchitectureError(f"eval.{name} must be a positive number, got {value!r}")
        if not isinstance(self.hosts, int) or self.hosts <= 0:
            raise ArchitectureError(f"eval.hosts must be a positive integer, got {self.hosts!r}")
        if self.hours > 24.0:
            raise ArchitectureError(f"eval.hours must be at most 24, got {self.hours!r}")
        if not 0.0 <= self.fault_rate_scale <= 1000.0:
            raise ArchitectureError(
                f"eval.fault_rate_scale must lie in [0, 1000], got {self.fault_rate_scale!r}"
            )
        if self.step_s < self.tick_s:
            raise ArchitectureError("eval.step_s must be at least eval.tick_s")
        if not 0.0 < self.slo_target < 1.0:
            raise ArchitectureError("eval.slo_target must lie in (0, 1)")

    def base_config(self) -> TwinConfig:
        """The scenario's config with the peak centred and the fault rates scaled."""
        base = make_config(self.scenario, self.hosts, tick_s=self.tick_s,
                           telemetry_interval_s=max(self.tick_s, self.step_s))
        faults = dataclasses.replace(
            base.faults,
            rates_per_day_per_100_hosts=tuple(
                (k, r * self.fault_rate_scale) for k, r in base.faults.rates_per_day_per_100_hosts
            ),
        )
        workload = dataclasses.replace(base.workload, peak_hour=self.hours / 2.0)
        return dataclasses.replace(base, faults=faults, workload=workload)


@dataclass(frozen=True, slots=True)
class Objectives:
    """What one evaluation measured.

    ``performance`` = throughput share x latency score, in [0, 1]: the share of offered
    requests served within their SLO, times the request-weighted mean over time and request
    classes of ``min(1, SLO / p99)``, the p99 being the 99th percentile of the path's
    moment-matched gamma latency. ``cost_usd`` is resources (vCPU-hours and GiB-hours
    reserved) plus action costs. ``reliability`` is time-weighted availability: the share of
    SLO windows whose good share meets ``slo_target``.
    """

    performance: float
    cost_usd: float
    reliability: float
    throughput_share: float
    latency_score: float
    resource_usd: float
    action_usd: float
    actions: int
    faults: int

    def as_dict(self) -> dict[str, float]:
        """Plain dict of every field."""
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}


def evaluate(arch: Architecture, spec: EvalSpec, seed: int,
             base: TwinConfig | None = None) -> Objectives:
    """Run ``arch`` on the twin for ``spec.hours`` under the fault regime; the three objectives.

    Deterministic: a pure function of the architecture, the spec and the seed.
    """
    base = base if base is not None else spec.base_config()
    twin = deploy(arch, base, seed)
    scaler = (
        Autoscaler(arch.scale_up_util, arch.scale_down_util)
        if arch.scale_up_util or arch.scale_down_util else None
    )
    return measure(twin, spec, spec.hours * 3600.0, scaler)


DRAW_SEED_BASE = 1 << 40
"""Twin seeds of draw sets after the first start here, apart from every ``1000 seed + r``."""
MAX_DRAWS = 100_000
"""Draw sets per evaluation seed (draw indices lie in ``[0, MAX_DRAWS)``)."""


def replicate_seeds(seed: int, replicates: int, draw: int = 0) -> list[int]:
    """Twin seeds of draw set ``draw`` of evaluation seed ``seed``.

    Draw 0 is seeds ``1000 seed + r``; draw ``d > 0`` is ``DRAW_SEED_BASE + (MAX_DRAWS seed +
    d) 1000 + r``. Distinct ``(seed, draw)`` pairs never share a twin seed, so every draw set
    is a fresh sample of the fault regime and the workload noise.

    Raises:
        ArchitectureError: a negative seed or a draw index out of range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArchitectureError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(draw, bool) or not isinstance(draw, int) or not 0 <= draw < MAX_DRAWS:
        raise ArchitectureError(f"draw must be an integer in [0, {MAX_DRAWS}), got {draw!r}")
    if replicates > 1000:
        raise ArchitectureError(f"at most 1000 replicates per draw set, got {replicates}")
    if draw == 0:
        return [seed * 1000 + r for r in range(replicates)]
    return [DRAW_SEED_BASE + (MAX_DRAWS * seed + draw) * 1000 + r for r in range(replicates)]


def mean_objectives(runs: Sequence[Objectives]) -> Objectives:
    """Field-wise mean of ``runs`` (counts rounded)."""
    if not runs:
        raise ArchitectureError("no runs to average")
    if len(runs) == 1:
        return runs[0]
    values = {k: float(np.mean([r.as_dict()[k] for r in runs])) for k in runs[0].as_dict()}
    return Objectives(
        performance=values["performance"], cost_usd=values["cost_usd"],
        reliability=values["reliability"], throughput_share=values["throughput_share"],
        latency_score=values["latency_score"], resource_usd=values["resource_usd"],
        action_usd=values["action_usd"], actions=round(values["actions"]),
        faults=round(values["faults"]),
    )


def evaluate_mean(arch: Architecture, spec: EvalSpec, seed: int,
                  base: TwinConfig | None = None, draw: int = 0) -> Objectives:
    """:func:`evaluate` averaged over ``spec.replicates`` runs (:func:`replicate_seeds`).

    The replicates are independent fault draws and workload noise, so the objectives are an
    estimate of their expectation under the fault regime, not of one draw. ``draw`` picks
    another set of replicates for the same ``seed``.
    """
    base = base if base is not None else spec.base_config()
    return mean_objectives([evaluate(arch, spec, s, base)
                            for s in replicate_seeds(seed, spec.replicates, draw)])


def measure(twin: Twin, spec: EvalSpec, duration_s: float,
            scaler: Autoscaler | None = None) -> Objectives:
    """Advance ``twin`` by ``duration_s`` in steps of ``spec.step_s`` and score that stretch.

    Works on a fresh deployment and on a fork of a running twin alike: only records written
    during the stretch count.
    """
    if not duration_s > 0:
        raise ArchitectureError(f"duration_s must be positive, got {duration_s!r}")
    topo = twin.topo
    st = twin.state
    n_s = topo.n_services
    start_seq = twin.log.next_seq
    end_s = twin.now_s + duration_s
    last_scale: dict[int, float] = {}
    actions = 0
    vcpu_s = gib_s = 0.0
    lat_weighted = weight = 0.0
    share = topo.class_share
    while twin.now_s < end_s - 1e-9:
        dt = min(spec.step_s, end_s - twin.now_s)
        twin.advance(dt)
        used = st.inst_used
        vcpu_s += float(st.inst_workers[used].sum()) * dt
        gib_s += float(st.inst_mem_limit_bytes[used].sum()) / GIB * dt
        rps = st.inst_rps * used
        lam = np.bincount(st.inst_service, rps, minlength=n_s)
        svc_lat = np.bincount(st.inst_service, rps * st.inst_latency_s, minlength=n_s) / (
            np.maximum(lam, 1e-12))
        mean = topo.path_matrix @ svc_lat
        var = topo.path_matrix @ (svc_lat * svc_lat)
        p99 = _gamma_q99(mean, var)
        score = np.minimum(1.0, topo.class_slo_s / np.maximum(p99, 1e-12))
        total = float(lam.sum())
        lat_weighted += float(share @ score) * total * dt
        weight += total * dt
        if scaler is not None:
            actions += scaler.step(twin, last_scale)
    kpis = window_kpis(twin.log.since(start_seq), slo_target=spec.slo_target)
    latency_score = lat_weighted / weight if weight > 0 else 0.0
    resource = vcpu_s / 3600.0 * spec.usd_per_vcpu_h + gib_s / 3600.0 * spec.usd_per_gib_h
    action_usd = float(kpis["action_cost_usd"])
    return Objectives(
        performance=float(kpis["availability"]) * latency_score,
        cost_usd=resource + action_usd,
        reliability=float(kpis["time_availability"]),
        throughput_share=float(kpis["availability"]),
        latency_score=latency_score,
        resource_usd=resource,
        action_usd=action_usd,
        actions=actions,
        faults=int(kpis["faults"]),
    )


Z99 = 2.3263478740408408
"""Standard normal 99th percentile."""


def _gamma_q99(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """99th percentile of gammas with the given means and variances.

    Wilson & Hilferty (1931): for a gamma of shape k and scale theta,
    ``q_p ~ k theta (1 - 1/(9k) + z_p sqrt(1/(9k)))^3``; within 1% of the exact quantile for
    k >= 1 (every path of one or more exponential visits has k >= 1).
    """
    mean = np.maximum(mean, 1e-12)
    var = np.maximum(var, 1e-24)
    inv9k = var / (9.0 * mean * mean)
    return mean * (1.0 - inv9k + Z99 * np.sqrt(inv9k)) ** 3


def weighted_fitness(obj: Objectives, cost_ref_usd: float) -> float:
    """``0.4 performance + 0.3 cost score + 0.3 reliability``, each term in [0, 1].

    The cost score normalises ``1 / cost`` as ``1 / (1 + cost / cost_ref_usd)``: 0.5 at the
    reference cost (the default architecture's), towards 1 as cost falls to 0.
    """
    if not cost_ref_usd > 0:
        raise ArchitectureError(f"cost_ref_usd must be positive, got {cost_ref_usd!r}")
    return (0.4 * obj.performance + 0.3 / (1.0 + obj.cost_usd / cost_ref_usd)
            + 0.3 * obj.reliability)


CONFIG_PARAMS: tuple[tuple[str, float, float, str], ...] = (
    ("frontend.target_util", 0.3, 0.95, "float"),
    ("api.target_util", 0.3, 0.95, "float"),
    ("database.target_util", 0.3, 0.95, "float"),
    ("api.cpu_limit", 2, 16, "int"),
    ("api.mem_limit_gib", 4.0, 64.0, "log"),
    ("cache.size_gib", 4.0, 96.0, "log"),
    ("api.timeout_s", 0.5, 5.0, "float"),
    ("autoscale.up_util", 0.5, 0.95, "float"),
    ("autoscale.down_util", 0.05, 0.4, "float"),
    ("api.worker_threads", 2, 128, "int"),
    ("api.db_pool", 1, 32, "int"),
)
"""The configuration the Bayesian optimiser tunes: ``(name, low, high, kind)`` with kind
``float``, ``int`` or ``log``. CPU limit is the instances' vCPUs; the memory limit is where a
leak's OOM kill happens; the cache size sets the hit ratio; the timeout is where queued
requests are dropped; target utilisations set replicas; worker threads and the database
connection pool (per api instance) cap how many requests an instance serves at once
(:func:`held_servers`)."""

DEFAULT_WORKER_THREADS = 64
"""Default worker threads per api instance: more than its vCPUs can keep busy (no cap)."""
DEFAULT_DB_POOL = 10
"""Default database connections per api instance (a common connection-pool default); no
cap on the default deployment."""


def residence_s(config: TwinConfig) -> dict[str, float]:
    """Mean time a call spends at each service at the daily peak, network hop included.

    The stationary M/M/c response time of one instance at its share of the peak load
    (``sim.physics.serving.mmc_fluid_latency_s``, utilisation capped at 0.99 as in the
    twin's fast mode), service time ``cpu_s + iops * disk_service_s``, plus the hop latency.
    """
    visits = _visits(config.app.classes)
    peak = peak_offered_rps(config)
    out: dict[str, float] = {}
    for s in config.app.services:
        mu = 1.0 / _service_time_s(s, config)
        c = int(mmc_servers(s.workers, s.max_servers))
        lam = peak * visits.get(s.name, 0.0) / (s.replicas or 1)
        out[s.name] = float(mmc_fluid_latency_s(lam, mu, c, 0.0)) + config.topology.hop_latency_s
    return out


def _service_time_s(spec: ServiceSpec, config: TwinConfig) -> float:
    """Unloaded time one request takes at ``spec``: CPU plus disk I/O."""
    return spec.cpu_s_per_req + spec.disk_iops_per_req * config.topology.host.disk_service_s


def held_servers(config: TwinConfig, service: str, threads: int, pool: int) -> int:
    """Servers of ``service``'s instances with ``threads`` workers and ``pool`` connections.

    By Little's law: a worker thread is held for the whole request, its own service time
    ``s`` and the downstream calls after it on the request's path (``D``, mean over the
    request classes through ``service``, each call's :func:`residence_s`), so ``threads``
    threads keep at most ``threads * s / (s + D)`` servers busy. Likewise a request that
    goes on to the database holds a connection for that call (``d`` per request, averaged
    over all its requests): ``pool * s / d``. The cap is the smaller, at least 1 (the twin
    takes the lower of it and the vCPUs). Residence is at the peak, so the cap is what holds
    at the busiest hour; at lighter load calls are quicker and it would be looser.
    """
    if threads < 1 or pool < 1:
        raise ArchitectureError(f"threads and pool must be >= 1, got {threads}, {pool}")
    spec = next((s for s in config.app.services if s.name == service), None)
    if spec is None:
        raise ArchitectureError(f"no service {service!r} in the application")
    r = residence_s(config)
    own_s = _service_time_s(spec, config)
    share = down = db = 0.0
    for rc in config.app.classes:
        if service not in rc.path:
            continue
        after = rc.path[rc.path.index(service) + 1:]
        share += rc.share
        down += rc.share * sum(r[p] for p in after)
        db += rc.share * sum(r[p] for p in after if p in ("database", "db_replica"))
    if share == 0.0:
        return 0
    cap = threads * own_s / (own_s + down / share)
    if db > 0.0:
        cap = min(cap, pool * own_s / (db / share))
    return max(1, math.floor(cap))


def configure(space: GenomeSpace, values: dict[str, float],
              genome: np.ndarray | None = None) -> Architecture:
    """An architecture with a configuration applied.

    ``genome`` (default: the default genome) with ``values`` of :data:`CONFIG_PARAMS`.

    Raises:
        ArchitectureError: a missing, unknown or out-of-range value.
    """
    known = {name: (lo, hi) for name, lo, hi, _ in CONFIG_PARAMS}
    unknown = sorted(set(values) - set(known))
    missing = sorted(set(known) - set(values))
    if unknown or missing:
        raise ArchitectureError(f"configuration: unknown {unknown}, missing {missing}")
    for name, (lo, hi) in known.items():
        v = values[name]
        if not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
            raise ArchitectureError(f"configuration {name} = {v!r} lies outside [{lo}, {hi}]")
    g = space.check(space.default_genome() if genome is None else genome)
    base = space.decode(g)
    api = SIZED_SERVICES.index("api")
    workers = list(base.workers)
    workers[api] = round(values["api.cpu_limit"])
    mem = list(base.mem_limit_bytes)
    api_spec = next(s for s in space.base.app.services if s.name == "api")
    mem[api] = int(max(values["api.mem_limit_gib"] * GIB, api_spec.mem_base_bytes + GIB))
    timeouts = [next(s.timeout_s for s in space.base.app.services if s.name == n)
                for n in SIZED_SERVICES]
    timeouts[api] = float(values["api.timeout_s"])
    up, down = float(values["autoscale.up_util"]), float(values["autoscale.down_util"])
    arch = dataclasses.replace(
        base, workers=tuple(workers), mem_limit_bytes=tuple(mem), timeout_s=tuple(timeouts),
        cache_gib=float(values["cache.size_gib"]),
        scale_up_util=up, scale_down_util=min(down, 0.9 * up),
    )
    util = [TARGET_UTIL_LEVELS[int(g[space.index(f"{s}.capacity")])] for s in SIZED_SERVICES]
    for s in ("frontend", "api", "database"):
        util[SIZED_SERVICES.index(s)] = float(values[f"{s}.target_util"])
    arch = space.sized(arch, util)
    # Replicas are sized by CPU, as an operator would; the threads and pool then cap what
    # each api instance serves at once, at the residence times of that deployment.
    cap = held_servers(compile_config(arch, space.base), "api",
                       round(values["api.worker_threads"]), round(values["api.db_pool"]))
    if cap >= workers[api]:
        return arch
    max_servers = [0] * len(SIZED_SERVICES)
    max_servers[api] = cap
    return dataclasses.replace(arch, max_servers=tuple(max_servers))
