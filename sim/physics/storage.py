"""Disk utilisation, queueing latency, wear and wear-out hazard."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from sim.physics import Array
from sim.physics.serving import load_ratio, mm1_sojourn_s


def disk_utilisation(iops_demand: Array, iops_capacity: Array, *, xp: ModuleType = np) -> Array:
    """Requested I/O rate as a fraction of the disk's sustainable rate.

    ``rho = IOPS_demand / IOPS_capacity``, which may exceed 1; +inf on a failed disk
    (zero capacity) with demand, 0 on an idle one.
    Source: Lazowska et al., "Quantitative System Performance", 1984, section 3.2
    (utilisation law).

    Args:
        iops_demand: requested I/O operations per second.
        iops_capacity: sustainable I/O operations per second.
        xp: array namespace.

    Returns:
        Disk utilisation.
    """
    return load_ratio(iops_demand, iops_capacity, xp=xp)


def disk_latency_s(
    iops_demand: Array,
    iops_capacity: Array,
    base_service_s: Array,
    max_util: Array = 0.99,
    *,
    xp: ModuleType = np,
) -> Array:
    """Mean I/O latency of a disk modelled as an M/M/1 queue.

    ``T = S / (1 - min(rho, rho_max))`` with ``rho = IOPS_demand / IOPS_capacity``.
    ``S`` is the unloaded latency of one I/O and is a separate parameter from the capacity
    because SSDs serve many I/Os in parallel (capacity above ``1 / S``). The cap keeps the
    latency finite on a saturated disk.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.26; Ruemmler &
    Wilkes, "An introduction to disk drive modeling", IEEE Computer 1994.

    Args:
        iops_demand: requested I/O operations per second.
        iops_capacity: sustainable I/O operations per second.
        base_service_s: unloaded latency of one I/O ``S``, s.
        max_util: cap ``rho_max`` on the utilisation, below 1.
        xp: array namespace.

    Returns:
        Mean I/O latency, s.
    """
    rho = load_ratio(iops_demand, iops_capacity, xp=xp)
    return mm1_sojourn_s(base_service_s, rho, max_util, xp=xp)


def wear_step(
    wear: Array,
    write_iops: Array,
    endurance_writes: Array,
    dt_s: Array,
    wear_multiplier: Array = 1.0,
    *,
    xp: ModuleType = np,
) -> Array:
    """Fraction of rated write endurance consumed, after one step.

    ``w' = max(0, w + W dt m / E)`` with ``W`` the write rate, ``E`` the rated endurance in
    writes (from TBW or DWPD) and ``m`` a write-amplification multiplier. May exceed 1:
    drives routinely outlive their rating.
    Source: JEDEC JESD218B, "Solid-State Drive (SSD) Requirements and Endurance Test
    Method", 2016 (rated endurance, write amplification).

    Args:
        wear: endurance consumed at the start of the step, fraction of rated.
        write_iops: write operations per second.
        endurance_writes: rated endurance, write operations.
        dt_s: step length, s.
        wear_multiplier: write amplification ``m``.
        xp: array namespace.

    Returns:
        Endurance consumed at the end of the step, fraction of rated.
    """
    return xp.maximum(wear + write_iops * dt_s * wear_multiplier / endurance_writes, 0.0)


WEAR_SHAPE = 4.0
"""Default exponent ``k`` of the wear-out term of :func:`disk_hazard_per_s`."""


def disk_hazard_per_s(
    wear: Array, base_hazard_per_s: Array, wear_shape: Array = WEAR_SHAPE, *, xp: ModuleType = np
) -> Array:
    """Disk failure hazard rising with wear: random failures plus a wear-out term.

    ``h(w) = h_0 (1 + w^k)``: the flat bottom of the bathtub curve (``h_0``, random
    failures) plus a power-law (Weibull-type) wear-out term that equals ``h_0`` at rated
    endurance (``w = 1``). With ``k = 4`` wear adds 6% to the hazard at half the rated
    endurance, 41% at 80%, doubles it at 100% and multiplies it by 17 at 200%. Field data
    show failure rates climbing steadily with age and use rather than staying flat.
    Source: Schroeder & Gibson, "Disk failures in the real world", FAST 2007; Pinheiro,
    Weber & Barroso, "Failure trends in a large disk drive population", FAST 2007;
    Schroeder, Lagisetty & Merchant, "Flash reliability in production", FAST 2016.

    Args:
        wear: endurance consumed, fraction of rated.
        base_hazard_per_s: random-failure hazard of a new disk, 1/s.
        wear_shape: exponent ``k`` of the wear-out term.
        xp: array namespace.

    Returns:
        Failure hazard, 1/s.
    """
    return base_hazard_per_s * (1.0 + xp.maximum(wear, 0.0) ** wear_shape)


def probability_of_failure(hazard_per_s: Array, dt_s: Array, *, xp: ModuleType = np) -> Array:
    """Probability of failing within one step at constant hazard.

    ``p = 1 - exp(-h dt)``, computed as ``-expm1(-h dt)`` to keep precision for the tiny
    per-tick probabilities of realistic hazards.
    Source: the exponential survival function; e.g. Trivedi, "Probability and Statistics
    with Reliability, Queuing and Computer Science Applications", 2nd ed., section 3.4.

    Args:
        hazard_per_s: failure hazard, 1/s.
        dt_s: step length, s.
        xp: array namespace.

    Returns:
        Failure probability over the step.
    """
    return -xp.expm1(-xp.asarray(hazard_per_s) * dt_s)
