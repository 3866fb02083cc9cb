"""CPU demand, proportional-share contention and host utilisation."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from sim.physics import Array, clip


def cpu_demand_cores(arrival_rps: Array, cpu_s_per_req: Array, *, xp: ModuleType = np) -> Array:
    """Cores kept busy by a request stream.

    ``D = lambda s``: the utilisation law (Little's law applied to the CPU), with ``s``
    the CPU time per request.
    Source: Lazowska et al., "Quantitative System Performance", 1984, section 3.2.

    Args:
        arrival_rps: request arrival rate, requests/s.
        cpu_s_per_req: CPU time per request, core-seconds.
        xp: array namespace.

    Returns:
        CPU demand, cores.
    """
    return xp.asarray(arrival_rps) * cpu_s_per_req


def contention_factor(demand_cores: Array, capacity_cores: Array, *, xp: ModuleType = np) -> Array:
    """Share of its requested CPU each tenant receives under proportional-share scheduling.

    ``f = min(1, capacity / demand)``, and 1 where demand is zero. Under proportional
    share (e.g. Linux CFS with equal weights per requested core) an overcommitted host
    scales every tenant by the same factor, so ``sum(f * demand) = capacity``.
    Source: Waldspurger & Weihl, "Lottery scheduling", OSDI 1994; Stoica et al.,
    "A proportional share resource allocation algorithm", RTSS 1996.

    Args:
        demand_cores: total CPU requested on the host, cores.
        capacity_cores: CPU available on the host, cores.
        xp: array namespace.

    Returns:
        Fraction of requested CPU granted, in [0, 1].
    """
    # The double where keeps a zero demand from producing nan in the branch not taken.
    # Zero demand divides into +inf, which the minimum turns into the uncontended 1.
    return xp.minimum(xp.maximum(capacity_cores, 0.0) / xp.maximum(demand_cores, 1e-300), 1.0)


def host_utilisation(demand_cores: Array, capacity_cores: Array, *, xp: ModuleType = np) -> Array:
    """Fraction of a host's CPU that is busy.

    ``u = min(1, demand / capacity)``, and 0 where capacity is zero (a host that is down).
    Source: Lazowska et al., "Quantitative System Performance", 1984, section 3.2
    (utilisation law).

    Args:
        demand_cores: total CPU requested on the host, cores.
        capacity_cores: CPU available on the host, cores.
        xp: array namespace.

    Returns:
        Utilisation in [0, 1].
    """
    safe_capacity = xp.where(capacity_cores > 0, capacity_cores, 1.0)
    return xp.where(capacity_cores > 0, clip(demand_cores / safe_capacity, 0.0, 1.0, xp=xp), 0.0)
