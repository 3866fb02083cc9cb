"""Anomaly detectors: batch equals streaming, determinism, detection, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from agents.detectors import (
    DetectorInputError,
    IsolationForestDetector,
    MADDetector,
    ZScoreDetector,
    clean_series,
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
