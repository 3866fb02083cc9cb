"""The cluster bootstrap behind the twin predictor's PR-AUC interval, and the t interval."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.stats import cluster_bootstrap, t_interval


def test_cluster_bootstrap_weights_whole_clusters() -> None:
    """Every resample weights a cluster's items alike and draws as many clusters as exist."""
    groups = np.repeat([7, 3, 9, 1], [2, 5, 1, 3])
    seen: list[np.ndarray] = []

    def stat(weight: np.ndarray) -> float:
        for g in np.unique(groups):
            assert np.unique(weight[groups == g]).size == 1
        per_cluster = [weight[groups == g][0] for g in np.unique(groups)]
        assert sum(per_cluster) == 4
        seen.append(weight)
        return float(weight.sum())

    out = cluster_bootstrap(stat, groups, 200, seed=0)
    assert out.shape == (200,) and len(seen) == 200
    assert len({tuple(w) for w in seen}) > 20


def test_cluster_bootstrap_is_seeded_and_centred() -> None:
    """Same seed, same draws; the resampled mean of cluster means centres on their mean."""
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(30), 4)
    values = np.repeat(rng.normal(5.0, 1.0, 30), 4)

    def mean(weight: np.ndarray) -> float:
        return float(np.sum(weight * values) / np.sum(weight))

    a = cluster_bootstrap(mean, groups, 500, seed=3)
    assert np.array_equal(a, cluster_bootstrap(mean, groups, 500, seed=3))
    assert not np.array_equal(a, cluster_bootstrap(mean, groups, 500, seed=4))
    assert a.mean() == pytest.approx(values.mean(), abs=0.05)
    # The spread is that of a mean of 30 cluster means, not of 120 items.
    assert a.std() == pytest.approx(values[::4].std() / np.sqrt(30), rel=0.25)
    with pytest.raises(ValueError, match="n_resamples"):
        cluster_bootstrap(mean, groups, 0, seed=0)


def test_t_interval_is_clipped_to_the_range_and_needs_two_values() -> None:
    """A skewed sample of a bounded quantity keeps its interval inside the bounds."""
    values = np.array([0.9999, 0.9998, 0.93, 1.0, np.nan])
    mean, lo, hi = t_interval(values)
    assert mean == pytest.approx(np.nanmean(values)) and hi > 1.0
    mean_b, lo_b, hi_b = t_interval(values, (0.0, 1.0))
    assert (mean_b, lo_b, hi_b) == (mean, lo, 1.0)
    one = t_interval(np.array([0.5]))
    assert one[0] == 0.5 and np.isnan(one[1]) and np.isnan(one[2])
