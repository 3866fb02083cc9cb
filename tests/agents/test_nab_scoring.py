"""The NAB scorer against the published per-file scores, and its handling of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agents import nab_scoring as nab

ROOT = Path(__file__).resolve().parents[2] / "data" / "nab_subset"


@pytest.mark.parametrize("detector", ["numenta", "windowedGaussian"])
def test_reproduces_published_per_file_scores(detector: str) -> None:
    """Scores and TP/TN/FP/FN counts equal the published ones for every file and profile."""
    corpus = nab.NabCorpus(ROOT)
    ours = nab.score_published(corpus, detector)
    assert set(ours) == set(nab.PROFILE_NAMES)
    for profile, files in ours.items():
        published = corpus.published_scores(detector, profile)
        assert set(files) == set(published) and len(files) == 3
        for key, fs in files.items():
            p = published[key]
            assert abs(fs.score - p.score) < 1e-6, (profile, key, fs.score, p.score)
            assert (fs.tp, fs.tn, fs.fp, fs.fn, fs.total) == (p.tp, p.tn, p.fp, p.fn, p.total)


def test_scaled_sigmoid_landmarks() -> None:
    """The scaled sigmoid is 0.98661 at the left edge, 0 at y=0 and -1 from y=3 on."""
    values = nab.scaled_sigmoid([-1.0, 0.0, 1.0, 3.0, 10.0])
    assert np.allclose(values, [0.98661, 0.0, -0.98661, -1.0, -1.0], atol=1e-5)


def test_probation_is_15_percent_capped_at_750() -> None:
    """Probation: floor(15 % of rows), at most 750 rows."""
    assert nab.probationary_rows(1243) == 186
    assert nab.probationary_rows(4032) == 604
    assert nab.probationary_rows(18050) == 750


def test_null_and_perfect_detectors_normalise_to_0_and_100() -> None:
    """No detections scores -A_fn per window; one at each window start scores A_tp per window."""
    n = 2000
    windows = np.array([[500, 599], [1200, 1299]])
    cost = nab.PROFILES["reward_low_FN_rate"]
    null = nab.score_file("f", np.zeros(n), windows, cost, 0.5)
    perfect_scores = np.zeros(n)
    perfect_scores[windows[:, 0]] = 1.0
    perfect = nab.score_file("f", perfect_scores, windows, cost, 0.5)
    assert null.score == pytest.approx(-4.0)
    assert perfect.score == pytest.approx(2.0)
    assert nab.normalised(null.score, 2, cost) == pytest.approx(0.0)
    assert nab.normalised(perfect.score, 2, cost) == pytest.approx(100.0)


def test_false_positive_right_after_window_costs_less() -> None:
    """A detection just past a window costs less than one far from it, and -A_fp before any."""
    n = 2000
    windows = np.array([[1000, 1099]])
    cost = nab.PROFILES["standard"]
    lay = nab.layout(n, windows, cost)
    assert lay.sweep[500] == pytest.approx(-cost.fp_weight)
    assert 0.0 > lay.sweep[1101] > lay.sweep[1150] > lay.sweep[1400]
    assert lay.sweep[1400] == pytest.approx(-cost.fp_weight)


def test_threshold_sweep_matches_scoring_each_threshold() -> None:
    """The vectorised sweep over thresholds equals scoring at each threshold separately."""
    rng = np.random.default_rng(3)
    n = 3000
    windows = np.array([[800, 899], [2000, 2149]])
    scores = rng.random(n) ** 4
    cost = nab.PROFILES["standard"]
    lay = nab.layout(n, windows, cost)
    thresholds = np.array([0.2, 0.5, 0.9, 0.99, 1.5])
    swept = nab.scores_at_thresholds(scores, lay, cost, thresholds)
    one_by_one = [nab.score_file("f", scores, windows, cost, t).score for t in thresholds]
    assert np.allclose(swept, one_by_one)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "nab"
    shutil.copytree(ROOT, dst)
    return dst


def _raw(root: Path) -> Path:
    return root / "results/numenta/realKnownCause/numenta_rogue_agent_key_hold.csv"


def test_malformed_csv_is_refused_with_its_line(tmp_path: Path) -> None:
    """A row with the wrong number of fields is refused, naming the file and line."""
    root = _copy(tmp_path)
    path = _raw(root)
    lines = path.read_text().splitlines()
    lines[10] = "2014-07-06 21:00:00,0.5"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(nab.NabDataError, match="line 11"):
        nab.score_published(nab.NabCorpus(root), "numenta")


def test_missing_column_is_refused(tmp_path: Path) -> None:
    """A raw output without an anomaly_score column is refused."""
    root = _copy(tmp_path)
    path = _raw(root)
    path.write_text(path.read_text().replace("anomaly_score", "score", 1))
    with pytest.raises(nab.NabDataError, match="missing column"):
        nab.score_published(nab.NabCorpus(root), "numenta")


def test_nan_anomaly_score_is_refused(tmp_path: Path) -> None:
    """A NaN anomaly score would change the score silently, so it is refused."""
    root = _copy(tmp_path)
    path = _raw(root)
    lines = path.read_text().splitlines()
    fields = lines[300].split(",")
    fields[2] = "nan"
    lines[300] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(nab.NabDataError, match="not finite at data row 300"):
        nab.score_published(nab.NabCorpus(root), "numenta")


def test_timestamp_going_backwards_is_refused(tmp_path: Path) -> None:
    """Two rows swapped make time go backwards: refused, naming the row."""
    root = _copy(tmp_path)
    path = _raw(root)
    lines = path.read_text().splitlines()
    lines[50], lines[51] = lines[51], lines[50]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(nab.NabDataError, match="backwards at data row 51"):
        nab.score_published(nab.NabCorpus(root), "numenta")


def test_bad_timestamp_is_refused(tmp_path: Path) -> None:
    """A timestamp that does not parse is refused with its row."""
    root = _copy(tmp_path)
    path = _raw(root)
    lines = path.read_text().splitlines()
    lines[5] = "yesterday" + lines[5][19:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(nab.NabDataError, match="row 5: timestamp 'yesterday'"):
        nab.score_published(nab.NabCorpus(root), "numenta")


def test_missing_labels_are_refused(tmp_path: Path) -> None:
    """A file with no entry in the label windows is refused, not scored as anomaly-free."""
    root = _copy(tmp_path)
    windows_path = root / "labels/combined_windows.json"
    windows = json.loads(windows_path.read_text())
    del windows["realKnownCause/rogue_agent_key_hold.csv"]
    windows_path.write_text(json.dumps(windows))
    with pytest.raises(nab.NabDataError, match="no label windows"):
        nab.score_published(nab.NabCorpus(root), "numenta")


def test_gaps_and_repeated_timestamps_are_rows_in_order() -> None:
    """Gaps do not change row positions; a repeated window-edge timestamp maps to its first row."""
    ts = np.array(
        [
            "2014-01-01 00:00",
            "2014-01-01 00:05",
            "2014-01-03 00:00",
            "2014-01-03 00:00",
            "2014-01-03 00:05",
        ],
        dtype="datetime64[us]",
    )
    rows = nab.window_rows(ts, [(ts[1], ts[2])], "t")
    assert rows.tolist() == [[1, 2]]
    with pytest.raises(nab.NabDataError, match="contains no rows"):
        nab.window_rows(ts, [(np.datetime64("2014-01-02"), np.datetime64("2014-01-02T01"))], "t")
