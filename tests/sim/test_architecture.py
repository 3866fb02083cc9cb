"""The architecture genome: decoding, graph transformations, repair, evaluation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import gamma

from sim.actions import Action
from sim.architecture import (
    CONFIG_PARAMS,
    DEFAULT_DB_POOL,
    DEFAULT_WORKER_THREADS,
    SIZED_SERVICES,
    ArchitectureError,
    EvalSpec,
    Gene,
    GenomeSpace,
    _gamma_q99,
    compile_config,
    configure,
    deploy,
    deployable,
    evaluate,
    held_servers,
    repair,
    residence_s,
    weighted_fitness,
)
from sim.per_request import PerRequestServing
from sim.topology import build_topology

TINY = EvalSpec(hosts=20, hours=0.1, replicates=1)


@pytest.fixture(scope="module")
def space() -> GenomeSpace:
    return GenomeSpace(EvalSpec().base_config())


@pytest.fixture(scope="module")
def tiny_space() -> GenomeSpace:
    return GenomeSpace(TINY.base_config())


def _set(space: GenomeSpace, genome: np.ndarray, **genes: int) -> np.ndarray:
    g = genome.copy()
    for name, value in genes.items():
        g[space.index(name.replace("__", "."))] = value
    return g


def test_default_genome_is_the_twins_default_deployment(space: GenomeSpace) -> None:
    """The default genome sizes every service exactly as the twin's own sizing rule does."""
    arch = space.decode(space.default_genome())
    topo = build_topology(dataclasses.replace(space.base), np.random.default_rng(0))
    counts = np.bincount(topo.initial_service)
    names = list(topo.service_names)
    for s, r in zip(SIZED_SERVICES, arch.replicas, strict=True):
        if s != "database":
            assert r == counts[names.index(s)], s
    assert arch.cache_replicas == counts[names.index("cache")]
    assert deployable(space, space.default_genome()) is None


def test_cache_and_read_replicas_transform_the_graph(space: GenomeSpace) -> None:
    """Cache misses reach the database; read replicas take reads; shares still sum to 1."""
    g = _set(space, space.default_genome(), database__read_replicas=4)
    config = compile_config(space.decode(g), space.base)
    names = [s.name for s in config.app.services]
    assert "db_replica" in names and "cache" in names
    assert abs(sum(c.share for c in config.app.classes) - 1.0) < 1e-9
    assert any("db_replica" in c.path for c in config.app.classes)
    no_cache = compile_config(space.decode(_set(space, space.default_genome(),
                                                cache__present=0)), space.base)
    assert "cache" not in [s.name for s in no_cache.app.services]
    browse = next(c for c in no_cache.app.classes if c.name == "browse")
    assert browse.path[-1] == "database"


def test_bigger_cache_means_more_hits(space: GenomeSpace) -> None:
    """The hit ratio grows with total cache memory and stays below its maximum."""
    small = space.decode(_set(space, space.default_genome(), cache__size=0))
    big = space.decode(_set(space, space.default_genome(), cache__size=6))
    assert 0 < small.cache_hit_ratio < big.cache_hit_ratio < 0.95


def test_least_request_pools_pairs(space: GenomeSpace) -> None:
    """least_request halves instances and doubles their workers."""
    rr = space.decode(space.default_genome())
    lr = space.decode(_set(space, space.default_genome(), lb__policy=1))
    config = compile_config(lr, space.base)
    api = next(s for s in config.app.services if s.name == "api")
    i = SIZED_SERVICES.index("api")
    assert api.workers == 2 * rr.workers[i]
    assert api.replicas == -(-lr.replicas[i] // 2)


def test_spread_confines_a_service_to_its_racks(space: GenomeSpace) -> None:
    """A spread of 1 puts every replica of the service in one rack."""
    g = _set(space, space.default_genome(), auth__spread=1)
    twin = deploy(space.decode(g), space.base, 0)
    st, topo = twin.state, twin.topo
    s = topo.service_names.index("auth")
    racks = set(topo.host_rack[st.inst_host[st.inst_used & (st.inst_service == s)]].tolist())
    assert len(racks) == 1
    assert (st.host_free_cores >= 0).all() and (st.host_free_mem_bytes >= 0).all()


def test_repair_always_yields_a_deployable_genome(space: GenomeSpace) -> None:
    """Random, out-of-bound and non-integer vectors all repair to deployable genomes."""
    rng = np.random.default_rng(3)
    vectors = list(space.random_genomes(15, rng))
    vectors.append(space.high * 10)
    vectors.append(space.low - 5)
    vectors.append(space.default_genome() + 0.4)
    for v in vectors:
        g = repair(space, v)
        assert deployable(space, g) is None
        assert ((g >= space.low) & (g <= space.high)).all()


def test_an_oversized_genome_is_repaired_not_crashed() -> None:
    """The largest genome cannot fit 4 hosts and is repaired; hosts too small: a clear error."""
    space = GenomeSpace(EvalSpec(hosts=4, hours=0.1, replicates=1).base_config())
    g = space.high.copy()
    g[space.index("lb.policy")] = 0
    assert deployable(space, g) is not None
    assert deployable(space, repair(space, g)) is None
    base = EvalSpec(hosts=2, hours=0.1, replicates=1).base_config()
    small_hosts = dataclasses.replace(base, topology=dataclasses.replace(
        base.topology, host=dataclasses.replace(base.topology.host, mem_bytes=8 * 2**30)))
    tiny = GenomeSpace(small_hosts)
    with pytest.raises(ArchitectureError, match="no deployable architecture"):
        repair(tiny, tiny.high)


@pytest.mark.parametrize(
    ("genome_fn", "words"),
    [
        (lambda s: s.default_genome()[:-1], "genes"),
        (lambda s: s.default_genome() + 0.5, "integers"),
        (lambda s: s.high + 1, "outside"),
    ],
)
def test_bad_genome_is_a_clear_error(space: GenomeSpace, genome_fn: object, words: str) -> None:
    """Wrong length, non-integers and out-of-bound genes raise ArchitectureError."""
    with pytest.raises(ArchitectureError, match=words):
        space.decode(genome_fn(space))  # type: ignore[operator]


def test_bad_search_space_is_a_clear_error(space: GenomeSpace) -> None:
    """Inverted bounds, an empty space and widened bounds are refused."""
    with pytest.raises(ArchitectureError, match="inverted"):
        Gene("x", 3, 1)
    with pytest.raises(ArchitectureError, match="empty"):
        GenomeSpace(space.base, genes=[])
    wide = list(space.genes)
    wide[0] = Gene(wide[0].name, wide[0].low, wide[0].high + 5)
    with pytest.raises(ArchitectureError, match="leave"):
        GenomeSpace(space.base, genes=wide)


@pytest.mark.parametrize(
    ("field", "value"),
    [("hours", 0.0), ("hosts", -1), ("scenario", "nope"), ("replicates", 0),
     ("fault_rate_scale", -1.0), ("step_s", 1.0)],
)
def test_bad_eval_spec_is_a_clear_error(field: str, value: object) -> None:
    """Every out-of-range evaluation setting raises ArchitectureError naming it."""
    with pytest.raises(ArchitectureError, match=field.split("_")[0]):
        EvalSpec(**{field: value})  # type: ignore[arg-type]


def test_evaluation_is_deterministic(tiny_space: GenomeSpace) -> None:
    """Same architecture and seed, same objectives; another seed differs."""
    arch = tiny_space.decode(tiny_space.default_genome())
    spec = dataclasses.replace(TINY, fault_rate_scale=200.0)
    a = evaluate(arch, spec, 1, tiny_space.base)
    b = evaluate(arch, spec, 1, tiny_space.base)
    c = evaluate(arch, spec, 2, tiny_space.base)
    assert a == b
    assert a != c
    assert 0 <= a.performance <= 1 and 0 <= a.reliability <= 1 and a.cost_usd > 0


def test_more_capacity_costs_more(tiny_space: GenomeSpace) -> None:
    """Lower target utilisation means more replicas and a higher resource cost."""
    g = tiny_space.default_genome()
    lean = _set(tiny_space, g, **{f"{s}__capacity": 0 for s in SIZED_SERVICES})
    rich = _set(tiny_space, g, **{f"{s}__capacity": 13 for s in SIZED_SERVICES})
    lo = evaluate(tiny_space.decode(repair(tiny_space, lean)), TINY, 0, tiny_space.base)
    hi = evaluate(tiny_space.decode(repair(tiny_space, rich)), TINY, 0, tiny_space.base)
    assert hi.cost_usd > 1.5 * lo.cost_usd


def test_weighted_fitness_terms() -> None:
    """At the reference cost the cost term is 0.3 * 0.5; perfect elsewhere gives 0.85."""
    from sim.architecture import Objectives

    obj = Objectives(1.0, 10.0, 1.0, 1.0, 1.0, 10.0, 0.0, 0, 0)
    assert weighted_fitness(obj, 10.0) == pytest.approx(0.85)
    with pytest.raises(ArchitectureError):
        weighted_fitness(obj, 0.0)


def test_gamma_quantile_matches_scipy() -> None:
    """Wilson-Hilferty's 99th percentile is within 0.5% of the exact gamma quantile."""
    mean = np.array([0.1, 0.2, 0.5, 1.0])
    var = np.array([0.01, 0.02, 0.05, 0.2])
    exact = gamma.ppf(0.99, mean**2 / var, scale=var / mean)
    assert np.allclose(_gamma_q99(mean, var), exact, rtol=5e-3)


def test_configure_applies_the_configuration(space: GenomeSpace) -> None:
    """Tuned values land in the architecture; unknown or out-of-range values are refused."""
    values = {n: (lo + hi) / 2 for n, lo, hi, _ in CONFIG_PARAMS}
    values["api.cpu_limit"] = 12
    arch = configure(space, values)
    assert arch.workers[SIZED_SERVICES.index("api")] == 12
    assert arch.timeout_s[SIZED_SERVICES.index("api")] == values["api.timeout_s"]
    with pytest.raises(ArchitectureError, match="outside"):
        configure(space, {**values, "api.timeout_s": 99.0})
    with pytest.raises(ArchitectureError, match="unknown"):
        configure(space, {**values, "bogus": 1.0})


def test_threads_and_pool_cap_the_api_by_littles_law(space: GenomeSpace) -> None:
    """Threads and connections cap the api at ``T s / (s + D)`` and ``P s / d``.

    A thread is held for the api's own time and its downstream calls, a connection for the
    database call; the lower cap wins.
    """
    cfg = compile_config(space.decode(space.default_genome()), space.base)
    r = residence_s(cfg)
    db = next(x for x in cfg.app.services if x.name == "database")
    assert r["database"] > db.cpu_s_per_req + cfg.topology.hop_latency_s
    api = next(x for x in cfg.app.services if x.name == "api")
    own = api.cpu_s_per_req + api.disk_iops_per_req * cfg.topology.host.disk_service_s
    through = [rc for rc in cfg.app.classes if "api" in rc.path]
    share = sum(rc.share for rc in through)
    down = sum(rc.share * sum(r[p] for p in rc.path[rc.path.index("api") + 1:])
               for rc in through) / share
    hold = sum(rc.share * r["database"] for rc in through if "database" in rc.path) / share
    assert held_servers(cfg, "api", 16, 1000) == math.floor(16 * own / (own + down))
    assert held_servers(cfg, "api", 1000, 3) == math.floor(3 * own / hold)
    caps = [held_servers(cfg, "api", t, 10) for t in (2, 4, 8, 16, 32, 64)]
    assert caps == sorted(caps) and caps[0] >= 1 and caps[0] < caps[-1]
    assert held_servers(cfg, "api", 2, 1) == 1
    with pytest.raises(ArchitectureError, match="threads and pool"):
        held_servers(cfg, "api", 0, 10)
    with pytest.raises(ArchitectureError, match="no service"):
        held_servers(cfg, "nope", 8, 10)


def test_few_threads_cap_the_twins_servers_not_its_vcpus(tiny_space: GenomeSpace) -> None:
    """Four threads cap the api's M/M/c servers below its vCPUs; the defaults cap nothing.

    The cap holds in the fast mode, after an ``add_cpu`` and in the per-request mode; the
    instance still has (and pays for) its vCPUs, and the api slows down.
    """
    values = {n: (lo + hi) / 2 for n, lo, hi, _ in CONFIG_PARAMS}
    values |= {"api.cpu_limit": 8, "api.worker_threads": DEFAULT_WORKER_THREADS,
               "api.db_pool": DEFAULT_DB_POOL}
    free = configure(tiny_space, values)
    assert free.max_servers == ()
    few = configure(tiny_space, {**values, "api.worker_threads": 4})
    i = SIZED_SERVICES.index("api")
    cap = few.max_servers[i]
    assert 1 <= cap < few.workers[i] == 8
    assert dataclasses.replace(few, max_servers=()) == free
    assert held_servers(compile_config(free, tiny_space.base), "api", 4,
                        DEFAULT_DB_POOL) == cap

    slow, fast = deploy(few, tiny_space.base, 3), deploy(free, tiny_space.base, 3)
    s = slow.topo.service_names.index("api")
    for twin in (slow, fast):
        twin.advance(300.0)
    mine = slow.state.inst_used & (slow.state.inst_service == s)
    assert (slow.state.inst_servers[mine] == cap).all()
    assert (slow.state.inst_workers[mine] == 8).all()
    assert (fast.state.inst_servers[mine] == 8).all()
    others = slow.state.inst_used & ~mine
    assert (slow.state.inst_servers[others] == slow.state.inst_workers[others]).all()
    lat = [float(t.state.inst_latency_s[mine].mean()) for t in (slow, fast)]
    assert lat[0] > lat[1]

    k = int(np.flatnonzero(mine)[0])
    assert slow.apply(Action("add_cpu", f"inst-{k}")).accepted
    slow.advance(60.0)
    assert slow.state.inst_workers[k] == 10 and slow.state.inst_servers[k] == cap

    topo = build_topology(compile_config(few, tiny_space.base), np.random.default_rng(0))
    serving = PerRequestServing(topo, np.random.default_rng(0))
    per_inst = serving._workers[topo.initial_service == s]
    assert (per_inst == cap).all()
