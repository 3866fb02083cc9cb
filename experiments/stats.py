"""Small statistics shared by the experiment commands."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval (NaNs dropped; NaN when fewer than two values)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half
