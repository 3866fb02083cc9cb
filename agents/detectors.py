"""Anomaly detectors behind one interface: fit, score (batch), update (streaming), threshold.

Every detector scores each row of a ``(n_rows, n_features)`` array from that row and the rows
before it only (no look-ahead), so the batch score of a series equals the scores obtained by
streaming its rows one by one through :meth:`AnomalyDetector.update` after :meth:`fit`.
Higher is more anomalous. :attr:`threshold` is set by :meth:`fit` to the ``1 - contamination``
quantile of the training scores and can be replaced with :meth:`set_threshold`.

Detectors: rolling or global z-score, median absolute deviation, a rolling z-score discounted
by how often a similar deviation was seen before (:class:`NoveltyDetector`), Isolation Forest
(scikit-learn) on a lag embedding, and the prediction error of an LSTM forecaster
(:mod:`agents.forecaster`).
"""

from __future__ import annotations

import abc
import bisect
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:  # scikit-learn takes about two seconds to import; only fit needs it
    from sklearn.ensemble import IsolationForest

FloatArray = npt.NDArray[np.float64]

MAD_TO_SIGMA = 1.4826


class DetectorInputError(ValueError):
    """Input a detector cannot score: wrong shape, too short, or no finite values."""


@dataclass(frozen=True, slots=True)
class CleanedSeries:
    """A series with its non-finite values filled, and how many were filled."""

    values: FloatArray
    n_filled: int


def clean_series(values: npt.ArrayLike, name: str = "series") -> CleanedSeries:
    """Fill NaN / inf by carrying the last finite value forward (leading ones: the first).

    A column with no finite value is refused. Returns a 2-D ``(n_rows, n_features)`` array.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise DetectorInputError(f"{name}: expected a non-empty 1-D or 2-D array, got {x.shape}")
    bad = ~np.isfinite(x)
    n_filled = int(bad.sum())
    if n_filled == 0:
        return CleanedSeries(values=x, n_filled=0)
    out = x.copy()
    for j in range(x.shape[1]):
        ok = np.flatnonzero(~bad[:, j])
        if ok.size == 0:
            raise DetectorInputError(f"{name}: column {j} has no finite value")
        last_ok = np.maximum.accumulate(np.where(~bad[:, j], np.arange(x.shape[0]), -1))
        last_ok[last_ok < 0] = ok[0]
        out[:, j] = x[last_ok, j]
    return CleanedSeries(values=out, n_filled=n_filled)


def as_rows(x: npt.ArrayLike, name: str, n_features: int | None = None) -> FloatArray:
    """Check a detector input is a finite ``(n_rows, n_features)`` array (1-D becomes a column)."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise DetectorInputError(
            f"{name}: expected a non-empty (rows, features) array, got {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise DetectorInputError(
            f"{name}: contains NaN or inf; clean it first (agents.detectors.clean_series)"
        )
    if n_features is not None and a.shape[1] != n_features:
        raise DetectorInputError(
            f"{name}: has {a.shape[1]} features, the detector was fit on {n_features}"
        )
    return a


@runtime_checkable
class AnomalyDetector(Protocol):
    """What every anomaly detector offers."""

    threshold: float
    training_scores: FloatArray

    def fit(self, train: FloatArray) -> AnomalyDetector:
        """Learn from rows assumed mostly normal; set :attr:`threshold` and training scores.

        ``training_scores`` are the causal scores of the training rows themselves.
        """
        ...

    def score(self, x: FloatArray) -> FloatArray:
        """One causal anomaly score per row of ``x`` (a fresh stream, history from fit)."""
        ...

    def update(self, row: FloatArray) -> float:
        """Score the next row of a stream and remember it."""
        ...

    def reset_stream(self) -> None:
        """Start a new stream (forget rows seen through :meth:`update`)."""
        ...

    def set_threshold(self, threshold: float) -> None:
        """Replace the threshold."""
        ...


def _rolling(x: FloatArray, window: int, stat: Callable[[FloatArray], FloatArray]) -> FloatArray:
    """``stat`` over the ``window`` rows *before* each row (NaN for the first ``window`` rows).

    ``stat`` maps a ``(rows, window, features)`` block to ``(rows, features)``; rows are done in
    chunks to bound memory.
    """
    n, d = x.shape
    out = np.full((n, d), np.nan)
    if n <= window:
        return out
    views = sliding_window_view(x, window, axis=0)[:-1]  # (n - window, d, window)
    chunk = max(1, 2_000_000 // (window * d))
    for start in range(0, views.shape[0], chunk):
        block = np.moveaxis(views[start : start + chunk], 2, 1)
        out[window + start : window + start + block.shape[0]] = stat(block)
    return out


def _mad_stats(block: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    med = np.median(block, axis=-2)
    mad = np.median(np.abs(block - np.expand_dims(med, -2)), axis=-2)
    return med, mad, np.std(block, axis=-2)


def _set_quantile_threshold(scores: FloatArray, contamination: float) -> float:
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise DetectorInputError("training data too short to produce any score")
    return float(np.quantile(finite, 1.0 - contamination))


def _check_contamination(contamination: float) -> None:
    if not 0.0 < contamination < 0.5:
        raise DetectorInputError(f"contamination must be in (0, 0.5), got {contamination}")


class _WindowedDetector(abc.ABC):
    """Shared machinery: global statistics from fit, or rolling over the last ``window`` rows."""

    def __init__(self, window: int | None, contamination: float, min_scale: float) -> None:
        if window is not None and window < 3:
            raise DetectorInputError(f"window must be >= 3 rows or None, got {window}")
        _check_contamination(contamination)
        if min_scale <= 0.0:
            raise DetectorInputError(f"min_scale must be > 0, got {min_scale}")
        self.window = window
        self.contamination = contamination
        self.min_scale = min_scale
        self.threshold = float("inf")
        self.n_features: int | None = None
        self._centre: FloatArray | None = None
        self._scale: FloatArray | None = None
        self._history: collections.deque[FloatArray] = collections.deque(maxlen=window or 1)
        self._train_tail: FloatArray | None = None
        self.training_scores: FloatArray = np.zeros(0)

    @abc.abstractmethod
    def _stats(self, block: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Centre and scale of each feature over the rows axis (-2) of ``block``."""

    def _global(self, train: FloatArray) -> None:
        centre, scale = self._stats(train[None, :, :])
        self._centre, self._scale = centre[0], scale[0]

    def fit(self, train: FloatArray) -> _WindowedDetector:
        """Learn global statistics (``window=None``) and the threshold from ``train``."""
        train = as_rows(train, "train")
        if self.window is not None and train.shape[0] <= self.window:
            raise DetectorInputError(
                f"train has {train.shape[0]} rows; a rolling window of {self.window} needs more"
            )
        self.n_features = train.shape[1]
        if self.window is None:
            self._global(train)
            self._train_tail = None
        else:
            self._train_tail = train[-self.window :].copy()
        self.training_scores = self._score_fresh(train, None)
        self.threshold = _set_quantile_threshold(self.training_scores, self.contamination)
        self.reset_stream()
        return self

    def _z(self, x: FloatArray, centre: FloatArray, scale: FloatArray) -> FloatArray:
        z = np.abs(x - centre) / np.maximum(scale, self.min_scale)
        return np.asarray(np.max(z, axis=-1), dtype=np.float64)

    def _score_fresh(self, x: FloatArray, tail: FloatArray | None) -> FloatArray:
        if self.window is None:
            assert self._centre is not None and self._scale is not None
            return self._z(x, self._centre, self._scale)
        full = x if tail is None else np.concatenate([tail, x])
        centre = _rolling(full, self.window, lambda b: self._stats(b)[0])
        scale = _rolling(full, self.window, lambda b: self._stats(b)[1])
        z = self._z(full, centre, scale)
        z = np.where(np.isnan(z), 0.0, z)
        return z[full.shape[0] - x.shape[0] :]

    def score(self, x: FloatArray) -> FloatArray:
        """Causal scores of ``x`` as a new stream that follows the training data."""
        if self.n_features is None:
            raise DetectorInputError("fit the detector before scoring")
        x = as_rows(x, "x", self.n_features)
        return self._score_fresh(x, self._train_tail)

    def update(self, row: FloatArray) -> float:
        """Score one row against the stream so far, then append it."""
        if self.n_features is None:
            raise DetectorInputError("fit the detector before scoring")
        r = as_rows(np.asarray(row, dtype=np.float64).reshape(1, -1), "row", self.n_features)[0]
        if self.window is None:
            assert self._centre is not None and self._scale is not None
            return float(self._z(r[None, :], self._centre, self._scale)[0])
        if len(self._history) < self.window:
            value = 0.0
        else:
            block = np.stack(self._history)[None, :, :]
            centre, scale = self._stats(block)
            value = float(self._z(r[None, :], centre[0], scale[0])[0])
        self._history.append(r)
        return value

    def reset_stream(self) -> None:
        """Forget streamed rows; the stream starts right after the training data."""
        self._history.clear()
        if self._train_tail is not None:
            self._history.extend(self._train_tail)

    def set_threshold(self, threshold: float) -> None:
        """Replace the threshold."""
        self.threshold = float(threshold)


class ZScoreDetector(_WindowedDetector):
    """``max_j |x_j - mean_j| / std_j`` over features; statistics global (from fit) or rolling.

    ``min_scale`` floors the standard deviation so a constant stretch does not divide by zero.
    """

    def __init__(
        self, window: int | None = None, contamination: float = 0.01, min_scale: float = 1e-6
    ) -> None:
        super().__init__(window, contamination, min_scale)

    def _stats(self, block: FloatArray) -> tuple[FloatArray, FloatArray]:
        return np.mean(block, axis=-2), np.std(block, axis=-2)


class MADDetector(_WindowedDetector):
    """``max_j |x_j - median_j| / (1.4826 MAD_j)``: a z-score robust to outliers in the history.

    The scale is floored at ``mad_floor`` times the standard deviation (a series that is
    constant most of the time has MAD 0) and at ``min_scale``.
    """

    def __init__(
        self,
        window: int | None = None,
        contamination: float = 0.01,
        min_scale: float = 1e-6,
        mad_floor: float = 0.1,
    ) -> None:
        super().__init__(window, contamination, min_scale)
        if mad_floor < 0.0:
            raise DetectorInputError(f"mad_floor must be >= 0, got {mad_floor}")
        self.mad_floor = mad_floor

    def _stats(self, block: FloatArray) -> tuple[FloatArray, FloatArray]:
        med, mad, std = _mad_stats(block)
        return med, np.maximum(MAD_TO_SIGMA * mad, self.mad_floor * std)


def _first_failing(
    s: FloatArray,
    q: FloatArray,
    c: FloatArray,
    holds: Callable[[FloatArray, FloatArray, FloatArray], npt.NDArray[np.bool_]],
    start: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Per query, the first index of sorted ``s`` where ``holds(s[i], q, c)`` is False.

    ``holds`` must be True on a prefix of ``s`` and False after it. ``start`` is a guess (an
    index near the answer); the search steps over whole runs of equal values from there.
    """
    i = start.copy()
    n = s.shape[0]
    while True:  # back while the value before i fails
        back = np.zeros(i.shape, dtype=bool)
        m = i > 0
        back[m] = ~holds(s[i[m] - 1], q[m], c[m])
        if not back.any():
            break
        i[back] = np.searchsorted(s, s[i[back] - 1], side="left")
    while True:  # forward while the value at i holds
        fwd = np.zeros(i.shape, dtype=bool)
        m = i < n
        fwd[m] = holds(s[i[m]], q[m], c[m])
        if not fwd.any():
            break
        i[fwd] = np.searchsorted(s, s[i[fwd]], side="right")
    return i


def _below(v: FloatArray, q: FloatArray, c: FloatArray) -> npt.NDArray[np.bool_]:
    return np.asarray((v < q) & (np.abs(v - q) > c))


def _not_above(v: FloatArray, q: FloatArray, c: FloatArray) -> npt.NDArray[np.bool_]:
    return np.asarray(~((v > q) & (np.abs(v - q) > c)))


def _earlier_between(
    rank: npt.NDArray[np.int64], lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Per ``t``: how many ``s < t`` have ``lo[t] <= rank[s] < hi[t]`` (ranks below ``n``).

    ``[0, t)`` splits into one aligned block of ``2**k`` rows per set bit ``k`` of ``t``; per
    level the blocks' ranks are sorted once and each row counts its block with two binary
    searches, so the cost is O(n log^2 n).
    """
    n = rank.shape[0]
    t = np.arange(n, dtype=np.int64)
    out = np.zeros(n, dtype=np.int64)
    for k in range(max(n, 1).bit_length()):
        has = ((t >> k) & 1).astype(bool)
        if not has.any():
            continue
        keys = np.sort((t >> k) * n + rank)
        base = ((t[has] >> k) - 1) * n
        out[has] += np.searchsorted(keys, base + hi[has]) - np.searchsorted(keys, base + lo[has])
    return out


def similar_earlier(values: FloatArray, tolerance: float) -> FloatArray:
    """Per row and column: earlier rows whose value ``v`` has ``|v - x| <= tolerance * |x|``.

    ``x`` is the row's own value; NaN matches nothing. Exactly the count of the pairwise
    comparison (the matching values form one run of the column sorted), found with binary
    searches: O(n log^2 n) per column instead of O(n^2).
    """
    n, d = values.shape
    out = np.zeros((n, d))
    for j in range(d):
        col = values[:, j]
        order = np.argsort(col, kind="stable")  # NaN last
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        valid = ~np.isnan(col)
        s = col[order[: int(valid.sum())]]
        q = col[valid]
        c = tolerance * np.abs(q)
        lo = np.zeros(n, dtype=np.int64)
        hi = np.zeros(n, dtype=np.int64)
        lo[valid] = _first_failing(s, q, c, _below, np.searchsorted(s, q - c, side="left"))
        hi[valid] = _first_failing(s, q, c, _not_above, np.searchsorted(s, q + c, side="right"))
        out[:, j] = _earlier_between(rank, lo, hi)
    return out


def count_within(s: list[float], q: float, c: float) -> int:
    """How many values of sorted ``s`` have ``|v - q| <= c`` (``c >= 0``), in O(log n)."""
    n = len(s)
    lo = bisect.bisect_left(s, q - c)
    while lo > 0 and abs(s[lo - 1] - q) <= c:
        lo = bisect.bisect_left(s, s[lo - 1])
    while lo < n and s[lo] < q and abs(s[lo] - q) > c:
        lo = bisect.bisect_right(s, s[lo])
    hi = bisect.bisect_right(s, q + c)
    while hi < n and abs(s[hi] - q) <= c:
        hi = bisect.bisect_right(s, s[hi])
    while hi > 0 and s[hi - 1] > q and abs(s[hi - 1] - q) > c:
        hi = bisect.bisect_left(s, s[hi - 1])
    return max(0, hi - lo)


class NoveltyDetector:
    """Rolling z-score discounted by how familiar the row's deviation is, plus a range rule.

    For each feature ``j`` and row ``t``, with the mean, deviation and median of the ``window``
    rows before it:

    * ``z = |x - mean| / std`` (the rolling z-score of :class:`ZScoreDetector`);
    * ``dev = x - median`` and ``count`` = the number of earlier rows of the stream (training
      rows included, all of them, not just the window) whose ``dev`` lies within
      ``tolerance * |dev|`` of this one;
    * ``novelty = z / sqrt(1 + count)``: a deviation seen many times before (a daily spike, a
      recurring dip) is discounted, a new one keeps its z-score.

    The score is the largest novelty over features divided by the 99th percentile of the
    training rows' novelty (so one threshold serves series of any scale). With
    ``range_tolerance`` set (off by default), after :meth:`fit` a value beyond the range of
    every earlier value of its feature by more than ``range_tolerance`` times that range (the
    spatial-anomaly rule of Numenta's NAB detector, Ahmad et al. 2017; 0.05 there) scores
    ``range_score`` whatever its novelty. The first training rows use
    the shorter history they have (the first two score 0 and take no part in the counts).
    Everything is causal, so batch and streamed scores agree; the detector has no randomness.
    Every deviation is kept (memory grows with the stream); counting uses a sorted history, so
    a streamed row costs O(d log n) searches plus an insertion and a block of n rows
    O(d n log^2 n).
    """

    def __init__(
        self,
        window: int = 300,
        tolerance: float = 0.15,
        range_tolerance: float | None = None,
        range_score: float = 1000.0,
        contamination: float = 0.01,
        min_scale: float = 1e-6,
    ) -> None:
        if window < 3:
            raise DetectorInputError(f"window must be >= 3 rows, got {window}")
        if tolerance <= 0.0:
            raise DetectorInputError(f"tolerance must be > 0, got {tolerance}")
        if range_tolerance is not None and range_tolerance < 0.0:
            raise DetectorInputError(f"range_tolerance must be >= 0, got {range_tolerance}")
        if range_score <= 0.0:
            raise DetectorInputError(f"range_score must be > 0, got {range_score}")
        _check_contamination(contamination)
        if min_scale <= 0.0:
            raise DetectorInputError(f"min_scale must be > 0, got {min_scale}")
        self.window = window
        self.tolerance = tolerance
        self.range_tolerance = range_tolerance
        self.range_score = range_score
        self.contamination = contamination
        self.min_scale = min_scale
        self.threshold = float("inf")
        self.training_scores: FloatArray = np.zeros(0)
        self.n_features: int | None = None
        self._reference = 1.0
        self._train_tail: FloatArray | None = None
        self._train_dev: FloatArray | None = None
        self._train_min: FloatArray | None = None
        self._train_max: FloatArray | None = None
        self._history: collections.deque[FloatArray] = collections.deque(maxlen=window)
        self._sorted_devs: list[list[float]] = []  # per feature, ascending
        self._min: FloatArray | None = None
        self._max: FloatArray | None = None

    def _z_and_dev(self, full: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per-feature z and deviation from the median of the ``window`` rows before each row.

        Rows with fewer earlier rows use those; the first two rows are NaN.
        """
        mean = _rolling(full, self.window, lambda b: np.mean(b, axis=-2))
        std = _rolling(full, self.window, lambda b: np.std(b, axis=-2))
        median = _rolling(full, self.window, lambda b: np.median(b, axis=-2))
        for t in range(2, min(self.window + 1, full.shape[0])):
            mean[t], std[t], median[t] = self._stats(full[:t])
        z = np.abs(full - mean) / np.maximum(std, self.min_scale)
        return z, full - median

    @staticmethod
    def _stats(rows: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        return np.mean(rows, axis=0), np.std(rows, axis=0), np.median(rows, axis=0)

    def _counts(self, past: FloatArray, dev: FloatArray) -> FloatArray:
        """Per row of ``dev`` and feature: earlier deviations within tolerance of it.

        Earlier means all of ``past``, then the rows of ``dev`` before it; NaN matches nothing.
        """
        return similar_earlier(np.concatenate([past, dev]), self.tolerance)[past.shape[0] :]

    def _novelty(self, z: FloatArray, count: FloatArray) -> FloatArray:
        nov = z / np.sqrt(1.0 + count)
        nov = np.where(np.isnan(nov), 0.0, nov)
        return np.asarray(np.max(nov, axis=-1), dtype=np.float64) / self._reference

    def _out_of_range(
        self, x: FloatArray, low: FloatArray, high: FloatArray
    ) -> npt.NDArray[np.bool_]:
        """Rows of ``x`` beyond ``[low, high]`` (per row) by more than the tolerance."""
        if self.range_tolerance is None:
            return np.zeros(x.shape[0], dtype=bool)
        span = high - low
        margin = self.range_tolerance * span
        outside = (span > 0.0) & ((x > high + margin) | (x < low - margin))
        return np.asarray(np.any(outside, axis=-1))

    def fit(self, train: FloatArray) -> NoveltyDetector:
        """Remember the training rows' deviations and range; set the reference and threshold."""
        train = as_rows(train, "train")
        if train.shape[0] < 3:
            raise DetectorInputError(f"train has {train.shape[0]} rows; need at least 3")
        self.n_features = train.shape[1]
        z, dev = self._z_and_dev(train)
        self._reference = 1.0
        raw = self._novelty(z, self._counts(dev[:0], dev))
        self._reference = max(float(np.quantile(raw, 0.99)), 1e-9)
        self.training_scores = raw / self._reference
        self.threshold = _set_quantile_threshold(self.training_scores, self.contamination)
        self._train_tail = train[-self.window :].copy()
        self._train_dev = dev
        self._train_min = train.min(axis=0)
        self._train_max = train.max(axis=0)
        self.reset_stream()
        return self

    def _fitted(self) -> int:
        if self.n_features is None or self._train_dev is None:
            raise DetectorInputError("fit the detector before scoring")
        return self.n_features

    def score(self, x: FloatArray) -> FloatArray:
        """Scores of ``x`` as a stream that follows the training data."""
        x = as_rows(x, "x", self._fitted())
        assert self._train_tail is not None and self._train_dev is not None
        assert self._train_min is not None and self._train_max is not None
        n_tail = self._train_tail.shape[0]
        z, dev = self._z_and_dev(np.concatenate([self._train_tail, x]))
        z, dev = z[n_tail:], dev[n_tail:]
        scores = self._novelty(z, self._counts(self._train_dev, dev))
        low = np.minimum(self._train_min, np.minimum.accumulate(x, axis=0))
        high = np.maximum(self._train_max, np.maximum.accumulate(x, axis=0))
        low = np.concatenate([self._train_min[None, :], low[:-1]])
        high = np.concatenate([self._train_max[None, :], high[:-1]])
        outside = self._out_of_range(x, low, high)
        return np.where(outside, np.maximum(scores, self.range_score), scores)

    def update(self, row: FloatArray) -> float:
        """Score one row against the stream so far, then remember it."""
        n_features = self._fitted()
        r = as_rows(np.asarray(row, dtype=np.float64).reshape(1, -1), "row", n_features)[0]
        assert self._min is not None and self._max is not None
        mean, std, median = self._stats(np.stack(self._history))
        z = np.abs(r - mean) / np.maximum(std, self.min_scale)
        dev = r - median
        tol = self.tolerance * np.abs(dev)
        count = np.array(
            [
                0.0 if np.isnan(q) else float(count_within(s, q, c))
                for s, q, c in zip(self._sorted_devs, dev.tolist(), tol.tolist(), strict=True)
            ]
        )
        value = float(self._novelty(z[None, :], count[None, :])[0])
        if self._out_of_range(r[None, :], self._min[None, :], self._max[None, :])[0]:
            value = max(value, self.range_score)
        self._history.append(r)
        for s, q in zip(self._sorted_devs, dev.tolist(), strict=True):
            if not np.isnan(q):
                bisect.insort(s, q)
        self._min = np.minimum(self._min, r)
        self._max = np.maximum(self._max, r)
        return value

    def reset_stream(self) -> None:
        """Forget streamed rows; the stream starts right after the training data."""
        assert self._train_tail is not None and self._train_dev is not None
        assert self._train_min is not None and self._train_max is not None
        self._history.clear()
        self._history.extend(self._train_tail)
        self._sorted_devs = [np.sort(col[~np.isnan(col)]).tolist() for col in self._train_dev.T]
        self._min = self._train_min.copy()
        self._max = self._train_max.copy()

    def set_threshold(self, threshold: float) -> None:
        """Replace the threshold."""
        self.threshold = float(threshold)


def lag_embed(x: FloatArray, lags: int, history: FloatArray | None = None) -> FloatArray:
    """Rows ``[x_{t-lags+1}, ..., x_t]`` flattened; the start is padded with ``history`` or x_0."""
    if history is not None and history.shape[0] >= lags - 1:
        pad = history[history.shape[0] - (lags - 1) :] if lags > 1 else history[:0]
    else:
        pad = np.repeat(x[:1], lags - 1, axis=0)
    full = np.concatenate([pad, x])
    views = sliding_window_view(full, lags, axis=0)  # (n, d, lags)
    return np.ascontiguousarray(np.moveaxis(views, 2, 1).reshape(x.shape[0], -1))


class IsolationForestDetector:
    """Isolation Forest (Liu, Ting & Zhou 2008; scikit-learn) on a lag embedding of the rows.

    Inputs are standardised with the training mean and deviation; the score is the negated
    ``score_samples`` (higher is more anomalous).
    """

    def __init__(
        self,
        lags: int = 1,
        n_estimators: int = 100,
        contamination: float = 0.01,
        seed: int = 0,
    ) -> None:
        if lags < 1:
            raise DetectorInputError(f"lags must be >= 1, got {lags}")
        _check_contamination(contamination)
        self.lags = lags
        self.n_estimators = n_estimators
        self.contamination = contamination
        self.seed = seed
        self.threshold = float("inf")
        self.n_features: int | None = None
        self._model: IsolationForest | None = None
        self._mean: FloatArray | None = None
        self._std: FloatArray | None = None
        self._tail: FloatArray | None = None
        self._history: collections.deque[FloatArray] = collections.deque(maxlen=lags)
        self.training_scores: FloatArray = np.zeros(0)

    def _standardise(self, x: FloatArray) -> FloatArray:
        assert self._mean is not None and self._std is not None
        return (x - self._mean) / self._std

    def fit(self, train: FloatArray) -> IsolationForestDetector:
        """Fit the forest on the embedded, standardised training rows."""
        train = as_rows(train, "train")
        self.n_features = train.shape[1]
        self._mean = train.mean(axis=0)
        self._std = np.maximum(train.std(axis=0), 1e-9)
        z = self._standardise(train)
        features = lag_embed(z, self.lags)
        from sklearn.ensemble import IsolationForest

        self._model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self._model.fit(features)
        self._tail = z[-(self.lags - 1) :] if self.lags > 1 else z[:0]
        self.training_scores = np.asarray(-self._model.score_samples(features), dtype=np.float64)
        self.threshold = _set_quantile_threshold(self.training_scores, self.contamination)
        self.reset_stream()
        return self

    def score(self, x: FloatArray) -> FloatArray:
        """Scores of ``x`` as a stream that follows the training data."""
        if self._model is None or self.n_features is None:
            raise DetectorInputError("fit the detector before scoring")
        z = self._standardise(as_rows(x, "x", self.n_features))
        features = lag_embed(z, self.lags, self._tail)
        return np.asarray(-self._model.score_samples(features), dtype=np.float64)

    def update(self, row: FloatArray) -> float:
        """Score one row given the previous ``lags - 1`` rows of the stream."""
        if self._model is None or self.n_features is None:
            raise DetectorInputError("fit the detector before scoring")
        r = as_rows(np.asarray(row, dtype=np.float64).reshape(1, -1), "row", self.n_features)
        z = self._standardise(r)[0]
        self._history.append(z)
        if len(self._history) < self.lags:
            pad = np.repeat(self._history[0][None, :], self.lags - len(self._history), axis=0)
            window = np.concatenate([pad, np.stack(self._history)])
        else:
            window = np.stack(self._history)
        return float(-self._model.score_samples(window.reshape(1, -1))[0])

    def reset_stream(self) -> None:
        """Forget streamed rows; the stream starts right after the training data."""
        self._history.clear()
        if self._tail is not None:
            self._history.extend(self._tail)

    def set_threshold(self, threshold: float) -> None:
        """Replace the threshold."""
        self.threshold = float(threshold)


def normalise_by_reference(
    scores: FloatArray, n_reference: int, quantile: float = 0.99
) -> FloatArray:
    """Divide by the ``quantile`` of the first ``n_reference`` scores (causal, per-series scale).

    Makes one threshold serve series whose raw scores differ in scale; NAB's probationary
    period is the natural reference.
    """
    if n_reference < 1:
        raise DetectorInputError(f"n_reference must be >= 1, got {n_reference}")
    ref = float(np.quantile(scores[:n_reference], quantile))
    return scores / max(ref, 1e-9)


def suppress_repeats(scores: FloatArray, refractory: int) -> FloatArray:
    """Keep a score only where it exceeds every score of the previous ``refractory`` rows.

    An anomaly then fires once instead of on every row it lasts, whatever the threshold; this is
    causal.
    """
    if refractory < 1:
        raise DetectorInputError(f"refractory must be >= 1, got {refractory}")
    padded = np.concatenate([np.full(refractory, -np.inf), scores])
    previous_max = sliding_window_view(padded, refractory)[:-1].max(axis=1)
    return np.where(scores > previous_max, scores, 0.0)
