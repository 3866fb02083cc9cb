"""Safety controls: each check of the gate, blast radius under fault storms, operator, rollback."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from control.safety import (
    ApprovalTicket,
    Rollback,
    SafetyConfig,
    SafetyGate,
    SimulatedOperator,
    Verdict,
    rollback_action,
    should_roll_back,
)
from sim.actions import ACTION_SPECS, INVERSE, Action
from sim.errors import ConfigError
from sim.events import ActionRecord
from sim.scenarios import make_config
from sim.telemetry import Observation
from sim.twin import Twin

HOSTS = 40


def _twin(scenario: str = "calm", seed: int = 0) -> Twin:
    twin = Twin(make_config(scenario, HOSTS), seed)
    twin.advance(60.0)
    return twin


@pytest.fixture(scope="module")
def obs() -> Observation:
    return _twin().observe()


def _members(obs: Observation, service: str) -> list[int]:
    svc = obs.service_names.index(service)
    return [int(i) for i in np.flatnonzero(obs.inst_used & (obs.inst_service == svc))]


def _host_with_only(obs: Observation, service: str) -> int:
    """A host whose instances all belong to ``service``."""
    svc = obs.service_names.index(service)
    for h in range(obs.host_rack.size):
        on = obs.inst_used & (obs.inst_host == h)
        if on.any() and (obs.inst_service[on] == svc).all():
            return h
    raise AssertionError(f"no host holds only {service} instances")


def _host_with(obs: Observation, service: str) -> int:
    svc = obs.service_names.index(service)
    return int(obs.inst_host[obs.inst_used & (obs.inst_service == svc)][0])


def _target_for(kind: str, obs: Observation) -> str:
    """A valid target for ``kind`` in a healthy calm cluster, clear of small services."""
    ttype = ACTION_SPECS[kind].target_type
    return {
        "instance": f"inst-{_members(obs, 'frontend')[0]}",
        "host": f"host-{_host_with_only(obs, 'frontend')}",
        "service": "svc-frontend",
        "rack": "rack-0",
        "switch": "tor-0",
        "link": "uplink-0",
        "cluster": "cluster",
    }[ttype]


def _action(kind: str, obs: Observation) -> Action:
    return Action(kind, _target_for(kind, obs))


@pytest.mark.parametrize("kind", sorted(ACTION_SPECS))
def test_safety_mode_allows_only_low_risk(kind: str, obs: Observation) -> None:
    """In safety mode, medium and high risk actions are blocked and low risk ones allowed."""
    gate = SafetyGate(SafetyConfig(safety_mode=True))
    verdict = gate.check(_action(kind, obs), obs, 0.0)
    if ACTION_SPECS[kind].risk == "low":
        assert verdict.kind == "allowed", verdict.reason
    else:
        assert verdict.kind == "blocked" and "safety mode" in verdict.reason


def test_cooldown_holds_per_target_then_releases(obs: Observation) -> None:
    """After an action on a target starts, that target is blocked for cooldown_s, others not."""
    gate = SafetyGate(SafetyConfig(cooldown_s=120.0))
    a, b = (Action("add_cpu", f"inst-{i}") for i in _members(obs, "frontend")[:2])
    gate.started(a, 1, obs, 10.0)
    gate.finished(1)
    during = gate.check(a, obs, 129.9)
    assert during.kind == "blocked" and "cooling down" in during.reason
    assert gate.check(b, obs, 11.0).kind == "allowed"
    assert gate.check(a, obs, 130.0).kind == "allowed"


def test_target_with_action_in_flight_is_blocked(obs: Observation) -> None:
    """A target whose action is still running is blocked even after its cooldown."""
    gate = SafetyGate(SafetyConfig(cooldown_s=0.0))
    a = Action("rolling_patch", "svc-api")
    gate.started(a, 7, obs, 0.0)
    running = gate.check(a, obs, 1000.0)
    gate.finished(7)
    assert running.kind == "blocked" and "in flight" in running.reason
    assert gate.check(a, obs, 1000.0).kind == "allowed"


def test_rate_limit_over_sliding_window(obs: Observation) -> None:
    """At most rate_limit_per_min actions start in any 60 s; a start 60 s old no longer counts."""
    gate = SafetyGate(SafetyConfig(rate_limit_per_min=3, cooldown_s=0.0))
    insts = _members(obs, "api")
    for n, t in enumerate((0.0, 10.0, 20.0)):
        gate.started(Action("add_cpu", f"inst-{insts[n]}"), n, obs, t)
        gate.finished(n)
    nxt = Action("add_cpu", f"inst-{insts[3]}")
    full = gate.check(nxt, obs, 59.9)
    assert full.kind == "blocked" and "rate limit" in full.reason
    assert gate.check(nxt, obs, 60.0).kind == "allowed"
    gate.started(nxt, 3, obs, 60.0)
    assert gate.check(Action("add_cpu", f"inst-{insts[4]}"), obs, 69.9).kind == "blocked"
    assert gate.check(Action("add_cpu", f"inst-{insts[4]}"), obs, 70.0).kind == "allowed"


def test_dry_run_reports_instead_of_allowing(obs: Observation) -> None:
    """Dry run turns every otherwise admissible action into 'dry_run'; blocked stays blocked."""
    gate = SafetyGate(SafetyConfig(dry_run=True))
    low = gate.check(_action("restart_instance", obs), obs, 0.0)
    high = gate.check(_action("reboot_host", obs), obs, 0.0)
    unknown = gate.check(Action("format_disk", "host-0"), obs, 0.0)
    assert low.kind == "dry_run" and high.kind == "dry_run" and unknown.kind == "blocked"
    assert not low.allowed


def test_high_risk_needs_approval_unless_approved(obs: Observation) -> None:
    """By default only high-risk actions need a human; an approved re-check is allowed."""
    gate = SafetyGate()
    high = _action("reboot_host", obs)
    assert gate.check(high, obs, 0.0).kind == "needs_approval"
    assert gate.check(high, obs, 0.0, approved=True).kind == "allowed"
    assert gate.check(_action("drain_host", obs), obs, 0.0).kind == "allowed"
    assert gate.check(_action("restart_instance", obs), obs, 0.0).kind == "allowed"


@pytest.mark.parametrize("kind", sorted(set(ACTION_SPECS) - {"noop"}))
def test_human_approval_required_covers_every_action(kind: str, obs: Observation) -> None:
    """With human_approval_required, every action (but noop, which does nothing) needs a human."""
    gate = SafetyGate(SafetyConfig(human_approval_required=True))
    verdict = gate.check(_action(kind, obs), obs, 0.0)
    assert verdict.kind == "needs_approval" and "every action" in verdict.reason


def test_approval_risks_select_the_classes(obs: Observation) -> None:
    """Risk classes listed in approval_risks need a human; others do not."""
    gate = SafetyGate(SafetyConfig(approval_risks=("medium",)))
    assert gate.check(_action("drain_host", obs), obs, 0.0).kind == "needs_approval"
    assert gate.check(_action("reboot_host", obs), obs, 0.0).kind == "allowed"


def test_emergency_stop_blocks_at_once_until_resume(obs: Observation) -> None:
    """An emergency stop blocks every action in the same time step, and resume lifts it."""
    gate = SafetyGate()
    actions = [_action(kind, obs) for kind in sorted(ACTION_SPECS)]
    gate.emergency_stop(42.0, "operator pressed the big red button")
    verdicts = [gate.check(a, obs, 42.0, approved=True) for a in actions]
    assert gate.stopped
    assert all(v.kind == "blocked" and "big red button" in v.reason for v in verdicts)
    gate.resume()
    assert not gate.stopped and gate.check(actions[0], obs, 42.0).kind != "blocked"


def test_unknown_kind_and_bad_targets_are_blocked_with_reason(obs: Observation) -> None:
    """Unknown kinds, malformed or absent targets and wrong target types are blocked, named."""
    gate = SafetyGate()
    cases = {
        Action("format_disk", "host-0"): "unknown action kind 'format_disk'",
        Action("restart_instance", "inst-x"): "needs a numeric index",
        Action("restart_instance", "vm 3"): "malformed target",
        Action("restart_instance", f"inst-{obs.inst_used.size + 5}"): "no such instance",
        Action("scale_out", "svc-billing"): "unknown service 'billing'",
        Action("reboot_host", "inst-3"): "reboot_host needs a host target, got instance",
    }
    reasons = {a: gate.check(a, obs, 0.0) for a in cases}
    assert all(v.kind == "blocked" and cases[a] in v.reason for a, v in reasons.items())


def test_disruptive_actions_in_flight_are_capped(obs: Observation) -> None:
    """No more than max_disruptive_in_flight disruptive actions run at once, cluster-wide."""
    gate = SafetyGate(SafetyConfig(max_disruptive_in_flight=2, cooldown_s=0.0))
    front = _members(obs, "frontend")
    for n in range(2):
        gate.started(Action("restart_instance", f"inst-{front[n]}"), n, obs, 0.0)
    third = Action("restart_instance", f"inst-{_members(obs, 'api')[0]}")
    capped = gate.check(third, obs, 1.0)
    harmless = gate.check(Action("add_cpu", f"inst-{front[5]}"), obs, 1.0)
    gate.finished(0)
    assert capped.kind == "blocked" and "disruptive actions already in flight" in capped.reason
    assert harmless.kind == "allowed"
    assert gate.check(third, obs, 1.0).kind == "allowed"


def test_actions_on_down_components_take_no_capacity(obs: Observation) -> None:
    """Restarting a crashed instance is not held back by, nor counts toward, the cap."""
    gate = SafetyGate(SafetyConfig(max_disruptive_in_flight=1, cooldown_s=0.0))
    front = _members(obs, "frontend")
    crashed = dataclasses.replace(obs, inst_ready=obs.inst_ready.copy())
    crashed.inst_ready[front[0]] = False
    gate.started(Action("restart_instance", f"inst-{front[1]}"), 0, obs, 0.0)
    restart_down = gate.check(Action("restart_instance", f"inst-{front[0]}"), crashed, 1.0)
    restart_up = gate.check(Action("restart_instance", f"inst-{front[2]}"), crashed, 1.0)
    assert restart_down.kind == "allowed"
    assert restart_up.kind == "blocked" and "already in flight" in restart_up.reason
    gate.finished(0)
    gate.started(Action("restart_instance", f"inst-{front[0]}"), 1, crashed, 2.0)
    assert gate.check(Action("restart_instance", f"inst-{front[2]}"), crashed, 3.0).kind == (
        "allowed"
    )


def test_capacity_share_counts_in_flight_and_new(obs: Observation) -> None:
    """A service never has more than max_capacity_share of its instances under disruption."""
    gate = SafetyGate(SafetyConfig(max_disruptive_in_flight=100, cooldown_s=0.0))
    front = _members(obs, "frontend")
    quota = int(0.25 * len(front))
    for n in range(quota):
        target = Action("restart_instance", f"inst-{front[n]}")
        assert gate.check(target, obs, 0.0).kind == "allowed"
        gate.started(target, n, obs, 0.0)
    over = gate.check(Action("restart_instance", f"inst-{front[quota]}"), obs, 0.0)
    shrink = gate.check(Action("scale_in", "svc-frontend"), obs, 0.0)
    assert over.kind == "blocked" and "svc-frontend" in over.reason
    assert shrink.kind == "blocked" and "blast radius" in shrink.reason


def test_capacity_needed_names_the_size_at_which_an_instance_action_passes(
        obs: Observation) -> None:
    """The service size at which a refused instance action would pass, or None.

    One of two cache replicas needs a cache of 4 under 25%; with one of the frontend's
    restarts in flight, the next one needs 8 frontends, which it has, so no surge is due.
    """
    gate = SafetyGate(SafetyConfig(max_disruptive_in_flight=100, cooldown_s=0.0))
    cache = obs.service_names.index("cache")
    first = f"inst-{_members(obs, 'cache')[0]}"
    restart = Action("restart_instance", first)
    assert gate.check(restart, obs, 0.0).kind == "blocked"
    assert gate.capacity_needed(restart, obs) == (cache, 4)
    assert gate.capacity_needed(Action("cold_migrate", first), obs) == (cache, 4)
    assert gate.capacity_needed(Action("scale_in", "svc-cache"), obs) is None
    assert gate.capacity_needed(Action("reboot_host", f"host-{_host_with(obs, 'cache')}"),
                                obs) is None
    front = _members(obs, "frontend")
    gate.started(Action("restart_instance", f"inst-{front[0]}"), 0, obs, 0.0)
    assert len(front) >= 8
    assert gate.capacity_needed(Action("restart_instance", f"inst-{front[1]}"), obs) is None
    none_allowed = SafetyGate(SafetyConfig(max_capacity_share=0.0))
    assert none_allowed.capacity_needed(restart, obs) is None
    capped = SafetyGate(SafetyConfig(max_disruptive_in_flight=1, cooldown_s=0.0))
    capped.started(Action("restart_instance", f"inst-{front[0]}"), 0, obs, 0.0)
    assert capped.capacity_needed(restart, obs) is None


def test_host_action_counts_every_instance_on_the_host(obs: Observation) -> None:
    """Rebooting a host that holds one of two cache replicas takes away half the cache."""
    gate = SafetyGate(SafetyConfig(approval_risks=()))
    cache_host = gate.check(Action("reboot_host", f"host-{_host_with(obs, 'cache')}"), obs, 0.0)
    other = gate.check(_action("reboot_host", obs), obs, 0.0)
    assert cache_host.kind == "blocked" and "svc-cache" in cache_host.reason
    assert other.kind == "allowed"


def test_sync_follows_the_plant_log() -> None:
    """The gate ends actions on succeeded/failed records and registers unseen starts."""
    twin = _twin()
    gate = SafetyGate()
    inst = _members(twin.observe(), "frontend")[0]
    result = twin.apply(Action("restart_instance", f"inst-{inst}"))
    assert result.accepted
    gate.sync(twin.events(gate.next_seq), twin.observe())
    registered = [f.action_id for f in gate.in_flight()]
    twin.advance(ACTION_SPECS["restart_instance"].duration_s + 5.0)
    gate.sync(twin.events(gate.next_seq))
    assert registered == [result.action_id]
    assert gate.in_flight() == () and gate.next_seq == len(twin.events())


def test_started_is_idempotent_and_ignores_finished_ids(obs: Observation) -> None:
    """Registering an id twice, or after it finished, leaves the book unchanged."""
    gate = SafetyGate()
    a = _action("restart_instance", obs)
    gate.started(a, 3, obs, 0.0)
    gate.started(a, 3, obs, 0.0)
    gate.finished(3)
    gate.started(a, 3, obs, 0.0)
    assert gate.in_flight() == ()


def _oracle_footprint(action: Action, obs: Observation) -> set[tuple[int, int]]:
    """Instances (with service) a disruptive action takes away, computed independently."""
    idx = int(action.target.rsplit("-", 1)[1])
    if action.target.startswith("inst-"):
        mask = (np.arange(obs.inst_used.size) == idx) & obs.inst_ready
    else:
        mask = obs.inst_used & obs.inst_ready & (obs.inst_host == idx)
    return {(int(i), int(obs.inst_service[i])) for i in np.flatnonzero(mask)}


def _random_target(kind: str, obs: Observation, rng: np.random.Generator) -> str:
    n_hosts = obs.host_rack.size
    n_racks = int(obs.host_rack.max()) + 1
    ttype = ACTION_SPECS[kind].target_type
    if ttype == "instance":
        return f"inst-{rng.choice(np.flatnonzero(obs.inst_used))}"
    if ttype == "host":
        return f"host-{rng.integers(n_hosts)}"
    if ttype == "service":
        return f"svc-{rng.choice(obs.service_names)}"
    if ttype == "rack":
        return f"rack-{rng.integers(n_racks)}"
    if ttype == "switch":
        return str(rng.choice([f"tor-{rng.integers(n_racks)}", "spine-0"]))
    if ttype == "link":
        links = [f"link-host-{rng.integers(n_hosts)}", f"uplink-{rng.integers(n_racks)}"]
        return str(rng.choice(links))
    return "cluster"


@pytest.mark.parametrize("seed", range(50))
def test_blast_radius_holds_under_fault_storms(seed: int) -> None:
    """Under random action storms the gate keeps disruption within both blast-radius limits."""
    rng = np.random.default_rng(seed)
    config = SafetyConfig(
        approval_risks=(),
        cooldown_s=float(rng.choice([0.0, 30.0])),
        rate_limit_per_min=30,
        max_disruptive_in_flight=int(rng.integers(1, 4)),
        max_capacity_share=float(rng.choice([0.25, 0.34, 0.5])),
    )
    twin = Twin(make_config("mixed", HOSTS), seed)
    twin.advance(30.0)
    gate = SafetyGate(config)
    kinds = sorted(ACTION_SPECS)
    running: dict[int, set[tuple[int, int]]] = {}
    seen = 0
    stats = {"allowed_disruptive": 0, "blast_blocked": 0}
    for _ in range(60):
        for _ in range(3):
            obs = twin.observe()
            action = Action(str(rng.choice(kinds)), "cluster")
            action = dataclasses.replace(action, target=_random_target(action.kind, obs, rng))
            verdict = gate.check(action, obs, twin.now_s)
            stats["blast_blocked"] += "in flight (limit" in verdict.reason or (
                "blast radius" in verdict.reason
            )
            if verdict.kind != "allowed":
                continue
            result = twin.apply(action)
            if not result.accepted:
                continue
            gate.started(action, result.action_id, obs, twin.now_s)
            if ACTION_SPECS[action.kind].disruptive:
                running[result.action_id] = _oracle_footprint(action, obs)
                stats["allowed_disruptive"] += 1
        twin.advance(float(rng.uniform(1.0, 15.0)))
        new = twin.events(seen)
        seen += len(new)
        gate.sync(new)
        for r in new:
            if isinstance(r, ActionRecord) and r.phase in ("succeeded", "failed"):
                running.pop(r.action_id, None)
        obs = twin.observe()
        assert sum(1 for fp in running.values() if fp) <= config.max_disruptive_in_flight
        assert {f.action_id for f in gate.in_flight() if f.disruptive} == set(running)
        taken: dict[int, set[int]] = {}
        for footprint in running.values():
            for inst, svc in footprint:
                taken.setdefault(svc, set()).add(inst)
        for svc, insts in taken.items():
            total = int((obs.inst_used & (obs.inst_service == svc)).sum())
            assert len(insts) <= config.max_capacity_share * total + 1e-9, (svc, insts, total)
    assert stats["allowed_disruptive"] > 0 and stats["blast_blocked"] > 0


def test_operator_is_deterministic_per_seed() -> None:
    """The same seed gives the same tickets; different seeds give different ones."""
    action = Action("reboot_host", "host-3")

    def tickets(seed: int) -> list[ApprovalTicket]:
        op = SimulatedOperator(300.0, 0.8, np.random.default_rng(seed))
        return [op.request(action, 10.0 * n) for n in range(20)]

    assert tickets(1) == tickets(1)
    assert tickets(1) != tickets(2)


def test_operator_approval_rate_and_delay_match_parameters() -> None:
    """Approval share and mean delay match the parameters; no answer precedes its request."""
    op = SimulatedOperator(120.0, 0.7, np.random.default_rng(0))
    n = 4000
    tickets = [op.request(Action("reboot_host", "host-1"), 500.0) for _ in range(n)]
    share = np.mean([t.approved for t in tickets])
    delays = np.array([t.decide_at_s - 500.0 for t in tickets])
    assert abs(share - 0.7) < 4 * np.sqrt(0.7 * 0.3 / n)
    assert abs(delays.mean() - 120.0) < 4 * 120.0 / np.sqrt(n)
    assert (delays >= 0).all()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((-1.0, 0.5, np.random.default_rng(0)), "response_delay_s"),
        ((float("nan"), 0.5, np.random.default_rng(0)), "response_delay_s"),
        ((10.0, 1.5, np.random.default_rng(0)), "approval_prob"),
        ((10.0, -0.1, np.random.default_rng(0)), "approval_prob"),
        ((10.0, 0.5, 42), "rng"),
    ],
)
def test_operator_rejects_bad_arguments(args: tuple[Any, ...], field: str) -> None:
    """Bad operator arguments raise ConfigError naming the argument."""
    with pytest.raises(ConfigError, match=field):
        SimulatedOperator(*args)
    assert field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("human_approval_required", 1),
        ("approval_risks", ("critical",)),
        ("approval_risks", "high"),
        ("safety_mode", "yes"),
        ("dry_run", None),
        ("cooldown_s", -1.0),
        ("cooldown_s", float("inf")),
        ("max_disruptive_in_flight", -1),
        ("max_disruptive_in_flight", 1.5),
        ("max_capacity_share", 1.2),
        ("rate_limit_per_min", 0),
    ],
)
def test_config_rejects_bad_fields(field: str, value: object) -> None:
    """A bad SafetyConfig field raises ConfigError naming that field."""
    with pytest.raises(ConfigError, match=field):
        SafetyConfig(**{field: value})  # type: ignore[arg-type]
    assert field


def test_config_normalises_approval_risks_to_a_tuple() -> None:
    """approval_risks given as a list (as Hydra does) is stored as a tuple."""
    config = SafetyConfig(approval_risks=["medium", "high"])  # type: ignore[arg-type]
    assert config.approval_risks == ("medium", "high")


def test_verdict_rejects_unknown_kind() -> None:
    """A verdict kind outside the four known ones is an error."""
    with pytest.raises(ValueError, match="verdict kind"):
        Verdict("maybe", "?")  # type: ignore[arg-type]
    assert Verdict("allowed", "ok").allowed


def test_check_rejects_bad_time_and_non_actions(obs: Observation) -> None:
    """A non-finite time or a non-Action argument is an error, not a verdict."""
    gate = SafetyGate()
    with pytest.raises(ValueError, match="now_s"):
        gate.check(Action("noop"), obs, float("nan"))
    with pytest.raises(TypeError, match="Action"):
        gate.check("restart_instance", obs, 0.0)  # type: ignore[arg-type]
    assert not gate.stopped


@pytest.mark.parametrize("kind", sorted(INVERSE))
def test_rollback_action_inverts_on_the_same_target(kind: str) -> None:
    """An invertible action rolls back to its inverse on the same target."""
    action = Action(kind, "inst-4")
    assert rollback_action(action) == Action(INVERSE[kind], "inst-4")


def test_rollback_action_is_none_without_inverse() -> None:
    """Actions with no inverse have no rollback."""
    assert rollback_action(Action("restart_instance", "inst-4")) is None


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [(0.999, 0.990, True), (0.999, 0.9975, False), (0.99, 0.995, False), (0.5, 0.497, True)],
)
def test_should_roll_back_when_kpi_falls_beyond_tolerance(
    before: float, after: float, expected: bool
) -> None:
    """Roll back only when the KPI after fell below the one before by more than tolerance."""
    assert should_roll_back(before, after) is expected
    assert Rollback().should_roll_back(before, after) is expected


def test_should_roll_back_rejects_bad_numbers() -> None:
    """NaN KPIs and negative tolerances are errors."""
    with pytest.raises(ValueError, match="after_kpi"):
        should_roll_back(0.99, float("nan"))
    with pytest.raises(ValueError, match="tolerance"):
        should_roll_back(0.99, 0.98, tolerance=-0.1)
    with pytest.raises(ConfigError, match="tolerance"):
        Rollback(tolerance=-1.0)
    assert Rollback(0.01).rollback_action(Action("shed_load")) == Action("stop_shedding")


def test_gate_rollback_follows_rollback_enabled() -> None:
    """The gate proposes a rollback only when rollback is enabled and the KPI got worse."""
    action = Action("scale_out", "svc-api")
    on = SafetyGate(SafetyConfig(rollback_enabled=True))
    off = SafetyGate(SafetyConfig(rollback_enabled=False))
    assert on.rollback_for(action, 0.99, 0.95) == Action("scale_in", "svc-api")
    assert on.rollback_for(action, 0.99, 0.99) is None
    assert off.rollback_for(action, 0.99, 0.95) is None
