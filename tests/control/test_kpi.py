"""KPIs from hand-built event logs with known answers, and from a real twin run."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from control.kpi import (
    aggregate,
    compute_kpis,
    fault_outcomes,
    lost_requests_by_kind,
    to_markdown,
)
from sim.actions import Action
from sim.events import (
    ActionRecord,
    AlertRecord,
    ApprovalRecord,
    DecisionRecord,
    Event,
    FaultCleared,
    FaultRecord,
    IncidentRecord,
    SloWindow,
    StateChange,
)
from sim.faults import FaultKind, strike
from sim.scenarios import make_config
from sim.twin import Twin

WINDOW_S = 60.0
CRASH_AFFECTED = ("inst-1", "svc-api")


def _log(*records: Event) -> list[Event]:
    """Number the records in the order given (the KPI code sorts by time itself)."""
    return [dataclasses.replace(r, seq=i) for i, r in enumerate(records)]


def fault(t: float, fid: int, kind: str = "service_crash", target: str = "inst-1",
          affected: tuple[str, ...] = CRASH_AFFECTED) -> FaultRecord:
    return FaultRecord(0, t, fid, kind, target, "cause", False, {}, affected)


def state(t: float, target: str, st: str, fid: int | None = None) -> StateChange:
    return StateChange(0, t, target, st, fid, "test")


def alert(t: float, aid: int, target: str) -> AlertRecord:
    return AlertRecord(0, t, aid, "probe", target, "critical", {})


def cleared(t: float, fid: int) -> FaultCleared:
    return FaultCleared(0, t, fid, "test")


def incident(t: float, iid: int, phase: str, alerts: tuple[int, ...] = (),
             candidates: tuple[str, ...] = ()) -> IncidentRecord:
    cands = tuple((c, 1.0 / (i + 1)) for i, c in enumerate(candidates))
    return IncidentRecord(0, t, iid, phase, "P3", candidates[0] if candidates else "", alerts,
                          cands)


def windows(end_s: float, bad_ends: tuple[float, ...] = (), good: float = 1.0) -> list[SloWindow]:
    """Back-to-back 60 s windows ending at 60, 120, ..., ``end_s``; listed ones at 50%."""
    out = []
    for k in range(1, int(end_s / WINDOW_S) + 1):
        t = k * WINDOW_S
        share = 0.5 if t in bad_ends else good
        out.append(SloWindow(0, t, WINDOW_S, 1000.0, 1000.0 * share, (share,)))
    return out


def _crash(recover_ready_s: float = 120.0) -> list[Event]:
    """inst-1 crashes at 100 s, is alerted on at 103 s, restarted and ready at 120 s."""
    return [
        fault(100.0, 0), state(100.0, "inst-1", "down", 0), alert(103.0, 0, "inst-1"),
        state(110.0, "inst-1", "not_ready", 0), state(118.0, "inst-1", "up"),
        cleared(118.0, 0), state(recover_ready_s, "inst-1", "ready"),
    ]


def test_detected_after_3s_recovered_after_20s() -> None:
    """A crash alerted 3 s after onset and ready 20 s after it: MTTD 3, MTTR 20, MTTM 17."""
    kpis = compute_kpis(_log(*_crash(), *windows(600.0)))
    assert kpis["mttd_s"] == pytest.approx(3.0)
    assert kpis["mttr_s"] == pytest.approx(20.0)
    assert kpis["mttm_s"] == pytest.approx(17.0)
    assert kpis["healing_success_rate"] == 1.0
    assert kpis["availability"] == 1.0
    assert kpis["time_availability"] == 1.0
    assert kpis["slo_violation_minutes"] == 0.0


def test_outcome_fields_of_a_healed_crash() -> None:
    """The per-fault outcome carries onset, detection, recovery and the flags."""
    (o,) = fault_outcomes(_log(*_crash(), *windows(600.0)))
    assert (o.fault_id, o.kind, o.target, o.t0_s) == (0, "service_crash", "inst-1", 100.0)
    assert (o.detected_s, o.recovered_s, o.impaired_s) == (103.0, 120.0, 100.0)
    assert o.needed_healing and o.auto_recovered and not o.escalated
    assert o.rca_rank is None and o.incident_id is None and o.alert_ids == (0,)


def test_unrecovered_fault() -> None:
    """An instance that never comes back leaves the fault unrecovered: MTTR NaN, success 0."""
    log = _log(fault(100.0, 0), state(100.0, "inst-1", "down", 0), alert(101.0, 0, "inst-1"),
               *windows(1800.0))
    (o,) = fault_outcomes(log)
    kpis = compute_kpis(log)
    assert o.recovered_s is None and o.needed_healing and not o.auto_recovered
    assert math.isnan(kpis["mttr_s"]) and math.isnan(kpis["mttm_s"])
    assert kpis["mttd_s"] == pytest.approx(1.0)
    assert kpis["healing_success_rate"] == 0.0


def test_an_unhealed_fault_whose_deadline_outlives_the_log_is_counted_as_censored() -> None:
    """An instance down for good is censored in a log too short to judge it, else a miss.

    Down at 100 s and never back: judged in a 30-minute log (deadline 900 s plus a 120 s
    hold end at 1,120 s), censored in a 16-minute one; either way not healed.
    """
    down = (fault(100.0, 0), state(100.0, "inst-1", "down", 0), alert(101.0, 0, "inst-1"))
    long_run = compute_kpis(_log(*down, *windows(1800.0)))
    short_run = compute_kpis(_log(*down, *windows(960.0)))
    healed = compute_kpis(_log(*_crash(), *windows(240.0)))
    assert long_run["faults_censored"] == 0.0 and long_run["healing_success_rate"] == 0.0
    assert short_run["faults_censored"] == 1.0 and short_run["healing_success_rate"] == 0.0
    assert healed["faults_censored"] == 0.0 and healed["healing_success_rate"] == 1.0
    assert compute_kpis(_log(*down, *windows(780.0)), deadline_s=600.0)["faults_censored"] == 1.0
    assert compute_kpis(_log(*down, *windows(840.0)), deadline_s=600.0)["faults_censored"] == 0.0


def test_slo_dip_delays_recovery_to_its_end() -> None:
    """Instances back at 120 s but an SLO dip over (120, 180]: recovery is at 180 s."""
    log = _log(*_crash(), *windows(600.0, bad_ends=(180.0,)))
    (o,) = fault_outcomes(log)
    assert o.recovered_s == 180.0
    assert compute_kpis(log)["slo_violation_minutes"] == pytest.approx(1.0)


def test_healthy_stretch_shorter_than_hold_is_not_recovery() -> None:
    """A 60 s healthy gap between two dips is shorter than the 120 s hold: wait for the last."""
    log = _log(*_crash(), *windows(600.0, bad_ends=(180.0, 300.0)))
    assert fault_outcomes(log)[0].recovered_s == 300.0
    assert fault_outcomes(log, hold_s=60.0)[0].recovered_s == 180.0


def test_recovery_needs_slo_evidence_for_the_whole_hold() -> None:
    """SLO windows ending 60 s after the instance is back cannot confirm a 120 s hold."""
    log = _log(*_crash(), *windows(180.0))
    assert fault_outcomes(log)[0].recovered_s is None
    assert fault_outcomes(log, hold_s=60.0)[0].recovered_s == 120.0


def test_alerts_on_unrelated_components_or_times_are_not_attributed() -> None:
    """Only alerts on affected components inside the fault's active period detect it."""
    log = _log(
        alert(90.0, 9, "inst-1"), *_crash(), alert(101.0, 1, "inst-9"),
        alert(102.0, 2, "svc-db"), alert(500.0, 3, "inst-1"), *windows(600.0),
    )
    (o,) = fault_outcomes(log)
    assert o.detected_s == 103.0 and o.alert_ids == (0,)


def test_alert_on_the_service_of_the_instance_is_attributed() -> None:
    """The affected set includes the instance's service, so a service alert detects it."""
    log = _log(fault(100.0, 0), state(100.0, "inst-1", "down", 0), alert(105.0, 0, "svc-api"),
               *windows(600.0))
    assert fault_outcomes(log)[0].detected_s == 105.0


def test_state_change_of_another_fault_is_not_impairment() -> None:
    """A component in the affected set going down because of another fault does not count."""
    log = _log(fault(100.0, 0, "bad_config", "svc-api", ("svc-api", "inst-1")),
               fault(200.0, 1), state(200.0, "inst-1", "down", 1), *windows(600.0))
    first = fault_outcomes(log, slo_target=0.4)[0]
    assert not first.needed_healing and first.recovered_s is None


def test_escalated_incident_counts_in_escalation_rate() -> None:
    """One escalated and one resolved incident: escalation 0.5, auto-resolution 0.5."""
    log = _log(
        *_crash(), fault(300.0, 1, target="inst-2", affected=("inst-2",)),
        state(300.0, "inst-2", "down", 1), alert(302.0, 1, "inst-2"),
        state(330.0, "inst-2", "up"), cleared(330.0, 1),
        incident(103.0, 0, "opened", (0,), ("inst-1:service_crash",)),
        incident(104.0, 0, "escalated", (0,), ("inst-1:service_crash",)),
        incident(302.0, 1, "opened", (1,), ("inst-2:service_crash",)),
        incident(400.0, 1, "resolved", (1,), ("inst-2:service_crash",)),
        *windows(900.0),
    )
    kpis = compute_kpis(log)
    first, second = fault_outcomes(log)
    assert kpis["escalation_rate"] == 0.5 and kpis["auto_resolution_rate"] == 0.5
    assert first.escalated and not first.auto_recovered and first.recovered_s == 120.0
    assert second.auto_recovered and not second.escalated
    assert kpis["healing_success_rate"] == 0.5


def test_open_incident_is_neither_resolved_nor_escalated() -> None:
    """An incident still open at the end counts only in the denominators."""
    log = _log(*_crash(), incident(103.0, 0, "opened", (0,), ("inst-1:service_crash",)),
               incident(103.0, 1, "opened", (), ()), incident(200.0, 1, "resolved"),
               *windows(600.0))
    kpis = compute_kpis(log)
    assert kpis["incidents"] == 2.0
    assert kpis["auto_resolution_rate"] == 0.5 and kpis["escalation_rate"] == 0.0
    assert kpis["incidents_unattributed"] == 1.0


def test_rca_ranks() -> None:
    """True cause second in one incident and first in another: top-1 0.5, top-3 1."""
    log = _log(
        *_crash(),
        fault(300.0, 1, "host_failure", "host-4", ("host-4", "inst-7", "svc-db")),
        state(300.0, "host-4", "down", 1), state(300.0, "inst-7", "down", 1),
        alert(304.0, 1, "inst-7"),
        incident(103.0, 0, "opened", (0,), ("host-2:host_failure", "inst-1:service_crash")),
        incident(304.0, 1, "opened", (1,), ("host-4:host_failure",)),
        *windows(900.0),
    )
    first, second = fault_outcomes(log)
    kpis = compute_kpis(log)
    assert (first.rca_rank, first.incident_id) == (2, 0)
    assert (second.rca_rank, second.incident_id) == (1, 1)
    assert kpis["rca_top1"] == 0.5 and kpis["rca_top3"] == 1.0


def test_rca_rank_none_when_cause_missing() -> None:
    """An incident whose candidates miss the true cause gives rank None and counts as wrong."""
    log = _log(*_crash(), incident(103.0, 0, "opened", (0,), ("inst-1:memory_leak",)),
               *windows(600.0))
    (o,) = fault_outcomes(log)
    kpis = compute_kpis(log)
    assert o.rca_rank is None and o.incident_id == 0
    assert kpis["rca_top1"] == 0.0 and kpis["rca_top3"] == 0.0


def test_human_intervention_from_approvals() -> None:
    """Two executed actions, one approved by a human, one refused: (1 + 1) / (2 + 1)."""
    log = _log(
        ApprovalRecord(0, 10.0, 0, "reboot_host", "host-1", "requested"),
        ApprovalRecord(0, 70.0, 0, "reboot_host", "host-1", "approved"),
        DecisionRecord(0, 70.0, 0, "reboot_host", "host-1", "allowed", "approved by operator",
                       True, 0),
        DecisionRecord(0, 80.0, 0, "restart_instance", "inst-1", "allowed", "runbook", True, 1),
        ApprovalRecord(0, 90.0, 0, "replace_disk", "host-1", "requested"),
        ApprovalRecord(0, 200.0, 0, "replace_disk", "host-1", "denied"),
        DecisionRecord(0, 95.0, 0, "restart_instance", "inst-2", "blocked", "cooldown", False),
    )
    assert compute_kpis(log)["human_intervention_rate"] == pytest.approx(2.0 / 3.0)


def test_approval_for_another_target_does_not_count() -> None:
    """An approval matches only the decision with the same incident, action and target."""
    log = _log(
        ApprovalRecord(0, 70.0, 0, "reboot_host", "host-2", "approved"),
        DecisionRecord(0, 70.0, 0, "reboot_host", "host-1", "allowed", "runbook", True, 0),
    )
    assert compute_kpis(log)["human_intervention_rate"] == 0.0


def test_manual_action_needs_a_human() -> None:
    """A started action no decision refers to was run by hand: it counts as intervention."""
    log = _log(
        DecisionRecord(0, 10.0, 0, "restart_instance", "inst-1", "allowed", "runbook", True, 0),
        ActionRecord(0, 10.0, 0, "restart_instance", "inst-1", "started", "", 0.2),
        ActionRecord(0, 20.0, 1, "reboot_host", "host-1", "started", "", 1.0),
    )
    kpis = compute_kpis(log)
    assert kpis["human_intervention_rate"] == 0.5
    assert kpis["actions"] == 2.0 and kpis["action_cost_usd"] == pytest.approx(1.2)


def test_empty_denominators_are_nan() -> None:
    """An empty log has NaN rates and means, never a made-up 0 or 1, and zero counts."""
    kpis = compute_kpis([])
    for key in ("mttd_s", "mttr_s", "mttm_s", "healing_success_rate", "auto_resolution_rate",
                "escalation_rate", "human_intervention_rate", "availability",
                "time_availability", "rca_top1", "rca_top3"):
        assert math.isnan(kpis[key]), key
    assert kpis["faults"] == 0.0 and kpis["incidents"] == 0.0 and kpis["actions"] == 0.0
    assert kpis["slo_violation_minutes"] == 0.0


def test_actions_without_control_plane_give_nan_human_rate() -> None:
    """Without decisions the origin of actions is unknown, so the rate is NaN."""
    log = _log(ActionRecord(0, 20.0, 0, "reboot_host", "host-1", "started", "", 1.0))
    assert math.isnan(compute_kpis(log)["human_intervention_rate"])


def test_fault_without_any_effect_did_not_need_healing() -> None:
    """A leak never alerted on and never impairing is left out of the healing rates."""
    log = _log(fault(100.0, 0, "memory_leak"), *windows(600.0))
    (o,) = fault_outcomes(log)
    kpis = compute_kpis(log)
    assert not o.needed_healing and o.recovered_s is None and not o.auto_recovered
    assert kpis["faults"] == 1.0 and kpis["faults_needing_healing"] == 0.0
    assert math.isnan(kpis["healing_success_rate"])


def test_leak_healed_on_a_prediction_needs_clearance_and_gets_its_deadline_from_the_alert() -> None:
    """A leak alerted 2 h after onset and restarted: recovered when cleared, healed in time."""
    log = _log(
        fault(0.0, 0, "memory_leak"), alert(7200.0, 0, "inst-1"),
        state(7210.0, "inst-1", "down"), state(7240.0, "inst-1", "up"), cleared(7240.0, 0),
        *windows(7800.0),
    )
    (o,) = fault_outcomes(log)
    assert o.needed_healing and o.impaired_s == 7200.0
    assert o.recovered_s == 7240.0 and o.auto_recovered


def test_bad_config_is_recovered_only_when_rolled_back() -> None:
    """A bad config with healthy SLO windows still needs its FaultCleared to recover."""
    affected = ("svc-api", "inst-1", "inst-2")
    log = _log(fault(100.0, 0, "bad_config", "svc-api", affected), alert(130.0, 0, "svc-api"),
               cleared(400.0, 0), *windows(900.0))
    assert fault_outcomes(log)[0].recovered_s == 400.0


def test_load_surge_recovers_when_the_slo_holds_again() -> None:
    """A surge that dips the SLO over (120, 240] recovers at 240 s without being cleared."""
    affected = ("cluster", "svc-api")
    log = _log(fault(100.0, 0, "load_surge", "cluster", affected),
               *windows(900.0, bad_ends=(180.0, 240.0)))
    (o,) = fault_outcomes(log)
    assert o.needed_healing and o.impaired_s == 120.0 and o.recovered_s == 240.0


def test_a_surge_leaves_alerts_and_dips_of_a_later_fault_on_its_services_to_that_fault() -> None:
    """A bad deploy during a surge: its alert and dip are the deploy's, not the surge's.

    The surge (cluster-wide, every service a component) is absorbed until a deploy breaks
    svc-api at 1,000 s; the deploy's alert and its dip in (1020, 1080] belong to it alone.
    Once the deploy is rolled back (cleared at 1,200 s) an alert on the same service and a
    dip in (1500, 1560] are the surge's again; without them the surge needed no healing.
    """
    surge = ("cluster", "svc-api", "svc-db")

    def log(*late: Event) -> list[Event]:
        return _log(fault(100.0, 0, "load_surge", "cluster", surge),
                    fault(1000.0, 1, "bad_config", "svc-api", ("svc-api",)),
                    alert(1010.0, 1, "svc-api"), cleared(1200.0, 1),
                    *late, *windows(3600.0, bad_ends=(1080.0,) + ((1560.0,) if late else ())))

    absorbed, deploy = fault_outcomes(log())
    assert not absorbed.needed_healing and absorbed.detected_s is None
    assert deploy.needed_healing and deploy.detected_s == 1010.0
    harmed, _ = fault_outcomes(log(alert(1530.0, 2, "svc-api")))
    assert harmed.needed_healing and harmed.detected_s == 1530.0 and harmed.impaired_s == 1500.0
    assert harmed.alert_ids == (2,)
    # A fault with an earlier onset keeps sharing alerts as before (only later ones claim).
    before = _log(fault(50.0, 1, "bad_config", "svc-api", ("svc-api",)),
                  fault(100.0, 0, "load_surge", "cluster", surge), alert(130.0, 1, "svc-api"),
                  *windows(900.0))
    deploy_first, surge_second = fault_outcomes(before)
    assert deploy_first.detected_s == 130.0 and surge_second.detected_s == 130.0


def test_slo_dip_long_after_onset_is_someone_elses() -> None:
    """A noisy neighbour with a dip 30 min after onset did not need healing; one at once did."""
    late = _log(fault(100.0, 0, "noisy_neighbour", "host-2", ("host-2",)),
                *windows(3600.0, bad_ends=(1920.0,)))
    early = _log(fault(100.0, 0, "noisy_neighbour", "host-2", ("host-2",)), cleared(700.0, 0),
                 *windows(3600.0, bad_ends=(180.0,)))
    assert not fault_outcomes(late)[0].needed_healing
    (o,) = fault_outcomes(early)
    assert o.needed_healing and o.impaired_s == 120.0 and o.recovered_s == 700.0


def test_rerouted_instance_counts_as_restored() -> None:
    """Taking a dead instance out of rotation restores service without restarting it."""
    log = _log(
        fault(100.0, 0), state(100.0, "inst-1", "down", 0),
        ActionRecord(0, 105.0, 0, "reroute_traffic", "inst-1", "started", "", 0.0),
        ActionRecord(0, 107.0, 0, "reroute_traffic", "inst-1", "succeeded", "", 0.0),
        *windows(600.0),
    )
    assert fault_outcomes(log)[0].recovered_s == 107.0


def test_host_failure_recovers_when_its_instances_run_elsewhere() -> None:
    """A failed host stays down, but its migrated instance is ready again: recovered."""
    affected = ("host-4", "inst-7", "svc-db")
    log = _log(
        fault(100.0, 0, "host_failure", "host-4", affected), state(100.0, "host-4", "down", 0),
        state(100.0, "inst-7", "down", 0), state(110.0, "inst-7", "not_ready", 0),
        state(230.0, "inst-7", "up"), state(232.0, "inst-7", "ready"), *windows(900.0),
    )
    assert fault_outcomes(log)[0].recovered_s == 232.0


def test_empty_host_failure_needs_the_host_back() -> None:
    """A host without instances goes down: with nothing else impaired, it must come up."""
    log = _log(fault(100.0, 0, "host_failure", "host-4", ("host-4",)),
               state(100.0, "host-4", "down", 0), state(700.0, "host-4", "up"),
               *windows(1200.0))
    (o,) = fault_outcomes(log)
    assert o.recovered_s == 700.0 and o.auto_recovered


def test_recovery_after_deadline_is_not_auto() -> None:
    """Recovered 1000 s after onset with a 900 s deadline: recovered, but not healed."""
    log = _log(fault(100.0, 0), state(100.0, "inst-1", "down", 0),
               state(1100.0, "inst-1", "up"), *windows(1500.0))
    (o,) = fault_outcomes(log)
    assert o.recovered_s == 1100.0 and not o.auto_recovered
    assert fault_outcomes(log, deadline_s=1200.0)[0].auto_recovered


def test_human_approval_in_the_incident_makes_recovery_not_automatic() -> None:
    """A recovery that needed an approved action was not automatic."""
    log = _log(*_crash(), incident(103.0, 0, "opened", (0,), ("inst-1:service_crash",)),
               ApprovalRecord(0, 110.0, 0, "restart_instance", "inst-1", "approved"),
               *windows(600.0))
    (o,) = fault_outcomes(log)
    assert o.recovered_s == 120.0 and not o.auto_recovered


def test_follow_up_approved_after_resolution_keeps_recovery_automatic() -> None:
    """A disk replacement approved after the incident resolved does not undo auto-healing."""
    log = _log(*_crash(), incident(103.0, 0, "opened", (0,), ("inst-1:service_crash",)),
               incident(130.0, 0, "resolved", (0,), ("inst-1:service_crash",)),
               ApprovalRecord(0, 200.0, 0, "replace_disk", "host-1", "approved"),
               *windows(600.0))
    (o,) = fault_outcomes(log)
    assert o.recovered_s == 120.0 and o.auto_recovered


def test_alerts_after_recovery_do_not_make_a_fault_escalated() -> None:
    """A later, escalated incident on the same components does not taint a healed fault.

    The host stays down (awaiting repair) long after its instance was migrated and ready.
    """
    log = _log(fault(100.0, 0, "host_failure", "host-1", ("host-1", "inst-1", "svc-api")),
               state(100.0, "inst-1", "down", 0),
               alert(101.0, 0, "host-1"),
               incident(101.0, 0, "opened", (0,), ("host-1:host_failure",)),
               state(140.0, "inst-1", "up"), state(150.0, "inst-1", "ready"),
               incident(300.0, 0, "resolved", (0,), ("host-1:host_failure",)),
               alert(400.0, 1, "svc-api"),
               incident(400.0, 1, "opened", (1,), ("cluster:load_surge",)),
               incident(700.0, 1, "escalated", (1,), ("cluster:load_surge",)),
               *windows(900.0))
    (o,) = fault_outcomes(log)
    assert o.recovered_s == 140.0 and not o.escalated and o.auto_recovered


def test_availability_is_request_weighted_and_time_weighted() -> None:
    """Windows of 1000 and 3000 requests at 50% and 100%: 0.875 by requests, 0.5 by time."""
    log = _log(SloWindow(0, 60.0, 60.0, 1000.0, 500.0, ()),
               SloWindow(0, 120.0, 60.0, 3000.0, 3000.0, ()))
    kpis = compute_kpis(log)
    assert kpis["availability"] == pytest.approx(0.875)
    assert kpis["time_availability"] == pytest.approx(0.5)
    assert kpis["slo_violation_minutes"] == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"slo_target": 0.0}, {"slo_target": 1.5},
                                    {"hold_s": -1.0}, {"deadline_s": 0.0}])
def test_bad_parameters_are_rejected(kwargs: dict[str, float]) -> None:
    """Out-of-range parameters raise ValueError instead of giving silent nonsense."""
    with pytest.raises(ValueError):
        compute_kpis([], **kwargs)
    with pytest.raises(ValueError):
        fault_outcomes([], **kwargs)


def test_aggregate_matches_scipy() -> None:
    """Means ignore NaN; intervals equal a direct Student-t computation; output is JSON."""
    runs = [{"a": 1.0, "b": float("nan")}, {"a": 2.0, "b": 3.0}, {"a": 4.0, "b": 5.0}]
    out = aggregate(runs)
    a = np.array([1.0, 2.0, 4.0])
    low, high = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    b = np.array([3.0, 5.0])
    b_low, b_high = stats.t.interval(0.95, 1, loc=b.mean(), scale=stats.sem(b))
    assert out["a"] == pytest.approx(a.mean())
    assert out["a_ci95"] == pytest.approx([max(low, 0.0), high])
    assert out["b"] == pytest.approx(4.0)
    assert b_low < 0.0 and out["b_ci95"] == pytest.approx([0.0, b_high])
    assert out["runs"] == 3.0
    assert json.loads(json.dumps(out))["a_ci95"] == pytest.approx([max(low, 0.0), high])


def test_aggregate_clips_intervals_to_the_kpi_range() -> None:
    """A skewed sample of a rate gets an interval inside [0, 1]; unbounded KPIs stay >= 0."""
    runs = [{"healing_success_rate": v, "availability": v, "mttr_s": 100.0 * v}
            for v in (1.0, 1.0, 1.0, 0.5)]
    out = aggregate(runs)
    assert out["healing_success_rate_ci95"][1] == 1.0 and out["availability_ci95"][1] == 1.0
    assert 0.0 < out["healing_success_rate_ci95"][0] < out["healing_success_rate"]
    assert out["mttr_s_ci95"][1] > 100.0


def test_aggregate_of_one_run_has_no_interval() -> None:
    """A single value gives its mean and no interval (NaN bounds, null in JSON), not [x, x].

    A key that is NaN everywhere stays NaN; identical values give a point interval.
    """
    out = aggregate([{"a": 2.5, "b": float("nan")}, {"b": 1.0}])
    assert out["a"] == 2.5 and all(math.isnan(x) for x in out["a_ci95"])
    assert out["b"] == 1.0 and all(math.isnan(x) for x in out["b_ci95"])
    assert aggregate([{"c": 3.0}, {"c": 3.0}])["c_ci95"] == [3.0, 3.0]
    out = aggregate([{"a": 2.5, "b": float("nan")}])
    b = out["b"]
    assert isinstance(b, float) and math.isnan(b)


def test_aggregate_rejects_non_numbers() -> None:
    """A value that is not a real number is a TypeError, not a silent zero."""
    with pytest.raises(TypeError):
        aggregate([{"a": "fast"}])  # type: ignore[dict-item]


def test_markdown_contains_every_key() -> None:
    """Every KPI of a run and of an aggregate appears in its Markdown table."""
    kpis = compute_kpis(_log(*_crash(), *windows(600.0)))
    table = to_markdown(kpis)
    assert table.startswith("| metric | value |")
    assert all(f"`{key}`" in table for key in kpis)
    agg = aggregate([kpis, kpis])
    agg_table = to_markdown(agg)
    assert "95% CI" in agg_table
    assert all(f"`{key}`" in agg_table for key in agg if not key.endswith("_ci95"))
    assert "| MTTR (s) `mttr_s` | 20 | [20, 20] |" in agg_table


def test_kpis_on_a_real_twin_crash() -> None:
    """A crash restarted on the twin is detected, recovered in about a minute, and healed."""
    twin = Twin(make_config("calm", 20), seed=3)
    twin.advance(300.0)
    fid = strike(twin, FaultKind.SERVICE_CRASH, 3, np.random.default_rng(0))
    assert fid is not None
    twin.advance(5.0)
    twin.log.add(AlertRecord(twin.log.next_seq, twin.now_s, 0, "probe", "inst-3", "critical", {}))
    twin.advance(15.0)
    assert twin.apply(Action("restart_instance", "inst-3")).accepted
    twin.advance(900.0)
    (o,) = fault_outcomes(twin.log)
    kpis = compute_kpis(twin.log)
    assert o.fault_id == fid and o.needed_healing
    assert o.detected_s == pytest.approx(o.t0_s + 5.0)
    assert o.recovered_s is not None and o.auto_recovered
    assert 50.0 <= kpis["mttr_s"] <= 200.0
    assert 0.0 < kpis["availability"] <= 1.0
    assert kpis["actions"] == 1.0 and kpis["action_cost_usd"] == pytest.approx(0.2)


def test_lost_requests_are_charged_to_the_latest_active_fault() -> None:
    """Each window's losses go to the active fault with the latest onset, else to 'none'."""
    def window(seq: int, end_s: float, lost: float) -> SloWindow:
        return SloWindow(seq, end_s, 60.0, 1000.0, 1000.0 - lost, ())

    events: list[Event] = [
        FaultRecord(0, 10.0, 0, "service_crash", "inst-1", "crash", False),
        window(1, 60.0, 5.0),      # only the crash is active
        FaultRecord(2, 70.0, 1, "load_surge", "cluster", "surge", True),
        window(3, 120.0, 7.0),     # both active: the surge began later
        FaultCleared(4, 130.0, 1, "surge_end"),
        window(5, 180.0, 2.0),     # the surge cleared within this window: still active
        window(6, 240.0, 3.0),     # only the crash, never cleared, is active
        FaultCleared(7, 250.0, 0, "restart"),
        window(8, 360.0, 1.0),     # nothing active
        window(9, 420.0, 0.0),
    ]
    lost, total = lost_requests_by_kind(events)
    assert lost == {"service_crash": 8.0, "load_surge": 9.0, "none": 1.0}
    assert total == 6000.0
