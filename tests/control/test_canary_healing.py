"""The engine against a configuration deploy caught in its canary stage."""

from __future__ import annotations

from control.engine import HealingEngine
from control.incidents import postmortem
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig, SimulatedOperator
from sim.config import DeploySpec
from sim.events import ActionRecord, IncidentRecord, SloWindow, StateChange
from sim.faults import FaultKind, strike
from sim.twin import Twin

API = 2


def _heal_bad_deploy(share: float) -> Twin:
    """A bad deploy of svc-api on a calm 30-host twin, healed by the engine for 4 minutes."""
    safety = SafetyConfig()
    spec = RunSpec(scenario="calm", hosts=30, hours=1.0, seed=4, safety=safety,
                   deploys=DeploySpec(canary_share=share, canary_bake_s=600.0))
    twin = build_twin(spec)
    engine = HealingEngine(twin, safety, SimulatedOperator(30.0, 1.0, twin.rng_for("fork", 11)))
    for _ in range(120):
        twin.advance(1.0)
        engine.step()
    strike(twin, FaultKind.BAD_CONFIG, API, twin.rng_for("script", 1))
    for _ in range(240):
        twin.advance(1.0)
        engine.step()
    return twin


def _lost(twin: Twin) -> float:
    return sum(r.requests - r.good for r in twin.events() if isinstance(r, SloWindow))


def test_a_bad_canary_is_diagnosed_from_its_version_and_rolled_back_before_promotion() -> None:
    """A bad deploy on a quarter of svc-api's replicas: one rollback, nothing promoted.

    The diagnosis is confident (from the canaries' configuration version), and fewer
    requests are lost than when the same deploy lands on every replica at once.
    """
    staged, direct = _heal_bad_deploy(0.25), _heal_bad_deploy(0.0)
    events = staged.events()
    opened = [r for r in events if isinstance(r, IncidentRecord) and r.phase == "opened"]
    assert [r.root_cause for r in opened] == ["svc-api:bad_config"]
    rollbacks = [r for r in events if isinstance(r, ActionRecord)
                 and r.kind == "config_rollback" and r.phase == "succeeded"]
    assert len(rollbacks) == 1
    assert not [r for r in events if isinstance(r, StateChange) and r.state == "config_promoted"]
    assert [r.phase for r in events if isinstance(r, IncidentRecord)][-1] == "resolved"
    # Confident: the canary rule (control.rca._canaries), not the weak fallback that ties
    # bad_config with the service's other classes.
    assert opened[0].candidates[0] == ("svc-api:bad_config", opened[0].candidates[0][1])
    assert opened[0].candidates[0][1] >= 0.9
    assert "canary stage held this deploy to 3 replica(s)" in postmortem(
        events, opened[0].incident_id)
    assert _lost(staged) < 0.5 * _lost(direct)
