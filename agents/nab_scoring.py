"""The Numenta Anomaly Benchmark (NAB) scoring rules and the readers for its folder layout.

Implemented from the published description (Lavin & Ahmad, "Evaluating Real-time Anomaly
Detection Algorithms", arXiv:1510.03336, 2015, and the NAB documentation):

* Each labelled anomaly is an *anomaly window* of rows. A detection is a row whose anomaly
  score is at or above the detector's threshold.
* The first 15 % of a file (at most 750 rows) is a probationary period: its rows are never
  scored.
* A row inside a window is worth ``A_tp * sigma(y) / sigma(-1)`` where ``y`` is the row's
  relative position in the window (-1 at the left edge, 0 one row past the right edge) and
  ``sigma(y) = 2 / (1 + exp(5 y)) - 1`` is the scaled sigmoid; only the earliest detection in a
  window counts. A window with no detection costs ``-A_fn``.
* A detection outside every window costs ``A_fp * sigma(y)`` with ``y`` the distance past the
  preceding window's right edge in units of that window's width (``y >= 3``, or no preceding
  window, gives ``sigma = -1``), so false positives right after a window cost less.
* A file's raw score is the sum of these; a corpus score is normalised between the null
  detector (no detections: ``-A_fn`` per window) and the perfect detector (each window
  detected at its left edge: ``A_tp`` per window) to ``100 (S - S_null) / (S_perfect -
  S_null)``.

Timestamps are treated as an ordered sequence of rows (gaps are allowed, repeated timestamps
are allowed, a timestamp earlier than its predecessor is refused).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

PROBATION_FRACTION = 0.15
PROBATION_CAP_ROWS = 750
PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


class NabDataError(ValueError):
    """Input that cannot be scored: a malformed file, a missing label, a bad timestamp."""


@dataclass(frozen=True, slots=True)
class CostMatrix:
    """Weights of one NAB application profile."""

    tp_weight: float
    fp_weight: float
    fn_weight: float

    def __post_init__(self) -> None:
        for name in ("tp_weight", "fp_weight", "fn_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise NabDataError(f"cost matrix {name} must be finite and >= 0, got {value}")


PROFILES: dict[str, CostMatrix] = {
    "standard": CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    "reward_low_FP_rate": CostMatrix(tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    "reward_low_FN_rate": CostMatrix(tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
}


@dataclass(frozen=True, slots=True)
class FileScore:
    """The raw NAB score of one file at one threshold, with point counts."""

    key: str
    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    total: int


@dataclass(frozen=True, slots=True)
class ScoredLayout:
    """Per-row scoring weights of one file, independent of the detector."""

    sweep: npt.NDArray[np.float64]
    window_id: npt.NDArray[np.int64]
    scorable: npt.NDArray[np.bool_]
    n_windows: int


def scaled_sigmoid(position: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """NAB's scaled sigmoid ``2 / (1 + exp(5 y)) - 1``, and -1 for ``y >= 3``.

    ``y = -1`` (left window edge) gives 0.98661, ``y = 0`` gives 0 and ``y = 1`` gives -0.98661.
    """
    y = np.asarray(position, dtype=np.float64)
    value = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y >= 3.0, -1.0, value)


def probationary_rows(n_rows: int) -> int:
    """Rows at the start of a file that are never scored: 15 % of the file, at most 750."""
    return min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_CAP_ROWS)


def parse_timestamps(values: Sequence[str], source: str) -> npt.NDArray[np.datetime64]:
    """Parse ``YYYY-MM-DD HH:MM:SS[.ffffff]`` strings; a bad one is named with its row."""
    try:
        return np.array(values, dtype="datetime64[us]")
    except ValueError:
        for row, text in enumerate(values):
            try:
                np.datetime64(text, "us")
            except ValueError:
                raise NabDataError(
                    f"{source}: row {row + 1}: timestamp {text!r} is not YYYY-MM-DD HH:MM:SS"
                ) from None
        raise


def check_order(timestamps: npt.NDArray[np.datetime64], source: str) -> None:
    """Refuse a series whose timestamps go backwards (repeats are allowed)."""
    if timestamps.size > 1:
        back = np.flatnonzero(timestamps[1:] < timestamps[:-1])
        if back.size:
            row = int(back[0]) + 1
            raise NabDataError(
                f"{source}: timestamps go backwards at data row {row + 1}: "
                f"{timestamps[row]} after {timestamps[row - 1]}"
            )


def read_columns(path: Path, columns: Sequence[str]) -> dict[str, list[str]]:
    """Read the named columns of a CSV with a header, as strings, checking every row's width."""
    if not path.is_file():
        raise NabDataError(f"{path}: file not found")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise NabDataError(f"{path}: empty file, expected a header row")
        missing = [c for c in columns if c not in header]
        if missing:
            raise NabDataError(f"{path}: missing column(s) {missing}; header is {header}")
        positions = [header.index(c) for c in columns]
        out: dict[str, list[str]] = {c: [] for c in columns}
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise NabDataError(
                    f"{path}: line {line_no} has {len(row)} fields, the header has {len(header)}"
                )
            for c, p in zip(columns, positions, strict=True):
                out[c].append(row[p])
    if not out[columns[0]]:
        raise NabDataError(f"{path}: no data rows")
    return out


def parse_floats(values: Sequence[str], source: str, column: str) -> npt.NDArray[np.float64]:
    """Parse a column of numbers; a non-number is named with its data row."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        for row, text in enumerate(values):
            try:
                float(text)
            except ValueError:
                raise NabDataError(
                    f"{source}: data row {row + 1}: {column} {text!r} is not a number"
                ) from None
        raise


@dataclass(frozen=True, slots=True)
class Series:
    """One single-metric series: timestamps and values, in file order."""

    key: str
    timestamps: npt.NDArray[np.datetime64]
    values: npt.NDArray[np.float64]


def read_series(path: Path, key: str, value_column: str = "value") -> Series:
    """Read a NAB data CSV (``timestamp,value``), refusing bad rows and backwards time.

    NaN values are kept; detectors decide how to clean them (see
    :func:`agents.detectors.clean_series`).
    """
    cols = read_columns(path, ("timestamp", value_column))
    ts = parse_timestamps(cols["timestamp"], str(path))
    check_order(ts, str(path))
    values = parse_floats(cols[value_column], str(path), value_column)
    return Series(key=key, timestamps=ts, values=values)


def read_detector_output(path: Path, key: str) -> Series:
    """Read a published NAB raw output file's ``timestamp`` and ``anomaly_score`` columns only.

    A missing or NaN anomaly score is refused: scoring it would silently change the result.
    """
    series = read_series(path, key, value_column="anomaly_score")
    bad = np.flatnonzero(~np.isfinite(series.values))
    if bad.size:
        raise NabDataError(
            f"{path}: anomaly_score is missing or not finite at data row {int(bad[0]) + 1} "
            f"({bad.size} rows); refusing to score"
        )
    return series


def load_windows(path: Path) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """Read ``combined_windows.json``: file key -> list of ``[start, end]`` timestamps."""
    if not path.is_file():
        raise NabDataError(f"{path}: label windows file not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise NabDataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise NabDataError(f"{path}: expected an object of file key -> windows")
    out: dict[str, list[tuple[np.datetime64, np.datetime64]]] = {}
    for key, windows in raw.items():
        parsed: list[tuple[np.datetime64, np.datetime64]] = []
        for w in windows:
            if not (isinstance(w, list) and len(w) == 2):
                raise NabDataError(f"{path}: {key}: window {w!r} is not [start, end]")
            start, end = parse_timestamps(w, f"{path}: {key}")
            if end < start:
                raise NabDataError(f"{path}: {key}: window {w!r} ends before it starts")
            parsed.append((start, end))
        for (_, prev_end), (start, _) in itertools.pairwise(parsed):
            if start <= prev_end:
                raise NabDataError(f"{path}: {key}: windows overlap or are out of order")
        out[key] = parsed
    return out


def window_rows(
    timestamps: npt.NDArray[np.datetime64],
    windows: Iterable[tuple[np.datetime64, np.datetime64]],
    source: str,
) -> npt.NDArray[np.int64]:
    """Row index pairs ``[first, last]`` (inclusive) of each window.

    A window edge that is a row's timestamp maps to the first such row (the NAB convention when
    timestamps repeat); otherwise the window covers the rows whose timestamps fall inside it.
    """
    pairs = []
    for start, end in windows:
        first = int(np.searchsorted(timestamps, start, side="left"))
        last_left = int(np.searchsorted(timestamps, end, side="left"))
        if last_left < timestamps.size and timestamps[last_left] == end:
            last = last_left
        else:
            last = int(np.searchsorted(timestamps, end, side="right")) - 1
        if first > last:
            raise NabDataError(f"{source}: window [{start}, {end}] contains no rows")
        pairs.append((first, last))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def layout(n_rows: int, windows: npt.NDArray[np.int64], cost: CostMatrix) -> ScoredLayout:
    """Per-row weight of a detection (the NAB sweep) and the window each row belongs to."""
    idx = np.arange(n_rows)
    sweep = np.empty(n_rows, dtype=np.float64)
    window_id = np.full(n_rows, -1, dtype=np.int64)
    max_tp = float(scaled_sigmoid(-1.0))
    # Outside windows: -1 until the first window closes, then graded by distance past it.
    sweep[:] = -1.0 * cost.fp_weight
    for w, (first, last) in enumerate(windows):
        width = float(last - first + 1)
        rows = idx[first : last + 1]
        sweep[first : last + 1] = (
            scaled_sigmoid(-(last - rows + 1) / width) * cost.tp_weight / max_tp
        )
        window_id[first : last + 1] = w
        stop = int(windows[w + 1][0]) if w + 1 < len(windows) else n_rows
        after = idx[last + 1 : stop]
        if after.size:
            position = (after - last) / (width - 1.0) if width > 1.0 else np.full(after.size, 3.0)
            sweep[last + 1 : stop] = scaled_sigmoid(position) * cost.fp_weight
    scorable = idx >= probationary_rows(n_rows)
    scored_windows = np.unique(window_id[scorable & (window_id >= 0)])
    return ScoredLayout(
        sweep=sweep, window_id=window_id, scorable=scorable, n_windows=int(scored_windows.size)
    )


def score_file(
    key: str,
    anomaly_scores: npt.NDArray[np.float64],
    windows: npt.NDArray[np.int64],
    cost: CostMatrix,
    threshold: float,
) -> FileScore:
    """Raw NAB score of one file: detections are rows with ``anomaly_score >= threshold``."""
    lay = layout(anomaly_scores.size, windows, cost)
    detected = (anomaly_scores >= threshold) & lay.scorable
    inside = lay.window_id >= 0
    score = float(np.sum(lay.sweep[detected & ~inside]))
    for w in np.unique(lay.window_id[lay.scorable & inside]):
        hits = detected & (lay.window_id == w)
        score += float(np.max(lay.sweep[hits])) if hits.any() else -cost.fn_weight
    return FileScore(
        key=key,
        threshold=threshold,
        score=score,
        tp=int(np.sum(detected & inside)),
        tn=int(np.sum(lay.scorable & ~inside & ~detected)),
        fp=int(np.sum(detected & ~inside)),
        fn=int(np.sum(lay.scorable & inside & ~detected)),
        total=int(anomaly_scores.size),
    )


def scores_at_thresholds(
    anomaly_scores: npt.NDArray[np.float64],
    lay: ScoredLayout,
    cost: CostMatrix,
    thresholds: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Raw NAB score of one file at each of many thresholds at once (for threshold search)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    out = np.zeros(thresholds.size, dtype=np.float64)
    outside = lay.scorable & (lay.window_id < 0)
    fp_scores = anomaly_scores[outside]
    order = np.argsort(-fp_scores, kind="stable")
    fp_sorted = fp_scores[order]
    fp_cum = np.concatenate([[0.0], np.cumsum(lay.sweep[outside][order])])
    # Number of false-positive rows with score >= t.
    n_fp = np.searchsorted(-fp_sorted, -thresholds, side="right")
    out += fp_cum[n_fp]
    for w in np.unique(lay.window_id[lay.scorable & (lay.window_id >= 0)]):
        rows = np.flatnonzero(lay.scorable & (lay.window_id == w))
        running_max = np.maximum.accumulate(anomaly_scores[rows])
        first = np.searchsorted(running_max, thresholds, side="left")
        hit = first < rows.size
        value = np.full(thresholds.size, -cost.fn_weight)
        value[hit] = lay.sweep[rows[first[hit]]]
        out += value
    return out


def normalised(raw_total: float, n_windows: int, cost: CostMatrix) -> float:
    """NAB's 0-100 score: 0 for the null detector, 100 for the perfect one."""
    if n_windows == 0:
        raise NabDataError("no scored anomaly windows: the normalised NAB score is undefined")
    null = -cost.fn_weight * n_windows
    perfect = cost.tp_weight * n_windows
    return 100.0 * (raw_total - null) / (perfect - null)


def optimise_threshold(
    files: Sequence[tuple[npt.NDArray[np.float64], ScoredLayout]],
    cost: CostMatrix,
    n_candidates: int = 400,
) -> tuple[float, float]:
    """Threshold maximising the summed raw score over ``files``, as NAB tunes each detector.

    Candidates are the distinct score quantiles pooled over all files; returns
    ``(threshold, total raw score)``.
    """
    if not files:
        raise NabDataError("no files to tune a threshold on")
    pooled = np.concatenate([a for a, _ in files])
    candidates = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, n_candidates)))
    candidates = np.unique(np.concatenate([candidates, [np.max(pooled) + 1e-9]]))
    totals = np.zeros(candidates.size)
    for scores, lay in files:
        totals += scores_at_thresholds(scores, lay, cost, candidates)
    best = int(np.argmax(totals))
    return float(candidates[best]), float(totals[best])


def load_profiles(path: Path) -> dict[str, CostMatrix]:
    """Read NAB ``config/profiles.json``."""
    if not path.is_file():
        raise NabDataError(f"{path}: profiles file not found")
    raw = json.loads(path.read_text())
    out = {}
    for name, body in raw.items():
        try:
            m = body["CostMatrix"]
            out[name] = CostMatrix(
                tp_weight=float(m["tpWeight"]),
                fp_weight=float(m["fpWeight"]),
                fn_weight=float(m["fnWeight"]),
            )
        except (KeyError, TypeError) as exc:
            raise NabDataError(f"{path}: profile {name!r} lacks {exc}") from None
    return out


def load_thresholds(path: Path, detector: str) -> dict[str, float]:
    """Read a detector's per-profile thresholds from NAB ``config/thresholds.json``."""
    if not path.is_file():
        raise NabDataError(f"{path}: thresholds file not found")
    raw = json.loads(path.read_text())
    if detector not in raw:
        raise NabDataError(f"{path}: no thresholds for detector {detector!r}")
    return {p: float(v["threshold"]) for p, v in raw[detector].items()}


def read_published_scores(path: Path) -> dict[str, FileScore]:
    """Read a published ``<detector>_<profile>_scores.csv`` (per-file rows; totals ignored)."""
    cols = read_columns(path, ("File", "Threshold", "Score", "TP", "TN", "FP", "FN", "Total_Count"))
    out = {}
    for i, key in enumerate(cols["File"]):
        if not key.endswith(".csv"):
            continue
        out[key] = FileScore(
            key=key,
            threshold=float(cols["Threshold"][i]),
            score=float(cols["Score"][i]),
            tp=int(cols["TP"][i]),
            tn=int(cols["TN"][i]),
            fp=int(cols["FP"][i]),
            fn=int(cols["FN"][i]),
            total=int(cols["Total_Count"][i]),
        )
    return out


@dataclass(frozen=True, slots=True)
class NabCorpus:
    """A folder in the NAB layout: ``data/``, ``labels/``, ``config/`` and ``results/``."""

    root: Path

    def __post_init__(self) -> None:
        if not self.root.is_dir():
            raise NabDataError(f"{self.root}: NAB folder not found")

    @property
    def windows_path(self) -> Path:
        """``labels/combined_windows.json``."""
        return self.root / "labels" / "combined_windows.json"

    def file_keys(self) -> list[str]:
        """File keys (``category/name.csv``) of every data CSV, sorted."""
        data = self.root / "data"
        if not data.is_dir():
            raise NabDataError(f"{data}: no data folder")
        return sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.csv"))

    def windows(self) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
        """The label windows of every file."""
        return load_windows(self.windows_path)

    def series(self, key: str) -> Series:
        """The data series of one file key."""
        return read_series(self.root / "data" / key, key)

    def profiles(self) -> dict[str, CostMatrix]:
        """Application profiles from ``config/profiles.json`` (or the published defaults)."""
        path = self.root / "config" / "profiles.json"
        return load_profiles(path) if path.is_file() else dict(PROFILES)

    def published_output(self, detector: str, key: str) -> Path:
        """Path of a published detector's raw output for one file key."""
        category, name = key.split("/", 1)
        return self.root / "results" / detector / category / f"{detector}_{name}"

    def published_scores(self, detector: str, profile: str) -> dict[str, FileScore]:
        """A published detector's per-file raw scores for one profile."""
        return read_published_scores(
            self.root / "results" / detector / f"{detector}_{profile}_scores.csv"
        )


def file_windows(
    corpus_windows: dict[str, list[tuple[np.datetime64, np.datetime64]]],
    key: str,
    timestamps: npt.NDArray[np.datetime64],
) -> npt.NDArray[np.int64]:
    """Window rows of one file; a file with no entry in the labels is refused."""
    if key not in corpus_windows:
        raise NabDataError(f"no label windows for {key!r}; refusing to score an unlabelled file")
    return window_rows(timestamps, corpus_windows[key], key)


def score_published(corpus: NabCorpus, detector: str) -> dict[str, dict[str, FileScore]]:
    """Score a published detector's raw outputs: profile -> file key -> :class:`FileScore`.

    Uses only each output's ``timestamp`` and ``anomaly_score`` columns, the detector's
    thresholds in ``config/thresholds.json``, the label windows and the profiles.
    """
    thresholds = load_thresholds(corpus.root / "config" / "thresholds.json", detector)
    profiles = corpus.profiles()
    windows = corpus.windows()
    out: dict[str, dict[str, FileScore]] = {p: {} for p in profiles}
    for key in corpus.file_keys():
        path = corpus.published_output(detector, key)
        if not path.is_file():
            continue
        output = read_detector_output(path, key)
        rows = file_windows(windows, key, output.timestamps)
        for profile, cost in profiles.items():
            if profile not in thresholds:
                raise NabDataError(f"no {detector} threshold for profile {profile!r}")
            out[profile][key] = score_file(key, output.values, rows, cost, thresholds[profile])
    if not any(out.values()):
        raise NabDataError(f"no raw outputs of {detector!r} under {corpus.root / 'results'}")
    return out
