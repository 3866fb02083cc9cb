"""Fault injection on the twin: ground-truth records, physical effects and warning signs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import binom

from sim.config import FaultRates, TwinConfig
from sim.events import FaultCleared, FaultRecord, StateChange
from sim.faults import (
    FAULT_SPECS,
    SECONDS_PER_YEAR,
    FaultKind,
    draw_lifetimes_s,
    strike,
    weibull_scale_s,
)
from sim.scenarios import make_config
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES
from sim.twin import Twin

SEED = 5
HOSTS = 40
HOUR_S = 3600.0
WARMUP_S = 600.0
SAMPLE_S = 60.0

HOST_COL = {name: j for j, name in enumerate(HOST_FEATURES)}
INST_COL = {name: j for j, name in enumerate(INSTANCE_FEATURES)}

TARGET_OF_TYPE = {"instance": 3, "host": 5, "switch": 1, "link": 5, "cluster": 1, "service": 2}
"""Target index used for each fault target type: inst-3 (frontend), host-5, tor-1, link-host-5,
a surge with warning, svc-api."""


def _config(**overrides: object) -> TwinConfig:
    """Calm 40-host cluster (two racks) with a day of one-minute telemetry."""
    return make_config(
        "calm", HOSTS, telemetry_interval_s=SAMPLE_S, telemetry_buffer=1500, **overrides
    )


def _hot(config: TwinConfig) -> TwinConfig:
    """Every host carries a heavy background load, so a dead fan overheats it."""
    return dataclasses.replace(
        config, topology=dataclasses.replace(config.topology, background_util=0.55)
    )


def _twin(config: TwinConfig | None = None) -> Twin:
    twin = Twin(config or _config(), seed=SEED)
    twin.advance(WARMUP_S)
    return twin


def _strike(twin: Twin, kind: FaultKind) -> int:
    fid = strike(twin, kind, TARGET_OF_TYPE[FAULT_SPECS[kind].target_type],
                 np.random.default_rng(SEED))
    assert fid is not None, f"strike of {kind.value} found no target"
    return fid


def _states(twin: Twin, target: str | None = None) -> list[StateChange]:
    return [
        r for r in twin.events()
        if isinstance(r, StateChange) and (target is None or r.target == target)
    ]


def _fault(twin: Twin, fid: int) -> FaultRecord:
    found = [r for r in twin.events() if isinstance(r, FaultRecord) and r.fault_id == fid]
    assert len(found) == 1
    return found[0]


def _series(twin: Twin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return twin.telemetry.window(twin.telemetry.size)


def _at(times_s: np.ndarray, t_s: float) -> int:
    """Index of the last sample taken at or before ``t_s``."""
    idx = int(np.searchsorted(times_s, t_s, side="right")) - 1
    assert idx >= 0, f"no telemetry sample at or before {t_s}"
    return idx


def _gateway_rps(inst: np.ndarray, twin: Twin) -> np.ndarray:
    """Admitted request rate over time: the gateway is visited once per request."""
    gateway = twin.state.inst_used & (twin.state.inst_service == 0)
    return inst[:, gateway, INST_COL["rps"]].sum(axis=1)


EXPECTED_TARGET = {
    FaultKind.SERVICE_CRASH: "inst-3",
    FaultKind.MEMORY_LEAK: "inst-3",
    FaultKind.VM_FAILURE: "inst-3",
    FaultKind.HOST_FAILURE: "host-5",
    FaultKind.DISK_DEGRADATION: "host-5",
    FaultKind.NETWORK_PARTITION: "tor-1",
    FaultKind.LINK_DEGRADATION: "link-host-5",
    FaultKind.LOAD_SURGE: "cluster",
    FaultKind.NOISY_NEIGHBOUR: "host-5",
    FaultKind.FAN_FAILURE: "host-5",
    FaultKind.BAD_CONFIG: "svc-api",
    FaultKind.SECURITY_VULNERABILITY: "svc-api",
}


def test_every_fault_kind_has_a_spec_and_a_test_target() -> None:
    """Every FaultKind has a FaultSpec and an expected target in these tests."""
    assert set(FAULT_SPECS) == set(FaultKind)
    assert set(EXPECTED_TARGET) == set(FaultKind)


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda k: k.value)
def test_strike_writes_a_ground_truth_fault_record(kind: FaultKind) -> None:
    """A struck fault writes one FaultRecord: id, kind, target, onset now, root cause."""
    twin = _twin()
    before = twin.log.next_seq
    onset_s = twin.now_s
    fid = _strike(twin, kind)
    records = [r for r in twin.events(before) if isinstance(r, FaultRecord)]
    assert len(records) == 1
    rec = records[0]
    assert rec.fault_id == fid
    assert rec.kind == kind.value
    assert rec.target == EXPECTED_TARGET[kind]
    assert rec.t_s == onset_s
    assert rec.root_cause == FAULT_SPECS[kind].root_cause
    assert rec.root_cause
    assert rec.warning_signs == FAULT_SPECS[kind].warning_signs
    assert fid in twin.active_faults


@pytest.mark.parametrize("kind", list(FaultKind), ids=lambda k: k.value)
def test_strike_is_deterministic_for_a_given_rng(kind: FaultKind) -> None:
    """The same twin state and the same rng give the same fault record and the same future."""
    a, b = _twin(), _twin()
    _strike(a, kind)
    _strike(b, kind)
    a.advance(HOUR_S)
    b.advance(HOUR_S)
    assert a.log.digest() == b.log.digest()


@pytest.mark.parametrize(
    ("kind", "cause"),
    [(FaultKind.SERVICE_CRASH, "service_crash"), (FaultKind.VM_FAILURE, "vm_failure")],
)
def test_crash_takes_the_instance_down_at_onset(kind: FaultKind, cause: str) -> None:
    """A crash or VM failure records an instance 'down' at onset and probes then fail it."""
    twin = _twin()
    onset_s = twin.now_s
    fid = _strike(twin, kind)
    twin.advance(120.0)
    states = _states(twin, "inst-3")
    assert [(s.state, s.fault_id, s.cause, s.t_s) for s in states[:1]] == [
        ("down", fid, cause, onset_s)
    ]
    assert any(s.state == "not_ready" for s in states)
    assert not twin.state.inst_up[3]
    assert not twin.state.inst_ready[3]
    assert twin.observe().inst[3, INST_COL["up"]] == 0.0


def test_memory_leak_warns_hours_before_the_oom_kill() -> None:
    """A leak raises the instance's memory in telemetry for hours, then the OOM killer fires.

    The kill is a 'down' StateChange with cause 'oom_kill' carrying the leak's fault id, at the
    time the linear leak fills the headroom, and memory is already high an hour before it.
    """
    twin = _twin()
    fid = _strike(twin, FaultKind.MEMORY_LEAK)
    rec = _fault(twin, fid)
    twin.advance(14 * HOUR_S)
    kills = [s for s in _states(twin, "inst-3") if s.state == "down"]
    assert len(kills) == 1
    kill = kills[0]
    assert kill.cause == "oom_kill"
    assert kill.fault_id == fid
    expected_s = rec.t_s + rec.detail["hours_to_oom"] * HOUR_S
    assert abs(kill.t_s - expected_s) < 600.0
    assert kill.t_s - rec.t_s > 2 * HOUR_S

    times, _, inst = _series(twin)
    mem = inst[:, 3, INST_COL["mem_util"]].astype(float)
    onset = _at(times, rec.t_s)
    hour_before = _at(times, kill.t_s - HOUR_S)
    assert mem[hour_before] > mem[onset] + 0.3
    rising = mem[onset + 1 : hour_before + 1]
    assert np.all(np.diff(rising) > -0.01)
    assert mem[_at(times, kill.t_s - 10.0)] > 0.95


def test_host_failure_takes_the_host_and_its_instances_down() -> None:
    """A host failure records the host down and every instance on it down, with the fault id."""
    twin = _twin()
    on_host = set(np.flatnonzero(twin.state.inst_used & (twin.state.inst_host == 5)).tolist())
    assert on_host
    fid = _strike(twin, FaultKind.HOST_FAILURE)
    twin.advance(60.0)
    host_states = _states(twin, "host-5")
    assert [(s.state, s.fault_id) for s in host_states] == [("down", fid)]
    downed = {
        int(s.target.split("-")[1]) for s in _states(twin)
        if s.target.startswith("inst-") and s.state == "down" and s.fault_id == fid
    }
    assert downed == on_host
    assert not twin.state.host_up[5]
    assert twin.state.host_hw_failed[5]
    assert not twin.state.inst_up[sorted(on_host)].any()
    assert twin.observe().host[5, HOST_COL["up"]] == 0.0


def test_network_partition_makes_the_racks_instances_not_ready() -> None:
    """A ToR failure records the switch down; every instance in its rack turns not ready."""
    twin = _twin()
    st = twin.state
    rack_of_inst = twin.topo.host_rack[st.inst_host]
    in_rack = set(np.flatnonzero(st.inst_used & (rack_of_inst == 1)).tolist())
    elsewhere = np.flatnonzero(st.inst_used & (rack_of_inst != 1))
    assert in_rack
    assert elsewhere.size
    fid = _strike(twin, FaultKind.NETWORK_PARTITION)
    twin.advance(120.0)
    assert [(s.state, s.fault_id) for s in _states(twin, "tor-1")] == [("down", fid)]
    not_ready = {
        int(s.target.split("-")[1]) for s in _states(twin)
        if s.target.startswith("inst-") and s.state == "not_ready"
    }
    assert not_ready == in_rack
    assert not st.tor_up[1]
    assert not st.inst_ready[sorted(in_rack)].any()
    assert st.inst_ready[elsewhere].all()


def test_disk_degradation_wears_the_disk_then_degrades_and_fails_it() -> None:
    """Disk wear rises for hours, then the disk degrades and fails, taking the host down.

    'disk_degraded' comes hours after onset, then 'disk_failed'; telemetry shows high wear at
    least an hour before the failure.
    """
    twin = _twin()
    fid = _strike(twin, FaultKind.DISK_DEGRADATION)
    rec = _fault(twin, fid)
    twin.advance(14 * HOUR_S)
    states = [s for s in _states(twin, "host-5") if s.fault_id == fid]
    assert [s.state for s in states] == ["disk_degraded", "disk_failed", "down"]
    degraded, failed = states[0], states[1]
    assert degraded.t_s - rec.t_s > 2 * HOUR_S
    assert failed.t_s > degraded.t_s
    hours = rec.detail["hours_to_wear_out"]
    assert abs(degraded.t_s - (rec.t_s + 0.8 * hours * HOUR_S)) < 600.0
    assert abs(failed.t_s - (rec.t_s + hours * HOUR_S)) < 600.0

    times, host, _ = _series(twin)
    wear = host[:, 5, HOST_COL["disk_wear"]].astype(float)
    onset = _at(times, rec.t_s)
    hour_before = _at(times, failed.t_s - HOUR_S)
    assert wear[onset] < 0.01
    assert wear[hour_before] > 0.5
    assert np.all(np.diff(wear[onset : hour_before + 1]) >= 0.0)


def test_fan_failure_heats_a_loaded_host_for_hours_before_it_throttles() -> None:
    """A dying fan heats a loaded host over hours until its CPU throttles.

    Fan speed drops at once; temperature is clearly up an hour before the throttle factor
    falls below 1.
    """
    config = _config(customize=_hot)
    twin, reference = _twin(config), _twin(config)
    fid = _strike(twin, FaultKind.FAN_FAILURE)
    rec = _fault(twin, fid)
    twin.advance(12 * HOUR_S)
    reference.advance(12 * HOUR_S)
    times, host, _ = _series(twin)
    _, ref_host, _ = _series(reference)
    temp = host[:, 5, HOST_COL["temp_c"]].astype(float)
    ref_temp = ref_host[:, 5, HOST_COL["temp_c"]].astype(float)
    throttle = host[:, 5, HOST_COL["throttle"]]
    rpm = host[:, 5, HOST_COL["fan_rpm"]]
    throttled = np.flatnonzero(throttle < 1.0)
    assert throttled.size, "the host never throttled"
    first = int(throttled[0])
    assert times[first] - rec.t_s > HOUR_S
    assert throttle[-1] < 0.9
    hour_before = _at(times, times[first] - HOUR_S)
    assert temp[hour_before] > ref_temp[hour_before] + 10.0
    assert rpm[_at(times, rec.t_s + 1800.0)] < twin.config.topology.host.fan_rpm
    assert (ref_host[:, 5, HOST_COL["throttle"]] == 1.0).all()


def test_load_surge_with_warning_ramps_offered_load_over_about_two_hours() -> None:
    """A surge with warning (target=1) ramps the offered load over about two hours.

    The ramp is linear over 1.5-2.5 h to the multiplier, so load is clearly up an hour before
    the peak; the surge clears by itself.
    """
    twin, reference = _twin(), _twin()
    fid = _strike(twin, FaultKind.LOAD_SURGE)
    rec = _fault(twin, fid)
    assert rec.warning_signs
    mult, ramp_s = rec.detail["multiplier"], rec.detail["ramp_s"]
    assert 1.5 * HOUR_S <= ramp_s <= 2.5 * HOUR_S
    twin.advance(10 * HOUR_S)
    reference.advance(10 * HOUR_S)
    times, _, inst = _series(twin)
    _, _, ref_inst = _series(reference)
    ratio = _gateway_rps(inst, twin) / _gateway_rps(ref_inst, reference)
    start = _at(times, rec.t_s + SAMPLE_S)
    peak = _at(times, rec.t_s + ramp_s)
    assert ratio[_at(times, rec.t_s - SAMPLE_S)] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(ratio[start:peak]) > 0.0)
    hour_in = _at(times, rec.t_s + HOUR_S)
    assert ratio[hour_in] == pytest.approx(1.0 + (mult - 1.0) * HOUR_S / ramp_s, rel=0.02)
    assert ratio[peak] == pytest.approx(mult, rel=0.02)
    cleared = [r for r in twin.events() if isinstance(r, FaultCleared) and r.fault_id == fid]
    assert [c.by for c in cleared] == ["self-limiting"]
    assert ratio[-1] == pytest.approx(1.0, abs=1e-6)


def test_load_surge_without_warning_jumps_within_minutes() -> None:
    """A surge without warning (target=0) reaches its multiplier after a one-minute ramp."""
    twin, reference = _twin(), _twin()
    fid = strike(twin, FaultKind.LOAD_SURGE, 0, np.random.default_rng(SEED))
    assert fid is not None
    rec = _fault(twin, fid)
    assert not rec.warning_signs
    assert rec.detail["ramp_s"] == 60.0
    twin.advance(HOUR_S)
    reference.advance(HOUR_S)
    times, _, inst = _series(twin)
    _, _, ref_inst = _series(reference)
    ratio = _gateway_rps(inst, twin) / _gateway_rps(ref_inst, reference)
    assert ratio[_at(times, rec.t_s + 180.0)] == pytest.approx(rec.detail["multiplier"], rel=1e-3)


def test_bad_config_raises_the_error_rate_of_that_service_only() -> None:
    """A bad config deploy raises the error rate of that service only.

    Each of its instances gains about the drawn error rate; other services barely change.
    """
    twin, reference = _twin(), _twin()
    fid = _strike(twin, FaultKind.BAD_CONFIG)
    err = _fault(twin, fid).detail["error_rate"]
    twin.advance(1800.0)
    reference.advance(1800.0)
    st = twin.state
    api = st.inst_used & (st.inst_service == 2)
    others = st.inst_used & (st.inst_service != 2)
    col = INST_COL["error_rate"]
    now, ref = twin.observe().inst[:, col], reference.observe().inst[:, col]
    assert np.all(now[api] >= ref[api] + 0.8 * err)
    assert np.all(np.abs(now[others] - ref[others]) < 0.02)
    assert np.all(st.inst_cfg_error[api] == pytest.approx(err))


def test_security_vulnerability_is_eventually_exploited_when_unpatched() -> None:
    """An unpatched vulnerability eventually compromises one of the service's instances.

    The 'compromised' StateChange carries the vulnerability's fault id.
    """
    twin = _twin()
    fid = _strike(twin, FaultKind.SECURITY_VULNERABILITY)
    api = set(np.flatnonzero(twin.state.inst_used & (twin.state.inst_service == 2)).tolist())
    assert twin.state.inst_vulnerable[sorted(api)].all()
    compromised: list[StateChange] = []
    for _ in range(48):
        twin.advance(HOUR_S)
        compromised = [s for s in _states(twin) if s.state == "compromised"]
        if compromised:
            break
    assert compromised, "no compromise within 48 h of an unpatched vulnerability"
    first = compromised[0]
    assert first.fault_id == fid
    inst = int(first.target.split("-")[1])
    assert inst in api
    assert twin.state.inst_compromised[inst]


def test_noisy_neighbour_raises_host_cpu_then_clears_by_itself() -> None:
    """A noisy neighbour raises host CPU for its duration, then clears by itself.

    The FaultCleared record comes at onset + duration and utilisation returns to normal.
    """
    twin, reference = _twin(), _twin()
    fid = _strike(twin, FaultKind.NOISY_NEIGHBOUR)
    rec = _fault(twin, fid)
    duration_s = rec.detail["duration_s"]
    twin.advance(duration_s + HOUR_S)
    reference.advance(duration_s + HOUR_S)
    times, host, _ = _series(twin)
    _, ref_host, _ = _series(reference)
    util = host[:, 5, HOST_COL["cpu_util"]].astype(float)
    ref_util = ref_host[:, 5, HOST_COL["cpu_util"]].astype(float)
    during = _at(times, rec.t_s + duration_s / 2)
    expected = min(1.0, ref_util[during] + 0.8 * rec.detail["cpu_share"])
    assert util[during] >= expected - 1e-6
    assert util[during] > ref_util[during] + 0.3
    cleared = [r for r in twin.events() if isinstance(r, FaultCleared) and r.fault_id == fid]
    assert len(cleared) == 1
    assert cleared[0].by == "self-limiting"
    assert cleared[0].t_s == pytest.approx(rec.t_s + duration_s)
    after = _at(times, rec.t_s + duration_s + 1800.0)
    assert util[after] == pytest.approx(ref_util[after], abs=0.02)
    assert fid not in twin.active_faults


def test_link_degradation_shows_loss_in_telemetry() -> None:
    """A degraded host link shows its loss in telemetry and raises its instances' error rate."""
    twin, reference = _twin(), _twin()
    fid = _strike(twin, FaultKind.LINK_DEGRADATION)
    loss = _fault(twin, fid).detail["loss"]
    twin.advance(600.0)
    reference.advance(600.0)
    assert twin.observe().host[5, HOST_COL["link_loss"]] == pytest.approx(loss, rel=1e-5)
    on_host = twin.state.inst_used & (twin.state.inst_host == 5)
    col = INST_COL["error_rate"]
    assert np.all(
        twin.observe().inst[on_host, col] >= reference.observe().inst[on_host, col] + 0.8 * loss
    )


def _faults_per_day(tick_s: float, seeds: range) -> float:
    counts = []
    for seed in seeds:
        config = make_config("mixed", 100, tick_s=tick_s, telemetry_interval_s=max(tick_s, 10.0))
        twin = Twin(config, seed=seed)
        twin.advance(86400.0)
        counts.append(sum(1 for r in twin.events() if isinstance(r, FaultRecord)))
    return float(np.mean(counts))


def test_mixed_scenario_gives_at_least_20_faults_per_day_at_100_hosts_coarse_tick() -> None:
    """Scenario 'mixed' on 100 hosts injects at least 20 faults per simulated day on average.

    One-minute physics tick; fault arrivals do not depend on the tick.
    """
    assert _faults_per_day(60.0, range(4)) >= 20.0


@pytest.mark.slow
def test_mixed_scenario_gives_at_least_20_faults_per_day_at_100_hosts() -> None:
    """Scenario 'mixed' on 100 hosts at the default tick injects >= 20 faults per day."""
    assert _faults_per_day(10.0, range(4)) >= 20.0


@pytest.mark.parametrize("shape", [1.0, 1.5])
def test_weibull_lifetimes_fail_at_the_configured_annual_rate(shape: float) -> None:
    """Of 20,000 new hosts with AFR 5%, the share failing in a year is in the 95% interval.

    The interval is the binomial one of n = 20,000 and p = 5%.
    """
    n, afr = 20_000, 0.05
    lifetimes = draw_lifetimes_s(np.random.default_rng(SEED), n, afr, shape)
    failed = int((lifetimes < SECONDS_PER_YEAR).sum())
    low, high = binom.interval(0.95, n, afr)
    assert low <= failed <= high


@pytest.mark.parametrize("shape", [0.7, 1.0, 1.5, 3.0])
def test_weibull_scale_gives_the_annual_failure_rate_exactly(shape: float) -> None:
    """The Weibull CDF with the computed scale equals the AFR at one year."""
    afr = 0.05
    scale = weibull_scale_s(afr, shape)
    assert 1.0 - math.exp(-((SECONDS_PER_YEAR / scale) ** shape)) == pytest.approx(afr, rel=1e-12)


def test_lifetimes_are_deterministic_per_seed_and_infinite_without_failures() -> None:
    """The same rng seed draws the same lifetimes, another seed others; AFR 0 never fails."""
    a = draw_lifetimes_s(np.random.default_rng(1), 100, 0.05, 1.2)
    b = draw_lifetimes_s(np.random.default_rng(1), 100, 0.05, 1.2)
    c = draw_lifetimes_s(np.random.default_rng(2), 100, 0.05, 1.2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.isinf(draw_lifetimes_s(np.random.default_rng(1), 10, 0.0, 1.2)).all()


def _lifetime_fleet(config: TwinConfig, shape: float) -> TwinConfig:
    return dataclasses.replace(
        config,
        faults=FaultRates(annual_failure_rate=0.05, weibull_shape=shape, hardware_lifetimes=True),
    )


def _fleet_year_failures(hosts: int, shape: float, tick_s: float) -> tuple[Twin, dict[int, float]]:
    config = make_config(
        "calm", hosts, tick_s=tick_s, telemetry_interval_s=tick_s, slo_window_s=tick_s,
        telemetry_buffer=4, customize=lambda c: _lifetime_fleet(c, shape),
    )
    twin = Twin(config, seed=SEED)
    twin.advance(SECONDS_PER_YEAR)
    records = [
        r for r in twin.events()
        if isinstance(r, FaultRecord) and r.kind == FaultKind.HOST_FAILURE.value
    ]
    failed = {int(r.target.split("-")[1]): r.t_s for r in records}
    assert len(failed) == len(records), "a host failed twice without repair"
    return twin, failed


@pytest.mark.parametrize("shape", [1.0, 1.5])
def test_twin_fleet_year_host_failures_match_the_annual_failure_rate(shape: float) -> None:
    """Through the twin, a fleet-year of host failures matches the annual failure rate.

    One-day tick: over one simulated year, the number of hosts of a 2,000-host fleet with a
    hardware failure lies in the binomial 95% interval of AFR 5%, and each failure happens at
    the end of that host's drawn lifetime.
    """
    hosts = 2000
    twin, failed = _fleet_year_failures(hosts, shape, 86400.0)
    low, high = binom.interval(0.95, hosts, 0.05)
    assert low <= len(failed) <= high
    assert set(np.flatnonzero(twin.state.host_hw_failed).tolist()) == set(failed)
    for host, t_s in failed.items():
        assert t_s == pytest.approx(twin.state.hw_fail_at_s[host])


@pytest.mark.slow
def test_twin_fleet_year_at_hourly_tick_matches_the_annual_failure_rate() -> None:
    """Through the twin at a one-hour tick, fleet-year failures match the annual failure rate.

    A 1,000-host fleet with Weibull shape 1.2 and AFR 5% has a number of failed hosts within
    the binomial 95% interval after a year.
    """
    hosts = 1000
    _, failed = _fleet_year_failures(hosts, 1.2, 3600.0)
    low, high = binom.interval(0.95, hosts, 0.05)
    assert low <= len(failed) <= high
