"""Server electrical power as a function of CPU utilisation."""

from __future__ import annotations

from types import ModuleType

import numpy as np
from scipy.optimize import minimize_scalar

from sim.physics import Array, clip

FAN_EXPONENT_BOUNDS = (1.0, 2.0)
"""Range of the Fan et al. exponent ``r`` over which ``P(u)`` rises monotonically from idle
to busy power: ``r = 1`` is the linear model, and for ``r > 2`` ``dP/du = 2 - r u^(r-1)``
turns negative before full load."""


def linear_power_w(util: Array, idle_w: Array, busy_w: Array, *, xp: ModuleType = np) -> Array:
    """Server power, linear in CPU utilisation.

    ``P(u) = P_idle + (P_busy - P_idle) u`` with ``u`` clipped to [0, 1].
    Source: Fan, Weber & Barroso, "Power provisioning for a warehouse-sized computer",
    ISCA 2007 (the linear baseline of their section 4.1).

    Args:
        util: CPU utilisation, fraction of capacity busy.
        idle_w: power at zero utilisation (SPECpower "active idle"), W.
        busy_w: power at full utilisation, W.
        xp: array namespace.

    Returns:
        Electrical power, W.
    """
    return idle_w + (busy_w - idle_w) * clip(util, 0.0, 1.0, xp=xp)


def fan_power_w(
    util: Array, idle_w: Array, busy_w: Array, r: Array = 1.4, *, xp: ModuleType = np
) -> Array:
    """Server power from the empirical Fan-Weber-Barroso curve.

    ``P(u) = P_idle + (P_busy - P_idle) (2u - u^r)`` with ``u`` clipped to [0, 1]; ``r = 1.4``
    is the exponent the authors calibrated on Google servers. ``r = 1`` gives the linear
    model; larger ``r`` bends the curve up at low utilisation (concave).
    Source: Fan, Weber & Barroso, "Power provisioning for a warehouse-sized computer",
    ISCA 2007, section 4.1.

    Args:
        util: CPU utilisation, fraction of capacity busy.
        idle_w: power at zero utilisation, W.
        busy_w: power at full utilisation, W.
        r: calibration exponent; see ``FAN_EXPONENT_BOUNDS`` for its physical range.
        xp: array namespace.

    Returns:
        Electrical power, W.
    """
    u = clip(util, 0.0, 1.0, xp=xp)
    return idle_w + (busy_w - idle_w) * (2.0 * u - u**r)


def fit_fan_exponent(util: Array, power_w: Array, idle_w: float, busy_w: float) -> float:
    """Least-squares exponent ``r`` of :func:`fan_power_w` for a measured load-power curve.

    Minimises ``sum_i (P(u_i; r) - power_w_i)^2`` over ``r`` in ``FAN_EXPONENT_BOUNDS``
    (bounded Brent search), with the idle and busy powers held fixed. Deterministic; not
    meant for the per-tick path.

    Args:
        util: utilisations of the measured points, fractions.
        power_w: measured power at each utilisation, W.
        idle_w: power at zero utilisation, W.
        busy_w: power at full utilisation, W.

    Returns:
        The fitted exponent ``r``.
    """
    u = np.asarray(util, dtype=float)
    p = np.asarray(power_w, dtype=float)

    def sse(r: float) -> float:
        return float(np.sum((fan_power_w(u, idle_w, busy_w, r) - p) ** 2))

    result = minimize_scalar(
        sse, bounds=FAN_EXPONENT_BOUNDS, method="bounded", options={"xatol": 1e-9}
    )
    return float(result.x)
