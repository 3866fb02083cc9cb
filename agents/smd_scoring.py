"""Server Machine Dataset (SMD) reader and its point-wise and point-adjusted scores.

Layout (Su et al., KDD 2019, OmniAnomaly): ``train/<machine>.txt[.gz]``,
``test/<machine>.txt[.gz]`` (comma-separated floats, one row per minute, no header) and
``test_label/<machine>.txt`` (one 0/1 per test row).

*Point-wise* precision / recall / F1 count rows. *Point-adjusted* scoring (Xu et al., WWW 2018,
as used by OmniAnomaly) marks every row of a labelled anomaly segment as detected when any row
of that segment is detected, then counts rows; it is much more lenient, so both are reported.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt


class SmdDataError(ValueError):
    """An SMD machine that cannot be read or scored."""


@dataclass(frozen=True, slots=True)
class Machine:
    """One SMD machine: training rows, test rows and test labels."""

    name: str
    train: npt.NDArray[np.float64]
    test: npt.NDArray[np.float64]
    labels: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class PRF:
    """Precision, recall, F1 and the counts behind them."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def _open_text(folder: Path, name: str) -> str:
    for path in (folder / f"{name}.txt", folder / f"{name}.txt.gz"):
        if path.is_file():
            if path.suffix == ".gz":
                with gzip.open(path, "rt") as handle:
                    return handle.read()
            return path.read_text()
    raise SmdDataError(f"{folder}: no {name}.txt or {name}.txt.gz")


def _parse_matrix(text: str, source: str) -> npt.NDArray[np.float64]:
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise SmdDataError(f"{source}: no rows")
    width = rows[0].count(",") + 1
    out = np.empty((len(rows), width), dtype=np.float64)
    for i, line in enumerate(rows):
        fields = line.split(",")
        if len(fields) != width:
            raise SmdDataError(f"{source}: row {i + 1} has {len(fields)} values, row 1 has {width}")
        try:
            out[i] = [float(f) for f in fields]
        except ValueError:
            raise SmdDataError(f"{source}: row {i + 1} has a value that is not a number") from None
    return out


def machines(root: Path) -> list[str]:
    """Names of the machines with a test file under ``root/test``."""
    test = root / "test"
    if not test.is_dir():
        raise SmdDataError(f"{root}: no test/ folder (expected the SMD layout)")
    names = {p.name.split(".txt")[0] for p in test.iterdir() if ".txt" in p.name}
    if not names:
        raise SmdDataError(f"{test}: no machine files")
    return sorted(names)


def load_machine(root: Path, name: str) -> Machine:
    """Read one machine, checking widths, lengths and labels; NaN cells are refused."""
    train = _parse_matrix(_open_text(root / "train", name), f"train/{name}")
    test = _parse_matrix(_open_text(root / "test", name), f"test/{name}")
    if train.shape[1] != test.shape[1]:
        raise SmdDataError(f"{name}: train has {train.shape[1]} columns, test {test.shape[1]}")
    label_path = root / "test_label" / f"{name}.txt"
    if not label_path.is_file():
        raise SmdDataError(f"{name}: labels missing ({label_path}); refusing to score")
    tokens = label_path.read_text().split()
    if any(t not in ("0", "1") for t in tokens):
        raise SmdDataError(f"{label_path}: labels must be 0 or 1")
    labels = np.array([t == "1" for t in tokens], dtype=bool)
    if labels.size != test.shape[0]:
        raise SmdDataError(f"{name}: {labels.size} labels for {test.shape[0]} test rows")
    for part, arr in (("train", train), ("test", test)):
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            raise SmdDataError(
                f"{name}: {part} row {int(bad[0, 0]) + 1} column {int(bad[0, 1]) + 1} is not a "
                "finite number"
            )
    return Machine(name=name, train=train, test=test, labels=labels)


def _prf(tp: int, fp: int, fn: int) -> PRF:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PRF(precision=precision, recall=recall, f1=f1, tp=tp, fp=fp, fn=fn)


def _check(predicted: npt.NDArray[np.bool_], labels: npt.NDArray[np.bool_]) -> None:
    if predicted.shape != labels.shape:
        raise SmdDataError(f"{predicted.shape[0]} predictions for {labels.shape[0]} labels")


def point_wise(predicted: npt.ArrayLike, labels: npt.ArrayLike) -> PRF:
    """Row-level precision, recall and F1."""
    p = np.asarray(predicted, dtype=bool)
    y = np.asarray(labels, dtype=bool)
    _check(p, y)
    return _prf(int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y)))


def segments(labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """``[start, end)`` row ranges of the runs of 1 in ``labels``."""
    y = np.asarray(labels, dtype=np.int8)
    edges = np.diff(np.concatenate([[0], y, [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def point_adjust(predicted: npt.ArrayLike, labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Predictions with every labelled segment that has one detection marked fully detected."""
    p = np.asarray(predicted, dtype=bool).copy()
    y = np.asarray(labels, dtype=bool)
    _check(p, y)
    for start, end in segments(y):
        if p[start:end].any():
            p[start:end] = True
    return p


def point_adjusted(predicted: npt.ArrayLike, labels: npt.ArrayLike) -> PRF:
    """Precision, recall and F1 after :func:`point_adjust`."""
    return point_wise(point_adjust(predicted, labels), labels)


def best_f1_threshold(
    scores: npt.ArrayLike, labels: npt.ArrayLike, adjusted: bool, n_candidates: int = 200
) -> tuple[float, PRF]:
    """Threshold (among score quantiles) with the best F1 on these labels, and that F1.

    This is the usual "best F1" protocol of the SMD literature: it looks at the test labels, so
    it is an upper bound on what a deployed threshold achieves.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    candidates = np.unique(np.quantile(s, np.linspace(0.5, 1.0, n_candidates)))
    best: tuple[float, PRF] | None = None
    for t in candidates:
        pred = s >= t
        prf = point_adjusted(pred, y) if adjusted else point_wise(pred, y)
        if best is None or prf.f1 > best[1].f1:
            best = (float(t), prf)
    assert best is not None
    return best
