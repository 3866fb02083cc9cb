"""The compiled tick kernels equal the numpy composition of the physics laws, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import gammainc

from sim import kernels
from sim.physics.compute import contention_factor
from sim.physics.power import fan_power_w, linear_power_w
from sim.physics.serving import (
    fluid_backlog,
    mm1_sojourn_s,
    mmc_fluid_latency_s,
    path_latency_cdf,
    timeout_fraction,
)
from sim.physics.storage import WEAR_SHAPE, disk_hazard_per_s, wear_step
from sim.physics.thermal import rc_step_temp_c, throttle_factor


def _same(a: object, b: object) -> bool:
    """Equal to the last bit (NaNs and signed zeros included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _inputs(seed: int, edge: bool) -> dict:
    rng = np.random.default_rng(seed)
    n, n_h, n_r, n_s = 80, 24, 4, 6
    svc = rng.integers(0, n_s, n)
    hst = rng.integers(0, n_h, n)
    serving = rng.random(n) < 0.8
    share = rng.random(n) * serving
    if edge:
        share[:5] = 0.0
        serving[5:8] = False
    s_idx = np.flatnonzero(serving)
    cpu_s = rng.uniform(0.001, 0.05, n)
    iops = rng.uniform(0.0, 2.0, n)
    bits = rng.uniform(1e3, 1e5, n)
    workers = rng.integers(1, 9, n)
    visit = rng.uniform(0.5, 3.0, n_s)
    load = 1.0 + rng.uniform(0.0, 0.5, n_s)
    if edge:
        visit[0] = 0.0
        visit[1] = 1e4  # far past every capacity: saturated queues, dropped requests
    lam_svc = 1234.5 * visit * load
    throttle = rng.uniform(0.5, 1.0, n_h)
    return {
        "admitted_rps": 1234.5, "visit_ratio": visit, "load_factor": load,
        "lam_svc": lam_svc, "svc": svc, "share": share, "serving": serving,
        "s_idx": s_idx, "s_host": hst[s_idx], "s_cpu_s": cpu_s[s_idx], "s_iops": iops[s_idx],
        "s_bits": bits[s_idx], "hst": hst, "i_cpu_s": cpu_s, "i_iops": iops,
        "workers": workers, "timeout_s": rng.uniform(0.5, 5.0, n),
        "backlog_in": rng.uniform(0.0, 50.0, n) * (rng.random(n) < 0.3),
        "background_cores": rng.uniform(0.0, 4.0, n_h), "throttle": throttle,
        "iops_cap": rng.uniform(2000.0, 8000.0, n_h), "host_rack": rng.integers(0, n_r, n_h),
        "up_per_core": (rng.random(n_h) < 0.9) / 32.0, "n_racks": n_r, "cores": 32.0,
        "disk_service_s": 1e-4, "host_tx_s": 1.2e-4 / 25.0, "nic_bps": 25e9,
        "cross_rack": 0.75, "uplink_cap_bps": 4e10, "uplink_tx_s": 1.2e-4 / 100.0,
        "hops_s": 2e-5, "dt": 10.0,
    }


def _serve_numpy(p: dict, idle_exact: bool) -> tuple[np.ndarray, ...]:
    """The tick's serving step composed of the laws in sim.physics, as numpy computes it."""
    lam = p["lam_svc"].take(p["svc"]) * p["share"]
    serving, s_idx, s_host = p["serving"], p["s_idx"], p["s_host"]
    n_h, dt = p["throttle"].shape[0], p["dt"]
    lam_serving = lam * serving
    lam_s = lam.take(s_idx)
    demand = np.bincount(s_host, lam_s * p["s_cpu_s"], minlength=n_h) + p["background_cores"]
    cap = p["cores"] * p["throttle"]
    contention = contention_factor(demand, cap)
    cpu_util = np.minimum(demand, cap) * p["up_per_core"]
    disk_util = np.bincount(s_host, lam_s * p["s_iops"], minlength=n_h) / p["iops_cap"]
    disk_lat = mm1_sojourn_s(p["disk_service_s"], disk_util)
    hst = p["hst"]
    mu = 1.0 / (p["i_cpu_s"] / contention.take(hst) + p["i_iops"] * disk_lat.take(hst))
    capacity = p["workers"] * mu * serving
    backlog = fluid_backlog(p["backlog_in"], lam_serving, capacity, dt)
    dropped = np.maximum(backlog - capacity * p["timeout_s"], 0.0)
    backlog -= dropped
    if idle_exact:
        stationary = 1.0 / mu
        stationary[s_idx] = mmc_fluid_latency_s(lam_s, mu.take(s_idx), p["workers"][s_idx], 0.0)
    else:
        stationary = mmc_fluid_latency_s(lam_serving, mu, p["workers"], 0.0)
    net_bps = np.bincount(s_host, lam_s * p["s_bits"], minlength=n_h) * 2.0
    rack_bps = np.bincount(p["host_rack"], net_bps, minlength=p["n_racks"])
    uplink_util = rack_bps * p["cross_rack"] / p["uplink_cap_bps"]
    host_net_s = 2.0 * mm1_sojourn_s(p["host_tx_s"], net_bps / p["nic_bps"])
    rack_net_s = (2.0 * p["cross_rack"]) * mm1_sojourn_s(p["uplink_tx_s"], uplink_util)
    stationary += (host_net_s + rack_net_s.take(p["host_rack"]) + p["hops_s"]).take(hst)
    latency = stationary + backlog / np.maximum(capacity, 1e-9)
    return (lam, cpu_util, disk_util, disk_lat, capacity, backlog, dropped, net_bps,
            uplink_util, stationary, latency)


@pytest.mark.parametrize("edge", [False, True])
@pytest.mark.parametrize("idle_exact", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_serve_and_outcome_equal_the_laws(seed: int, edge: bool, idle_exact: bool) -> None:
    p = _inputs(seed, edge)
    (lam, cpu_util, disk_util, disk_lat, capacity, backlog, dropped, net_bps, uplink_util,
     stationary, latency) = _serve_numpy(p, idle_exact)
    lam_svc = np.full_like(p["lam_svc"], np.nan)
    slots, hosts, got_uplink = kernels.serve(**{**p, "lam_svc": lam_svc}, idle_exact=idle_exact)
    assert _same(lam_svc, p["lam_svc"])
    got = (*slots[:4], *hosts, got_uplink)
    expected = (lam, capacity, backlog, dropped, cpu_util, disk_util, disk_lat, net_bps,
                uplink_util)
    names = ("lam", "capacity", "backlog", "dropped", "cpu_util", "disk_util",
             "disk_latency_s", "net_bps", "uplink_util")
    for name, a, b in zip(names, got, expected, strict=True):
        assert _same(a, b), name
    neg_ratio, got_latency = slots[4], slots[5]
    timeout_share = timeout_fraction(stationary, p["timeout_s"])
    assert _same(np.exp(neg_ratio), timeout_share)
    assert _same(got_latency, latency)
    if edge:
        assert (dropped > 0).any() and (capacity == 0).any()

    # The outcome kernel against the same composition.
    rng = np.random.default_rng(seed + 10)
    static_ok = rng.uniform(0.5, 1.0, lam.shape[0]) * p["serving"]
    routable = rng.random(p["lam_svc"].shape[0]) < 0.9
    r_idx = np.flatnonzero(p["share"])
    svc = p["svc"]
    lam_serving = lam * p["serving"]
    ok = ((1.0 - timeout_share) * (1.0 - dropped / np.maximum(lam_serving * p["dt"], 1e-9))
          * static_ok)
    inv_lam = 1.0 / np.maximum(p["lam_svc"], 1e-12)
    n_s = p["lam_svc"].shape[0]
    if idle_exact:
        r_svc = svc[r_idx]
        lat_sum = np.bincount(r_svc, lam.take(r_idx) * latency.take(r_idx), minlength=n_s)
        ok_sum = np.bincount(r_svc, lam.take(r_idx) * ok.take(r_idx), minlength=n_s)
    else:
        lat_sum = np.bincount(svc, lam * latency, minlength=n_s)
        ok_sum = np.bincount(svc, lam * ok, minlength=n_s)
    services = np.full((3, n_s), np.nan)
    err, util = kernels.outcome(
        lam, p["serving"], capacity, dropped, latency, timeout_share, static_ok, svc, r_idx,
        svc[r_idx], p["lam_svc"], routable, p["dt"], idle_exact, services,
    )
    svc_lat, svc_sq, svc_ok = services
    assert _same(err, 1.0 - ok)
    assert _same(util, np.minimum(lam_serving / np.maximum(capacity, 1e-9), 1.0))
    assert _same(svc_lat, lat_sum * inv_lam)
    assert _same(svc_sq, (lat_sum * inv_lam) * (lat_sum * inv_lam))
    assert _same(svc_ok, np.maximum(ok_sum * inv_lam * routable, 1e-300))


@pytest.mark.parametrize("fan", [False, True])
@pytest.mark.parametrize("wearing", [False, True])
def test_hosts_equals_the_laws(fan: bool, wearing: bool) -> None:
    rng = np.random.default_rng(3)
    n_h, n = 30, 90
    util = rng.uniform(-0.1, 1.2, n_h)
    util[0] = np.nan
    host_up = rng.random(n_h) < 0.9
    temp = rng.uniform(20.0, 99.0, n_h)
    inlet = rng.uniform(18.0, 27.0, n_h)
    r = rng.uniform(0.08, 0.2, n_h)
    decay = np.exp(-10.0 / (r * 20000.0))
    lam = rng.uniform(0.0, 100.0, n)
    s_idx = np.flatnonzero(rng.random(n) < 0.7)
    s_host = rng.integers(0, n_h, s_idx.size)
    write_iops = rng.uniform(0.0, 1.5, s_idx.size)
    wear = rng.uniform(0.0, 0.9, n_h)
    rate = rng.uniform(0.0, 1e-5, n_h)
    idle, busy, exponent = 160.0, 450.0, 1.4
    u = np.minimum(np.maximum(util, 0.0), 1.0)
    upow = u**exponent if fan else np.empty(0)
    hosts, temp_max, wear_max = kernels.hosts(
        util, host_up, upow, fan, idle, busy, temp, inlet, r, decay, 80.0, 95.0, 0.5, lam,
        s_idx, s_host, write_iops, wear, 2e11, rate, wearing, 10.0,
    )
    power, temp_new, throttle, wear_new, worn = hosts
    law = fan_power_w(util, idle, busy, exponent) if fan else linear_power_w(util, idle, busy)
    expected_power = law * host_up
    assert _same(power, expected_power)
    # rc_step_temp_c computes exp(-dt / (R C)) itself: numpy's exp, as the caller passes.
    expected_temp = rc_step_temp_c(temp, expected_power, inlet, r, 20000.0, 10.0)
    assert _same(temp_new, expected_temp)
    assert _same(throttle, throttle_factor(expected_temp, 80.0, 95.0, 0.5))
    writes = np.bincount(s_host, lam.take(s_idx) * write_iops, minlength=n_h)
    expected_wear = wear_step(wear, writes, 2e11, 10.0)
    if wearing:
        expected_wear = expected_wear + rate * 10.0
    assert _same(wear_new, expected_wear)
    assert _same(worn, np.maximum(expected_wear, 0.0))
    assert _same(np.float64(temp_max), expected_temp.max())
    assert _same(np.float64(wear_max), expected_wear.max())


def test_hosts_maxima_propagate_nan() -> None:
    n_h = 4
    z = np.zeros(n_h)
    temp = np.array([30.0, np.nan, 40.0, 35.0])
    *_, temp_max, _ = kernels.hosts(
        z, np.ones(n_h, bool), np.empty(0), False, 100.0, 200.0, temp, z, z + 0.1, z + 0.5,
        80.0, 95.0, 0.5, np.zeros(1), np.zeros(0, np.int64), np.zeros(0, np.int64),
        np.zeros(0), z, 2e11, z, False, 10.0,
    )
    assert np.isnan(temp_max) and np.isnan(np.max(temp))


def test_disk_hazard_step_equals_the_law_and_flags_exactly_the_disks_that_change() -> None:
    base, dt = 1e-9, 10.0
    acc = np.array([0.0, 0.5, 0.99, 0.2])
    threshold = np.array([1.0, 1.0, 1.0, 1.0])
    state = np.array([0, 0, 2, 1])
    wear = np.array([0.1, 0.1, 1.2, 0.9])
    empty = np.empty(0)
    # Flat: the increment is added in place; nothing crosses, so no change.
    start = acc.copy()
    assert not kernels.disk_hazard_step(acc, True, 0.001, empty, base, dt, threshold, wear,
                                        state, 2, 0, 1.0, 0.8)
    assert _same(acc, start + 0.001)
    # Worn: the law's hazard over the tick, with numpy's power.
    start = acc.copy()
    kernels.disk_hazard_step(acc, False, 0.0, np.maximum(wear, 0.0) ** WEAR_SHAPE, base, dt,
                             threshold, wear, state, 2, 0, 1.0, 0.8)
    expected = start.copy()
    expected += disk_hazard_per_s(wear, base) * dt
    assert _same(acc, expected)
    # A failed disk past every threshold is not a change; a healthy one crossing is.
    assert kernels.disk_hazard_step(acc, True, 0.5, empty, base, dt, threshold, wear, state,
                                    2, 0, 1.0, 0.8)
    # A healthy disk worn to the degraded level is a change.
    acc[:] = 0.0
    assert kernels.disk_hazard_step(acc, True, 0.0, empty, base, dt, threshold,
                                    np.array([0.85, 0, 0, 0.5]), state, 2, 0, 1.0, 0.8)


def test_class_kernels_equal_the_path_latency_law() -> None:
    rng = np.random.default_rng(4)
    n = 7
    mean = rng.uniform(0.0, 0.5, n)
    mean[0] = 0.0
    var = rng.uniform(0.0, 0.1, n)
    var[1] = 0.0
    slo = rng.uniform(0.1, 1.0, n)
    gamma = np.empty((2, n))
    kernels.gamma_args(mean, var, slo, gamma)
    k, x = gamma
    cdf = gammainc(k, x)
    assert _same(cdf, path_latency_cdf(mean, var, slo))
    class_ok = rng.uniform(0.9, 1.0, n)
    share = rng.dirichlet(np.ones(n))
    requests, good = rng.uniform(0, 10, n), rng.uniform(0, 10, n)
    expected_requests, expected_good = requests.copy(), good.copy()
    got = kernels.class_windows(class_ok, cdf, share, 1234.5, 1200.25, requests, good)
    class_good = class_ok * path_latency_cdf(mean, var, slo)
    expected_requests += 1234.5 * share
    expected_good += 1200.25 * share * class_good
    assert _same(got, class_good)
    assert _same(requests, expected_requests) and _same(good, expected_good)


def test_probes_follow_the_thresholds() -> None:
    serving = np.array([True, False, False, True, True])
    used = np.array([True, True, True, True, False])
    ready = np.array([True, True, False, False, False])
    fails = np.array([0, 2, 5, 1, 0])
    passes = np.array([4, 0, 0, 0, 7])
    new_ready, (f, p), changed = kernels.probes(serving, used, ready, fails, passes, 3, 1)
    expected_f = (fails + 1) * ~serving
    expected_p = (passes + 1) * serving
    expected_ready = used & np.where(ready, expected_f < 3, expected_p >= 1)
    assert _same(f, expected_f) and _same(p, expected_p) and _same(new_ready, expected_ready)
    assert changed == int(np.count_nonzero(expected_ready != ready)) == 2


def test_sample_is_the_state_rounded_to_float32_once() -> None:
    from sim.scenarios import make_config
    from sim.twin import P99_OVER_MEAN, Twin

    twin = Twin(make_config("mixed", 20), seed=5)
    twin.advance(3600.0)
    st, host = twin.state, twin.config.topology.host
    in_flight = st.inst_rps * st.inst_latency_s
    mem_per_req = twin.topo.svc_mem_per_req_bytes.take(st.inst_service)
    bits = twin.topo.svc_bytes_per_req.take(st.inst_service) * 8.0
    host_rows = np.array((
        st.cpu_util, 1.0 - st.host_free_mem_bytes * (1.0 / host.mem_bytes), st.power_w,
        st.temp_c, st.fan_health * host.fan_rpm, st.disk_util, st.disk_latency_s,
        st.disk_wear, st.net_bps * (1.0 / host.nic_bps), st.host_link_loss, st.throttle,
        st.host_up,
    )).astype(np.float32)
    inst_rows = np.array((
        st.inst_util, (st.inst_mem_bytes + in_flight * mem_per_req) / st.inst_mem_limit_bytes,
        st.inst_rps, st.inst_latency_s, st.inst_latency_s * P99_OVER_MEAN, st.inst_error_rate,
        st.inst_backlog + in_flight, st.inst_rps * bits, st.disk_latency_s.take(st.inst_host),
        st.temp_c.take(st.inst_host), st.inst_up, st.inst_ready, st.inst_vm_up,
    )).astype(np.float32)
    assert _same(twin.telemetry.last_host(), host_rows.T)
    assert _same(twin.telemetry.last_inst(), inst_rows.T)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_derive_equals_the_numpy_routing(seed: int) -> None:
    """Routing with panic, serving slots, success shares and leaks, as numpy computes them."""
    rng = np.random.default_rng(seed)
    n, n_h, n_r, n_s = 90, 20, 4, 5
    svc = rng.integers(0, n_s, n)
    hst = rng.integers(0, n_h, n)
    used = rng.random(n) < 0.85
    rotation_in = rng.random(n) < 0.9
    isolated = rng.random(n) < 0.05
    ready = rng.random(n) < (0.3 if seed % 2 else 0.9)  # odd seeds: services in panic
    inst_up = rng.random(n) < 0.9
    base, slowdown = rng.uniform(0.001, 0.05, n), rng.uniform(1.0, 3.0, n)
    iops, bits, write_iops = rng.uniform(0, 2, n), rng.uniform(1e3, 1e5, n), rng.uniform(0, 1, n)
    cfg_error = rng.uniform(0, 0.2, n) * (rng.random(n) < 0.2)
    compromised = rng.random(n) < 0.1
    leak = rng.uniform(1e3, 1e5, n) * (rng.random(n) < 0.15)
    host_up, tor_up = rng.random(n_h) < 0.9, rng.random(n_r) < 0.8
    rack = rng.integers(0, n_r, n_h)
    link_loss = rng.uniform(0, 0.05, n_h) * (rng.random(n_h) < 0.3)
    uplink_loss = rng.uniform(0, 0.05, n_r)
    no_spines = seed == 3
    got = kernels.derive(svc, hst, used, rotation_in, isolated, ready, inst_up, base, slowdown,
                         iops, bits, write_iops, cfg_error, compromised, leak, host_up, tor_up,
                         rack, link_loss, uplink_loss, n_s, 0.5, 0.75, no_spines)

    cpu_s = base / slowdown
    rotation = used & rotation_in & ~isolated
    routable = rotation & ready
    wsum = np.bincount(svc, routable, minlength=n_s)
    panic = wsum < 0.5 * np.bincount(svc, rotation, minlength=n_s)
    if panic.any():
        routable = routable | (rotation & panic[svc])
        wsum = np.bincount(svc, routable, minlength=n_s)
    share = routable / np.maximum(wsum, 1.0)[svc]
    r_idx = np.flatnonzero(share)
    serving = inst_up & (host_up & tor_up[rack])[hst] & used
    sub = np.flatnonzero(serving)
    net_ok = (1.0 - link_loss) * (1.0 - 0.75 * uplink_loss[rack])
    if no_spines:
        net_ok = net_ok * (1.0 - 0.75)
    static_ok = (1.0 - cfg_error) * net_ok[hst] * np.where(compromised, 0.5, 1.0) * serving
    leak_bps = leak * inst_up
    leak_idx = np.flatnonzero(leak_bps)
    expected = (cpu_s, share, r_idx, svc[r_idx], wsum > 0, serving, sub, hst[sub], cpu_s[sub],
                iops[sub], bits[sub], write_iops[sub], static_ok, leak_idx, leak_bps[leak_idx])
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert _same(a, b), i
    if seed % 2:
        assert panic.any()


def test_leaks_grow_memory_in_place_and_find_crossings() -> None:
    rng = np.random.default_rng(6)
    n = 40
    idx = np.array([1, 5, 9, 30])
    leak_bps = np.array([1e6, 2e6, 0.0, 5e5])
    lam, latency = rng.uniform(0, 50, n), rng.uniform(0.01, 0.5, n)
    mem = rng.uniform(1e8, 9e8, n)
    mem[5] = 1e9 - 1e6  # next to its limit: crosses within the tick
    limit, per_req = np.full(n, 1e9), rng.uniform(1e4, 1e5, n)
    start = mem.copy()
    headroom, crossing, count = kernels.leaks(idx, leak_bps, lam, latency, mem, limit, per_req,
                                              10.0)
    in_flight = lam.take(idx) * latency.take(idx)
    expected_room = limit.take(idx) - in_flight * per_req.take(idx) - start.take(idx)
    expected_mem = start.copy()
    expected_mem[idx] = start.take(idx) + leak_bps * 10.0
    assert _same(headroom, expected_room) and _same(mem, expected_mem)
    expected_crossing = (leak_bps > 0) & (expected_room < leak_bps * 10.0)
    assert _same(crossing, expected_crossing) and count == int(expected_crossing.sum()) >= 1
