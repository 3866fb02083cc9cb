"""SMD reading and point-wise / point-adjusted scores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from agents import smd_scoring as smd

ROOT = Path(__file__).resolve().parents[2] / "data" / "smd"


def test_point_adjust_marks_whole_segment() -> None:
    """One detection inside a labelled segment counts the whole segment as detected."""
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    predicted = np.array([0, 0, 1, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    pw = smd.point_wise(predicted, labels)
    pa = smd.point_adjusted(predicted, labels)
    assert (pw.tp, pw.fp, pw.fn) == (1, 1, 4)
    assert (pa.tp, pa.fp, pa.fn) == (3, 1, 2)
    assert pa.precision == pytest.approx(0.75)
    assert pa.recall == pytest.approx(0.6)
    assert pa.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_segments_are_half_open_runs() -> None:
    """Runs of ones become [start, end) ranges, including one at the very end."""
    assert smd.segments([1, 1, 0, 1, 0, 1]).tolist() == [[0, 2], [3, 4], [5, 6]]


def test_vendored_machine_loads() -> None:
    """The vendored machine has 38 columns and one label per test row."""
    m = smd.load_machine(ROOT, "machine-2-1")
    assert m.train.shape[1] == m.test.shape[1] == 38
    assert m.labels.size == m.test.shape[0] == 23694
    assert int(m.labels.sum()) == 1170


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "smd"
    shutil.copytree(ROOT, dst)
    return dst


def test_missing_labels_are_refused(tmp_path: Path) -> None:
    """A machine without its label file is refused."""
    root = _copy(tmp_path)
    (root / "test_label/machine-2-1.txt").unlink()
    with pytest.raises(smd.SmdDataError, match="labels missing"):
        smd.load_machine(root, "machine-2-1")


def test_label_count_mismatch_is_refused(tmp_path: Path) -> None:
    """Fewer labels than test rows is refused."""
    root = _copy(tmp_path)
    path = root / "test_label/machine-2-1.txt"
    path.write_text("\n".join(path.read_text().split()[:-5]) + "\n")
    with pytest.raises(smd.SmdDataError, match="labels for 23694 test rows"):
        smd.load_machine(root, "machine-2-1")


def test_ragged_and_nan_rows_are_refused(tmp_path: Path) -> None:
    """A short row, or a NaN cell, is refused with its row."""
    root = tmp_path / "smd"
    for sub in ("train", "test", "test_label"):
        (root / sub).mkdir(parents=True)
    (root / "train/m.txt").write_text("1,2\n3,4\n")
    (root / "test/m.txt").write_text("1,2\n3\n")
    (root / "test_label/m.txt").write_text("0\n1\n")
    with pytest.raises(smd.SmdDataError, match="row 2 has 1 values"):
        smd.load_machine(root, "m")
    (root / "test/m.txt").write_text("1,2\nnan,4\n")
    with pytest.raises(smd.SmdDataError, match="row 2 column 1 is not a finite"):
        smd.load_machine(root, "m")
