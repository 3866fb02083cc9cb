"""Figures of a run from a small hand-written event log."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from experiments.plots import (
    availability_series,
    plot_comparison,
    plot_learning_curve,
    plot_telemetry,
    plot_timeline,
)
from sim.events import (
    ActionRecord,
    AlertRecord,
    FaultCleared,
    FaultRecord,
    IncidentRecord,
    SloWindow,
)
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES

EVENTS = [
    SloWindow(0, 60.0, 60.0, 100.0, 100.0, ()),
    FaultRecord(1, 70.0, 0, "service_crash", "inst-1", "crash", False),
    AlertRecord(2, 80.0, 0, "probe", "inst-1", "critical"),
    IncidentRecord(3, 85.0, 0, "opened", "P2", "inst-1:crash"),
    ActionRecord(4, 90.0, 0, "restart", "inst-1", "started", "runbook", 0.0),
    ActionRecord(5, 100.0, 0, "restart", "inst-1", "succeeded", "runbook", 0.0),
    FaultCleared(6, 100.0, 0, "action"),
    SloWindow(7, 120.0, 60.0, 100.0, 90.0, ()),
    IncidentRecord(8, 130.0, 0, "resolved", "P2", "inst-1:crash"),
]


def test_availability_series_is_good_over_requests_per_window() -> None:
    """One point per SLO window, at its end time."""
    t_s, share = availability_series(EVENTS)
    assert t_s.tolist() == [60.0, 120.0]
    assert share.tolist() == [1.0, 0.9]


def test_timeline_counts_every_kind_of_record() -> None:
    """The title counts faults, alerts, actions and incidents; four lanes are labelled."""
    fig = plot_timeline(EVENTS)
    ax = fig.axes[0]
    assert ax.get_title() == "Incident timeline: 1 faults, 1 alerts, 1 actions, 1 incidents"
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "incidents", "actions", "alerts", "faults",
    ]


def test_telemetry_figure_has_four_panels() -> None:
    """Availability, capacity, host and instance panels, with or without samples."""
    n, hosts, slots = 5, 3, 4
    fig = plot_telemetry(
        EVENTS, np.arange(n) * 10.0, np.ones((n, hosts, len(HOST_FEATURES))),
        np.ones((n, slots, len(INSTANCE_FEATURES))), inst_used=np.array([1, 1, 0, 1], bool),
        slo_target=0.999,
    )
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4
    empty = plot_telemetry(EVENTS, np.zeros(0), np.zeros((0, hosts, len(HOST_FEATURES))),
                           np.zeros((0, slots, len(INSTANCE_FEATURES))))
    assert "no samples" in empty.axes[1].get_title()


def test_comparison_shows_every_seed_the_interval_and_the_tests() -> None:
    """Dots are the episodes' values; the bar spans the row's interval; p-values label agents."""
    episodes = [
        {"scenario": "sc", "agent": a, "seed": s, "availability": v}
        for a, vals in (("rules", [0.99, 0.98]), ("dqn", [0.995, 0.97])) for s, v in enumerate(vals)
    ]
    rows = [
        {"scenario": "sc", "agent": "rules",
         "availability": {"mean": 0.985, "lo": 0.92, "hi": 1.0}},
        {"scenario": "sc", "agent": "dqn", "availability": {"mean": 0.9825, "lo": 0.9, "hi": 1.0},
         "mw_p": 1.0, "wilcoxon_p": 0.5},
    ]
    fig = plot_comparison(episodes, rows, "availability", "rules")
    ax = fig.axes[0]
    dots = sorted(float(y) for c in ax.collections if isinstance(c, PathCollection)
                  for _, y in c.get_offsets())
    assert dots == sorted([0.99, 0.98, 0.995, 0.97])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["rules\nbaseline", "dqn\nMW p 1\nWx p 0.5"]
    pairs = [line.get_ydata().tolist() for line in ax.get_lines() if len(line.get_ydata()) == 2
             and line.get_color() == "gray"]
    assert sorted(pairs) == [[0.98, 0.97], [0.99, 0.995]]  # seed 1, seed 0: rules then dqn


def test_learning_curve_marks_the_best_evaluation() -> None:
    """Training returns as dots with their running mean; the best evaluation is starred."""
    curve = [("train/episode_return", float(r), 100 * (i + 1)) for i, r in enumerate(range(12))]
    curve += [("eval/return", -5.0, 400), ("eval/return", 3.0, 800), ("eval/return", 1.0, 1200),
              ("eval/availability", 0.99, 400), ("eval/availability", 0.999, 800),
              ("train/steps_per_s", 50.0, 800)]
    fig = plot_learning_curve(curve)
    ret, av = fig.axes
    best = [line for line in ret.get_lines() if line.get_label().startswith("best")]
    assert [line.get_label() for line in best] == ["best (kept): 3 at step 800"]
    running = next(line for line in ret.get_lines() if line.get_label() == "mean of last 10")
    assert running.get_ydata()[0] == pytest.approx(4.5)
    assert av.get_lines()[0].get_ydata().tolist() == [0.99, 0.999]
    with pytest.raises(ValueError, match="no episode returns"):
        plot_learning_curve([("train/steps_per_s", 1.0, 1)])
