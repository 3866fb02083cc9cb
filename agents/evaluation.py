"""Score anomaly detectors on NAB and SMD folders, next to the published detectors.

NAB protocol (as in NAB itself): each file is a stream; the detector learns from the
probationary rows only and scores every row causally; its scores are scaled by their 99th
percentile over the probationary rows and repeated firings are suppressed
(:func:`agents.detectors.suppress_repeats`); one threshold per profile is then chosen to
maximise the summed raw score over the files, as NAB's optimiser does for every published
detector (theirs over the whole 58-file corpus, ours over the files given).

SMD protocol: the detector is fit on the machine's ``train`` rows, its threshold is the
``1 - contamination`` quantile of the training scores (no test label is looked at), and the
test rows are scored; the best-F1 threshold over the test labels, the usual upper bound of
the SMD literature, is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agents import nab_scoring as nab
from agents import smd_scoring as smd
from agents.detectors import (
    AnomalyDetector,
    DetectorInputError,
    IsolationForestDetector,
    MADDetector,
    NoveltyDetector,
    ZScoreDetector,
    clean_series,
    normalise_by_reference,
    suppress_repeats,
)


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """Hyper-parameters of the detectors built by :func:`make_detector`."""

    window: int = 300
    lags: int = 8
    n_estimators: int = 100
    contamination: float = 0.01
    lstm_seq_len: int = 30
    lstm_hidden: int = 32
    lstm_epochs: int = 5
    novelty_tolerance: float = 0.15
    seed: int = 0


DETECTORS = ("zscore", "mad", "novelty", "iforest", "lstm")


def make_detector(
    name: str, spec: DetectorSpec, rolling: bool, n_train: int | None = None
) -> AnomalyDetector:
    """A fresh detector by name; ``rolling`` uses rolling statistics (for single series).

    With ``n_train`` the rolling window is shortened to fit a short training stretch.
    """
    window = spec.window if rolling else None
    if window is not None and n_train is not None:
        window = max(3, min(window, n_train - 1))
    if name == "zscore":
        return ZScoreDetector(window=window, contamination=spec.contamination)
    if name == "mad":
        return MADDetector(window=window, contamination=spec.contamination)
    if name == "novelty":
        return NoveltyDetector(
            window=spec.window,  # no need to shorten: the first rows use the history they have
            tolerance=spec.novelty_tolerance,
            contamination=spec.contamination,
        )
    if name == "iforest":
        return IsolationForestDetector(
            lags=spec.lags,
            n_estimators=spec.n_estimators,
            contamination=spec.contamination,
            seed=spec.seed,
        )
    if name == "lstm":
        from agents.forecaster import LSTMErrorDetector

        return LSTMErrorDetector(
            seq_len=spec.lstm_seq_len,
            hidden=spec.lstm_hidden,
            epochs=spec.lstm_epochs,
            contamination=spec.contamination,
            seed=spec.seed,
        )
    raise DetectorInputError(f"unknown detector {name!r}; choose from {DETECTORS}")


def nab_stream_scores(
    values: npt.NDArray[np.float64], detector: AnomalyDetector, refractory: int
) -> tuple[npt.NDArray[np.float64], int]:
    """Causal NAB scores of one series; returns the scores and the number of filled NaNs."""
    cleaned = clean_series(values)
    x = cleaned.values
    p = max(nab.probationary_rows(x.shape[0]), 2)
    if p >= x.shape[0]:
        raise DetectorInputError(f"series of {x.shape[0]} rows is too short to score")
    detector.fit(x[:p])
    raw = np.concatenate([detector.training_scores, detector.score(x[p:])])
    return suppress_repeats(normalise_by_reference(raw, p), refractory), cleaned.n_filled


def nab_evaluate(
    corpus: nab.NabCorpus,
    detectors: Sequence[str],
    spec: DetectorSpec,
    refractory: int = 50,
    keys: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Per-file and total raw / normalised NAB scores of our detectors and the published ones."""
    windows = corpus.windows()
    keys = list(keys) if keys is not None else corpus.file_keys()
    profiles = corpus.profiles()
    series = {k: corpus.series(k) for k in keys}
    rows = {k: nab.file_windows(windows, k, s.timestamps) for k, s in series.items()}
    n_windows = sum(
        nab.layout(s.values.size, rows[k], profiles["standard"]).n_windows
        for k, s in series.items()
    )
    out: dict[str, Any] = {"files": keys, "n_windows": n_windows, "ours": {}, "published": {}}
    for name in detectors:
        scores: dict[str, npt.NDArray[np.float64]] = {}
        filled = 0
        for k in keys:
            if progress is not None:
                progress(f"{name} {k}")
            n_train = max(nab.probationary_rows(series[k].values.size), 2)
            det = make_detector(name, spec, rolling=True, n_train=n_train)
            scores[k], n = nab_stream_scores(series[k].values, det, refractory)
            filled += n
        result: dict[str, Any] = {"filled_values": filled}
        for profile, cost in profiles.items():
            layouts = [(scores[k], nab.layout(scores[k].size, rows[k], cost)) for k in keys]
            threshold, total = nab.optimise_threshold(layouts, cost)
            per_file = {
                k: nab.score_file(k, scores[k], rows[k], cost, threshold).score for k in keys
            }
            result[profile] = {
                "threshold": threshold,
                "raw_total": total,
                "normalised": nab.normalised(total, n_windows, cost),
                "per_file": per_file,
            }
        out["ours"][name] = result
    results_dir = corpus.root / "results"
    if results_dir.is_dir():
        for det_dir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
            entry: dict[str, Any] = {}
            for profile, cost in profiles.items():
                path = det_dir / f"{det_dir.name}_{profile}_scores.csv"
                if not path.is_file():
                    continue
                published = nab.read_published_scores(path)
                if not all(k in published for k in keys):
                    continue
                total = sum(published[k].score for k in keys)
                entry[profile] = {
                    "raw_total": total,
                    "normalised": nab.normalised(total, n_windows, cost),
                }
            if entry:
                out["published"][det_dir.name] = entry
    return out


def smd_evaluate(
    root: Path,
    detectors: Sequence[str],
    spec: DetectorSpec,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Point-wise and point-adjusted P/R/F1 per machine and detector."""
    out: dict[str, Any] = {}
    for machine_name in smd.machines(root):
        machine = smd.load_machine(root, machine_name)
        out[machine_name] = {}
        for name in detectors:
            if progress is not None:
                progress(f"{name} {machine_name}")
            det = make_detector(name, spec, rolling=False)
            det.fit(machine.train)
            s = det.score(machine.test)
            predicted = s >= det.threshold
            pw = smd.point_wise(predicted, machine.labels)
            pa = smd.point_adjusted(predicted, machine.labels)
            _, best_pa = smd.best_f1_threshold(s, machine.labels, adjusted=True)
            _, best_pw = smd.best_f1_threshold(s, machine.labels, adjusted=False)
            out[machine_name][name] = {
                "threshold": det.threshold,
                "point_wise": {"precision": pw.precision, "recall": pw.recall, "f1": pw.f1},
                "point_adjusted": {"precision": pa.precision, "recall": pa.recall, "f1": pa.f1},
                "best_f1_point_wise": best_pw.f1,
                "best_f1_point_adjusted": best_pa.f1,
            }
    return out
