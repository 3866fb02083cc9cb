"""Aggregate run KPIs over seeds: per scenario and agent, the mean and a 95% CI of each KPI.

    python -m experiments.summarize --experiment novacron
    python -m experiments.summarize --experiment novacron --by scenario.name safety.dry_run
    python -m experiments.summarize --experiment novacron --filter "params.seed != '0'"
    python -m experiments.summarize --sweep-dir multirun/2026-01-01/12-00-00
    python -m experiments.summarize --sweep-dir multirun/2026-01-01/12-00-00 --by-kind

Reads the finished MLflow runs of an experiment (or the job folders of one Hydra multirun),
groups them by config keys (``--by``, the flattened config keys logged as params; by default
scenario, agent, cluster size and simulated hours, so runs of different sizes never mix) and
aggregates each group with :func:`control.kpi.aggregate`. Prints a Markdown table, then one
JSON object: ``{"source": ..., "by": [...], "groups": [{<by keys>, "runs", <kpi>,
"<kpi>_ci95": [lo, hi], ...}]}`` with NaN as null.

With ``--by-kind`` (sweep folders only) a second table follows, over every job of the sweep:
per fault kind, the faults that needed healing, the mean time from onset to detection and
to restoration, how many were not healed automatically, and the requests lost per 10,000
charged to the kind (:func:`control.kpi.lost_requests_by_kind`, pooled over the jobs); the
JSON object gains ``"by_kind"``.

With ``--plot FILE.png`` every run's main KPIs are drawn per group, with the means and
intervals (:func:`experiments.plots.plot_kpis`).

After ``python -m experiments.run -m ...`` the callback
:class:`experiments.callbacks.MultirunSummary` prints the same summary for the jobs of that
multirun and draws it to ``summary.png`` in the sweep folder.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from control.kpi import aggregate, fault_outcomes, lost_requests_by_kind, to_markdown
from experiments import tracking
from experiments.jsonout import dumps
from sim.errors import ConfigError
from sim.events import EventLog

DEFAULT_BY = ("scenario.name", "agent.name", "cluster.hosts", "scenario.hours")
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class RunKpis:
    """One finished run: its flattened config and its KPIs (NaN where undefined)."""

    params: Mapping[str, str]
    kpis: Mapping[str, float]


def from_mlflow(
    experiment: str, tracking_uri: str | None = None, filter_string: str = "",
) -> list[RunKpis]:
    """The finished healing runs of ``experiment`` (and matching ``filter_string``), oldest first.

    Only runs of ``python -m experiments.run`` (tag ``entry_point=run``; a run logged before
    that tag existed counts when it has no entry-point tag and a ``scenario.name`` param):
    the other entry points share the default experiment and log other metrics.

    Raises:
        ConfigError: no such experiment in the tracking store, or a filter MLflow cannot parse.
    """
    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"tracking-uri: no MLflow store at {uri}")
    client = tracking.client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(
            f"experiment: no MLflow experiment named {experiment!r} at {uri}"
        )
    from mlflow.exceptions import MlflowException  # the store is MLflow's once it is opened

    runs: list[Any] = []
    token = None
    while True:
        try:
            page = client.search_runs(
                [exp.experiment_id],
                filter_string=" and ".join(f for f in ("attributes.status = 'FINISHED'",
                                                        filter_string) if f),
                max_results=_PAGE, order_by=["attributes.start_time ASC"], page_token=token,
            )
        except MlflowException as err:
            if not filter_string or err.error_code != "INVALID_PARAMETER_VALUE":
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else err.error_code
            raise ConfigError(f"--filter: MLflow cannot use {filter_string!r}: {reason}") from None
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [RunKpis(dict(r.data.params), dict(r.data.metrics)) for r in runs if _healing_run(r)]


def _healing_run(run: Any) -> bool:
    tags, params = run.data.tags, run.data.params
    if "entry_point" in tags:
        return bool(tags["entry_point"] == "run")
    return "kind" not in tags and "scenario.name" in params


def from_sweep(sweep_dir: str | Path) -> list[RunKpis]:
    """The finished jobs of one Hydra multirun: ``<job>/.hydra/config.yaml`` and ``kpis.json``."""
    out = []
    for kpi_file in sorted(Path(sweep_dir).glob("*/kpis.json"), key=_job_order):
        config_file = kpi_file.parent / ".hydra" / "config.yaml"
        if not config_file.is_file():
            continue
        config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
        if not isinstance(config, dict):
            continue
        raw = json.loads(kpi_file.read_text(encoding="utf-8"))
        kpis = {k: math.nan if v is None else float(v) for k, v in raw.items()}
        out.append(RunKpis(tracking.flatten(config), kpis))
    return out


def by_fault_kind(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Per fault kind over every job of a multirun, from the jobs' ``events.jsonl``.

    Each job's faults are scored with its own ``engine.slo_target``. Rows are sorted by kind.

    Raises:
        ConfigError: no job with an event log, or an event log that cannot be read.
    """
    outcomes: dict[str, list[Any]] = {}
    lost: dict[str, float] = {}
    requests = 0.0
    logs = sorted(Path(sweep_dir).glob("*/events.jsonl"), key=_job_order)
    if not logs:
        raise ConfigError(f"sweep-dir: no job folder with events.jsonl in {sweep_dir}")
    for path in logs:
        slo = 0.999
        config_file = path.parent / ".hydra" / "config.yaml"
        if config_file.is_file():
            slo = float(OmegaConf.select(OmegaConf.load(config_file), "engine.slo_target",
                                         default=0.999))
        try:
            log = EventLog.read_jsonl(path)
        except ValueError as err:
            raise ConfigError(f"sweep-dir: {err}") from None
        for o in fault_outcomes(log, slo_target=slo):
            if o.needed_healing:
                outcomes.setdefault(o.kind, []).append(o)
        job_lost, job_requests = lost_requests_by_kind(log)
        requests += job_requests
        for kind, n in job_lost.items():
            lost[kind] = lost.get(kind, 0.0) + n

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    rows = []
    for kind in sorted(set(outcomes) | set(lost)):
        os_ = outcomes.get(kind, [])
        rows.append({
            "kind": kind, "faults": len(os_),
            "detection_s": mean([o.detected_s - o.t0_s for o in os_ if o.detected_s is not None]),
            "restoration_s": mean([o.recovered_s - o.t0_s for o in os_
                                   if o.recovered_s is not None]),
            "not_auto_healed": sum(1 for o in os_ if not o.auto_recovered),
            "lost_per_10k": 1e4 * lost.get(kind, 0.0) / requests if requests > 0 else math.nan,
        })
    return rows


def kind_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The per-kind table."""
    def num(v: float, fmt: str) -> str:
        return "-" if isinstance(v, float) and math.isnan(v) else format(v, fmt)

    lines = ["| fault kind | needed healing | detection (s) | restoration (s) | not auto-healed "
             "| lost per 10k requests |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['faults']} | {num(r['detection_s'], ',.1f')} | "
                     f"{num(r['restoration_s'], ',.0f')} | {r['not_auto_healed']} | "
                     f"{num(r['lost_per_10k'], '.2f')} |")
    return "\n".join(lines) + "\n"


def _job_order(path: Path) -> tuple[int, str]:
    name = path.parent.name
    return (int(name), name) if name.isdigit() else (sys.maxsize, name)


def summarize(runs: Sequence[RunKpis], by: Sequence[str] = DEFAULT_BY) -> list[dict[str, Any]]:
    """Runs grouped by the config keys ``by``; per group the :func:`aggregate` of its KPIs.

    A KPI a run did not report (MLflow keeps no NaN metrics) is left out for that run, as
    :func:`aggregate` leaves out NaN.
    """
    return [
        {**dict(zip(by, label, strict=True)), **aggregate(rows)}
        for label, rows in _grouped(runs, by).items()
    ]


def check_by(runs: Sequence[RunKpis], by: Sequence[str]) -> None:
    """Refuse a ``by`` key that none of ``runs`` has (a run without a key some have is "?").

    Raises:
        ConfigError: naming the key, with the runs' keys closest to it (else the first few).
    """
    if not runs:
        return
    known = sorted({k for r in runs for k in r.params})
    for key in by:
        if any(key in r.params for r in runs):
            continue
        near = difflib.get_close_matches(key, known, n=5, cutoff=0.5)
        shown = near or known[:8]
        raise ConfigError(
            f"--by: no run has the key {key!r}; "
            + (f"closest: {', '.join(shown)}" if near else f"keys include: {', '.join(shown)}")
            + f" ({len(known)} keys in all)"
        )


def _grouped(
    runs: Sequence[RunKpis], by: Sequence[str]
) -> dict[tuple[str, ...], list[Mapping[str, float]]]:
    """The runs' KPIs by their values of the config keys ``by`` ("?" where unset), sorted."""
    groups: dict[tuple[str, ...], list[Mapping[str, float]]] = {}
    for r in runs:
        groups.setdefault(tuple(r.params.get(k, "?") for k in by), []).append(r.kpis)
    return dict(sorted(groups.items()))


def markdown(groups: Sequence[Mapping[str, Any]], by: Sequence[str]) -> str:
    """One KPI table per group, headed by its config values and number of runs."""
    if not groups:
        return "(no finished runs)\n"
    parts = []
    for g in groups:
        head = ", ".join(f"{k}={g[k]}" for k in by)
        kpis = {k: v for k, v in g.items() if k not in by and k != "runs"}
        parts.append(f"### {head} (runs: {int(g['runs'])})\n\n{to_markdown(kpis)}")
    return "\n".join(parts)


def report(source: str, runs: Sequence[RunKpis], by: Sequence[str],
           kinds: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The printed summary: Markdown table(s), then the JSON object as the last line."""
    groups = summarize(runs, by)
    line: dict[str, Any] = {"source": source, "by": list(by), "runs": len(runs),
                            "groups": groups}
    text = markdown(groups, by)
    if kinds is not None:
        line["by_kind"] = list(kinds)
        text += "\n" + kind_markdown(kinds)
    return text + dumps(line)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; an unknown experiment prints one line on stderr and exits with 2."""
    parser = argparse.ArgumentParser(prog="python -m experiments.summarize",
                                     description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="MLflow experiment name")
    source.add_argument("--sweep-dir", help="a Hydra multirun folder")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                             "sqlite in ./mlruns)")
    parser.add_argument("--by", nargs="+", default=None,
                        help=f"config keys to group by (default: {' '.join(DEFAULT_BY)})")
    parser.add_argument("--by-kind", action="store_true",
                        help="with --sweep-dir: add the per-fault-kind table from the jobs' "
                             "event logs")
    parser.add_argument("--filter", default="",
                        help="MLflow search filter, e.g. \"tags.hydra_sweep_dir = 'multirun/...'\"")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="also draw every run's main KPIs per group, with the means and "
                             "intervals, to this PNG file")
    args = parser.parse_args(argv)
    by = list(DEFAULT_BY) if args.by is None else args.by
    kinds = None
    try:
        if args.by_kind and args.sweep_dir is None:
            raise ConfigError("--by-kind needs --sweep-dir (the jobs' event logs)")
        if args.experiment is not None:
            runs = from_mlflow(args.experiment, args.tracking_uri, args.filter)
            name = f"mlflow:{args.experiment}"
        else:
            if not Path(args.sweep_dir).is_dir():
                raise ConfigError(f"sweep-dir: no folder {args.sweep_dir}")
            runs = from_sweep(args.sweep_dir)
            if not runs:
                raise ConfigError(f"sweep-dir: no job folder with kpis.json in {args.sweep_dir}")
            name = f"sweep:{args.sweep_dir}"
            if args.by_kind:
                kinds = by_fault_kind(args.sweep_dir)
        if args.by is not None:  # a default key older runs lack is "?", not an error
            check_by(runs, args.by)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.plot is not None:
        try:
            write_plot(runs, by, Path(args.plot))
        except OSError as err:
            print(f"error: --plot: cannot write {args.plot}: {err.strerror or err}",
                  file=sys.stderr)
            return 2
    print(report(name, runs, by, kinds))
    return 0


def write_plot(runs: Sequence[RunKpis], by: Sequence[str], path: Path) -> Path | None:
    """Draw the runs' main KPIs per group (:func:`experiments.plots.plot_kpis`) to ``path``.

    A group is labelled by its values of the ``by`` keys. Nothing is drawn without runs.
    """
    from experiments.plots import plot_kpis

    if not runs:
        return None
    groups = {" / ".join(label): rows for label, rows in _grouped(runs, by).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_kpis(groups).savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    sys.exit(main())
