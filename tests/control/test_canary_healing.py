"""The engine against a configuration deploy caught in its canary stage."""

from __future__ import annotations

import numpy as np

from control.engine import HealingEngine
from control.incidents import postmortem
from control.rca import rank_root_causes
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig, SimulatedOperator
from sim.config import DeploySpec
from sim.events import ActionRecord, AlertRecord, IncidentRecord, SloWindow, StateChange
from sim.faults import FaultKind, strike
from sim.telemetry import INSTANCE_FEATURES
from sim.twin import Twin

API = 2
ERR = INSTANCE_FEATURES.index("error_rate")


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


def test_an_alert_on_an_old_version_replica_during_a_canary_stage_is_not_the_deploy() -> None:
    """The canary rule weighs alerts on the service or its newest-version replicas only.

    During a bad canary of svc-api, a probe alert on an api replica that still runs the old
    configuration (raised before the sample shows the replica down, as on the live fleet)
    is that replica's crash, not the deploy (before, any alert naming one of the service's
    replicas counted, and on the live fleet such a crash was diagnosed as the deploy and not
    restarted in time); an error alert on the canary is the deploy.
    """
    safety = SafetyConfig()
    spec = RunSpec(scenario="calm", hosts=30, hours=1.0, seed=4, safety=safety,
                   deploys=DeploySpec(canary_share=0.25))
    twin = build_twin(spec)
    twin.advance(120.0)
    strike(twin, FaultKind.BAD_CONFIG, API, twin.rng_for("script", 1))
    twin.advance(3.0)
    st, obs, t = twin.state, twin.observe(), twin.now_s
    api = st.inst_used & (st.inst_service == API)
    canary = int(np.flatnonzero(api & (st.inst_config_version > 0))[0])
    other = int(np.flatnonzero(api & (st.inst_config_version == 0))[0])
    down = AlertRecord(0, t, 1, "probe", f"inst-{other}", "critical",
                       {"live": 0.0, "vm_up": 1.0})
    errors = AlertRecord(1, t, 2, "threshold", f"inst-{canary}", "critical",
                         {"error_rate": float(obs.inst[canary, ERR]), "threshold": 0.05})
    top = rank_root_causes([down], obs)[0]
    assert (top.component, top.fault_class) == (f"inst-{other}", "service_crash")
    top = rank_root_causes([errors], obs)[0]
    assert (top.component, top.fault_class) == ("svc-api", "bad_config")
    assert any("on configuration v1 fail" in str(e) for e in top.evidence)
