"""Anomaly detectors: batch equals streaming, determinism, detection, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from agents.detectors import (
    DetectorInputError,
    IsolationForestDetector,
    MADDetector,
    NoveltyDetector,
    ZScoreDetector,
    clean_series,
    count_within,
    similar_earlier,
    suppress_repeats,
)
from agents.forecaster import LSTMErrorDetector


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(700)
    x = np.stack([np.sin(t / 10.0), np.cos(t / 7.0)], axis=1) + 0.05 * rng.standard_normal((700, 2))
    return x[:500], x[500:]


def _detectors() -> list:
    return [
        ZScoreDetector(),
        ZScoreDetector(window=40),
        MADDetector(),
        MADDetector(window=40),
        NoveltyDetector(),
        NoveltyDetector(window=40),
        IsolationForestDetector(lags=3, n_estimators=30, seed=1),
        LSTMErrorDetector(seq_len=10, hidden=8, epochs=2, seed=1),
    ]


@pytest.mark.parametrize("detector", _detectors(), ids=lambda d: type(d).__name__)
def test_batch_scores_equal_streaming(detector) -> None:
    """Scoring a block equals feeding its rows one by one after fit."""
    train, test = _data()
    detector.fit(train)
    batch = detector.score(test)
    detector.reset_stream()
    stream = np.array([detector.update(row) for row in test[:60]])
    assert np.allclose(batch[:60], stream, rtol=1e-4, atol=1e-5)
    assert np.isfinite(detector.threshold)
    assert detector.training_scores.shape == (train.shape[0],)


@pytest.mark.parametrize("detector", _detectors(), ids=lambda d: type(d).__name__)
def test_spike_scores_above_threshold(detector) -> None:
    """A large spike is scored above the detector's threshold."""
    train, test = _data()
    test = test.copy()
    test[100, 0] += 8.0
    detector.fit(train)
    scores = detector.score(test)
    assert scores[100] > detector.threshold
    assert scores[100] == pytest.approx(scores.max())


@pytest.mark.parametrize(
    "make",
    [
        lambda s: IsolationForestDetector(lags=2, n_estimators=20, seed=s),
        lambda s: LSTMErrorDetector(seq_len=8, hidden=8, epochs=1, seed=s),
    ],
    ids=["iforest", "lstm"],
)
def test_seeded_detectors_are_deterministic(make) -> None:
    """Same seed gives the same scores; a different seed gives different ones."""
    train, test = _data()
    a = make(0).fit(train).score(test)
    b = make(0).fit(train).score(test)
    c = make(1).fit(train).score(test)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_nan_is_refused_by_detectors_and_filled_by_cleaning() -> None:
    """Detectors refuse NaN; clean_series carries the last value forward and counts fills."""
    train, test = _data()
    test = test.copy()
    test[5, 1] = np.nan
    test[0, 0] = np.nan
    det = ZScoreDetector().fit(train)
    with pytest.raises(DetectorInputError, match="NaN"):
        det.score(test)
    cleaned = clean_series(test)
    assert cleaned.n_filled == 2
    assert cleaned.values[5, 1] == test[4, 1]
    assert cleaned.values[0, 0] == test[1, 0]
    with pytest.raises(DetectorInputError, match="no finite value"):
        clean_series(np.full(4, np.nan))


def test_wrong_width_and_unfitted_are_refused() -> None:
    """Scoring before fit, or with another number of features, is refused."""
    train, test = _data()
    with pytest.raises(DetectorInputError, match="fit the detector"):
        MADDetector().score(test)
    det = MADDetector().fit(train)
    with pytest.raises(DetectorInputError, match="3 features"):
        det.score(np.zeros((5, 3)))


def test_suppress_repeats_keeps_first_of_a_run() -> None:
    """A plateau fires once; a higher value later fires again."""
    s = np.array([0.0, 5.0, 5.0, 5.0, 0.0, 6.0, 0.0])
    assert suppress_repeats(s, 3).tolist() == [0.0, 5.0, 0.0, 0.0, 0.0, 6.0, 0.0]


def _spiky(n: int = 1500, period: int = 100, seed: int = 0) -> np.ndarray:
    """Noise around 1 with a spike of about +3 every ``period`` rows (a daily job, say)."""
    rng = np.random.default_rng(seed)
    x = 1.0 + 0.05 * rng.standard_normal(n)
    x[period // 2 :: period] += 3.0 + 0.05 * rng.standard_normal(x[period // 2 :: period].size)
    return x


def _brute_similar_earlier(values: np.ndarray, tolerance: float) -> np.ndarray:
    out = np.zeros(values.shape)
    for t in range(values.shape[0]):
        x = values[t]
        out[t] = np.sum(np.abs(values[:t] - x) <= tolerance * np.abs(x), axis=0)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_sorted_counting_equals_pairwise_count(seed: int) -> None:
    """Sorted counting (batch and one by one) equals comparing every pair, ties and zeros too."""
    rng = np.random.default_rng(seed)
    n = 400
    values = np.stack(
        [
            rng.standard_normal(n),  # all distinct
            np.round(rng.standard_normal(n), 1),  # many ties
            rng.choice([0.0, -0.0, 0.1, 0.2, 0.25, -0.1, 1.0, 1.15], n),  # zeros, boundary hits
            rng.integers(-3, 4, n).astype(float) * 0.3,  # ties at tolerance boundaries
        ],
        axis=1,
    )
    values[:2] = np.nan
    values[rng.integers(2, n, 10), rng.integers(0, 4, 10)] = np.nan
    for tolerance in (0.15, 0.5, 1.0):
        brute = _brute_similar_earlier(values, tolerance)
        assert np.array_equal(similar_earlier(values, tolerance), brute)
        for j in range(values.shape[1]):
            seen: list[float] = []
            for t, q in enumerate(values[:, j].tolist()):
                if np.isnan(q):
                    assert brute[t, j] == 0
                    continue
                assert count_within(seen, q, tolerance * abs(q)) == brute[t, j]
                seen.append(q)
                seen.sort()
    assert brute.sum() > 0


def test_novelty_streaming_equals_batch_with_training_shorter_than_window() -> None:
    """The first rows use the history they have, in batch and streamed scoring alike."""
    x = _spiky(600)
    det = NoveltyDetector(window=300).fit(x[:120])
    batch = det.score(x[120:])
    det.reset_stream()
    stream = np.array([det.update(row) for row in x[120:]])
    assert np.allclose(batch, stream, rtol=1e-9, atol=1e-12)
    assert det.training_scores.shape == (120,)


def test_novelty_is_deterministic() -> None:
    """Two fits on the same data give identical scores and thresholds."""
    x = _spiky()
    a = NoveltyDetector().fit(x[:400])
    b = NoveltyDetector().fit(x[:400])
    assert np.array_equal(a.score(x[400:]), b.score(x[400:]))
    assert a.threshold == b.threshold


def test_novelty_discounts_a_recurring_spike_but_not_a_new_one() -> None:
    """A spike seen every period fades; a spike of a new size still scores high."""
    x = _spiky()
    x[1220] -= 2.0  # a dip: a deviation never seen before, inside the range
    det = NoveltyDetector(window=300).fit(x[:400])
    s = det.score(x[400:])
    spikes = np.arange(450, 1500, 100) - 400
    z = ZScoreDetector(window=300).fit(x[:400]).score(x[400:])
    # The z-score keeps firing on every spike; the novelty score falls as the count grows.
    assert np.all(z[spikes] > 5.0)
    assert s[spikes[-1]] < 0.6 * s[spikes[0]]
    assert z[spikes[-1]] > 0.8 * z[spikes[0]]
    assert s[1220 - 400] > 2.0 * s[spikes[-1]]
    assert s[1220 - 400] > det.threshold > s[spikes[-1]]


def test_novelty_out_of_range_rule() -> None:
    """A value beyond the range seen so far scores range_score; training rows never do."""
    x = _spiky()
    x[900] = 10.0
    det = NoveltyDetector(range_tolerance=0.05, range_score=500.0).fit(x[:400])
    s = det.score(x[400:])
    assert s[500] == 500.0
    assert np.all(det.training_scores < 500.0)
    assert np.sum(s == 500.0) == 1
    assert NoveltyDetector().fit(x[:400]).score(x[400:])[500] < 500.0  # the rule is off


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 2}, "window"),
        ({"tolerance": 0.0}, "tolerance"),
        ({"range_tolerance": -0.1}, "range_tolerance"),
        ({"range_score": 0.0}, "range_score"),
        ({"contamination": 0.7}, "contamination"),
    ],
)
def test_novelty_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(DetectorInputError, match=match):
        NoveltyDetector(**kwargs)


def test_novelty_refuses_unfitted_and_short_training() -> None:
    with pytest.raises(DetectorInputError, match="fit the detector"):
        NoveltyDetector().score(np.zeros(5))
    with pytest.raises(DetectorInputError, match="at least 3"):
        NoveltyDetector().fit(np.zeros(2))
