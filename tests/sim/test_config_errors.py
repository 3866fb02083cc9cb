"""Configuration errors name their field; the command line reports them in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sim.config import (
    AppSpec,
    DeploySpec,
    FaultRates,
    HostSpec,
    ProbeSpec,
    RequestClass,
    ScriptedFault,
    ServiceSpec,
    TopologySpec,
    TwinConfig,
)
from sim.errors import ConfigError
from sim.scenarios import SCENARIOS, make_config
from sim.twin import Twin
from sim.workload import WorkloadParams

REPO_ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {
    "scenario", "hosts", "seed", "simulated_seconds", "wall_seconds", "sim_s_per_wall_s",
    "faults", "actions", "events", "digest",
}


def _build(config: TwinConfig) -> Twin:
    return Twin(config, seed=0)


def _classes(*classes: RequestClass) -> AppSpec:
    return AppSpec(classes=classes)


def _big_app_on_one_host() -> Twin:
    return _build(make_config("calm", 1))


def _tiny_hosts() -> Twin:
    return _build(TwinConfig(topology=TopologySpec(hosts=20, host=HostSpec(cores=2))))


CASES: list[tuple[str, Callable[[], object], str]] = [
    ("unknown scenario", lambda: make_config("earthquake", 20), "unknown scenario"),
    ("zero hosts", lambda: make_config("calm", 0), "hosts"),
    ("negative hosts", lambda: make_config("calm", -3), "hosts"),
    ("boolean hosts", lambda: make_config("calm", True), "hosts"),  # type: ignore[arg-type]
    ("negative topology hosts", lambda: TopologySpec(hosts=-5), "topology.hosts"),
    ("negative hosts_per_rack", lambda: TopologySpec(hosts_per_rack=-1),
     "topology.hosts_per_rack"),
    ("zero spines", lambda: TopologySpec(spines=0), "topology.spines"),
    ("idle_w >= busy_w", lambda: HostSpec(idle_w=500.0, busy_w=450.0), "host.idle_w"),
    ("throttle_c >= shutdown_c", lambda: HostSpec(throttle_c=95.0, shutdown_c=95.0),
     "host.throttle_c"),
    ("NaN cores", lambda: HostSpec(cores=float("nan")), "host.cores"),  # type: ignore[arg-type]
    ("unknown power model", lambda: HostSpec(power_model="cubic"), "host.power_model"),
    ("impossible placement: big app on one host", _big_app_on_one_host,
     "impossible placement"),
    ("impossible placement: two-core hosts", _tiny_hosts, "impossible placement"),
    ("unknown service in a path",
     lambda: _classes(RequestClass("browse", 1.0, ("gateway", "payments"), 0.5)),
     "request_class['browse'].path"),
    ("empty path", lambda: RequestClass("browse", 1.0, (), 0.5), "request_class['browse'].path"),
    ("shares not summing to 1",
     lambda: _classes(RequestClass("a", 0.5, ("gateway",), 0.5),
                      RequestClass("b", 0.2, ("gateway",), 0.5)),
     "shares must sum to 1"),
    ("duplicate service names",
     lambda: AppSpec(services=(ServiceSpec("api", 0.01), ServiceSpec("api", 0.02))),
     "duplicate"),
    ("bad service name", lambda: ServiceSpec("my-api", 0.01), "service name"),
    ("base memory above limit",
     lambda: ServiceSpec("api", 0.01, mem_base_bytes=2**33, mem_limit_bytes=2**32),
     "mem_base_bytes"),
    ("zero workers", lambda: ServiceSpec("api", 0.01, workers=0), "workers"),
    ("negative server cap", lambda: ServiceSpec("api", 0.01, max_servers=-1), "max_servers"),
    ("fractional server cap", lambda: ServiceSpec("api", 0.01, max_servers=2.5), "max_servers"),
    ("target_peak_util of 1", lambda: AppSpec(target_peak_util=1.0), "app.target_peak_util"),
    ("unknown fault kind", lambda: FaultRates((("meteor_strike", 1.0),)),
     "unknown fault kind 'meteor_strike'"),
    ("negative fault rate", lambda: FaultRates((("vm_failure", -1.0),)), "vm_failure"),
    ("AFR of 1", lambda: FaultRates(annual_failure_rate=1.0), "faults.annual_failure_rate"),
    ("zero Weibull shape", lambda: FaultRates(weibull_shape=0.0), "faults.weibull_shape"),
    ("unknown scripted fault", lambda: ScriptedFault(10.0, "meteor_strike"), "scripted_fault"),
    ("scripted fault in the past", lambda: ScriptedFault(-1.0, "vm_failure"),
     "scripted_fault.at_s"),
    ("zero tick_s", lambda: TwinConfig(tick_s=0.0), "twin.tick_s"),
    ("negative tick_s override", lambda: make_config("calm", 20, tick_s=-10.0), "twin.tick_s"),
    ("infinite tick_s", lambda: TwinConfig(tick_s=float("inf")), "twin.tick_s"),
    ("telemetry faster than the tick", lambda: TwinConfig(tick_s=30.0, telemetry_interval_s=10.0),
     "twin.telemetry_interval_s"),
    ("zero telemetry buffer", lambda: TwinConfig(telemetry_buffer=0), "twin.telemetry_buffer"),
    ("unknown twin setting", lambda: make_config("calm", 20, tick=5.0), "unknown twin settings"),
    ("zero probe failure threshold", lambda: ProbeSpec(failure_threshold=0),
     "probes.failure_threshold"),
    ("negative base load", lambda: WorkloadParams(base_rps_per_host=-1.0),
     "WorkloadParams.base_rps_per_host"),
    ("diurnal amplitude above 1", lambda: WorkloadParams(diurnal_amplitude=1.5),
     "WorkloadParams.diurnal_amplitude"),
    ("peak hour of 24", lambda: WorkloadParams(peak_hour=24.0), "WorkloadParams.peak_hour"),
    ("zero burst duration", lambda: WorkloadParams(burst_duration_s=0.0),
     "WorkloadParams.burst_duration_s"),
    ("negative seed", lambda: Twin(make_config("calm", 20), seed=-1), "seed"),
    ("negative canary share", lambda: DeploySpec(canary_share=-0.1), "deploys.canary_share"),
    ("canary on every replica", lambda: DeploySpec(canary_share=1.0), "deploys.canary_share"),
    ("zero canary bake", lambda: DeploySpec(canary_bake_s=0.0), "deploys.canary_bake_s"),
]


@pytest.mark.parametrize(("build", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_raises_config_error_naming_the_field(
    build: Callable[[], object], field: str
) -> None:
    """A bad setting raises ConfigError whose one-line message names the offending field."""
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert field in message
    assert "\n" not in message


def test_config_error_is_a_value_error() -> None:
    """ConfigError is a ValueError, so generic callers can catch it."""
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_builds_a_valid_config(name: str) -> None:
    """Every registered scenario gives a config that builds a twin of the requested size."""
    config = make_config(name, 25)
    twin = Twin(config, seed=0)
    assert twin.topo.n_hosts == 25
    assert config.faults == SCENARIOS[name].faults


def test_configs_are_frozen() -> None:
    """Config sections are immutable."""
    config = make_config("calm", 20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tick_s = 1.0  # type: ignore[misc]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def _summary(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def test_cli_run_prints_a_json_summary_as_its_last_line() -> None:
    """`python -m sim run` prints one JSON object with the run's headline figures."""
    proc = _cli("run", "--scenario", "service_crash", "--hosts", "20", "--hours", "2",
                "--seed", "4")
    result = _summary(proc)
    assert set(result) >= SUMMARY_KEYS
    assert result["scenario"] == "service_crash"
    assert result["hosts"] == 20
    assert result["seed"] == 4
    assert result["simulated_seconds"] == 7200.0
    assert isinstance(result["digest"], str)
    assert len(result["digest"]) == 64
    assert isinstance(result["events"], int)
    assert result["events"] > 0
    assert isinstance(result["sim_s_per_wall_s"], float | int)
    assert result["sim_s_per_wall_s"] > 0


def test_cli_same_seed_prints_the_same_digest_as_the_library() -> None:
    """The same seed through the CLI twice prints the same digest, equal to the library's."""
    args = ("run", "--scenario", "mixed", "--hosts", "20", "--hours", "1", "--seed", "9")
    a, b = _summary(_cli(*args)), _summary(_cli(*args))
    assert a["digest"] == b["digest"]
    twin = Twin(make_config("mixed", 20, tick_s=10.0, telemetry_interval_s=10.0), seed=9)
    twin.advance(3600.0)
    assert a["digest"] == twin.summary()["digest"]


def test_cli_lists_scenarios() -> None:
    """`python -m sim scenarios` prints every registered scenario as JSON."""
    result = _summary(_cli("scenarios"))
    assert set(result) == set(SCENARIOS)


def test_cli_writes_the_event_log(tmp_path: Path) -> None:
    """--events-out writes the event log as JSON Lines whose digest is the summary's."""
    out = tmp_path / "events.jsonl"
    result = _summary(_cli("run", "--scenario", "calm", "--hosts", "20", "--hours", "0.5",
                           "--events-out", str(out)))
    lines = out.read_text().splitlines()
    assert len(lines) == result["events"]
    assert all(json.loads(line)["type"] for line in lines)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == result["digest"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--scenario", "earthquake"), "unknown scenario"),
        (("--hosts", "0"), "hosts"),
        (("--hours", "-1"), "--hours"),
        (("--hours", "inf"), "hours"),
        (("--seed", "-1"), "--seed"),
        (("--tick-s", "0"), "tick_s"),
        (("--hosts", "1"), "impossible placement"),
    ],
    ids=["bad scenario", "zero hosts", "negative hours", "infinite hours", "negative seed",
         "zero tick", "one host"],
)
def test_cli_config_error_exits_2_with_one_line(args: tuple[str, ...], field: str) -> None:
    """A bad argument exits with status 2 and one 'error: ...' line naming it, no traceback."""
    base = {"--scenario": "calm", "--hosts": "20", "--hours": "0.1"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    proc = _cli("run", *[x for kv in base.items() for x in kv])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert field in lines[0]
    assert proc.stdout == ""


def test_cli_replays_a_vendored_trace_and_rejects_a_missing_one() -> None:
    """--trace replays a CSV as the load shape (changing the run); a missing file is one error."""
    base = _summary(_cli("run", "--scenario", "calm", "--hosts", "20", "--hours", "1"))
    trace = "data/nab/realKnownCause/nyc_taxi.csv"
    replay = _summary(
        _cli("run", "--scenario", "calm", "--hosts", "20", "--hours", "1", "--trace", trace)
    )
    assert replay["digest"] != base["digest"] and replay["requests"] != base["requests"]
    bad = _cli("run", "--scenario", "calm", "--hours", "1", "--trace", "no/such.csv")
    assert bad.returncode == 2
    assert "trace" in bad.stderr and "Traceback" not in bad.stderr
