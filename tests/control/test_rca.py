"""Root-cause analysis: alert correlation, ranking rules, and every fault kind end to end."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from control.detection import DetectionStage
from control.rca import (
    AlertGroup,
    Candidate,
    correlate,
    rank_root_causes,
    second_problem,
)
from sim.events import AlertRecord, FaultRecord
from sim.faults import FaultKind, strike
from sim.scenarios import make_config
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation
from sim.twin import Twin
from tests.control.test_detection import CASES, fine_twin, run_fault

H = {name: j for j, name in enumerate(HOST_FEATURES)}
I = {name: j for j, name in enumerate(INSTANCE_FEATURES)}  # noqa: E741


@pytest.fixture(scope="module")
def obs() -> Observation:
    """A calm 40-host twin's observation (two racks of 20 hosts)."""
    twin = fine_twin()
    twin.advance(5.0)
    return twin.observe()


def alert(
    i: int, t: float, target: str, metric: str, value: float = 0.0, source: str = "threshold",
    **extra: float,
) -> AlertRecord:
    """An alert with id and sequence number ``i``."""
    return AlertRecord(i, t, i, source, target, "critical", {metric: value, **extra})


def instance_on(obs: Observation, service: str, index: int = 0) -> tuple[int, int]:
    """(instance, host) of the ``index``-th instance of a service."""
    members = np.flatnonzero(obs.inst_used & (obs.inst_service
                                              == obs.service_names.index(service)))
    i = int(members[index])
    return i, int(obs.inst_host[i])


def with_inst(obs: Observation, rows: np.ndarray | list[int], feature: str,
              value: float) -> Observation:
    """A copy of ``obs`` with one instance feature set on some rows."""
    inst = obs.inst.copy()
    inst[rows, I[feature]] = value
    return dataclasses.replace(obs, inst=inst)


def with_host(obs: Observation, host: int, **values: float) -> Observation:
    """A copy of ``obs`` with host features set on one host."""
    arr = obs.host.copy()
    for feature, value in values.items():
        arr[host, H[feature]] = value
    return dataclasses.replace(obs, host=arr)


def labels(cands: list[Candidate]) -> list[str]:
    """``component:fault_class`` of each candidate, best first."""
    return [c.label for c in cands]


# --------------------------------------------------------------------------- correlate
def test_alerts_on_an_instance_and_its_host_form_one_group(obs: Observation) -> None:
    """An instance alert and its host's alert are one incident; a far host's is another."""
    i, h = instance_on(obs, "frontend")
    far = next(x for x in range(40) if obs.host_rack[x] != obs.host_rack[h])
    alerts = [alert(0, 10.0, f"host-{h}", "cpu_util", 1.0), alert(1, 11.0, f"inst-{i}",
              "p99_latency_s", 2.0), alert(2, 12.0, f"host-{far}", "temp_c", 80.0)]
    groups = correlate(alerts, [], obs=obs)
    assert [g.alert_ids for g in groups] == [(0, 1), (2,)]
    assert groups[0].components == {f"host-{h}", f"inst-{i}"}


def test_correlation_deduplicates_and_keeps_group_ids(obs: Observation) -> None:
    """Feeding the same alerts again changes nothing; later alerts extend the open group."""
    i, _ = instance_on(obs, "api")
    first = [alert(0, 10.0, f"inst-{i}", "live", source="probe")]
    groups = correlate(first, [], obs=obs)
    again = correlate(first, groups, obs=obs)
    more = correlate([alert(1, 50.0, f"svc-{obs.service_names[obs.inst_service[i]]}",
                            "ready_share", 0.5)], again, obs=obs)
    assert again == groups
    assert [(g.group_id, g.alert_ids, g.first_t_s, g.last_t_s) for g in more] == [
        (0, (0, 1), 10.0, 50.0)]


def test_a_group_closes_after_its_window(obs: Observation) -> None:
    """An alert more than ``window_s`` after the group's latest one starts a new group."""
    i, _ = instance_on(obs, "api")
    alerts = [alert(0, 10.0, f"inst-{i}", "error_rate", 0.2),
              alert(1, 200.0, f"inst-{i}", "error_rate", 0.2)]
    groups = correlate(alerts, [], obs=obs, window_s=120.0)
    assert [g.alert_ids for g in groups] == [(0,), (1,)]
    assert not groups[0].is_open(200.0, 120.0) and groups[1].is_open(200.0, 120.0)


def test_services_on_a_call_edge_correlate(obs: Observation) -> None:
    """Alerts on a caller and its callee join; a service with no edge to either does not."""
    alerts = [alert(0, 1.0, "svc-api", "error_rate", 0.1),
              alert(1, 2.0, "svc-database", "error_rate", 0.1),
              alert(2, 3.0, "svc-cache", "error_rate", 0.1),
              alert(3, 4.0, "svc-gateway", "error_rate", 0.1)]
    groups = correlate(alerts, [], obs=obs)
    assert [g.alert_ids for g in groups] == [(0, 1, 2), (3,)]


def test_a_failure_does_not_join_symptoms_that_preceded_it(obs: Observation) -> None:
    """A switch failing a minute after a latency alert is its own incident.

    Within the lead time the group takes it.
    """
    symptoms = [alert(0, 100.0, "svc-frontend", "latency_s", 0.5)]
    late = [alert(1, 160.0, "tor-1", "reachable", source="probe")]
    prompt = [alert(1, 102.0, "tor-1", "reachable", source="probe")]
    assert [g.alert_ids for g in correlate(symptoms + late, [], obs=obs)] == [(0,), (1,)]
    assert [g.alert_ids for g in correlate(symptoms + prompt, [], obs=obs)] == [(0, 1)]


def test_same_instant_alerts_gather_under_the_widest_component(obs: Observation) -> None:
    """A switch alert gathers the instance and service alerts of the same instant."""
    i, h = instance_on(obs, "frontend")
    rack = int(obs.host_rack[h])
    other = next(x for x in range(40) if obs.host_rack[x] == rack and x != h)
    alerts = [alert(0, 5.0, f"inst-{i}", "p99_latency_s", 2.0),
              alert(1, 5.0, f"host-{other}", "link_loss", 0.1),
              alert(2, 5.0, "svc-frontend", "error_rate", 0.1),
              alert(3, 5.0, f"tor-{rack}", "reachable", source="probe")]
    groups = correlate(alerts, [], obs=obs)
    assert len(groups) == 1 and set(groups[0].alert_ids) == {0, 1, 2, 3}


def test_group_members_resolve_ids(obs: Observation) -> None:
    """``members`` returns the group's alerts from a mapping or a list, in group order."""
    alerts = [alert(0, 1.0, "svc-api", "error_rate"), alert(1, 2.0, "svc-api", "p99_latency_s")]
    group = correlate(alerts, [], obs=obs)[0]
    assert isinstance(group, AlertGroup)
    assert group.members(alerts) == alerts == group.members({a.alert_id: a for a in alerts})


# --------------------------------------------------------------------------- ranking rules
def test_ranking_is_normalised_with_alternatives(obs: Observation) -> None:
    """Confidences lie in [0, 1] and sum to 1; at least three candidates, best first."""
    i, _ = instance_on(obs, "api")
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "live", source="probe")],
                             with_inst(obs, [i], "up", 0.0))
    conf = [c.confidence for c in cands]
    assert len(cands) >= 3 and conf == sorted(conf, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in conf) and sum(conf) == pytest.approx(1.0)
    assert cands[0].evidence[0] == 0


def test_no_alerts_no_candidates(obs: Observation) -> None:
    """An empty group has no root cause."""
    assert rank_root_causes([], obs) == []


@pytest.mark.parametrize(("mem_util", "vm_up", "expected"), [
    (0.25, 1.0, "service_crash"), (1.0, 1.0, "memory_leak"), (0.25, 0.0, "vm_failure"),
])
def test_a_stopped_instance_is_told_apart_by_vm_and_memory(
    obs: Observation, mem_util: float, vm_up: float, expected: str
) -> None:
    """Process down with its VM up is a crash, at its memory limit a leak; VM down, a VM."""
    i, _ = instance_on(obs, "cache")
    seen = with_inst(with_inst(with_inst(obs, [i], "up", 0.0), [i], "mem_util", mem_util),
                     [i], "vm_up", vm_up)
    seen = dataclasses.replace(seen, inst_live=np.where(np.arange(seen.inst_live.size) == i,
                                                        False, seen.inst_live))
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "live", source="probe")], seen)
    assert cands[0].label == f"inst-{i}:{expected}"


def test_a_stop_reported_before_the_next_sample_is_an_uncertain_crash(obs: Observation) -> None:
    """A stop the observation does not show yet is a crash, less certain, then a VM failure.

    The VM's state is only sampled at the next telemetry tick.
    """
    i, _ = instance_on(obs, "cache")
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "live", source="probe")], obs)
    assert labels(cands)[:2] == [f"inst-{i}:service_crash", f"inst-{i}:vm_failure"]
    assert 0.5 < cands[0].confidence < 0.8


@pytest.mark.parametrize(("extra", "host_values", "expected"), [
    ([], {}, "host_failure"),
    ([("disk_failed", "event")], {}, "disk_degradation"),
    ([], {"fan_rpm": 1000.0}, "fan_failure"),
])
def test_a_host_down_is_told_apart_by_disk_and_fans(
    obs: Observation, extra: list[tuple[str, str]], host_values: dict[str, float],
    expected: str,
) -> None:
    """Host down: a failed disk says disk, stalled fans say fan, neither says hardware."""
    seen = with_host(obs, 7, up=0.0, **host_values)
    alerts = [alert(0, 1.0, "host-7", "up", source="probe")]
    alerts += [alert(k + 1, 1.0, "host-7", m, 1.0, source=src) for k, (m, src) in
               enumerate(extra)]
    assert rank_root_causes(alerts, seen)[0].label == f"host-7:{expected}"


def test_errors_on_two_services_blame_the_deepest_callee(obs: Observation) -> None:
    """Errors on every instance of api and of its callee database point at database."""
    rows = np.flatnonzero(obs.inst_used & np.isin(
        obs.inst_service, [obs.service_names.index("api"), obs.service_names.index("database")]))
    seen = with_inst(obs, rows, "error_rate", 0.2)
    alerts = [alert(0, 1.0, "svc-api", "error_rate", 0.2),
              alert(1, 1.0, "svc-database", "error_rate", 0.2)]
    cands = rank_root_causes(alerts, seen)
    assert labels(cands)[:2] == ["svc-database:bad_config", "svc-api:bad_config"]
    assert any("callee" in str(e) for e in cands[1].evidence)


def test_errors_confined_to_a_rack_blame_its_uplink(obs: Observation) -> None:
    """Every instance of rack 1 failing 2% of requests, no host link loss: uplink-1."""
    rows = np.flatnonzero(obs.inst_used & (obs.host_rack[obs.inst_host] == 1))
    seen = with_inst(obs, rows, "error_rate", 0.02)
    cands = rank_root_causes([alert(0, 1.0, f"inst-{rows[0]}", "error_rate", 0.02,
                                    source="mad")], seen)
    assert cands[0].label == "uplink-1:link_degradation"


def test_one_busy_host_is_a_noisy_neighbour_many_are_load(obs: Observation) -> None:
    """CPU alerts on one host far above the rest mean a neighbour; on many hosts, load."""
    one = rank_root_causes([alert(0, 1.0, "host-9", "cpu_util", 0.95, source="zscore")],
                           with_host(obs, 9, cpu_util=0.95))
    many = [alert(k, 1.0, f"host-{k}", "cpu_util", 0.8, source="zscore") for k in range(6)]
    assert one[0].label == "host-9:noisy_neighbour"
    assert rank_root_causes(many, obs)[0].label == "cluster:load_surge"


def test_ranking_is_deterministic(obs: Observation) -> None:
    """The same alerts and observation give the same ranking."""
    alerts = [alert(k, 1.0, f"host-{k}", "temp_c", 80.0) for k in range(4)]
    assert rank_root_causes(alerts, obs) == rank_root_causes(list(alerts), obs)


# --------------------------------------------------------------------------- end to end
def rank_of_truth(name: str) -> tuple[int | None, list[Candidate]]:
    """Rank of the true cause in the group holding the fault's first attributed alert."""
    run = run_fault(name)
    assert run.first is not None, f"{name} was not detected"
    groups = correlate(run.alerts, [], obs=run.obs)
    group = next(g for g in groups if run.first.alert_id in g.alert_ids)
    cands = rank_root_causes(group.members(run.alerts), run.obs)
    truth = f"{run.fault.target}:{run.fault.kind}"
    found = labels(cands)
    return (found.index(truth) + 1 if truth in found else None), cands


@pytest.mark.parametrize("name", list(CASES))
def test_every_fault_kind_is_ranked_first(name: str) -> None:
    """The true (component, fault kind) tops the ranking of the fault's incident group."""
    rank, cands = rank_of_truth(name)
    assert rank == 1, f"{name}: {[(c.label, round(c.confidence, 2)) for c in cands]}"


def _long_run(kind: FaultKind, target: int, rng_seed: int, hours: float) -> tuple[
    FaultRecord, list[AlertRecord], Observation
]:
    """A 10 s-tick twin with default probes, ``kind`` struck after 15 minutes.

    Runs until a minute after the first probe alert, or ``hours``.
    """
    twin = Twin(make_config("calm", 40), seed=0)
    stage = DetectionStage()
    for _ in range(90):
        twin.advance(10.0)
        assert stage.step(twin) == []
    strike(twin, kind, target, np.random.default_rng(rng_seed))
    fault = next(r for r in twin.events() if isinstance(r, FaultRecord))
    alerts: list[AlertRecord] = []
    end = fault.t_s + hours * 3600.0
    while twin.now_s < end:
        new = stage.step(twin)
        alerts += new
        if any(a.source == "probe" for a in new):
            end = min(end, twin.now_s + 60.0)
        twin.advance(10.0)
    return fault, alerts, twin.observe()


@pytest.mark.parametrize(("kind", "target", "rng_seed", "hours"), [
    (FaultKind.MEMORY_LEAK, 5, 3, 4.0),
    (FaultKind.DISK_DEGRADATION, 3, 3, 5.0),
], ids=["oom_kill", "disk_failure"])
def test_warning_then_failure_both_name_the_cause(
    kind: FaultKind, target: int, rng_seed: int, hours: float
) -> None:
    """Early warning and eventual failure are both diagnosed as the true cause.

    A leak OOM-killed 3.6 h in, a disk failing 4.7 h in; the warnings come hours earlier.
    """
    fault, alerts, obs = _long_run(kind, target, rng_seed, hours)
    truth = f"{fault.target}:{fault.kind}"
    groups = correlate(alerts, [], obs=obs)
    failure = next(a for a in alerts if a.source == "probe")
    warning = alerts[0]
    assert warning.source == "trend" and warning.t_s < failure.t_s - 2 * 3600.0
    for a in (warning, failure):
        group = next(g for g in groups if a.alert_id in g.alert_ids)
        assert rank_root_causes(group.members(alerts), obs)[0].label == truth


def test_an_advisory_opens_its_own_group(obs: Observation) -> None:
    """A CVE advisory is never folded into an unrelated outage's incident."""
    alerts = [alert(0, 10.0, "tor-1", "reachable", source="probe"),
              alert(1, 20.0, "svc-frontend", "vulnerable", 1.0, source="event")]
    groups = correlate(alerts, [], obs=obs)
    assert [g.alert_ids for g in groups] == [(0,), (1,)]
    assert rank_root_causes(groups[1].members(alerts), obs)[0].label == (
        "svc-frontend:security_vulnerability")


def _sensorless(obs: Observation) -> Observation:
    """``obs`` as a plant without host sensors reports it (a live fleet); readiness copied."""
    out = dataclasses.replace(obs, host=obs.host.copy(), inst_ready=obs.inst_ready.copy())
    out.host[:, H["temp_c"]] = 0.0
    return out


def test_one_instance_slow_or_failing_alone_without_host_sensors_is_its_own_fault(
    obs: Observation,
) -> None:
    """No host telemetry (a live fleet): one slow or erroring replica is the suspect itself.

    With host sensors (the twin) the same evidence is not read that way, and a symptom on
    most of a service's replicas is the service's.
    """
    api = np.flatnonzero(obs.inst_used & (obs.inst_service == obs.service_names.index("api")))
    i = int(api[0])
    sensorless = _sensorless(obs)
    slow = with_inst(sensorless, [i], "p99_latency_s", 1.5)
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "p99_latency_s", 1.5)], slow)
    assert cands[0].label == f"inst-{i}:slow_response" and cands[0].confidence > 0.7
    failing = with_inst(sensorless, [i], "error_rate", 0.5)
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "error_rate", 0.5)], failing)
    assert cands[0].label == f"inst-{i}:error_responses" and cands[0].confidence > 0.7
    with_sensors = with_inst(obs, [i], "p99_latency_s", 1.5)
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "p99_latency_s", 1.5)], with_sensors)
    assert not any(c.fault_class == "slow_response" for c in cands)
    most = with_inst(sensorless, api[: len(api) // 2 + 1].tolist(), "p99_latency_s", 1.5)
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "p99_latency_s", 1.5)], most)
    assert not any(c.fault_class == "slow_response" for c in cands)
    # Not answering, process still holding memory: hung (with sensors: the usual crash).
    for plant_obs, expected in ((sensorless, "service_hang"), (obs, "service_crash")):
        hung = with_inst(with_inst(plant_obs, [i], "up", 0.0), [i], "mem_util", 0.08)
        hung = dataclasses.replace(hung, inst_live=hung.inst_live.copy(),
                                   inst_ready=hung.inst_ready.copy())
        hung.inst_live[i] = hung.inst_ready[i] = False
        cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "live", 0.0, source="probe")],
                                 hung)
        assert cands[0].label == f"inst-{i}:{expected}" and cands[0].confidence > 0.7


def test_every_live_replica_failing_readiness_without_host_sensors_is_a_bad_config(
    obs: Observation,
) -> None:
    """A live fleet's bad deploy: every replica answers its probes yet none is ready.

    The readiness alert alone names the service's configuration, with the confidence to act
    at once (before this rule it fell through to the no-rule fallback, a tie of bad_config
    and security_vulnerability at 0.5). With one replica still ready, or with host sensors
    (the twin, where a bad configuration shows as errors, not readiness), it does not apply.
    """
    api = np.flatnonzero(obs.inst_used & (obs.inst_service == obs.service_names.index("api")))
    sensorless = _sensorless(obs)
    sensorless.inst_ready[api] = False
    alerts = [alert(0, 1.0, "svc-api", "ready", 0.0, source="probe"),
              alert(1, 1.0, "svc-api", "ready_instances", 0.0, source="probe")]
    cands = rank_root_causes(alerts, sensorless)
    assert cands[0].label == "svc-api:bad_config" and cands[0].confidence > 0.9
    assert "fail readiness" in " ".join(str(e) for e in cands[0].evidence)
    one_ready = dataclasses.replace(sensorless, inst_ready=sensorless.inst_ready.copy())
    one_ready.inst_ready[api[0]] = True
    assert rank_root_causes(alerts, one_ready)[0].confidence < 0.7
    with_sensors = dataclasses.replace(sensorless, host=obs.host)
    assert rank_root_causes(alerts, with_sensors)[0].confidence < 0.7


def test_one_replica_failing_readiness_while_answering_without_host_sensors_is_a_bad_config(
    obs: Observation,
) -> None:
    """The first replica to reject a bad deploy: it answers its probes, so it has not crashed.

    Its readiness alert alone names the service's configuration with the confidence to act
    (a loaded machine can leave its siblings' probes unanswered for a tick, their readiness
    not yet known). When the replica stopped answering (holding its memory: hung), or with
    host sensors (the twin), the alert still reads as the replica's own stop.
    """
    api = np.flatnonzero(obs.inst_used & (obs.inst_service == obs.service_names.index("api")))
    i = int(api[0])
    sensorless = _sensorless(obs)
    sensorless.inst_ready[i] = False
    assert sensorless.inst_ready[api[1:]].all() and sensorless.inst_live[i]
    one = [alert(0, 1.0, f"inst-{i}", "ready", 0.0, source="probe")]
    cands = rank_root_causes(one, sensorless)
    assert cands[0].label == "svc-api:bad_config" and cands[0].confidence >= 0.7
    assert "answers its probes" in " ".join(str(e) for e in cands[0].evidence)
    silent = with_inst(sensorless, [i], "up", 0.0)
    assert rank_root_causes(one, silent)[0].label == f"inst-{i}:service_hang"
    with_sensors = dataclasses.replace(sensorless, host=obs.host)
    assert rank_root_causes(one, with_sensors)[0].label == f"inst-{i}:service_crash"


def test_a_bad_deploy_whose_first_errors_show_on_half_the_replicas_is_still_confident(
    obs: Observation,
) -> None:
    """Every replica unready; in the first sample only half of them have failed requests yet.

    Those errors are the rejected configuration's, not each replica's own fault: the deploy
    keeps the confidence to act at once (it fell to 0.43, beside ``error_responses`` on each
    erroring replica, and the rollback waited 3 s for evidence). A replica failing requests
    while ready is still its own suspect.
    """
    api = np.flatnonzero(obs.inst_used & (obs.inst_service == obs.service_names.index("api")))
    half = api[: len(api) // 2].tolist()
    sensorless = _sensorless(obs)
    sensorless.inst_ready[api] = False
    failing = with_inst(sensorless, half, "error_rate", 1.0)
    alerts = [alert(0, 1.0, "svc-api", "ready", 0.0, source="probe"),
              alert(1, 1.0, "svc-api", "ready_instances", 0.0, source="probe"),
              alert(2, 1.0, "svc-api", "error_rate", 0.5),
              *(alert(3 + k, 1.0, f"inst-{i}", "error_rate", 1.0) for k, i in enumerate(half))]
    cands = rank_root_causes(alerts, failing)
    assert cands[0].label == "svc-api:bad_config" and cands[0].confidence >= 0.7
    assert not any(c.fault_class == "error_responses" for c in cands)
    i = half[0]
    ready = with_inst(_sensorless(obs), [i], "error_rate", 0.5)
    cands = rank_root_causes([alert(0, 1.0, f"inst-{i}", "error_rate", 0.5)], ready)
    assert cands[0].label == f"inst-{i}:error_responses"


def test_a_second_problem_in_the_group_is_told_from_a_rival_diagnosis(
    obs: Observation,
) -> None:
    """Bad deploy plus one slow replica: two problems, each diagnosed with confidence alone.

    The ranking shares the evidence among both, so the deploy leads below the confidence
    the engine acts on; without the slow replica's alert it is certain, and that alert alone
    names the slow replica, so that alert is a second problem's. Two readings of one
    alert (a crash or a VM failure, the VM's state not sampled yet) are not.
    """
    api = np.flatnonzero(obs.inst_used & (obs.inst_service == obs.service_names.index("api")))
    i = int(api[0])
    sensorless = _sensorless(obs)
    sensorless.inst_ready[api] = False
    sensorless = with_inst(sensorless, [i], "p99_latency_s", 1.5)
    alerts = [alert(0, 1.0, "svc-api", "ready", 0.0, source="probe"),
              alert(1, 1.0, "svc-api", "ready_instances", 0.0, source="probe"),
              alert(2, 1.0, f"inst-{i}", "p99_latency_s", 1.5)]
    ranked = rank_root_causes(alerts, sensorless)
    assert ranked[0].label == "svc-api:bad_config" and ranked[0].confidence < 0.7
    assert ranked[1].label == f"inst-{i}:slow_response"
    assert [a.alert_id for a in second_problem(alerts, sensorless)] == [2]
    assert second_problem(alerts, sensorless, leader=f"inst-{i}:slow_response") == []
    down = dataclasses.replace(obs, inst_live=obs.inst_live.copy())
    down.inst_live[i] = True
    one = [alert(0, 1.0, f"inst-{i}", "live", 0.0, source="probe")]
    crash = rank_root_causes(one, down)
    assert {c.fault_class for c in crash[:2]} == {"service_crash", "vm_failure"}
    assert crash[0].confidence < 0.7 and second_problem(one, down) == []
