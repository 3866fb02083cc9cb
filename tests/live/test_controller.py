"""One control-loop code path for the twin and the live fleet; bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from control.run import RunSpec, build_twin
from live.controller import EncodedPolicy, PolicyController, control_loop, live_safety
from live.lb import LbSpec, render_config
from live.loadgen import run_load
from live.plant import FleetSpec
from sim.actions import Action
from sim.events import ControlRecord, DecisionRecord
from sim.telemetry import Observation


def restart_dead(obs: Observation) -> Action | None:
    """Restart the first placed instance that is not live."""
    dead = obs.inst_used & ~obs.inst_live
    return Action("restart_instance", f"inst-{int(dead.argmax())}") if dead.any() else None


def test_the_same_policy_drives_the_twin_through_the_same_loop() -> None:
    """PolicyController + control_loop run unchanged on the twin; decisions are logged."""
    twin = build_twin(RunSpec(scenario="service_crash", hosts=10, seed=1, tick_s=10.0,
                              probe_interval_s=10.0))
    ctrl = PolicyController(twin, restart_dead, live_safety(actuate=True))
    control_loop(twin, ctrl, 6 * 3600.0, 60.0)
    decisions = [r for r in twin.log if isinstance(r, DecisionRecord)]
    assert decisions and all(d.action == "restart_instance" for d in decisions)
    assert any(d.executed for d in decisions)


def test_dry_run_safety_never_executes_on_the_twin() -> None:
    """With actuation off every policy decision is a logged dry run."""
    twin = build_twin(RunSpec(scenario="service_crash", hosts=10, seed=1, tick_s=10.0,
                              probe_interval_s=10.0))
    ctrl = PolicyController(twin, restart_dead, live_safety(actuate=False))
    control_loop(twin, ctrl, 6 * 3600.0, 60.0)
    decisions = [r for r in twin.log if isinstance(r, DecisionRecord)]
    assert decisions and not any(d.executed for d in decisions)
    assert {d.verdict for d in decisions} == {"dry_run"}


@pytest.mark.parametrize("kw", [{"replicas": 0}, {"replicas": 9, "max_replicas": 8},
                                {"probe_interval_s": 0.0}, {"lb_port": 80},
                                {"mem_limit_bytes": 1}, {"service": "no such"}])
def test_bad_fleet_spec_is_refused(kw: dict[str, object]) -> None:
    """Each invalid fleet parameter raises a ValueError naming it."""
    with pytest.raises(ValueError):
        FleetSpec(**kw)  # type: ignore[arg-type]


def test_load_generator_is_loopback_only() -> None:
    """Non-loopback targets and unbounded runs are refused."""
    with pytest.raises(ValueError, match="loopback"):
        run_load("http://10.0.0.1:80/", 10.0, 1.0)
    with pytest.raises(ValueError):
        run_load("http://127.0.0.1:9/", 10.0, 0.0)
    with pytest.raises(ValueError, match="at most"):
        run_load("http://127.0.0.1:9/", 1e6, 3600.0)


def test_haproxy_config_retries_and_redispatches(tmp_path: object) -> None:
    """The rendered config checks health, retries on 5xx / timeouts and redispatches."""
    text = render_config(LbSpec(port=20000, slots=3), tmp_path, {0: 20001})  # type: ignore[arg-type]
    assert "retry-on all-retryable-errors" in text and "option redispatch 1" in text
    assert "server r0 127.0.0.1:20001 check" in text
    assert "server r1 127.0.0.1:9 check disabled" in text
    assert "bind 127.0.0.1:20000" in text


class FirstDeadIndex:
    """A stand-in exported policy: predicts 1 + the first dead slot (0 = do nothing)."""

    def predict(self, observation: np.ndarray) -> tuple[np.ndarray, None]:
        """SB3-style (action, state)."""
        dead = np.flatnonzero(observation < 0.5)
        return np.array(int(dead[0]) + 1 if dead.size else 0), None


def _encode(obs: Observation) -> np.ndarray:
    return np.where(obs.inst_used, obs.inst_live.astype(float), 1.0)


def _decode(index: int) -> Action | None:
    return None if index == 0 else Action("restart_instance", f"inst-{index - 1}")


def test_encoded_policy_drives_the_twin_and_maps_actions() -> None:
    """Encode -> predict -> decode is an ObservationPolicy; it restarts crashed twin replicas."""
    policy = EncodedPolicy(FirstDeadIndex(), _encode, _decode)
    twin = build_twin(RunSpec(scenario="service_crash", hosts=10, seed=1, tick_s=10.0,
                              probe_interval_s=10.0))
    assert policy(twin.observe()) is None
    ctrl = PolicyController(twin, policy, live_safety(actuate=True))
    control_loop(twin, ctrl, 6 * 3600.0, 60.0)
    assert any(isinstance(r, DecisionRecord) and r.executed for r in twin.log)


def test_encoded_policy_refuses_a_non_integer_prediction() -> None:
    """A float or vector prediction is a clear error."""

    class Bad:
        def predict(self, observation: np.ndarray) -> np.ndarray:
            return np.array([0.5, 0.5])

    twin = build_twin(RunSpec(scenario="service_crash", hosts=4, seed=0))
    with pytest.raises(ValueError, match="one integer action"):
        EncodedPolicy(Bad(), _encode, _decode)(twin.observe())


def test_a_restarted_policy_controller_keeps_the_stop_and_the_gates_book() -> None:
    """A PolicyController started on a log with a stop and a running action honours both."""
    twin = build_twin(RunSpec(scenario="calm", hosts=10, seed=1))
    safety = live_safety(actuate=True)
    ctrl = PolicyController(twin, restart_dead, safety)
    twin.apply(Action("restart_instance", "inst-0"))  # an operator's, still running
    ctrl.step()
    ctrl.emergency_stop("drill")
    again = PolicyController(twin, restart_dead, safety)
    assert again.gate.stopped
    assert [f.action.target for f in again.gate.in_flight()] == ["inst-0"]
    again.resume()
    assert not PolicyController(twin, restart_dead, safety).gate.stopped
    commands = [(r.command, r.reason) for r in twin.log if isinstance(r, ControlRecord)]
    assert commands == [("emergency_stop", "drill"), ("resume", "")]
