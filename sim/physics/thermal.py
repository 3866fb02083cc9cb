"""Lumped RC die temperature, fan degradation, throttling and thermal shutdown."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from sim.physics import Array, clip


def rc_step_temp_c(
    temp_c: Array,
    power_w: Array,
    inlet_temp_c: Array,
    r_k_per_w: Array,
    c_j_per_k: Array,
    dt_s: Array,
    *,
    xp: ModuleType = np,
) -> Array:
    """Advance the lumped thermal RC model exactly over one step.

    The model is ``C dT/dt = P - (T - T_in) / R``. With ``P`` and ``T_in`` constant over the
    step its solution is ``T(t + dt) = T_ss + (T(t) - T_ss) exp(-dt / (R C))`` with steady
    state ``T_ss = T_in + P R``; being exact, it is stable for any ``dt`` and one large step
    equals many small ones.
    Source: Skadron et al., "Temperature-aware microarchitecture", ISCA 2003 (the RC
    analogy behind HotSpot); Incropera & DeWitt, "Fundamentals of Heat and Mass Transfer",
    lumped capacitance method.

    Args:
        temp_c: temperature at the start of the step, degC.
        power_w: dissipated power, held constant over the step, W.
        inlet_temp_c: cooling-air inlet temperature, held constant over the step, degC.
        r_k_per_w: thermal resistance from die to inlet air, K/W.
        c_j_per_k: heat capacity, J/K.
        dt_s: step length, s.
        xp: array namespace.

    Returns:
        Temperature at the end of the step, degC.
    """
    steady_c = inlet_temp_c + power_w * r_k_per_w
    return steady_c + (temp_c - steady_c) * xp.exp(-dt_s / (r_k_per_w * c_j_per_k))


def thermal_resistance_k_per_w(
    r_nominal_k_per_w: Array,
    fan_health: Array,
    fan_loss_gain: Array = 1.5,
    *,
    xp: ModuleType = np,
) -> Array:
    """Thermal resistance raised by lost fan airflow.

    ``R = R_nom (1 + k (1 - h))`` with ``h`` the fan health (airflow as a fraction of
    nominal) clipped to [0, 1]. For forced convection in turbulent flow the heat-transfer
    coefficient scales as airflow^0.8 (Dittus-Boelter, ``Nu = 0.023 Re^0.8 Pr^0.4``), so the
    convective resistance scales as ``h^-0.8``. ``k = 1.5`` is the chord of that power law
    at half airflow (``(0.5^-0.8 - 1) / 0.5 = 1.48``): the linear form meets the power law
    at full and half airflow and lies at most 10% above it in between. Below half airflow
    it stays finite (2.5 ``R_nom`` with fans stopped) where the power law diverges, because
    conduction through the chassis and natural convection still carry heat away.
    Source: Incropera & DeWitt, "Fundamentals of Heat and Mass Transfer", 6th ed., eq. 8.60.

    Args:
        r_nominal_k_per_w: resistance with healthy fans, K/W.
        fan_health: fan airflow as a fraction of nominal; 1 is healthy.
        fan_loss_gain: ``k``, relative resistance increase per unit of airflow lost.
        xp: array namespace.

    Returns:
        Thermal resistance, K/W.
    """
    return r_nominal_k_per_w * (1.0 + fan_loss_gain * (1.0 - clip(fan_health, 0.0, 1.0, xp=xp)))


def throttle_factor(
    temp_c: Array,
    throttle_c: Array,
    shutdown_c: Array,
    min_factor: Array = 0.5,
    *,
    xp: ModuleType = np,
) -> Array:
    """CPU capacity multiplier under thermal throttling.

    ``f = 1`` below ``throttle_c``, falling linearly to ``min_factor`` at ``shutdown_c``
    and held there above it: ``f = 1 - (1 - f_min) clip((T - T_thr) / (T_sd - T_thr), 0, 1)``.
    A piecewise-linear stand-in for DVFS throttling, which steps the clock down as the die
    approaches its trip point.
    Source: Intel 64 and IA-32 Architectures Software Developer's Manual, vol. 3B,
    section 15.8 (thermal monitoring and protection).

    Args:
        temp_c: die temperature, degC.
        throttle_c: temperature at which throttling starts, degC.
        shutdown_c: temperature of thermal shutdown, degC; strictly above ``throttle_c``.
        min_factor: capacity multiplier reached at ``shutdown_c``.
        xp: array namespace.

    Returns:
        Capacity multiplier in [``min_factor``, 1].
    """
    frac = clip((temp_c - throttle_c) / (shutdown_c - throttle_c), 0.0, 1.0, xp=xp)
    return 1.0 - (1.0 - min_factor) * frac


def shutdown_mask(temp_c: Array, shutdown_c: Array, *, xp: ModuleType = np) -> Array:
    """Hosts at or above their thermal shutdown temperature.

    ``T >= T_sd``: the hardware trip that powers the host off (PROCHOT / THERMTRIP).
    Source: Intel 64 and IA-32 Architectures Software Developer's Manual, vol. 3B,
    section 15.8.

    Args:
        temp_c: die temperature, degC.
        shutdown_c: thermal shutdown temperature, degC.
        xp: array namespace.

    Returns:
        Boolean array, True where the host shuts down.
    """
    return xp.asarray(temp_c) >= shutdown_c
