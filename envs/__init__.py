"""Gymnasium environments over the digital twin, registered here in one place.

Ids: ``NovaCron/SelfHeal-<Scenario>-v2`` for every scenario of :data:`sim.scenarios.SCENARIOS`
(``calm`` -> ``Calm``, ``service_crash`` -> ``ServiceCrash``, ..., ``mixed`` -> ``Mixed``).
Cluster size and episode length are ``gymnasium.make`` keyword arguments::

    env = gymnasium.make("NovaCron/SelfHeal-ServiceCrash-v2", hosts=100, max_episode_steps=720)
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from sim.scenarios import SCENARIOS

DEFAULT_EPISODE_STEPS = 4320
"""12 simulated hours at the default 10 s control interval."""


def env_id(scenario: str) -> str:
    """The registered id of a scenario's environment."""
    camel = "".join(part.capitalize() for part in scenario.split("_"))
    return f"NovaCron/SelfHeal-{camel}-v2"


ENV_IDS: dict[str, str] = {name: env_id(name) for name in SCENARIOS}
"""Scenario name -> environment id."""

for _name, _id in ENV_IDS.items():
    if _id not in registry:
        register(
            id=_id,
            entry_point="envs.selfheal:SelfHealEnv",
            kwargs={"scenario": _name},
            max_episode_steps=DEFAULT_EPISODE_STEPS,
        )

__all__ = ["DEFAULT_EPISODE_STEPS", "ENV_IDS", "env_id"]
