"""Figures of a run: cluster telemetry, an incident timeline, and agents compared over seeds.

Figures are built with matplotlib's object API (no pyplot state), so they render under the
Agg backend in scripts and inline in notebooks alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from sim.events import (
    ActionRecord,
    AlertRecord,
    Event,
    FaultCleared,
    FaultRecord,
    IncidentRecord,
    SloWindow,
)
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES

_H = 3600.0
_SUBROWS = 4
_ACTION_COLOURS = {"succeeded": "tab:green", "failed": "tab:red", "rejected": "tab:gray",
                   "started": "tab:orange"}
_INCIDENT_COLOURS = {"resolved": "tab:green", "escalated": "tab:red"}


def availability_series(events: Sequence[Event]) -> tuple[np.ndarray, np.ndarray]:
    """End time (s) and request-weighted availability of each SLO window in the log."""
    windows = [r for r in events if isinstance(r, SloWindow)]
    t_s = np.array([w.t_s for w in windows], dtype=float)
    good = np.array([w.good for w in windows], dtype=float)
    requests = np.array([w.requests for w in windows], dtype=float)
    share = np.divide(good, requests, out=np.full_like(good, np.nan), where=requests > 0)
    return t_s, share


def plot_telemetry(
    events: Sequence[Event],
    times_s: np.ndarray,
    host: np.ndarray,
    inst: np.ndarray,
    inst_used: np.ndarray | None = None,
    slo_target: float | None = None,
) -> Figure:
    """Availability per SLO window over the run, and host / instance metrics over time.

    Args:
        events: the run's event log (its SLO windows give the availability panel).
        times_s: sample times, shape (n,), as from ``TelemetryBuffer.window``.
        host: host metrics, shape (n, hosts, len(HOST_FEATURES)).
        inst: instance metrics, shape (n, slots, len(INSTANCE_FEATURES)).
        inst_used: which instance slots hold an instance; all when None.
        slo_target: drawn as a reference line on the availability panel.
    """
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    t_w, share = availability_series(events)
    ax = axes[0, 0]
    ax.plot(t_w / _H, share, lw=0.8, color="tab:blue")
    if slo_target is not None:
        ax.axhline(slo_target, color="tab:red", lw=0.8, ls="--", label=f"SLO {slo_target:g}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set(title="Availability per SLO window", xlabel="time (h)", ylabel="good / requests")

    hours = np.asarray(times_s, dtype=float) / _H
    span = f"last {len(hours)} samples" if len(hours) else "no samples"
    h = {name: host[:, :, i] for i, name in enumerate(HOST_FEATURES)}
    used = np.ones(inst.shape[1], dtype=bool) if inst_used is None else np.asarray(inst_used)
    s = {name: inst[:, used, i] for i, name in enumerate(INSTANCE_FEATURES)}

    ax = axes[0, 1]
    if len(hours):
        ax.plot(hours, h["up"].sum(axis=1), label="hosts up", color="tab:blue")
        ax.plot(hours, s["ready"].sum(axis=1), label="instances ready", color="tab:green")
        ax.set_ylim(0, max(host.shape[1], int(used.sum())) * 1.1)
        ax.legend(loc="lower left", fontsize=8)
    ax.set(title=f"Capacity ({span})", xlabel="time (h)", ylabel="count")

    ax = axes[1, 0]
    if len(hours):
        ax.plot(hours, h["cpu_util"].mean(axis=1), label="CPU mean", color="tab:blue")
        ax.plot(hours, h["cpu_util"].max(axis=1), label="CPU max", color="tab:orange", lw=0.8)
        temp_ax = ax.twinx()
        temp_ax.plot(hours, h["temp_c"].max(axis=1), color="tab:red", lw=0.8, ls=":")
        temp_ax.set_ylabel("max temperature (°C, dotted)", color="tab:red")
        ax.legend(loc="upper left", fontsize=8)
    ax.set(title=f"Hosts ({span})", xlabel="time (h)", ylabel="CPU utilisation")

    ax = axes[1, 1]
    if len(hours) and s["p99_latency_s"].shape[1]:
        ax.plot(hours, np.median(s["p99_latency_s"], axis=1), color="tab:blue")
        err_ax = ax.twinx()
        err_ax.plot(hours, s["error_rate"].mean(axis=1), color="tab:red", lw=0.8, ls=":")
        err_ax.set_ylabel("mean error rate (dotted)", color="tab:red")
    ax.set(title=f"Instances ({span})", xlabel="time (h)", ylabel="median p99 latency (s)")
    return fig


def plot_timeline(
    events: Sequence[Event], end_s: float | None = None, slo_target: float | None = None,
) -> Figure:
    """Faults, alerts, actions and incidents of a run on one time axis.

    Faults and incidents are bars from onset (opening) to clearance (resolution or
    escalation), or to ``end_s`` while still open; alerts are ticks; actions are markers at
    their start, coloured by outcome. With ``slo_target``, SLO windows whose availability
    fell below it are shaded.
    """
    end = end_s if end_s is not None else max((r.t_s for r in events), default=0.0)
    lanes = ("incidents", "actions", "alerts", "faults")
    base = {name: i for i, name in enumerate(lanes)}
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.subplots()
    if slo_target is not None:
        for w in events:
            if isinstance(w, SloWindow) and w.requests > 0 and w.good / w.requests < slo_target:
                ax.axvspan((w.t_s - w.window_s) / _H, w.t_s / _H, color="tab:red", alpha=0.12,
                           lw=0)

    cleared = {r.fault_id: r.t_s for r in events if isinstance(r, FaultCleared)}
    faults = [r for r in events if isinstance(r, FaultRecord)]
    for k, f in enumerate(faults):
        y = base["faults"] + _subrow(k)
        stop = cleared.get(f.fault_id, end)
        ax.plot([f.t_s / _H, stop / _H], [y, y], color="tab:purple", lw=3, solid_capstyle="butt")
        ax.annotate(f.kind, (f.t_s / _H, y), xytext=(2, 3), textcoords="offset points",
                    fontsize=6)

    alerts = [r.t_s / _H for r in events if isinstance(r, AlertRecord)]
    ax.scatter(alerts, np.full(len(alerts), base["alerts"] + 0.4), marker="|", s=80,
               color="tab:orange")

    outcome: dict[int, str] = {}
    started: dict[int, float] = {}
    for r in events:
        if isinstance(r, ActionRecord):
            outcome[r.action_id] = r.phase
            if r.phase in ("started", "rejected"):
                started.setdefault(r.action_id, r.t_s)
    for phase, colour in _ACTION_COLOURS.items():
        ts = [started[a] / _H for a, p in outcome.items() if p == phase and a in started]
        ax.scatter(ts, np.full(len(ts), base["actions"] + 0.4), marker=">", s=30, color=colour)

    opened: dict[int, float] = {}
    closed: dict[int, tuple[float, str]] = {}
    for r in events:
        if isinstance(r, IncidentRecord):
            opened.setdefault(r.incident_id, r.t_s)
            if r.phase in _INCIDENT_COLOURS:
                closed[r.incident_id] = (r.t_s, r.phase)
    for k, (iid, t0) in enumerate(sorted(opened.items())):
        stop, phase = closed.get(iid, (end, "open"))
        y = base["incidents"] + _subrow(k)
        ax.plot([t0 / _H, max(stop, t0 + 1.0) / _H], [y, y],
                color=_INCIDENT_COLOURS.get(phase, "tab:orange"), lw=3, solid_capstyle="butt")

    ax.set_yticks([base[name] + 0.4 for name in lanes], lanes)
    ax.set_ylim(-0.2, len(lanes))
    ax.set_xlim(0.0, max(end, 1.0) / _H)
    ax.set_xlabel("time (h)")
    ax.set_title(f"Incident timeline: {len(faults)} faults, {len(alerts)} alerts, "
                 f"{len(started)} actions, {len(opened)} incidents")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=_legend(), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return fig


def _subrow(k: int) -> float:
    return 0.15 + 0.7 * (k % _SUBROWS) / _SUBROWS


def _legend() -> list[Artist]:
    items: list[Artist] = [
        Line2D([], [], color="tab:purple", lw=3, label="fault (onset → cleared)"),
        Line2D([], [], color="tab:orange", marker="|", ls="", label="alert"),
    ]
    items += [
        Line2D([], [], color=c, marker=">", ls="",
               label="action in flight" if p == "started" else f"action {p}")
        for p, c in _ACTION_COLOURS.items()
    ]
    items += [
        Line2D([], [], color=c, lw=3, label=f"incident {p}")
        for p, c in (*_INCIDENT_COLOURS.items(), ("open", "tab:orange"))
    ]
    items.append(Patch(color="tab:red", alpha=0.12, label="SLO window below target"))
    return items


def plot_comparison(
    episodes: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    baseline: str,
) -> Figure:
    """One panel per scenario: each agent's per-seed ``metric``, mean and 95% interval.

    ``episodes`` are ``experiments.evaluate``'s per-episode rows (``scenario``, ``agent``,
    ``seed`` and the KPIs) and ``rows`` its summary rows (the interval, and the tests against
    ``baseline``). Each seed is a dot, joined across agents by a faint line (the seeds pair
    the episodes: the same fault schedule); the bar is the Student-t 95% interval around the
    mean; under each agent, the Mann-Whitney and Wilcoxon p-values against the baseline.
    """
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    if not scenarios:
        raise ValueError("no comparison rows to plot")
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    fig = Figure(figsize=(max(4.5, 1.3 * len(agents)) * len(scenarios), 4.8),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(scenarios), squeeze=False)[0])
    for ax, scenario in zip(axes, scenarios, strict=True):
        by_seed: dict[int, list[float]] = {}
        labels = []
        for j, agent in enumerate(agents):
            eps = [e for e in episodes if e["scenario"] == scenario and e["agent"] == agent]
            vals = np.array([float(e[metric]) for e in eps])
            for e, v in zip(eps, vals, strict=True):
                by_seed.setdefault(int(e["seed"]), [math.nan] * len(agents))[j] = v
            row = next(r for r in rows if r["scenario"] == scenario and r["agent"] == agent)
            m = row[metric]
            _dots_and_interval(ax, j, vals, m["mean"], m["lo"], m["hi"],
                               "tab:gray" if agent == baseline else "tab:blue")
            tests = ("baseline" if agent == baseline else
                     f"MW p {row['mw_p']:.3g}\nWx p {row['wilcoxon_p']:.3g}"
                     if "mw_p" in row else "")
            labels.append(f"{agent}\n{tests}" if tests else agent)
        for vals_by_agent in by_seed.values():
            ax.plot(range(len(agents)), vals_by_agent, color="gray", lw=0.5, alpha=0.3)
        ax.set_xticks(range(len(agents)), labels, fontsize=8)
        ax.set_xlim(-0.5, len(agents) - 0.3)
        ax.set_title(scenario)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{metric} per seed (dots), mean and 95% interval (bars), against {baseline}")
    return fig


def _dots_and_interval(ax: Any, x: int, values: np.ndarray, mean: float, lo: float,
                       hi: float, colour: str) -> None:
    """Each value as a dot at ``x``; beside them the mean, with its interval where it has one."""
    ax.scatter(np.full(values.size, x), values, s=12, color=colour, alpha=0.6, zorder=3)
    if math.isfinite(mean):
        err = [[mean - lo], [hi - mean]] if math.isfinite(lo) and math.isfinite(hi) else None
        ax.errorbar([x + 0.18], [mean], yerr=err, fmt="o", color="black", capsize=4, zorder=4)


def plot_learning_curve(curve: Sequence[tuple[str, float, int]]) -> Figure:
    """A training run's curve: episode returns and the periodic greedy evaluations.

    ``curve`` holds ``(metric, value, step)`` as ``experiments.train`` records them:
    ``train/episode_return`` (one per finished training episode, drawn as dots with the mean
    of the last 10), ``eval/return`` (the best marked) and ``eval/availability``.
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for key, value, step in curve:
        steps, values = series.setdefault(key, ([], []))
        steps.append(int(step))
        values.append(float(value))
    if "train/episode_return" not in series and "eval/return" not in series:
        raise ValueError("the curve has no episode returns and no evaluations")
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax_ret, ax_av = fig.subplots(1, 2)
    if "train/episode_return" in series:
        steps, values = series["train/episode_return"]
        ax_ret.scatter(steps, values, s=8, color="tab:blue", alpha=0.4,
                       label="training episode return")
        if len(values) >= 2:
            k = min(10, len(values))
            rolling = np.convolve(values, np.ones(k) / k, mode="valid")
            ax_ret.plot(steps[k - 1:], rolling, color="tab:blue", label=f"mean of last {k}")
    if "eval/return" in series:
        steps, values = series["eval/return"]
        ax_ret.plot(steps, values, "o-", color="tab:red", label="greedy evaluation return")
        best = int(np.argmax(values))
        ax_ret.plot(steps[best], values[best], "*", ms=14, color="black",
                    label=f"best (kept): {values[best]:.4g} at step {steps[best]:,}")
    ax_ret.set(xlabel="environment steps", ylabel="episode return", title="Returns")
    ax_ret.legend(fontsize=7)
    ax_ret.grid(alpha=0.3)
    if "eval/availability" in series:
        steps, values = series["eval/availability"]
        ax_av.plot(steps, values, "o-", color="tab:green")
    ax_av.set(xlabel="environment steps", ylabel="request-weighted availability",
              title="Greedy evaluation: availability")
    ax_av.grid(alpha=0.3)
    return fig


SUMMARY_KPIS = ("availability", "mttd_s", "mttr_s", "healing_success_rate",
                "human_intervention_rate", "rca_top1")
"""The KPIs :func:`plot_kpis` draws by default."""


def plot_kpis(
    groups: Mapping[str, Sequence[Mapping[str, float]]],
    keys: Sequence[str] = SUMMARY_KPIS,
) -> Figure:
    """One panel per KPI: each group's runs as dots, the mean and the 95% interval as a bar.

    ``groups`` maps a group's label (e.g. its scenario) to its runs' KPI mappings; the
    interval is :func:`control.kpi.aggregate`'s (Student-t, clipped to the KPI's range). A
    KPI a run lacks, or NaN, is left out of that run.
    """
    from control.kpi import aggregate

    if not groups:
        raise ValueError("no runs to plot")
    labels = list(groups)
    fig = Figure(figsize=(3.2 * len(keys), 3.2 + 0.15 * max(len(s) for s in labels)),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(keys), squeeze=False)[0])
    aggregates = {label: aggregate(runs) for label, runs in groups.items()}
    for ax, key in zip(axes, keys, strict=True):
        drawn = 0
        for j, label in enumerate(labels):
            vals = np.array([float(r[key]) for r in groups[label] if key in r], dtype=float)
            vals = vals[np.isfinite(vals)]
            drawn += vals.size
            mean_v, ci_v = aggregates[label].get(key), aggregates[label].get(f"{key}_ci95")
            mean = mean_v if isinstance(mean_v, float) else math.nan
            lo, hi = ci_v if isinstance(ci_v, list) else (math.nan, math.nan)
            _dots_and_interval(ax, j, vals, mean, lo, hi, "tab:blue")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.3)
        ax.set_title(key, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        if not drawn:  # e.g. MTTD in runs where no fault needed healing
            ax.text(0.5, 0.5, "undefined in every run", transform=ax.transAxes, ha="center",
                    va="center", color="gray")
            ax.set_yticks([])
    n = sum(len(v) for v in groups.values())
    fig.suptitle(f"{n} runs: each run (dots), mean and 95% interval (bars)")
    return fig
