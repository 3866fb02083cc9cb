"""Constant-rate memory leaks and working-set size."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from sim.physics import Array


def leak_step_bytes(
    mem_bytes: Array, leak_bytes_per_s: Array, dt_s: Array, *, xp: ModuleType = np
) -> Array:
    """Resident memory after one step of a constant-rate leak.

    ``M(t + dt) = M(t) + L dt``: exact integration of ``dM/dt = L`` with ``L`` constant.
    Source: the linear leak model of Vaidyanathan & Trivedi, "A comprehensive model for
    software rejuvenation", IEEE TDSC 2005.

    Args:
        mem_bytes: resident memory at the start of the step, bytes.
        leak_bytes_per_s: leak rate, bytes/s.
        dt_s: step length, s.
        xp: array namespace.

    Returns:
        Resident memory at the end of the step, bytes.
    """
    return xp.asarray(mem_bytes) + leak_bytes_per_s * dt_s


def time_to_limit_s(
    mem_bytes: Array, leak_bytes_per_s: Array, limit_bytes: Array, *, xp: ModuleType = np
) -> Array:
    """Time until a constant-rate leak reaches a memory limit.

    ``t = (M_lim - M) / L``; 0 where the limit is already reached, and +inf where the
    leak rate is not positive. The inverse of :func:`leak_step_bytes`.
    Source: Vaidyanathan & Trivedi, "A comprehensive model for software rejuvenation",
    IEEE TDSC 2005 (time to resource exhaustion).

    Args:
        mem_bytes: resident memory now, bytes.
        leak_bytes_per_s: leak rate, bytes/s.
        limit_bytes: memory limit (cgroup limit or physical memory), bytes.
        xp: array namespace.

    Returns:
        Time to reach the limit, s.
    """
    headroom_bytes = limit_bytes - xp.asarray(mem_bytes)
    safe_leak = xp.where(leak_bytes_per_s > 0, leak_bytes_per_s, 1.0)
    t_s = xp.where(leak_bytes_per_s > 0, headroom_bytes / safe_leak, xp.inf)
    return xp.where(headroom_bytes <= 0, 0.0, t_s)


def working_set_bytes(
    base_bytes: Array, in_flight_requests: Array, bytes_per_request: Array, *, xp: ModuleType = np
) -> Array:
    """Working-set size of a service with requests in flight.

    ``M = M_base + N bytes_per_request`` where ``N`` is the mean number of requests in the
    system (from Little's law, ``N = lambda W``).
    Source: Little, "A proof for the queuing formula L = lambda W", Operations Research 1961.

    Args:
        base_bytes: memory of the idle service, bytes.
        in_flight_requests: requests in the system (in service or queued).
        bytes_per_request: memory held per request, bytes.
        xp: array namespace.

    Returns:
        Working-set size, bytes.
    """
    return xp.asarray(base_bytes) + in_flight_requests * bytes_per_request
