"""Queueing laws of the serving path: Erlang B/C, M/M/c latency, exact fluid queue."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np

from sim.physics import Array, clip


def load_ratio(offered: Array, capacity: Array, *, xp: ModuleType = np) -> Array:
    """Offered load as a fraction of capacity (traffic intensity).

    ``rho = offered / capacity``, which may exceed 1; where capacity is zero it is +inf if
    anything is offered and 0 otherwise. Shared by links, disks and servers.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, section 2.1.

    Args:
        offered: offered work rate, in the unit of ``capacity``.
        capacity: service capacity, in the unit of ``offered``.
        xp: array namespace.

    Returns:
        Traffic intensity ``rho``.
    """
    offered = xp.asarray(offered)
    safe_capacity = xp.where(capacity > 0, capacity, 1.0)
    return xp.where(capacity > 0, offered / safe_capacity, xp.where(offered > 0, xp.inf, 0.0))


def mm1_sojourn_s(
    service_s: Array, util: Array, max_util: Array = 0.99, *, xp: ModuleType = np
) -> Array:
    """Mean sojourn (wait + service) time of an M/M/1 queue, with utilisation capped.

    ``T = S / (1 - min(rho, rho_max))``, ``rho`` floored at 0. The cap keeps the mean
    finite at and beyond saturation; the overload itself belongs to the fluid backlog.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.26.

    Args:
        service_s: mean service time ``S = 1 / mu``, s.
        util: utilisation ``rho = lambda / mu``.
        max_util: cap on ``rho``, below 1.
        xp: array namespace.

    Returns:
        Mean sojourn time, s.
    """
    return service_s / (1.0 - clip(util, 0.0, max_util, xp=xp))


def erlang_b(
    servers: Array,
    offered_erlangs: Array,
    *,
    server_counts: Sequence[int] | None = None,
    xp: ModuleType = np,
) -> Array:
    """Blocking probability of an M/M/c/c loss system (Erlang B).

    Computed by the stable recursion ``B(0) = 1``,
    ``B(k) = a B(k-1) / (k + a B(k-1))``, evaluated for every element up to the largest
    server count and read off at each element's own ``c``; it never forms ``a^c / c!``, so
    it neither overflows nor cancels. The server counts present set the loop, so under
    ``jax.jit`` ``servers`` must be concrete, not traced.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.46;
    Gross & Harris, "Fundamentals of Queueing Theory", 3rd ed., section 2.6.

    Args:
        servers: number of servers ``c``, integers >= 1.
        offered_erlangs: offered load ``a = lambda / mu``, Erlangs.
        server_counts: the distinct values of ``servers``, ascending, where the caller
            keeps them (they change rarely); found from ``servers`` otherwise.
        xp: array namespace.

    Returns:
        Blocking probability ``B(c, a)``.
    """
    c = xp.asarray(servers)
    a = xp.asarray(offered_erlangs) * 1.0
    if a.shape != c.shape:
        a = a + xp.zeros(c.shape)
    present = (
        np.flatnonzero(np.bincount(np.asarray(c, dtype=np.int64).ravel())).tolist()
        if server_counts is None
        else list(server_counts)
    )
    last = present[-1]
    if last < 1:
        return xp.ones_like(a)
    # One pass of the recursion up to the largest server count, snapshotting B at each
    # server count present (a handful): cheaper than masking every step.
    snapshots = set(present[:-1])
    if xp is np and isinstance(a, np.ndarray) and a.ndim:
        return _erlang_b_numpy(c, a, last, snapshots)
    b = a / (1 + a)  # B(1): a B(0) is a itself
    out = b if 1 in snapshots else None
    for k in range(2, last + 1):
        ab = a * b
        b = ab / (k + ab)
        if k in snapshots:
            out = b if out is None else xp.where(c == k, b, out)
    return b if out is None else xp.where(c == last, b, out)


def _erlang_b_numpy(c: np.ndarray, a: np.ndarray, last: int, snapshots: set[int]) -> np.ndarray:
    # The recursion of erlang_b with the same operations on the same values, into buffers
    # reused across its steps; B(k) goes to a fresh array where a snapshot keeps it.
    ab = np.empty_like(a)
    den = np.add(a, 1, out=ab)
    b = a / den  # B(1): a B(0) is a itself
    out, fresh = (b, True) if 1 in snapshots else (None, False)
    den = np.empty_like(a)
    for k in range(2, last + 1):
        np.multiply(a, b, out=ab)
        np.add(ab, k, out=den)
        if fresh:
            b = ab / den
            fresh = False
        else:
            np.divide(ab, den, out=b)
        if k in snapshots:
            if out is None:
                out, fresh = b, True
            else:
                out = np.where(c == k, b, out)
    return b if out is None else np.where(c == last, b, out)


def erlang_c(servers: Array, offered_erlangs: Array, *, xp: ModuleType = np) -> Array:
    """Probability that an arrival waits in an M/M/c queue (Erlang C).

    ``C = B / (1 - rho (1 - B))`` with ``B`` the Erlang B probability and
    ``rho = a / c``; 1 where ``rho >= 1`` (an unstable queue: everyone waits).
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.40;
    Gross & Harris, "Fundamentals of Queueing Theory", 3rd ed., section 2.3.

    Args:
        servers: number of servers ``c``, integers >= 1.
        offered_erlangs: offered load ``a = lambda / mu``, Erlangs.
        xp: array namespace.

    Returns:
        Probability of waiting ``C(c, a)``.
    """
    b = erlang_b(servers, offered_erlangs, xp=xp)
    rho = offered_erlangs / xp.asarray(servers)
    stable = rho < 1.0
    return xp.where(stable, _wait_probability(b, xp.where(stable, rho, 0.0)), 1.0)


def _wait_probability(erlang_b_prob: Array, rho: Array) -> Array:
    # C = B / (1 - rho (1 - B)), valid for rho < 1; the one place this law is written.
    return erlang_b_prob / (1.0 - rho * (1.0 - erlang_b_prob))


def mmc_mean_wait_s(
    arrival_rps: Array, service_rate_rps: Array, servers: Array, *, xp: ModuleType = np
) -> Array:
    """Mean time in queue (before service) of an M/M/c queue.

    ``W_q = C(c, a) / (c mu - lambda)`` with ``a = lambda / mu``; +inf where
    ``rho = lambda / (c mu) >= 1``.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.43.

    Args:
        arrival_rps: arrival rate ``lambda``, requests/s.
        service_rate_rps: service rate of one server ``mu``, requests/s.
        servers: number of servers ``c``, integers >= 1.
        xp: array namespace.

    Returns:
        Mean waiting time, s.
    """
    lam = xp.asarray(arrival_rps)
    c_mu = servers * xp.asarray(service_rate_rps)
    spare_rps = c_mu - lam
    stable = spare_rps > 0
    wait_prob = erlang_c(servers, lam / service_rate_rps, xp=xp)
    return xp.where(stable, wait_prob / xp.where(stable, spare_rps, 1.0), xp.inf)


def mmc_mean_response_s(
    arrival_rps: Array, service_rate_rps: Array, servers: Array, *, xp: ModuleType = np
) -> Array:
    """Mean response (sojourn) time of an M/M/c queue.

    ``W = W_q + 1 / mu``; +inf where ``rho >= 1``.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.44.

    Args:
        arrival_rps: arrival rate ``lambda``, requests/s.
        service_rate_rps: service rate of one server ``mu``, requests/s.
        servers: number of servers ``c``, integers >= 1.
        xp: array namespace.

    Returns:
        Mean response time, s.
    """
    service_s = 1.0 / xp.asarray(service_rate_rps)
    return mmc_mean_wait_s(arrival_rps, service_rate_rps, servers, xp=xp) + service_s


def mmc_response_quantile_s(
    arrival_rps: Array,
    service_rate_rps: Array,
    servers: Array,
    q: Array,
    *,
    xp: ModuleType = np,
) -> Array:
    """Approximate q-quantile of M/M/c response time: the sum of two quantiles.

    In M/M/c (FCFS) ``P(W_q > t) = C exp(-(c mu - lambda) t)``, so the waiting-time quantile
    is ``t_q = max(0, ln(C / (1 - q))) / (c mu - lambda)``; the service time is exponential
    with quantile ``-ln(1 - q) / mu``. Their sum is returned; +inf where ``rho >= 1``.
    Adding quantiles is conservative when the two terms move together, but wait and
    service are independent, so this is not a strict bound: against the exact sojourn
    distribution (c <= 64, q in [0.9, 0.999]) it lies between ``q`` and 1.6 times the exact
    quantile, falling short only where waiting is rare (worst for c = 1 at
    ``rho ~ 1 - q``).
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.41 (waiting-time
    distribution); Gross & Harris, "Fundamentals of Queueing Theory", 3rd ed., section 2.3.

    Args:
        arrival_rps: arrival rate ``lambda``, requests/s.
        service_rate_rps: service rate of one server ``mu``, requests/s.
        servers: number of servers ``c``, integers >= 1.
        q: quantile, in (0, 1).
        xp: array namespace.

    Returns:
        Approximate q-quantile of the response time, s.
    """
    lam = xp.asarray(arrival_rps)
    mu = xp.asarray(service_rate_rps)
    spare_rps = servers * mu - lam
    stable = spare_rps > 0
    wait_prob = erlang_c(servers, lam / mu, xp=xp)
    tail = 1.0 - xp.asarray(q)
    wait_q_s = xp.log(xp.maximum(wait_prob / tail, 1.0)) / xp.where(stable, spare_rps, 1.0)
    return xp.where(stable, wait_q_s - xp.log(tail) / mu, xp.inf)


def fluid_backlog(
    backlog: Array, arrival_rps: Array, capacity_rps: Array, dt_s: Array, *, xp: ModuleType = np
) -> Array:
    """Backlog of a fluid queue after one step with constant rates.

    ``Q(t + dt) = max(0, Q(t) + (lambda - mu_cap) dt)``: exact for constant rates, since the
    backlog moves linearly until it empties and then stays at 0.
    Source: Newell, "Applications of Queueing Theory", 1982, ch. 2.

    Args:
        backlog: requests queued at the start of the step, >= 0.
        arrival_rps: arrival rate ``lambda``, requests/s.
        capacity_rps: service capacity ``mu_cap``, requests/s.
        dt_s: step length, s.
        xp: array namespace.

    Returns:
        Backlog at the end of the step, requests.
    """
    return xp.maximum(backlog + (arrival_rps - capacity_rps) * dt_s, 0.0)


def fluid_queue_step(
    backlog: Array, arrival_rps: Array, capacity_rps: Array, dt_s: Array, *, xp: ModuleType = np
) -> tuple[Array, Array, Array]:
    """Integrate a fluid queue exactly over one step with constant rates.

    With ``dQ/dt = lambda - mu_cap`` while ``Q > 0`` (and ``Q`` held at 0 otherwise):
    ``Q' = max(0, Q + (lambda - mu_cap) dt)``; requests served ``lambda dt + Q - Q'``
    (conservation); and the time-average backlog is the mean of the piecewise-linear path,
    ``(Q + Q') / 2`` if the queue does not empty during the step, else
    ``Q^2 / (2 (mu_cap - lambda) dt)`` (the triangle before it empties, then zero).
    Source: Kleinrock, "Queueing Systems, Vol. 2: Computer Applications", 1976, ch. 2
    (fluid approximation); Newell, "Applications of Queueing Theory", 1982, ch. 2.

    Args:
        backlog: requests queued at the start of the step, >= 0.
        arrival_rps: arrival rate ``lambda``, requests/s.
        capacity_rps: service capacity ``mu_cap``, requests/s.
        dt_s: step length, s.
        xp: array namespace.

    Returns:
        ``(new_backlog, served_requests, mean_backlog)``: backlog at the end of the step,
        requests completed during it, and the time-average backlog over it.
    """
    backlog = xp.asarray(backlog)
    arrived = arrival_rps * xp.asarray(dt_s)
    end = backlog + arrived - capacity_rps * dt_s
    new_backlog = fluid_backlog(backlog, arrival_rps, capacity_rps, dt_s, xp=xp)
    served = xp.maximum(arrived + backlog - new_backlog, 0.0)
    empties = end < 0
    # end < 0 implies (capacity - arrival) * dt > backlog >= 0, so this divisor is positive.
    drain = xp.where(empties, backlog - end, 1.0)
    mean_backlog = xp.where(empties, backlog * backlog / (2.0 * drain), 0.5 * (backlog + end))
    return new_backlog, served, mean_backlog


def mmc_fluid_latency_s(
    arrival_rps: Array,
    service_rate_rps: Array,
    servers: Array,
    backlog: Array,
    *,
    max_util: Array = 0.99,
    server_counts: Sequence[int] | None = None,
    xp: ModuleType = np,
) -> Array:
    """Mean response time in fast mode: M/M/c below saturation, fluid backlog beyond.

    ``W = Q / (c mu) + W_mmc(min(lambda, rho_max c mu), mu, c)``: the time to drain the
    fluid backlog ``Q`` at full capacity, plus the stationary M/M/c response time at the
    arrival rate capped at ``rho_max`` of capacity. With ``Q = 0`` and ``rho <= rho_max``
    it equals :func:`mmc_mean_response_s`. It is finite, continuous in every argument and
    non-decreasing in load: beyond ``rho_max`` the stationary term stays at its capped
    value while the overload accumulates in ``Q`` (see :func:`fluid_queue_step`), which is
    how the latency keeps growing.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.44 (M/M/c);
    Newell, "Applications of Queueing Theory", 1982, ch. 2 (fluid backlog).

    Args:
        arrival_rps: arrival rate ``lambda``, requests/s.
        service_rate_rps: service rate of one server ``mu``, requests/s.
        servers: number of servers ``c``, integers >= 1.
        backlog: fluid backlog ``Q``, requests.
        max_util: cap ``rho_max`` on the utilisation used in the stationary term, below 1.
        server_counts: the distinct values of ``servers``, ascending, if known (see
            :func:`erlang_b`).
        xp: array namespace.

    Returns:
        Mean response time, s.
    """
    mu = xp.asarray(service_rate_rps)
    c_mu = servers * mu
    capped_rps = xp.minimum(arrival_rps, max_util * c_mu)
    # The capped queue is always stable, so the Erlang C wait needs no guard here.
    b = erlang_b(servers, capped_rps / mu, server_counts=server_counts, xp=xp)
    wait_s = _wait_probability(b, capped_rps / c_mu) / (c_mu - capped_rps)
    return backlog / c_mu + wait_s + 1.0 / mu


def timeout_fraction(mean_latency_s: Array, timeout_s: Array, *, xp: ModuleType = np) -> Array:
    """Fraction of requests slower than a timeout, for an exponential latency.

    ``P(T > t_out) = exp(-t_out / E[T])``; 0 where the mean is 0. Exact for M/M/1 sojourn
    times, which are exponential; an approximation for M/M/c.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.27.

    Args:
        mean_latency_s: mean latency, s.
        timeout_s: timeout, s.
        xp: array namespace.

    Returns:
        Fraction of requests that time out.
    """
    # A zero mean divides into -inf, whose exponential is the 0 a zero latency implies.
    return xp.exp(-timeout_s / xp.maximum(mean_latency_s, 1e-300))


def path_latency_cdf(
    mean_s: Array, var_s2: Array, slo_s: Array, *, xp: ModuleType = np
) -> Array:
    """Share of requests whose end-to-end latency along a call path is within ``slo_s``.

    The path latency is a sum of per-hop sojourn times; it is approximated by the gamma
    distribution with the same mean and variance (shape ``k = m^2 / v``, scale ``v / m``), so
    ``P(T <= s) = P(k, s / theta)``, the regularised lower incomplete gamma function. With
    exponential hops (variance = mean^2 per hop) this matches the hypoexponential sum's
    first two moments and is exact for one hop or equal hops.
    Source: moment matching, e.g. Whitt, "Approximating a point process by a renewal
    process", Management Science 28(2), 1982; the gamma for sums of exponentials: Kleinrock,
    "Queueing Systems, Vol. 1", 1975, section 2.4 (Erlang-k).

    Args:
        mean_s: mean path latency, s (> 0).
        var_s2: variance of the path latency, s^2 (> 0).
        slo_s: latency objective, s.
        xp: array namespace (``numpy`` uses scipy.special, ``jax.numpy`` jax.scipy.special).

    Returns:
        Probability that a request meets the objective.
    """
    if xp is np:
        from scipy.special import gammainc
    else:
        from jax.scipy.special import gammainc
    mean = xp.maximum(mean_s, 1e-12)
    var = xp.maximum(var_s2, 1e-24)
    return gammainc(mean * mean / var, slo_s * mean / var)
