"""``env.fault_rate_scale``: scales the scenario's fault arrivals; bad values are refused."""

from __future__ import annotations

import pytest

from experiments.config import ScenarioSchema, TrackingSchema
from experiments.rl_config import DqnSchema, EnvSchema, TrainSchema, check_train, make_env
from sim.errors import ConfigError
from sim.events import FaultRecord


def _faults(scale: float) -> int:
    env = make_env("service_crash", 4, 10.0, 1.0, scale)
    env.reset(seed=0)
    for _ in range(360):
        env.step(0)
    n = sum(isinstance(r, FaultRecord) for r in env.unwrapped.twin.log)
    env.close()
    return n


def test_scale_multiplies_fault_arrivals() -> None:
    """One hour of 4 hosts: no fault at the scenario's rates, several at 500 times them."""
    assert _faults(1.0) == 0
    assert _faults(500.0) >= 3


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale_is_refused(scale: float) -> None:
    """Zero, negative and non-finite scales name the key."""
    with pytest.raises(ConfigError, match="fault_rate_scale"):
        make_env("service_crash", 4, 10.0, 1.0, scale)
    bad = TrainSchema(scenario=ScenarioSchema(name="service_crash"), agent=DqnSchema(),
                      tracking=TrackingSchema(), env=EnvSchema(fault_rate_scale=scale))
    with pytest.raises(ConfigError, match="fault_rate_scale"):
        check_train(bad)
