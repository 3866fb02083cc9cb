"""Figures of a search: the Pareto front and convergence, with matplotlib's object API."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def plot_front(front: np.ndarray, others: np.ndarray | None = None,
               title: str = "Pareto front") -> Figure:
    """Front of minimised ``(1 - performance, cost / cost_ref, 1 - reliability)``.

    Cost on x, performance on y, colour for reliability; ``others`` (every evaluation) in grey.
    """
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    if others is not None and len(others):
        ax.scatter(others[:, 1], 1.0 - others[:, 0], s=8, c="0.8", label="evaluated")
    if len(front):
        sc = ax.scatter(front[:, 1], 1.0 - front[:, 0], s=28, c=1.0 - front[:, 2],
                        cmap="viridis", vmin=0.0, vmax=1.0, edgecolors="k", label="front")
        fig.colorbar(sc, ax=ax, label="reliability")
    ax.set_xlabel("cost / cost of the default architecture")
    ax.set_ylabel("performance")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_convergence(steps: Sequence[float], series: dict[str, Sequence[float]],
                     xlabel: str = "generation", ylabel: str = "weighted fitness") -> Figure:
    """One line per named series against ``steps``."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for name, values in series.items():
        ax.plot(list(steps), list(values), marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
