"""Figures of an ``experiments.detect`` run: what its JSON says, drawn.

Twin failure prediction: each model's precision-recall curve on the held-out hosts, the lead
times of the failures each model caught at its validation threshold, and the LSTM's training
curve. NAB: every detector's normalised score per application profile, ours beside the
published ones. SMD: point-adjusted and point-wise F1 per machine and detector.

Built with matplotlib's object API (no pyplot state), as :mod:`experiments.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import average_precision_score, precision_recall_curve

from agents.failure_predictor import kept_epoch

_LSTM_COLOUR = "tab:red"
_OTHER_COLOURS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive")
NAB_PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def _colours(names: Sequence[str]) -> dict[str, str]:
    others = iter(_OTHER_COLOURS * (len(names) // len(_OTHER_COLOURS) + 1))
    return {n: _LSTM_COLOUR if n == "lstm" else next(others) for n in names}


def plot_pr_curves(
    y: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike], title: str = ""
) -> Figure:
    """Precision against recall for each model's scores of the same windows.

    The legend gives each model's PR-AUC (average precision, as in the run's JSON); the
    dotted line is the positives' share, what a score with no information gets.
    """
    yb = np.asarray(y, dtype=bool)
    if yb.size == 0 or not yb.any() or yb.all():
        raise ValueError("precision-recall curves need both positive and negative windows")
    fig = Figure(figsize=(6.5, 5.0))
    ax = fig.subplots()
    colours = _colours(list(scores))
    for name, s in scores.items():
        sa = np.asarray(s, dtype=float)
        if sa.shape != yb.shape:
            raise ValueError(f"{name}: {sa.shape[0]} scores for {yb.size} windows")
        precision, recall, _ = precision_recall_curve(yb, sa)
        ap = average_precision_score(yb, sa)
        ax.step(recall, precision, where="post", color=colours[name],
                lw=2.0 if name == "lstm" else 1.2, label=f"{name} (PR-AUC {ap:.3f})")
    ax.axhline(yb.mean(), color="gray", ls=":", lw=1, label=f"base rate {yb.mean():.3f}")
    ax.set_xlabel("recall (windows)")
    ax.set_ylabel("precision (windows)")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_title(title or "held-out hosts: failures with warning signs against negatives")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_lead_times(
    leads_h: Mapping[str, Sequence[float]], events: int, target_h: float | None = 24.0
) -> Figure:
    """Share of the ``events`` failures caught at least ``t`` hours ahead, per model.

    A curve starts at the model's event recall (at 0 h) and falls as the lead asked for
    grows; where it crosses half of the failures is near the median lead. ``target_h`` draws
    the median-lead target.
    """
    if events < 1:
        raise ValueError("lead times need at least one failure to catch")
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    colours = _colours(list(leads_h))
    top = max((max(v) for v in leads_h.values() if len(v)), default=1.0)
    grid = np.linspace(0.0, max(top, 1.0), 200)
    for name, leads in leads_h.items():
        la = np.sort(np.asarray(leads, dtype=float))
        caught = (la.size - np.searchsorted(la, grid, side="left")) / events
        median = f", median {np.median(la):.1f} h" if la.size else ""
        ax.plot(grid, caught, color=colours[name], lw=2.0 if name == "lstm" else 1.2,
                label=f"{name}: {la.size} of {events}{median}")
    if target_h is not None:
        ax.axvline(target_h, color="gray", ls="--", lw=1,
                   label=f"median-lead target {target_h:g} h")
    ax.axhline(0.5, color="gray", ls=":", lw=1)
    ax.set_xlabel("lead time, hours before the failure")
    ax.set_ylabel("share of failures caught at least this early")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("held-out hosts, failures with warning signs, each model's threshold")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def plot_training(history: Sequence[Mapping[str, float]]) -> Figure:
    """The LSTM's loss (training, validation) and validation PR-AUC per epoch.

    The epoch early stopping kept (:func:`agents.failure_predictor.kept_epoch`) is marked.
    """
    if not history:
        raise ValueError("no epochs to plot")
    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue",
            label="training loss (with dropout)")
    ax.plot(epochs, [h["val_loss"] for h in history], "o-", color="tab:orange",
            label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("class-weighted cross-entropy")
    ax2 = ax.twinx()
    ap = [h["val_pr_auc"] for h in history]
    ax2.plot(epochs, ap, "s-", color="tab:green", label="validation PR-AUC")
    best = kept_epoch(history)
    ax2.plot(epochs[best], ap[best], "*", ms=14, color="tab:red",
             label=f"kept: epoch {best + 1}")
    ax2.set_ylabel("validation PR-AUC")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="best", fontsize=8)
    ax.set_title("LSTM training (early stopping on validation PR-AUC)")
    return fig


def plot_nab(result: Mapping[str, Any]) -> Figure:
    """Normalised NAB score per detector and profile: ours (coloured) beside the published."""
    rows: list[tuple[str, bool, dict[str, float]]] = []
    for name, body in result.get("ours", {}).items():
        rows.append((name, True, {p: body[p]["normalised"] for p in NAB_PROFILES if p in body}))
    for name, body in result.get("published", {}).items():
        rows.append((name, False, {p: body[p]["normalised"] for p in NAB_PROFILES if p in body}))
    if not rows:
        raise ValueError("no NAB scores in the result")
    profiles = [p for p in NAB_PROFILES if any(p in r[2] for r in rows)]
    rows.sort(key=lambda r: r[2].get("standard", -np.inf))
    fig = Figure(figsize=(4.0 * len(profiles), 0.32 * len(rows) + 1.6))
    axes = np.atleast_1d(fig.subplots(1, len(profiles), sharey=True))
    ypos = np.arange(len(rows))
    for ax, profile in zip(axes, profiles, strict=True):
        vals = [r[2].get(profile, np.nan) for r in rows]
        colours = ["tab:red" if r[1] else "tab:gray" for r in rows]
        ax.barh(ypos, vals, color=colours)
        for y_, v in zip(ypos, vals, strict=True):
            if np.isfinite(v):
                ax.text(v, y_, f" {v:.1f}", va="center", fontsize=7)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_title(profile, fontsize=9)
        ax.set_xlabel("normalised score (null 0, perfect 100)")
    axes[0].set_yticks(ypos, [r[0] + (" (ours)" if r[1] else "") for r in rows], fontsize=8)
    fig.suptitle(f"NAB, {len(result.get('files', []))} files: ours (red) and published (gray)")
    return fig


def plot_smd(result: Mapping[str, Any], target_f1: float | None = 0.90) -> Figure:
    """Point-adjusted (solid) and point-wise (hatched) F1 per machine and detector."""
    machines = [m for m, v in result.items() if isinstance(v, dict) and v]
    if not machines:
        raise ValueError("no SMD machines in the result")
    detectors = list(result[machines[0]])
    fig = Figure(figsize=(max(6.0, 1.2 * len(detectors) * len(machines)), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(detectors)
    colours = _colours(detectors)
    for j, det in enumerate(detectors):
        x = np.arange(len(machines)) + (j - (len(detectors) - 1) / 2) * width
        pa = [result[m][det]["point_adjusted"]["f1"] for m in machines]
        pw = [result[m][det]["point_wise"]["f1"] for m in machines]
        ax.bar(x, pa, width * 0.95, color=colours[det], label=det)
        ax.bar(x, pw, width * 0.95, color="white", edgecolor=colours[det], hatch="//")
    ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="white", edgecolor="black", hatch="//",
                           label="point-wise (hatched)"))
    if target_f1 is not None:
        ax.axhline(target_f1, color="gray", ls="--", lw=1, label=f"target {target_f1:g}")
    ax.set_xticks(np.arange(len(machines)), machines)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("F1 on the test half")
    ax.set_title("SMD: point-adjusted F1 (solid), point-wise F1 inside it (hatched)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG (the folder is created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def result_figures(result: Mapping[str, Any]) -> dict[str, Figure]:
    """The figures a NAB or SMD result gives (``dataset=twin`` draws its own from its data)."""
    if result.get("dataset") == "nab" and "ours" in result:
        return {"nab_scores.png": plot_nab(result)}
    if result.get("dataset") == "smd":
        machines = {k: v for k, v in result.items() if isinstance(v, dict)}
        return {"smd_f1.png": plot_smd(machines)} if machines else {}
    return {}
