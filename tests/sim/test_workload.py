"""Tests of the offered-load generator in sim.workload."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sim.errors import ConfigError
from sim.workload import Workload, WorkloadParams, load_rate_series

DATA = Path(__file__).resolve().parents[2] / "data"
AZURE = DATA / "traces" / "azure_llm_inference_2023"
AZURE_CONV = AZURE / "AzureLLMInferenceTrace_conv.csv"
AZURE_CODE = AZURE / "AzureLLMInferenceTrace_code.csv"
NYC_TAXI = DATA / "nab" / "realKnownCause" / "nyc_taxi.csv"
ELB = DATA / "nab" / "realAWSCloudwatch" / "elb_request_count_8c0756.csv"
DAY_S = 86_400.0

QUIET = WorkloadParams(noise_sigma=0.0, burst_rate_per_h=0.0)
FLAT = WorkloadParams(diurnal_amplitude=0.0, noise_sigma=0.0, burst_rate_per_h=0.0)


def series(workload: Workload, start_s: float, stop_s: float, dt_s: float) -> np.ndarray:
    times_s = start_s + dt_s * np.arange(round((stop_s - start_s) / dt_s))
    return np.array([workload.rate_rps(float(t_s), dt_s) for t_s in times_s])


def make(params: WorkloadParams, seed: int = 0, hosts: int = 10) -> Workload:
    return Workload(params, hosts, np.random.default_rng(seed))


def test_same_seed_gives_identical_series() -> None:
    """Two workloads built from the same seed produce the same rates, bit for bit."""
    first = series(make(WorkloadParams(burst_rate_per_h=4.0), seed=7), 0.0, DAY_S, 10.0)
    second = series(make(WorkloadParams(burst_rate_per_h=4.0), seed=7), 0.0, DAY_S, 10.0)
    assert np.array_equal(first, second)


def test_different_seeds_give_different_series() -> None:
    """Different seeds give different noise and burst realisations."""
    first = series(make(WorkloadParams(), seed=1), 0.0, DAY_S, 10.0)
    second = series(make(WorkloadParams(), seed=2), 0.0, DAY_S, 10.0)
    assert not np.allclose(first, second)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_default_daily_mean_is_at_least_20_rps_per_host(seed: int) -> None:
    """The default workload offers at least 20 requests/s per host averaged over a day."""
    hosts = 10
    rates = series(make(WorkloadParams(), seed=seed, hosts=hosts), 0.0, DAY_S, 10.0)
    assert rates.mean() / hosts >= 20.0


@pytest.mark.parametrize("peak_hour", [14.0, 3.5])
def test_diurnal_peak_and_trough(peak_hour: float) -> None:
    """Without noise or bursts the rate peaks at peak_hour at (1 + A) x base, troughs 12 h later."""
    params = WorkloadParams(peak_hour=peak_hour, noise_sigma=0.0, burst_rate_per_h=0.0)
    hosts = 4
    dt_s = 60.0
    rates = series(make(params, hosts=hosts), 0.0, DAY_S, dt_s)
    mid_h = (np.arange(rates.size) + 0.5) * dt_s / 3600.0
    base = params.base_rps_per_host * hosts
    assert abs(mid_h[np.argmax(rates)] - peak_hour) <= dt_s / 3600.0
    assert abs(mid_h[np.argmin(rates)] - (peak_hour + 12.0) % 24.0) <= dt_s / 3600.0
    assert rates.max() == pytest.approx(base * (1.0 + params.diurnal_amplitude), rel=1e-4)
    assert rates.mean() == pytest.approx(base, rel=1e-9)


def test_diurnal_tick_rate_is_the_exact_average_over_the_tick() -> None:
    """A long tick returns the integral of the cosine shape over the tick, not a point value."""
    params = WorkloadParams(diurnal_amplitude=0.8, noise_sigma=0.0, burst_rate_per_h=0.0)
    t_s, dt_s = 5_000.0, 7_200.0
    fine_s = np.linspace(t_s, t_s + dt_s, 200_001)
    shape = 1.0 + 0.8 * np.cos(2.0 * np.pi * (fine_s / 3600.0 - params.peak_hour) / 24.0)
    expected = params.base_rps_per_host * np.trapezoid(shape, fine_s) / dt_s
    assert make(params, hosts=1).rate_rps(t_s, dt_s) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("amplitude", "rel"), [(0.0, 1e-12), (0.4, 1e-6)])
def test_total_requests_do_not_depend_on_tick_size_without_noise(
    amplitude: float, rel: float
) -> None:
    """With noise off, requests offered over a day are the same at dt=1 s and dt=60 s.

    Each factor is an exact tick average and the burst schedule comes from its own stream, so
    only the noise depends on how time is cut into ticks. With the diurnal shape on, the tick
    rate is a product of averages, not the average of the product, which costs ~1e-7.
    """
    params = WorkloadParams(diurnal_amplitude=amplitude, noise_sigma=0.0, burst_rate_per_h=3.0)
    fine = series(make(params, seed=3), 0.0, DAY_S, 1.0).sum() * 1.0
    coarse = series(make(params, seed=3), 0.0, DAY_S, 60.0).sum() * 60.0
    assert coarse == pytest.approx(fine, rel=rel)


@pytest.mark.parametrize("dt_s", [1.0, 60.0])
def test_ou_noise_statistics_match_parameters_at_any_tick(dt_s: float) -> None:
    """The log-noise has std noise_sigma, lag-tau autocorrelation 1/e and mean factor 1."""
    sigma, tau_s = 0.2, 300.0
    params = WorkloadParams(
        diurnal_amplitude=0.0, noise_sigma=sigma, noise_tau_s=tau_s, burst_rate_per_h=0.0
    )
    hosts = 2
    factor = series(make(params, seed=11, hosts=hosts), 0.0, 3 * DAY_S, dt_s) / (
        params.base_rps_per_host * hosts
    )
    log_noise = np.log(factor)
    lag = round(tau_s / dt_s)
    centred = log_noise - log_noise.mean()
    autocorrelation = float(np.dot(centred[:-lag], centred[lag:]) / np.dot(centred, centred))
    assert log_noise.std() == pytest.approx(sigma, rel=0.12)
    assert autocorrelation == pytest.approx(math.exp(-1.0), abs=0.1)
    assert factor.mean() == pytest.approx(1.0, abs=0.03)


def test_bursts_raise_the_rate_by_the_multiplier() -> None:
    """Bursts lift the rate to burst_multiplier x base, for the Poisson-union share of time."""
    rate_per_h, duration_s, multiplier = 2.0, 600.0, 1.8
    params = WorkloadParams(
        diurnal_amplitude=0.0,
        noise_sigma=0.0,
        burst_rate_per_h=rate_per_h,
        burst_duration_s=duration_s,
        burst_multiplier=multiplier,
    )
    hosts = 3
    base = params.base_rps_per_host * hosts
    factor = series(make(params, seed=5, hosts=hosts), 0.0, 30 * DAY_S, 60.0) / base
    covered = 1.0 - math.exp(-rate_per_h * duration_s / 3600.0)
    assert factor.max() == pytest.approx(multiplier)
    assert factor.min() == pytest.approx(1.0)
    assert np.all((factor >= 1.0 - 1e-12) & (factor <= multiplier + 1e-12))
    burst_share = (factor - 1.0) / (multiplier - 1.0)
    assert burst_share.mean() == pytest.approx(covered, abs=0.02)


def test_surge_ramps_linearly_holds_and_ends() -> None:
    """A surge rises linearly over ramp_s, holds at the multiplier, then returns to base."""
    workload = make(FLAT, hosts=1)
    base = FLAT.base_rps_per_host
    workload.surge(3.0, start_s=1_000.0, ramp_s=600.0, hold_s=1_200.0)
    dt_s = 10.0
    rates = series(workload, 0.0, 4_000.0, dt_s)
    mid_s = (np.arange(rates.size) + 0.5) * dt_s
    expected = base * (1.0 + 2.0 * np.clip((mid_s - 1_000.0) / 600.0, 0.0, 1.0))
    expected[mid_s > 2_800.0] = base
    assert np.allclose(rates, expected, rtol=1e-12)


def test_surge_tick_straddling_a_knot_is_averaged_exactly() -> None:
    """A tick that straddles the ramp start and a zero-length ramp both average exactly."""
    workload = make(FLAT, hosts=1)
    workload.surge(2.0, start_s=100.0, ramp_s=100.0, hold_s=1_000.0)
    workload.surge(1.5, start_s=50.0, ramp_s=0.0, hold_s=1_000.0)
    straddle = workload.rate_rps(0.0, 200.0)
    ramp_mean = 1.0 + 1.0 * (0.5 * 100.0 * 1.0) / 200.0
    step_mean = 1.0 + 0.5 * 150.0 / 200.0
    assert straddle == pytest.approx(FLAT.base_rps_per_host * ramp_mean * step_mean)


def test_overlapping_surges_multiply_and_growth_persists() -> None:
    """Overlapping surges multiply; an infinite hold is permanent load growth."""
    workload = make(FLAT, hosts=1)
    base = FLAT.base_rps_per_host
    workload.surge(2.0, start_s=0.0, ramp_s=0.0, hold_s=1_000.0)
    workload.surge(1.5, start_s=500.0, ramp_s=100.0, hold_s=math.inf)
    assert workload.rate_rps(200.0, 10.0) == pytest.approx(base * 2.0)
    assert workload.rate_rps(700.0, 10.0) == pytest.approx(base * 3.0)
    assert workload.rate_rps(5_000.0, 10.0) == pytest.approx(base * 1.5)
    assert workload.rate_rps(50 * DAY_S, 10.0) == pytest.approx(base * 1.5)


def test_fork_continues_identically_and_leaves_parent_unaffected() -> None:
    """A fork replays the deterministic future exactly; running it does not move the parent."""
    params = WorkloadParams(noise_sigma=0.0, burst_rate_per_h=0.0)
    reference = make(params, seed=0)
    parent = make(params, seed=0)
    for workload in (reference, parent):
        workload.surge(1.7, start_s=3_600.0, ramp_s=1_800.0, hold_s=3_600.0)
        series(workload, 0.0, 3_000.0, 10.0)
    child = parent.fork(np.random.default_rng(99))
    child_rates = series(child, 3_000.0, DAY_S, 10.0)
    parent_rates = series(parent, 3_000.0, DAY_S, 10.0)
    assert np.array_equal(child_rates, parent_rates)
    assert np.array_equal(parent_rates, series(reference, 3_000.0, DAY_S, 10.0))


def test_fork_keeps_drawn_bursts_and_draws_new_noise() -> None:
    """A fork keeps the OU state and bursts already drawn, but its later noise is its own."""
    params = WorkloadParams(burst_rate_per_h=6.0)
    reference = make(params, seed=4)
    parent = make(params, seed=4)
    series(reference, 0.0, 7_200.0, 10.0)
    series(parent, 0.0, 7_200.0, 10.0)
    child = parent.fork(np.random.default_rng(1))
    first_child = child.rate_rps(7_200.0, 10.0)
    first_parent = parent.rate_rps(7_200.0, 10.0)
    later_child = series(child, 7_210.0, DAY_S, 10.0)
    later_parent = series(parent, 7_210.0, DAY_S, 10.0)
    assert first_child != first_parent
    assert first_child == pytest.approx(first_parent, rel=0.2)
    assert not np.allclose(later_child, later_parent)
    assert np.array_equal(later_parent, series(reference, 7_200.0, DAY_S, 10.0)[1:])


def test_rate_rps_rejects_time_going_backwards_and_bad_dt() -> None:
    """rate_rps refuses an earlier t_s and a non-positive dt_s with a clear message."""
    workload = make(WorkloadParams())
    workload.rate_rps(100.0, 1.0)
    with pytest.raises(ValueError, match="earlier"):
        workload.rate_rps(50.0, 1.0)
    with pytest.raises(ValueError, match="dt_s"):
        workload.rate_rps(200.0, 0.0)
    assert workload.rate_rps(100.0, 1.0) == workload.rate_rps(100.0, 1.0)


@pytest.mark.parametrize(
    ("path", "requests_per_s"),
    [(AZURE_CONV, 5.53), (AZURE_CODE, 2.57)],
)
def test_azure_arrival_trace_bins_to_its_request_rate(path: Path, requests_per_s: float) -> None:
    """The Azure request-arrival CSV becomes a non-negative per-minute rate of the right mean."""
    times_s, rate = load_rate_series(path, bin_s=60.0)
    assert times_s[0] == 0.0
    assert np.all(np.diff(times_s) == 60.0)
    assert np.all(rate >= 0.0)
    assert rate.mean() == pytest.approx(requests_per_s, rel=0.03)


@pytest.mark.parametrize("path", [NYC_TAXI, ELB])
def test_nab_value_series_loads_as_is(path: Path) -> None:
    """A NAB timestamp,value CSV loads its values unchanged against seconds from its start."""
    times_s, rate = load_rate_series(path)
    with open(path, encoding="utf-8") as handle:
        raw = np.array([float(line.split(",")[1]) for line in handle.readlines()[1:]])
    assert times_s[0] == 0.0
    assert np.all(np.diff(times_s) >= 0.0)
    assert np.all(rate > 0.0)
    assert np.array_equal(rate, raw)


@pytest.mark.parametrize(
    ("path", "time_scale"),
    [(AZURE_CONV, 24.0), (AZURE_CODE, 1.0), (NYC_TAXI, 1.0), (ELB, 1.0)],
)
def test_trace_replay_has_the_base_rate_as_mean(path: Path, time_scale: float) -> None:
    """Replaying a trace with trace_scale="mean" gives a positive loop whose mean is the base."""
    params = WorkloadParams(
        trace=str(path), trace_time_scale=time_scale, burst_rate_per_h=0.0
    )
    hosts = 4
    workload = make(params, hosts=hosts)
    times_s, _ = load_rate_series(path)
    step_s = float(np.median(np.diff(times_s))) * time_scale
    period_s = (round(times_s[-1] / (step_s / time_scale)) + 1) * step_s
    rates = series(workload, 0.0, period_s, step_s / 2.0)
    assert rates.min() >= 0.0
    assert rates.max() > rates.min()
    assert rates.mean() == pytest.approx(params.base_rps_per_host * hosts, rel=1e-6)
    assert workload.rate_rps(period_s, 1.0) == pytest.approx(
        make(params, hosts=hosts).rate_rps(0.0, 1.0), rel=1e-9
    )


def test_trace_absolute_scale_replays_values() -> None:
    """trace_scale="absolute" replays the series' own requests/s for the whole cluster."""
    params = WorkloadParams(trace=str(AZURE_CONV), trace_scale="absolute", burst_rate_per_h=0.0)
    workload = make(params, hosts=50)
    _, rate = load_rate_series(AZURE_CONV)
    assert workload.rate_rps(0.0, 60.0) == pytest.approx(0.5 * (rate[0] + rate[1]))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_rps_per_host": -1.0}, "base_rps_per_host"),
        ({"diurnal_amplitude": 1.5}, "diurnal_amplitude"),
        ({"peak_hour": 24.0}, "peak_hour"),
        ({"noise_sigma": math.nan}, "noise_sigma"),
        ({"noise_tau_s": 0.0}, "noise_tau_s"),
        ({"burst_multiplier": -2.0}, "burst_multiplier"),
        ({"trace_scale": "median"}, "trace_scale"),
        ({"base_rps_per_host": True}, "base_rps_per_host"),
    ],
)
def test_bad_params_raise_config_error_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    """Out-of-range parameters raise ConfigError whose message names the field."""
    with pytest.raises(ConfigError, match=field) as info:
        WorkloadParams(**kwargs)  # type: ignore[arg-type]
    assert field in str(info.value)


def test_missing_trace_file_raises_config_error_naming_trace(tmp_path: Path) -> None:
    """A trace path that does not exist fails when the workload is built, naming the field."""
    missing = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match=r"WorkloadParams\.trace") as info:
        make(WorkloadParams(trace=str(missing)))
    assert "nope.csv" in str(info.value)


@pytest.mark.parametrize(
    ("content", "kwargs", "fragment"),
    [
        ("", {}, "empty"),
        ("timestamp,value\n", {}, "no data rows"),
        ("timestamp,value\n2014-07-01 00:00:00,1\nyesterday,2\n", {}, "'yesterday'"),
        ("timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:05:00,abc\n", {}, "'abc'"),
        ("timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:05:00,-3\n", {}, ">= 0"),
        ("when,value\n2014-07-01 00:00:00,1\n", {}, "no time column"),
        ("timestamp,value\n2014-07-01 00:00:00,1\n", {"value_column": "load"}, "'load'"),
        ("timestamp,value\n2014-07-01 00:00:00,1\n2014-07-01 00:00:00,2\n", {}, "spans no"),
        ("TIMESTAMP,Tokens\n2014-07-01 00:00:00,1\n2014-07-01 00:00:10,1\n", {}, "one bin"),
    ],
)
def test_bad_csv_content_raises_config_error(
    tmp_path: Path, content: str, kwargs: dict[str, str], fragment: str
) -> None:
    """Malformed trace CSVs raise ConfigError that names the problem, row or column."""
    path = tmp_path / "trace.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_rate_series(path, **kwargs)
    assert fragment in str(info.value)


def test_numeric_time_column_and_explicit_columns(tmp_path: Path) -> None:
    """A seconds-valued time column and explicitly named columns are read as given."""
    path = tmp_path / "trace.csv"
    path.write_text("t_s,load,other\n0,2,z\n10,4,x\n20,6,y\n", encoding="utf-8")
    times_s, rate = load_rate_series(path, time_column="T_S", value_column="load")
    assert np.array_equal(times_s, [0.0, 10.0, 20.0])
    assert np.array_equal(rate, [2.0, 4.0, 6.0])


@pytest.mark.parametrize("hosts", [0, -3, 2.5, True])
def test_bad_hosts_raise_config_error(hosts: object) -> None:
    """A host count that is not a positive integer raises ConfigError naming hosts."""
    with pytest.raises(ConfigError) as info:
        Workload(WorkloadParams(), hosts, np.random.default_rng(0))  # type: ignore[arg-type]
    assert "hosts" in str(info.value)


def test_bad_surge_raises_config_error() -> None:
    """A surge with a non-positive multiplier or a negative ramp raises ConfigError."""
    workload = make(WorkloadParams())
    with pytest.raises(ConfigError, match="multiplier"):
        workload.surge(0.0, start_s=0.0, ramp_s=10.0, hold_s=10.0)
    with pytest.raises(ConfigError, match="ramp_s"):
        workload.surge(2.0, start_s=0.0, ramp_s=-1.0, hold_s=10.0)
    assert workload.rate_rps(0.0, 1.0) > 0.0
