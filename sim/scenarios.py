"""Named scenarios: fault regimes on the default cluster, registered in one place.

Rates are Poisson arrivals per simulated day per 100 hosts (they scale with cluster size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from sim.config import FaultRates, TopologySpec, TwinConfig
from sim.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named fault regime and what it is for."""

    name: str
    description: str
    faults: FaultRates


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Add a scenario to the registry; names are unique."""
    if scenario.name in SCENARIOS:
        raise ConfigError(f"scenario {scenario.name!r} is already registered")
    SCENARIOS[scenario.name] = scenario
    return scenario


def _rates(**rates: float) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(rates.items()))


register(Scenario(
    "calm", "no faults: the reference for healthy behaviour", FaultRates(),
))
register(Scenario(
    "service_crash",
    "service crashes, most with a memory leak behind them (OOM kill hours after onset)",
    FaultRates(_rates(memory_leak=8.0, service_crash=4.0)),
))
register(Scenario(
    "vm_failure",
    "VM failures and host hardware failures",
    FaultRates(_rates(vm_failure=8.0, host_failure=3.0)),
))
register(Scenario(
    "network_partition",
    "top-of-rack switch failures partition racks; degraded links lose packets",
    FaultRates(_rates(network_partition=4.0, link_degradation=4.0)),
))
register(Scenario(
    "performance_degradation",
    "load growth (ramping about 2 h before saturation), noisy neighbours, fan failures "
    "leading to thermal throttling",
    FaultRates(
        _rates(load_surge=4.0, noisy_neighbour=4.0, fan_failure=4.0), surge_warning_share=1.0
    ),
))
register(Scenario(
    "security_vulnerability",
    "CVEs disclosed on services, exploited at a hazard until patched",
    FaultRates(_rates(security_vulnerability=6.0)),
))
register(Scenario(
    "mixed",
    "random faults of every kind (23 per day per 100 hosts) plus Weibull host lifetimes "
    "(AFR 5%, shape 1.2)",
    FaultRates(
        _rates(
            service_crash=4.0, memory_leak=3.0, vm_failure=2.0, host_failure=1.0,
            disk_degradation=1.5, network_partition=1.0, link_degradation=2.0, load_surge=2.0,
            noisy_neighbour=2.0, fan_failure=1.5, bad_config=2.0, security_vulnerability=1.0,
        ),
        annual_failure_rate=0.05,
        weibull_shape=1.2,
        hardware_lifetimes=True,
    ),
))


def make_config(
    scenario: str,
    hosts: int = 100,
    *,
    customize: Callable[[TwinConfig], TwinConfig] | None = None,
    **overrides: object,
) -> TwinConfig:
    """Config of a registered scenario on a cluster of ``hosts`` hosts.

    ``overrides`` replace top-level :class:`TwinConfig` fields (e.g. ``tick_s=1.0``).

    Raises:
        ConfigError: unknown scenario, bad size or bad override.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; known: {sorted(SCENARIOS)}")
    if isinstance(hosts, bool) or not isinstance(hosts, int) or hosts <= 0:
        raise ConfigError(f"hosts must be a positive integer, got {hosts!r}")
    fields = {f.name for f in dataclasses.fields(TwinConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown twin settings {unknown}; known: {sorted(fields)}")
    base = TwinConfig()
    config = dataclasses.replace(
        base,
        topology=dataclasses.replace(
            base.topology, hosts=hosts, hosts_per_rack=min(base.topology.hosts_per_rack, hosts)
        ) if hosts != TopologySpec().hosts else base.topology,
        faults=SCENARIOS[scenario].faults,
        **overrides,  # type: ignore[arg-type]
    )
    return customize(config) if customize else config
