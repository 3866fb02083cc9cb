"""Link utilisation, queueing latency and packet loss."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from sim.physics import Array, clip
from sim.physics.serving import load_ratio, mm1_sojourn_s


def link_utilisation(offered_bps: Array, capacity_bps: Array, *, xp: ModuleType = np) -> Array:
    """Offered traffic as a fraction of link capacity.

    ``rho = offered / capacity``, which may exceed 1 (the excess is lost, see
    :func:`link_loss`); +inf on a zero-capacity link carrying traffic, 0 on an idle one.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, section 2.1.

    Args:
        offered_bps: offered traffic, bit/s.
        capacity_bps: link capacity, bit/s.
        xp: array namespace.

    Returns:
        Link utilisation.
    """
    return load_ratio(offered_bps, capacity_bps, xp=xp)


def link_latency_s(
    base_latency_s: Array,
    util: Array,
    packet_bits: Array,
    capacity_bps: Array,
    max_util: Array = 0.99,
    *,
    xp: ModuleType = np,
) -> Array:
    """One-way packet latency: propagation plus M/M/1 queueing and transmission.

    ``T = T_prop + (L / C) / (1 - min(rho, rho_max))``: the link is an M/M/1 queue whose
    service time is the transmission time ``L / C`` of a packet of ``L`` bits; the cap keeps
    the latency finite on saturated links. +inf on a zero-capacity link.
    Source: Kleinrock, "Queueing Systems, Vol. 1: Theory", 1975, eq. 3.26; Kleinrock,
    "Queueing Systems, Vol. 2: Computer Applications", 1976, section 5.2.

    Args:
        base_latency_s: propagation and processing latency of the idle link, s.
        util: link utilisation ``rho``.
        packet_bits: mean packet size ``L``, bits.
        capacity_bps: link capacity ``C``, bit/s.
        max_util: cap ``rho_max`` on the utilisation, below 1.
        xp: array namespace.

    Returns:
        Mean one-way latency, s.
    """
    up = xp.asarray(capacity_bps) > 0
    transmit_s = packet_bits / xp.where(up, capacity_bps, 1.0)
    queued_s = mm1_sojourn_s(transmit_s, util, max_util, xp=xp)
    return base_latency_s + xp.where(up, queued_s, xp.inf)


def link_loss(util: Array, degradation_loss: Array, *, xp: ModuleType = np) -> Array:
    """Packet loss probability from overload and link degradation.

    Overload loss is the excess of offered over carried traffic,
    ``p_o = max(0, 1 - 1 / rho)``; it combines with an independent degradation loss
    ``p_d`` (bad optics, CRC errors) as ``1 - (1 - p_o)(1 - p_d)``.
    Source: fluid-flow loss of a bufferless overloaded link, e.g. Roberts (ed.),
    "COST 242: Broadband network teletraffic", 1996, ch. 2.

    Args:
        util: link utilisation ``rho``, may exceed 1.
        degradation_loss: loss probability of the degraded link at low load, in [0, 1].
        xp: array namespace.

    Returns:
        Loss probability, in [0, 1].
    """
    # 1 - p_o = 1 / max(rho, 1): the carried fraction.
    return 1.0 - (1.0 - clip(degradation_loss, 0.0, 1.0, xp=xp)) / xp.maximum(util, 1.0)


def path_success(loss_a: Array, loss_b: Array, *, xp: ModuleType = np) -> Array:
    """Probability that a packet crosses two independent lossy hops.

    ``P = (1 - p_a)(1 - p_b)``.
    Source: independence of per-hop losses, e.g. Bertsekas & Gallager, "Data Networks",
    2nd ed., section 6.1.

    Args:
        loss_a: loss probability of the first hop.
        loss_b: loss probability of the second hop.
        xp: array namespace.

    Returns:
        Delivery probability.
    """
    return (1.0 - xp.asarray(loss_a)) * (1.0 - xp.asarray(loss_b))
