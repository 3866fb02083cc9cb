"""Figures of ``experiments.detect``: they draw the numbers the run's JSON reports."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.patches import Rectangle
from sklearn.metrics import average_precision_score

from experiments.detect_plots import (
    plot_lead_times,
    plot_nab,
    plot_pr_curves,
    plot_smd,
    plot_training,
    result_figures,
    save,
)


def _labels(fig) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_pr_curves_carry_each_models_pr_auc() -> None:
    """One step curve per model, labelled with its average precision, and the base rate."""
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.2
    scores = {"lstm": y + rng.normal(0, 0.8, 400), "logistic": y + rng.normal(0, 1.5, 400)}
    fig = plot_pr_curves(y, scores)
    labels = _labels(fig)
    for name, s in scores.items():
        assert f"{name} (PR-AUC {average_precision_score(y, s):.3f})" in labels
    assert f"base rate {y.mean():.3f}" in labels


def test_pr_curves_refuse_one_class_and_mismatched_scores() -> None:
    """Both classes are needed, and as many scores as windows."""
    with pytest.raises(ValueError, match="both positive and negative"):
        plot_pr_curves(np.zeros(5, dtype=bool), {"lstm": np.arange(5.0)})
    with pytest.raises(ValueError, match="lstm: 4 scores for 5 windows"):
        plot_pr_curves(np.array([0, 1, 0, 1, 0], dtype=bool), {"lstm": np.arange(4.0)})


def test_lead_time_curve_starts_at_recall_and_falls_with_the_lead() -> None:
    """At 0 h the curve is the share caught; past a lead, only the failures caught earlier."""
    fig = plot_lead_times({"lstm": [10.0, 30.0, 50.0], "logistic": [20.0]}, events=4)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    lstm = lines["lstm: 3 of 4, median 30.0 h"]
    x, share = lstm.get_xdata(), lstm.get_ydata()
    assert share[0] == pytest.approx(0.75)
    assert share[np.searchsorted(x, 25.0)] == pytest.approx(0.5)
    assert share[-1] == pytest.approx(0.25)  # the grid ends at the longest lead, 50 h
    assert lines["logistic: 1 of 4, median 20.0 h"].get_ydata()[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least one failure"):
        plot_lead_times({"lstm": []}, events=0)


def test_training_curve_marks_the_epoch_early_stopping_keeps() -> None:
    """The star sits on the best validation PR-AUC."""
    history = [
        {"train_loss": 0.7, "val_loss": 0.5, "val_pr_auc": 0.55},
        {"train_loss": 0.68, "val_loss": 0.48, "val_pr_auc": 0.61},
        {"train_loss": 0.66, "val_loss": 0.49, "val_pr_auc": 0.60},
    ]
    fig = plot_training(history)
    kept = [line for ax in fig.axes for line in ax.get_lines()
            if line.get_label().startswith("kept")]
    assert [line.get_label() for line in kept] == ["kept: epoch 2"]
    assert kept[0].get_ydata()[0] == pytest.approx(0.61)
    with pytest.raises(ValueError, match="no epochs"):
        plot_training([])


NAB = {
    "dataset": "nab",
    "files": ["a.csv", "b.csv"],
    "ours": {"zscore": {"standard": {"normalised": 40.0},
                        "reward_low_FP_rate": {"normalised": 30.0},
                        "reward_low_FN_rate": {"normalised": 45.0}}},
    "published": {"numenta": {"standard": {"normalised": 70.0},
                              "reward_low_FP_rate": {"normalised": 60.0},
                              "reward_low_FN_rate": {"normalised": 75.0}},
                  "null": {"standard": {"normalised": 0.0}}},
}


def test_nab_bars_are_the_normalised_scores_per_profile() -> None:
    """Sorted by standard score; ours red, published gray; a profile a detector lacks is blank."""
    fig = plot_nab(NAB)
    standard = fig.axes[0]
    bars = [p for p in standard.patches if isinstance(p, Rectangle)]
    assert [b.get_width() for b in bars] == [0.0, 40.0, 70.0]
    assert [t.get_text() for t in standard.get_yticklabels()] == ["null", "zscore (ours)",
                                                                    "numenta"]
    assert bars[1].get_facecolor() != bars[2].get_facecolor()
    low_fp = [p.get_width() for p in fig.axes[1].patches]
    assert np.isnan(low_fp[0]) and low_fp[1:] == [30.0, 60.0]


def test_smd_bars_are_point_adjusted_and_point_wise_f1(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two bars per machine and detector, at the F1s of the result; saved as a PNG."""
    body = {"point_adjusted": {"f1": 0.93}, "point_wise": {"f1": 0.41}}
    result = {"dataset": "smd", "data_root": "x", "machine-1-1": {"zscore": body},
              "machine-2-1": {"zscore": {"point_adjusted": {"f1": 0.95},
                                          "point_wise": {"f1": 0.2}}}}
    figures = result_figures(result)
    assert list(figures) == ["smd_f1.png"]
    heights = sorted(p.get_height() for p in figures["smd_f1.png"].axes[0].patches
                     if p.get_height() > 0)  # the legend's hatch sample is empty
    assert heights == [0.2, 0.41, 0.93, 0.95]
    path = save(plot_smd({"m": {"zscore": body}}), tmp_path / "sub" / "smd.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no SMD machines"):
        plot_smd({})
