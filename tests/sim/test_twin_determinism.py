"""Determinism of the twin: seeds, forks and what-if analysis."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from sim.actions import Action
from sim.events import ActionRecord, FaultRecord
from sim.scenarios import SCENARIOS, make_config
from sim.twin import Twin

HOSTS = 30
HOUR_S = 3600.0
FAULTY = sorted(
    name for name, s in SCENARIOS.items()
    if any(rate > 0 for _, rate in s.faults.rates_per_day_per_100_hosts)
    or (s.faults.hardware_lifetimes and s.faults.annual_failure_rate > 0)
)
KPI_KEYS = {
    "availability", "time_availability", "slo_violation_minutes", "requests", "faults",
    "actions", "action_cost_usd", "rejected_actions",
}


def _run(name: str, seed: int, hours: float = 2.0, hosts: int = HOSTS) -> Twin:
    twin = Twin(make_config(name, hosts), seed=seed)
    twin.advance(hours * HOUR_S)
    return twin


def _snapshot(twin: Twin) -> dict[str, Any]:
    """Every field of the cluster state, copied, plus the clock and bookkeeping."""
    snap: dict[str, Any] = {
        f.name: np.copy(getattr(twin.state, f.name)) for f in dataclasses.fields(twin.state)
    }
    snap["now_s"] = twin.now_s
    snap["events"] = len(twin.log)
    snap["active_faults"] = dict(twin.active_faults)
    snap["pending"] = dict(twin.pending)
    snap["telemetry_count"] = twin.telemetry.count
    return snap


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def _faults(twin: Twin) -> list[tuple[float, str, str]]:
    return [(r.t_s, r.kind, r.target) for r in twin.events() if isinstance(r, FaultRecord)]


def test_there_are_scenarios_with_faults() -> None:
    """The registry has the fault-free reference and at least five faulty scenarios."""
    assert "calm" in SCENARIOS
    assert "calm" not in FAULTY
    assert len(FAULTY) >= 5


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_seed_gives_the_same_digest(name: str) -> None:
    """Two runs of a scenario with the same seed write the same event log, byte for byte."""
    a, b = _run(name, seed=11), _run(name, seed=11)
    assert a.summary()["digest"] == b.summary()["digest"]
    assert list(a.log.lines()) == list(b.log.lines())
    _assert_same(_snapshot(a), _snapshot(b))


@pytest.mark.parametrize("name", FAULTY)
def test_different_seeds_give_different_digests(name: str) -> None:
    """Runs of a faulty scenario with different seeds write different event logs."""
    a, b = _run(name, seed=1), _run(name, seed=2)
    assert a.summary()["digest"] != b.summary()["digest"]


def test_different_seeds_give_different_fault_histories() -> None:
    """In the mixed scenario, different seeds inject different faults (times, kinds, targets)."""
    a, b = _run("mixed", 1, hours=6.0, hosts=100), _run("mixed", 2, hours=6.0, hosts=100)
    assert _faults(a)
    assert _faults(b)
    assert _faults(a) != _faults(b)


def _forkable(seed: int = 3) -> Twin:
    """A mixed-scenario twin two hours in, with faults and an action in flight."""
    twin = Twin(make_config("mixed", 100), seed=seed)
    twin.advance(HOUR_S)
    result = twin.apply(Action("scale_out", "svc-frontend"))
    assert result.accepted, result.reason
    twin.advance(30.0)
    assert twin.pending
    return twin


def test_forking_twice_with_the_same_key_gives_identical_futures() -> None:
    """Two forks with the same key, run for the same time, have identical logs and state."""
    parent = _forkable()
    a, b = parent.fork(7), parent.fork(7)
    a.advance(4 * HOUR_S)
    b.advance(4 * HOUR_S)
    assert a.summary()["digest"] == b.summary()["digest"]
    _assert_same(_snapshot(a), _snapshot(b))
    assert len(_faults(a)) > len(_faults(parent))


def test_a_fork_starts_from_the_parents_state() -> None:
    """A fresh fork has the parent's clock, log, state and telemetry."""
    parent = _forkable()
    child = parent.fork(1)
    assert child.now_s == parent.now_s
    assert child.log.digest() == parent.log.digest()
    _assert_same(_snapshot(child), _snapshot(parent))
    assert np.array_equal(child.telemetry.window(50)[1], parent.telemetry.window(50)[1])


def test_running_a_fork_leaves_the_parent_unchanged() -> None:
    """Running a fork changes neither the parent's log, state nor future.

    The parent, run on after the fork, matches a twin with the same seed never forked.
    """
    parent, untouched = _forkable(), _forkable()
    digest, snap = parent.log.digest(), _snapshot(parent)
    child = parent.fork(5)
    child.apply(Action("shed_load"))
    child.advance(4 * HOUR_S)
    assert parent.log.digest() == digest
    _assert_same(_snapshot(parent), snap)
    parent.advance(4 * HOUR_S)
    untouched.advance(4 * HOUR_S)
    assert parent.summary()["digest"] == untouched.summary()["digest"]
    _assert_same(_snapshot(parent), _snapshot(untouched))


def test_forks_with_different_keys_diverge() -> None:
    """Forks of a faulty twin with different keys draw different futures."""
    parent = _forkable()
    a, b = parent.fork(1), parent.fork(2)
    a.advance(4 * HOUR_S)
    b.advance(4 * HOUR_S)
    assert a.summary()["digest"] != b.summary()["digest"]
    assert _faults(a) != _faults(b)


def test_what_if_leaves_the_twin_untouched_and_returns_kpis() -> None:
    """A what-if leaves the twin untouched and returns window KPIs.

    The twin's log, state and future are unchanged; the result holds availability,
    SLO-violation minutes and the other window KPIs.
    """
    twin, untouched = _forkable(), _forkable()
    digest, snap = twin.log.digest(), _snapshot(twin)
    kpis = twin.what_if([Action("restart_instance", "inst-0"), Action("shed_load")], HOUR_S)
    assert set(kpis) >= KPI_KEYS
    assert 0.0 <= kpis["availability"] <= 1.0
    assert 0.0 <= kpis["time_availability"] <= 1.0
    assert 0.0 <= kpis["slo_violation_minutes"] <= 60.0
    assert kpis["requests"] > 0
    assert kpis["actions"] == 2
    assert kpis["rejected_actions"] == []
    assert twin.log.digest() == digest
    _assert_same(_snapshot(twin), snap)
    assert not any(
        isinstance(r, ActionRecord) and r.kind == "shed_load" for r in twin.events()
    )
    twin.advance(HOUR_S)
    untouched.advance(HOUR_S)
    assert twin.log.digest() == untouched.log.digest()


def test_what_if_reports_rejected_actions() -> None:
    """A what-if with an invalid action lists the rejection reason and still runs."""
    twin = _forkable()
    kpis = twin.what_if([Action("repair_switch", "tor-0")], 600.0)
    assert len(kpis["rejected_actions"]) == 1
    assert "nothing to repair" in kpis["rejected_actions"][0]
    assert kpis["requests"] > 0


def test_what_if_is_deterministic_per_key() -> None:
    """The same what-if with the same key gives the same KPIs."""
    twin = _forkable()
    a = twin.what_if([Action("shed_load")], HOUR_S, key=3)
    b = twin.what_if([Action("shed_load")], HOUR_S, key=3)
    assert a == b


def test_what_if_shedding_lowers_served_requests() -> None:
    """Shedding 20% of load in a what-if serves fewer good requests than doing nothing."""
    twin = Twin(make_config("calm", HOSTS), seed=4)
    twin.advance(HOUR_S)
    base = twin.what_if([], HOUR_S, key=1)
    shed = twin.what_if([Action("shed_load")], HOUR_S, key=1)
    assert shed["availability"] < base["availability"]
    assert shed["requests"] == pytest.approx(base["requests"], rel=1e-9)


def test_what_if_over_24_hours_works() -> None:
    """A what-if may run a full day; it covers 24 h of SLO windows on a faulty scenario."""
    twin = Twin(make_config("mixed", HOSTS), seed=2)
    twin.advance(HOUR_S)
    kpis = twin.what_if([], 86400.0)
    assert kpis["requests"] > 0
    assert 0.0 <= kpis["availability"] <= 1.0
    assert 0.0 <= kpis["slo_violation_minutes"] <= 24 * 60
    assert twin.now_s == HOUR_S


@pytest.mark.parametrize("duration_s", [0.0, -1.0, 86400.0 + 1.0])
def test_what_if_rejects_durations_outside_a_day(duration_s: float) -> None:
    """what_if accepts durations in (0, 24 h] only."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    with pytest.raises(ValueError, match="duration_s"):
        twin.what_if([], duration_s)


def test_advance_runs_the_events_simpy_run_until_would() -> None:
    """``advance`` steps SimPy itself; the run matches ``env.run(until=...)`` event for event.

    Uneven steps (ticks fall inside them and on their ends) and actions applied between
    steps, so action processes start between ticks as they do under a controller; each
    action comes right after a step that ends on a tick, where whether that tick ran first
    decides what the action sees.
    """
    config = make_config("mixed", HOSTS, tick_s=10.0, telemetry_interval_s=10.0)
    ours, simpys = Twin(config, seed=5), Twin(config, seed=5)
    steps = [7.0, 3.0, 10.0, 0.5, 12.5, 30.0] * 120
    actions = {44: Action("scale_out", "svc-api"), 302: Action("restart_instance", "inst-2"),
               500: Action("shed_load", "cluster")}
    for i, dt in enumerate(steps):
        if i in actions:
            assert ours.apply(actions[i]).accepted == simpys.apply(actions[i]).accepted
        ours.advance(dt)
        simpys.env.run(until=simpys.now_s + dt)
        assert ours.now_s == simpys.now_s
    assert ours.log.digest() == simpys.log.digest()
    assert len(_faults(ours)) > 0
    _assert_same(_snapshot(ours), _snapshot(simpys))


def test_the_busy_slot_shortcuts_change_no_bit() -> None:
    """The shortcuts over busy slots give the same run as the full arrays.

    The M/M/c latency over serving slots (1 / mu elsewhere) and the per-service sums over
    routed slots.
    """
    runs = []
    for shortcut in (True, False):
        # a network partition (instances cut off but routed to), a leak, bad config, ...
        twin = Twin(make_config("mixed", 100), seed=2)
        twin._idle_mmc_exact = shortcut
        twin.advance(4 * HOUR_S)
        runs.append((twin.log.digest(), _snapshot(twin), twin.telemetry.window(360)))
    (digest_a, snap_a, window_a), (digest_b, snap_b, window_b) = runs
    assert digest_a == digest_b
    _assert_same(snap_a, snap_b)
    for a, b in zip(window_a, window_b, strict=True):
        assert a.tobytes() == b.tobytes()
    assert Twin(make_config("calm", HOSTS), seed=0)._idle_mmc_exact


def test_the_disk_hazard_is_flat_exactly_up_to_the_twins_threshold() -> None:
    """Below FLAT_HAZARD_WEAR the law gives h0 bit for bit, so the twin may skip it."""
    from sim.physics.storage import disk_hazard_per_s
    from sim.twin import DISK_BASE_HAZARD_PER_S, FLAT_HAZARD_WEAR

    wear = np.concatenate([np.linspace(0.0, FLAT_HAZARD_WEAR, 10_001), [-1.0, 0.0]])
    assert (disk_hazard_per_s(wear, DISK_BASE_HAZARD_PER_S) == DISK_BASE_HAZARD_PER_S).all()
    assert disk_hazard_per_s(np.array([1e-3]), DISK_BASE_HAZARD_PER_S)[0] > DISK_BASE_HAZARD_PER_S
