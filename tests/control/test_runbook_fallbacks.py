"""Fallback steps of the VM and host runbooks: a failed rebuild, an empty dead host."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from control.engine import HealingEngine
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig, SimulatedOperator
from sim.actions import ACTION_SPECS
from sim.events import ActionRecord, IncidentRecord
from sim.faults import FaultKind, strike
from sim.twin import Twin


def _setup() -> tuple[Twin, HealingEngine]:
    safety = SafetyConfig()
    twin = build_twin(RunSpec(scenario="calm", hosts=30, hours=1.0, seed=4, safety=safety))
    engine = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 11)))
    return twin, engine


def _run(twin: Twin, engine: HealingEngine, seconds: int) -> None:
    for _ in range(seconds):
        twin.advance(1.0)
        engine.step()


def _actions(twin: Twin, kind: str, phase: str) -> list[ActionRecord]:
    return [r for r in twin.events()
            if isinstance(r, ActionRecord) and r.kind == kind and r.phase == phase]


def _phases(twin: Twin) -> list[str]:
    return [r.phase for r in twin.events() if isinstance(r, IncidentRecord)]


def _odds(monkeypatch: pytest.MonkeyPatch, kind: str, success: float) -> None:
    monkeypatch.setitem(ACTION_SPECS, kind,
                        dataclasses.replace(ACTION_SPECS[kind], success_prob=success))


def test_a_vm_whose_rebuild_fails_is_rebuilt_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback rebuilds the lost replica (and adds one meanwhile), no human paged.

    A scale-out alone, the step before, left the incident open until escalation: the
    incident is about the lost replica, which only a rebuild brings back.
    """
    twin, engine = _setup()
    _run(twin, engine, 60)
    inst = int(np.flatnonzero(twin.state.inst_used & (twin.state.inst_service == 1))[0])
    _odds(monkeypatch, "cold_migrate", 0.0)
    strike(twin, FaultKind.VM_FAILURE, inst, twin.rng_for("script", 1))
    _run(twin, engine, 5)
    assert [r.target for r in _actions(twin, "cold_migrate", "started")] == [f"inst-{inst}"]
    _odds(monkeypatch, "cold_migrate", 1.0)
    _run(twin, engine, 400)
    assert len(_actions(twin, "cold_migrate", "failed")) == 1
    rebuilt = _actions(twin, "cold_migrate", "succeeded")
    assert [r.target for r in rebuilt] == [f"inst-{inst}"]
    assert _actions(twin, "scale_out", "started")
    assert twin.state.inst_ready[inst]
    assert "escalated" not in _phases(twin)
    assert _phases(twin)[-1] == "resolved"


def test_a_dead_host_with_nothing_left_on_it_is_repaired_without_a_human() -> None:
    """A host down and empty (as after a failed repair) gets its repair from the runbook."""
    twin, engine = _setup()
    _run(twin, engine, 60)
    st = twin.state
    empty = [h for h in range(st.host_up.size)
             if st.host_up[h] and not (st.inst_used & (st.inst_host == h)).any()]
    assert empty
    strike(twin, FaultKind.HOST_FAILURE, empty[0], twin.rng_for("script", 1))
    _run(twin, engine, 700)
    repairs = _actions(twin, "repair_host", "started")
    assert [r.target for r in repairs] == [f"host-{empty[0]}"]
    assert "escalated" not in _phases(twin)
