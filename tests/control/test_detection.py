"""Detection: streaming detectors on synthetic series, and every fault kind on the twin.

The twin runs second-level ticks, telemetry and probes (failure and success thresholds of 1)
on 40 hosts at its daily load peak. Each fault is struck 0.3 s after a control step, so a
detection "in the next step" takes 0.7 s and one a telemetry sample later 1.7 s.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
import pytest

from control.detection import (
    AnomalySpec,
    DetectionStage,
    EdgeLatch,
    EventDetector,
    MADDetector,
    ProbeDetector,
    ThresholdRule,
    TrendDetector,
    TrendRule,
    ZScoreDetector,
    alert_metric,
    default_detectors,
    entity_views,
)
from sim.actions import Action
from sim.config import ProbeSpec
from sim.events import ActionRecord, AlertRecord, FaultRecord, StateChange
from sim.faults import FaultKind, strike
from sim.scenarios import make_config
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation
from sim.twin import Twin
from sim.workload import WorkloadParams

HOSTS = 40
WARMUP_S = 900.0
SETTLE_S = 30.0
PROBES = ProbeSpec(interval_s=1.0, failure_threshold=1, success_threshold=1)
H = {name: j for j, name in enumerate(HOST_FEATURES)}
I = {name: j for j, name in enumerate(INSTANCE_FEATURES)}  # noqa: E741


def fine_twin(seed: int = 0, peak_hour: float | None = 0.5) -> Twin:
    """A calm 40-host twin with 1 s ticks, telemetry and probes.

    ``peak_hour`` 0.5 puts the daily load peak 30 minutes in (None: the default, 14:00, so
    the run starts in the night's trough).
    """
    workload = WorkloadParams() if peak_hour is None else WorkloadParams(peak_hour=peak_hour)
    config = make_config("calm", HOSTS, tick_s=1.0, telemetry_interval_s=1.0, probes=PROBES,
                         workload=workload)
    return Twin(config, seed=seed)


def run_steps(twin: Twin, stage: DetectionStage, duration_s: float) -> list[AlertRecord]:
    """Advance one second at a time, running the stage after each second."""
    alerts: list[AlertRecord] = []
    for _ in range(round(duration_s)):
        twin.advance(1.0)
        alerts += stage.step(twin)
    return alerts


@dataclass(frozen=True)
class Case:
    """One fault to inject: kind, strike target, time limits and the failure it announces."""

    kind: FaultKind
    target: int
    max_delay_s: float
    max_run_s: float = 120.0
    rng_seed: int = 99


CASES: dict[str, Case] = {
    "service_crash": Case(FaultKind.SERVICE_CRASH, 5, 1.0),
    "memory_leak": Case(FaultKind.MEMORY_LEAK, 5, 3600.0, 3600.0),
    "vm_failure": Case(FaultKind.VM_FAILURE, 5, 1.0),
    "host_failure": Case(FaultKind.HOST_FAILURE, 3, 1.0),
    "disk_degradation": Case(FaultKind.DISK_DEGRADATION, 3, 3600.0, 3600.0),
    "network_partition": Case(FaultKind.NETWORK_PARTITION, 1, 1.0),
    "link_degradation": Case(FaultKind.LINK_DEGRADATION, 22, 2.0),
    "uplink_degradation": Case(FaultKind.LINK_DEGRADATION, HOSTS + 1, 2.0),
    "load_surge": Case(FaultKind.LOAD_SURGE, 0, 60.0),
    "load_surge_warning": Case(FaultKind.LOAD_SURGE, 1, 4 * 3600.0, 4 * 3600.0),
    "noisy_neighbour": Case(FaultKind.NOISY_NEIGHBOUR, 22, 2.0),
    "fan_failure": Case(FaultKind.FAN_FAILURE, 3, 3600.0, 3600.0),
    "bad_config": Case(FaultKind.BAD_CONFIG, 1, 2.0),
    "security_vulnerability": Case(FaultKind.SECURITY_VULNERABILITY, 2, 1.0),
}
"""Targets: inst-5 (frontend, on host-22), host-3, tor-1, link-host-22, uplink-1, a surge
without and with its slow ramp, svc-frontend, svc-api. Delays: 1 s where a probe or an
operational event reports the fault, 2 s where it takes a telemetry sample, a minute for a
one-minute load ramp, an hour for faults with warning signs and four for a surge ramping over
hours (the tests also check that these warnings come before the failure)."""


@dataclass(frozen=True)
class FaultRun:
    """What one injected fault produced."""

    fault: FaultRecord
    alerts: tuple[AlertRecord, ...]
    first: AlertRecord | None
    obs: Observation
    saturated_s: float | None


@functools.cache
def _base() -> tuple[Twin, DetectionStage]:
    twin = fine_twin()
    stage = DetectionStage()
    alerts = run_steps(twin, stage, WARMUP_S)
    assert alerts == [], f"warm-up raised {alerts}"
    return twin, stage


def _saturated(obs: Observation) -> bool:
    """Some service's request-weighted p99 is past 1 s (the SLO is breached)."""
    return bool((entity_views(obs)["service"].values[:, 4] > 1.0).any())


@functools.cache
def run_fault(name: str) -> FaultRun:
    """Strike ``CASES[name]`` on a fork of the warmed twin; run until detected and settled.

    A warning surge runs on until the SLO is breached, to measure the warning's lead.
    """
    case = CASES[name]
    base, base_stage = _base()
    twin = base.fork(case.target + 1)
    stage = copy.deepcopy(base_stage)
    twin.advance(0.3)
    fid = strike(twin, case.kind, case.target, twin.rng_for("script", case.rng_seed))
    assert fid is not None
    fault = next(r for r in twin.events() if isinstance(r, FaultRecord) and r.fault_id == fid)
    affected = set(fault.affected)
    twin.advance(0.7)
    alerts = stage.step(twin)
    first: AlertRecord | None = None
    saturated_s: float | None = None
    stop_s = fault.t_s + case.max_run_s
    while True:
        if first is None:
            first = next((a for a in alerts if a.target in affected), None)
            if first is not None:
                stop_s = min(stop_s, twin.now_s + SETTLE_S)
        if name == "load_surge_warning":
            if saturated_s is None and _saturated(twin.observe()):
                saturated_s = twin.now_s
            stop_s = fault.t_s + case.max_run_s if saturated_s is None else twin.now_s
        if twin.now_s >= stop_s:
            break
        twin.advance(1.0)
        alerts += stage.step(twin)
    return FaultRun(fault, tuple(alerts), first, twin.observe(), saturated_s)


# --------------------------------------------------------------------------- synthetic
def synthetic_obs(t_s: float, host_cpu: np.ndarray) -> Observation:
    """An observation of hosts that are up with the given CPU and no instances."""
    n = host_cpu.shape[0]
    host = np.zeros((n, len(HOST_FEATURES)), dtype=np.float32)
    host[:, H["cpu_util"]] = host_cpu
    host[:, H["up"]] = 1.0
    host[:, H["fan_rpm"]] = 12000.0
    empty = np.zeros(0, dtype=np.int64)
    return Observation(
        t_s=t_s, host=host, inst=np.zeros((0, len(INSTANCE_FEATURES)), dtype=np.float32),
        inst_used=empty.astype(bool), inst_service=empty, inst_host=empty,
        inst_live=empty.astype(bool), inst_ready=empty.astype(bool), service_names=("svc",),
        host_rack=np.zeros(n, dtype=np.int64), call_edges=(),
    )


def feed(detector: ZScoreDetector | MADDetector | TrendDetector, series: np.ndarray,
         t0_s: float = 0.0) -> list[tuple[int, str]]:
    """Feed (samples, hosts) CPU values one sample per second; (sample, target) of detections."""
    out = []
    for k, row in enumerate(series):
        for d in detector.update(synthetic_obs(t0_s + k, row), []):
            out.append((k, d.target))
    return out


def noise(seed: int, n: int = 600, hosts: int = 8, level: float = 0.3,
          sigma: float = 0.02) -> np.ndarray:
    """Stationary Gaussian CPU noise, (samples, hosts)."""
    return level + sigma * np.random.default_rng(seed).standard_normal((n, hosts))


SPEC = AnomalySpec("host", "cpu_util", "up", min_std=0.01)


@pytest.mark.parametrize("make", [
    lambda: ZScoreDetector([SPEC], k=6.0, warmup_s=100.0),
    lambda: MADDetector([SPEC], window=200, k=6.0, min_samples=100),
], ids=["zscore", "mad"])
def test_anomaly_detector_silent_on_stationary_noise(make: object) -> None:
    """Gaussian noise with a standard deviation of 2 points raises nothing at k = 6."""
    detector = make()  # type: ignore[operator]
    assert feed(detector, noise(1, n=2000)) == []


@pytest.mark.parametrize("make", [
    lambda: ZScoreDetector([SPEC], k=6.0, warmup_s=100.0),
    lambda: MADDetector([SPEC], window=200, k=6.0, min_samples=100),
], ids=["zscore", "mad"])
def test_anomaly_detector_fires_once_on_a_step_in_the_step_it_happens(make: object) -> None:
    """A +0.3 step on one host fires at its first sample, on that host only, and only once."""
    detector = make()  # type: ignore[operator]
    series = noise(2)
    series[400:, 5] += 0.3
    assert feed(detector, series) == [(400, "host-5")]


def _with_instances(obs: Observation, inst_host: np.ndarray) -> Observation:
    """``obs`` with one placed instance per entry of ``inst_host`` (its host)."""
    n = inst_host.shape[0]
    return dataclasses.replace(
        obs, inst=np.zeros((n, len(INSTANCE_FEATURES)), dtype=np.float32),
        inst_used=np.ones(n, dtype=bool), inst_service=np.zeros(n, dtype=np.int64),
        inst_host=inst_host.astype(np.int64), inst_live=np.ones(n, dtype=bool),
        inst_ready=np.ones(n, dtype=bool),
    )


@pytest.mark.parametrize("make", [
    lambda: ZScoreDetector([SPEC], k=6.0, warmup_s=100.0),
    lambda: MADDetector([SPEC], window=200, k=6.0, min_samples=100),
], ids=["zscore", "mad"])
def test_a_host_s_load_step_from_a_new_placement_is_not_an_anomaly(make: object) -> None:
    """The same +0.3 step that fires on its own is silent when an instance lands on the host.

    A scale-out placing a replica on an idle host (or a migration, or a drain) steps the
    host's load by the controller's own doing; the host's statistics start over instead.
    A later step on that host, with no placement change, fires again once warmed up.
    """
    detector = make()  # type: ignore[operator]
    series = noise(2, n=1000)
    series[400:, 5] += 0.3
    series[900:, 5] += 0.3
    out = []
    for k, row in enumerate(series):
        placed = np.array([1, 2, 3] + ([5] if k >= 400 else []))
        for d in detector.update(_with_instances(synthetic_obs(float(k), row), placed), []):
            out.append((k, d.target))
    assert out == [(900, "host-5")]


@pytest.mark.parametrize("make", [
    lambda: ZScoreDetector([SPEC], k=6.0, warmup_s=100.0),
    lambda: MADDetector([SPEC], window=200, k=6.0, min_samples=100),
], ids=["zscore", "mad"])
def test_every_host_s_load_step_from_shedding_or_readmitting_load_is_not_an_anomaly(
    make: object,
) -> None:
    """A step on every host in the sample after load is let in again is silent.

    Stopping a load shed (or starting one) changes every host's load by the controller's
    own doing, as a placement does one host's: the hosts' statistics start over. The same
    step without that action fires on every host.
    """
    series = noise(2, n=700)
    series[400:, :] += 0.3
    for readmitted, expected in ((True, []), (False, [(400, f"host-{h}") for h in range(8)])):
        detector = make()  # type: ignore[operator]
        out = []
        for k, row in enumerate(series):
            events = [ActionRecord(k, float(k), 1, "stop_shedding", "cluster", "succeeded", "",
                                   0.0)] if readmitted and k == 400 else []
            for d in detector.update(synthetic_obs(float(k), row), events):
                out.append((k, d.target))
        assert sorted(out) == expected


@pytest.mark.parametrize("make", [
    lambda: ZScoreDetector([SPEC], k=6.0, warmup_s=100.0, rearm_s=10.0),
    lambda: MADDetector([SPEC], window=100, k=6.0, min_samples=50, rearm_s=10.0),
], ids=["zscore", "mad"])
def test_anomaly_detector_rearms_after_the_condition_clears(make: object) -> None:
    """Two separate spikes on one host are two detections; a spike during warm-up is none."""
    detector = make()  # type: ignore[operator]
    series = noise(3)
    series[[20, 300, 450], 2] += 0.5
    assert feed(detector, series) == [(300, "host-2"), (450, "host-2")]


def test_zscore_outliers_do_not_inflate_the_variance() -> None:
    """A sustained step keeps its detection latched while the scale stays near the noise's."""
    detector = ZScoreDetector([SPEC], k=6.0, warmup_s=100.0)
    series = noise(4)
    series[300:, 0] += 0.3
    assert feed(detector, series) == [(300, "host-0")]
    assert float(np.sqrt(detector._var[0])) < 0.05


def test_anomaly_detector_reset_forgets_statistics() -> None:
    """After reset the warm-up starts over, so the first samples cannot fire."""
    detector = ZScoreDetector([SPEC], k=6.0, warmup_s=100.0)
    feed(detector, noise(5, n=200))
    detector.reset()
    series = noise(6, n=50)
    series[10, 0] += 1.0
    assert feed(detector, series, t0_s=1000.0) == []


def test_mad_ignores_isolated_spikes_in_its_reference() -> None:
    """Spikes in 10% of the window leave the median and MAD alone: a later step still fires."""
    detector = MADDetector([SPEC], window=200, k=6.0, min_samples=100)
    series = noise(7)
    series[200:400:10, 1] += 1.0
    series[500:, 1] += 0.3
    hits = [k for k, target in feed(detector, series) if k >= 450]
    assert hits == [500]


def test_anomaly_spec_rejects_a_zero_scale_floor() -> None:
    """A spec with no scale floor is refused (a constant series would divide by zero)."""
    with pytest.raises(ValueError, match="floors"):
        AnomalySpec("host", "cpu_util")


def test_threshold_rule_rejects_unknown_features() -> None:
    """Rules name existing features of their entity kind."""
    with pytest.raises(ValueError, match="feature"):
        ThresholdRule("host", "mem_util", ">", 0.9)


def test_edge_latch_rearms_only_after_the_clear_time() -> None:
    """A condition that flaps inside ``rearm_s`` fires once; after a long clear, again."""
    latch = EdgeLatch(rearm_s=5.0)
    on, off = np.array([True]), np.array([False])
    fired = [bool(latch.update(c, t)[0]) for t, c in
             [(0, on), (1, off), (2, on), (3, off), (9, off), (10, on)]]
    assert fired == [True, False, False, False, False, True]


def _ramp_obs(t_s: float, mem: float) -> Observation:
    obs = synthetic_obs(t_s, np.array([0.3]))
    inst = np.zeros((1, len(INSTANCE_FEATURES)), dtype=np.float32)
    inst[0, I["mem_util"]] = mem
    inst[0, I["up"]] = inst[0, I["ready"]] = inst[0, I["vm_up"]] = 1.0
    one = np.array([True])
    zero = np.zeros(1, dtype=np.int64)
    return dataclasses.replace(obs, inst=inst, inst_used=one, inst_service=zero, inst_host=zero,
                               inst_live=one, inst_ready=one)


def test_trend_projects_a_linear_leak_to_its_limit() -> None:
    """Memory rising 0.5 points a minute from 0.3 is reported once, with the right time to 1.0.

    It fires as soon as the window holds ``min_samples`` samples (4.5 minutes here).
    """
    detector = TrendDetector([TrendRule("instance", "mem_util", 1.0, 12 * 3600.0)],
                             sample_interval_s=30.0, min_samples=10)
    slope = 0.005 / 60.0
    found = []
    for k in range(0, 1800, 10):
        found += [(k, d) for d in detector.update(_ramp_obs(float(k), 0.3 + slope * k), [])]
    assert len(found) == 1
    t, d = found[0]
    assert (d.target, d.source, t) == ("inst-0", "trend", 270)
    assert d.evidence["eta_s"] == pytest.approx((0.7 - slope * t) / slope, rel=1e-3)


def test_trend_ignores_a_step() -> None:
    """A 30% step (a load burst) tilts a fitted line but not both halves: nothing fires."""
    detector = TrendDetector([TrendRule("instance", "mem_util", 1.0, 12 * 3600.0)],
                             sample_interval_s=30.0, min_samples=10)
    found = []
    for k in range(0, 3600, 10):
        mem = 0.3 if k < 2000 else 0.6
        found += detector.update(_ramp_obs(float(k), mem), [])
    assert found == []


def _change(seq: int, t: float, target: str, state: str) -> StateChange:
    return StateChange(seq, t, target, state, None, "")


def test_event_detector_alerts_once_per_state_until_cleared() -> None:
    """Advisories, compromises and disk states alert once; a clearing state re-arms them."""
    det = EventDetector()
    obs = synthetic_obs(0.0, np.array([0.3]))
    events = [
        _change(0, 0.0, "svc-api", "vulnerable"), _change(1, 1.0, "svc-api", "vulnerable"),
        _change(2, 2.0, "inst-4", "compromised"), _change(3, 3.0, "host-1", "disk_degraded"),
        _change(4, 4.0, "inst-4", "rebuilt"), _change(5, 5.0, "inst-4", "compromised"),
        _change(6, 6.0, "inst-7", "down"),
    ]
    got = [(d.target, d.metric, d.severity) for d in det.update(obs, events)]
    # inst-4's first compromise is rebuilt within the batch: only the second is alerted.
    assert got == [
        ("svc-api", "vulnerable", "warning"), ("host-1", "disk_degraded", "warning"),
        ("inst-4", "compromised", "critical"),
    ]
    more = [_change(7, 7.0, "inst-4", "rebuilt"), _change(8, 8.0, "inst-4", "compromised")]
    assert [(d.target, d.metric) for d in det.update(obs, more)] == [("inst-4", "compromised")]


def test_event_detector_reading_history_skips_what_was_cleared_since() -> None:
    """A stage reading the log of a restarted controller does not alert on a patched CVE.

    Seen on the twin with the engine replaced every 10 minutes: an advisory patched three
    minutes before the restart was alerted again, and the service patched a second time.
    """
    det = EventDetector(max_age_s=600.0)
    obs = synthetic_obs(400.0, np.array([0.3]))
    history = [_change(0, 50.0, "svc-cache", "vulnerable"),
               _change(1, 290.0, "svc-cache", "patched"),
               _change(2, 300.0, "svc-api", "vulnerable")]
    assert [(d.target, d.metric) for d in det.update(obs, history)] == [("svc-api", "vulnerable")]


def test_event_detector_ignores_stale_history() -> None:
    """A stage attached mid-run does not alert on advisories older than ``max_age_s``."""
    det = EventDetector(max_age_s=600.0)
    obs = synthetic_obs(5000.0, np.array([0.3]))
    assert det.update(obs, [_change(0, 100.0, "svc-api", "vulnerable")]) == []


# --------------------------------------------------------------------------- on the twin
@pytest.mark.parametrize("peak_hour", [None, 0.5], ids=["night", "daily_peak"])
def test_calm_twin_raises_no_alert_in_an_hour(peak_hour: float | None) -> None:
    """With the default detectors a calm twin stays silent for a simulated hour.

    Documented limits that hold it silent: thresholds (:func:`default_threshold_rules`),
    z-score and MAD at k = 6 with their scale floors, trends only when both halves of the
    window agree, at night and through the daily peak with the workload's 1.3x bursts.
    """
    twin = fine_twin(seed=1, peak_hour=peak_hour)
    alerts = run_steps(twin, DetectionStage(), 3600.0)
    assert alerts == []


def test_stage_writes_alert_records_with_metric_first() -> None:
    """Alerts land in the plant's log in order, with increasing ids and the metric first."""
    twin = fine_twin()
    stage = DetectionStage()
    run_steps(twin, stage, 200.0)
    strike(twin, FaultKind.HOST_FAILURE, 3, twin.rng_for("script", 1))
    strike(twin, FaultKind.SERVICE_CRASH, 0, twin.rng_for("script", 2))
    written = stage.step(twin) + run_steps(twin, stage, 5.0)
    in_log = [r for r in twin.events() if isinstance(r, AlertRecord)]
    assert in_log == written
    assert [a.alert_id for a in written] == list(range(len(written)))
    assert [alert_metric(a) for a in written][:2] == ["up", "live"]
    assert all(twin.log[a.seq] is a for a in written)


def test_probe_alerts_are_edge_triggered() -> None:
    """A crashed instance is one alert however long it stays down; back up, it re-arms."""
    twin = fine_twin()
    stage = DetectionStage([ProbeDetector()])
    run_steps(twin, stage, 10.0)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 1))
    first = run_steps(twin, stage, 60.0)
    twin._bring_instance_up(5, "test")
    back = run_steps(twin, stage, 5.0)
    strike(twin, FaultKind.SERVICE_CRASH, 5, twin.rng_for("script", 2))
    again = run_steps(twin, stage, 5.0)
    assert [(a.target, alert_metric(a)) for a in first] == [("inst-5", "live")]
    assert back == []
    assert [(a.target, alert_metric(a)) for a in again] == [("inst-5", "live")]


def test_controller_actions_and_booting_replicas_are_not_alerted() -> None:
    """A restart the controller asked for, and a replica still booting, raise no alert."""
    twin = fine_twin()
    stage = DetectionStage([ProbeDetector()])
    run_steps(twin, stage, 10.0)
    assert twin.apply(Action("restart_instance", "inst-5")).accepted
    assert twin.apply(Action("scale_out", "svc-api")).accepted
    assert run_steps(twin, stage, 200.0) == []


def test_partition_is_one_switch_alert_not_one_per_instance() -> None:
    """Instances behind a failed switch are inhibited by the switch's alert."""
    twin = fine_twin()
    stage = DetectionStage([ProbeDetector()])
    run_steps(twin, stage, 10.0)
    strike(twin, FaultKind.NETWORK_PARTITION, 1, twin.rng_for("script", 1))
    alerts = stage.step(twin) + run_steps(twin, stage, 10.0)
    assert [(a.target, alert_metric(a)) for a in alerts] == [("tor-1", "reachable")]


def test_detection_is_deterministic() -> None:
    """Same seed, same alerts (and log digest); another seed, other evidence."""

    def alerts_of(seed: int) -> tuple[list[AlertRecord], str]:
        twin = fine_twin(seed)
        stage = DetectionStage(default_detectors())
        run_steps(twin, stage, 300.0)
        strike(twin, FaultKind.NOISY_NEIGHBOUR, 4, twin.rng_for("script", 1))
        strike(twin, FaultKind.LOAD_SURGE, 0, twin.rng_for("script", 2))
        alerts = run_steps(twin, stage, 120.0)
        return alerts, twin.log.digest()

    a, digest_a = alerts_of(3)
    b, digest_b = alerts_of(3)
    c, digest_c = alerts_of(4)
    assert a and a == b and digest_a == digest_b
    assert digest_c != digest_a and [x.evidence for x in c] != [x.evidence for x in a]


@pytest.mark.parametrize("name", list(CASES))
def test_every_fault_kind_is_detected_in_time(name: str) -> None:
    """Each fault raises an alert on an affected component within its case's delay."""
    run = run_fault(name)
    assert run.first is not None, f"{name}: no alert on {run.fault.affected[:3]}..."
    delay = run.first.t_s - run.fault.t_s
    assert delay <= CASES[name].max_delay_s, f"{name}: detected after {delay:.1f} s"


def test_every_fault_kind_has_a_case() -> None:
    """The cases cover every registered fault kind."""
    assert {c.kind for c in CASES.values()} == set(FaultKind)


def test_crash_detection_is_sub_second() -> None:
    """A crash 0.3 s into a 1 s control period is alerted on at the next step, 0.7 s later."""
    run = run_fault("service_crash")
    assert run.first is not None
    assert run.first.t_s - run.fault.t_s == pytest.approx(0.7)


def test_memory_leak_warning_comes_hours_before_the_oom_kill() -> None:
    """The trend alert on the leaking instance precedes its OOM kill by more than 2 hours."""
    run = run_fault("memory_leak")
    assert run.first is not None and run.first.source == "trend"
    oom_s = run.fault.t_s + run.fault.detail["hours_to_oom"] * 3600.0
    assert oom_s - run.first.t_s > 2 * 3600.0


def test_disk_wear_warning_comes_hours_before_degradation() -> None:
    """The disk-wear trend alert precedes the disk's degradation (80% wear) by over 2 hours."""
    run = run_fault("disk_degradation")
    assert run.first is not None and alert_metric(run.first) == "disk_wear"
    degraded_s = run.fault.t_s + 0.8 * run.fault.detail["hours_to_wear_out"] * 3600.0
    assert degraded_s - run.first.t_s > 2 * 3600.0


def test_fan_warning_comes_before_the_fan_is_at_70_percent() -> None:
    """The fan trend alert comes before the fan has lost 30% of its speed (the threshold)."""
    run = run_fault("fan_failure")
    assert run.first is not None and alert_metric(run.first) == "fan_rpm"
    # Fan health falls 0.9 over hours_to_stall; it is at 70% after a third of that.
    at_70_s = run.fault.t_s + (0.3 / 0.9) * run.fault.detail["hours_to_stall"] * 3600.0
    assert run.first.t_s < at_70_s


def test_load_growth_warning_comes_before_saturation() -> None:
    """A slowly ramping surge is reported by a utilisation trend before the SLO breaks.

    The breach is the first sample with some service's p99 past 1 s.
    """
    run = run_fault("load_surge_warning")
    assert run.first is not None and run.first.source == "trend"
    assert run.saturated_s is not None
    assert run.first.t_s < run.saturated_s
