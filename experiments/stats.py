"""Small statistics shared by the experiment commands."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def t_interval(
    values: np.ndarray, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval (NaNs dropped; NaN when fewer than two values).

    ``bounds``: the range the quantity can take (an availability lies in [0, 1]); the
    interval is clipped to it, since a skewed sample of a bounded quantity would otherwise
    give bounds it cannot take.
    """
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats  # most of a second to import; a command's start need not wait

    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1])


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    groups: np.ndarray,
    n_resamples: int,
    seed: int,
) -> np.ndarray:
    """``statistic`` over cluster-bootstrap resamples, given as per-item weights.

    Each resample draws as many clusters as there are, with replacement, and gives every item
    the number of times its cluster was drawn as its weight (an integer weight is the same as
    that many copies of the item). Resampling whole clusters keeps the dependence within a
    cluster (the windows of one host) in every resample. ``groups`` holds each item's cluster
    label; resamples come from ``numpy.random.default_rng(seed)``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    labels, member = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    for b in range(n_resamples):
        counts = np.bincount(rng.integers(0, labels.size, labels.size), minlength=labels.size)
        out[b] = statistic(counts[member].astype(np.float64))
    return out
