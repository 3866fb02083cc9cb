"""Hydra callbacks of ``python -m experiments.run`` (named in ``conf/config.yaml``).

:class:`CheckAtStart` validates the composed config and opens the MLflow store before any
job starts, so a bad value or tracking URI fails in one line before anything runs, and
parallel jobs never race to create the store. :class:`MultirunSummary` prints the KPIs of a
multirun aggregated over seeds once every job has finished.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments import tracking
from experiments.config import reported_at_exit, to_run_spec, to_schema
from experiments.summarize import DEFAULT_BY, from_sweep, report, write_plot


class CheckAtStart(Callback):
    """Validate the config before the run (for a multirun, the values its jobs share)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Validate the config and open the tracking store."""
        _check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Validate the values shared by every job and open the tracking store once."""
        _check(config)


def _check(config: DictConfig) -> None:
    with reported_at_exit():  # one line and exit 2, from main()
        schema = to_schema(config)
        to_run_spec(schema)
        if schema.tracking.enabled:
            client = tracking.client_for(schema.tracking.tracking_uri)
            tracking.ensure_experiment(client, schema.tracking.experiment)


class MultirunSummary(Callback):
    """Print per-scenario KPIs over the jobs of a multirun, JSON as the last line.

    The same KPIs are drawn to ``summary.png`` in the sweep folder.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Aggregate the jobs of this multirun from their output folders."""
        sweep_dir = str(config.hydra.sweep.dir)
        runs = from_sweep(sweep_dir)
        try:
            write_plot(runs, DEFAULT_BY, Path(sweep_dir) / "summary.png")
        except (OSError, ValueError) as err:  # the figure is a convenience; the summary stands
            print(f"warning: {sweep_dir}/summary.png not written: {err}", file=sys.stderr)
        sys.stdout.write(report(f"sweep:{sweep_dir}", runs, DEFAULT_BY) + "\n")
        sys.stdout.flush()
