"""Run one scenario on the twin with a healing agent; KPIs to stdout, everything to MLflow.

    python -m experiments.run                      # mixed, 100 hosts, 24 h, seed 0, rules
    python -m experiments.run scenario=service_crash cluster.hosts=30 scenario.hours=2
    python -m experiments.run -m seed=0,1,2 scenario=mixed,service_crash   # joblib, parallel

The config (``conf/config.yaml`` over the schemas of :mod:`experiments.config`) is checked
and turned into a :class:`control.run.RunSpec` before anything runs; a bad key, type or value
stops the command with one line on stderr naming the key, and exit status 2. The run's
artifacts (event log, KPIs, post-mortems, plots, the composed config) are written to Hydra's
output folder and logged to MLflow with the flattened config as params and the KPIs as
metrics. Standard output ends with the KPI table and then one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import matplotlib
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from control.kpi import to_markdown
from control.run import RunResult, RunSpec, run
from experiments import joblog, plots, tracking
from experiments.config import (
    RunSchema,
    register_configs,
    run_app,
    to_run_spec,
    to_schema,
)
from experiments.jsonout import json_safe

matplotlib.use("Agg")
register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def app(cfg: DictConfig) -> dict[str, Any]:
    """One job: validate, open the MLflow run, simulate, write and log the artifacts."""
    joblog.log_config("experiments.run", cfg)
    schema = to_schema(cfg)
    spec = to_run_spec(schema)
    out_dir = Path(HydraConfig.get().runtime.output_dir)

    client, run_id = None, None
    if schema.tracking.enabled:
        client = tracking.client_for(schema.tracking.tracking_uri)
        experiment_id = tracking.ensure_experiment(client, schema.tracking.experiment)
        run_id = tracking.start_run(
            client, experiment_id, run_name=_run_name(schema),
            params=tracking.flatten(dataclasses.asdict(schema)),
            tags=_tags(schema), entry_point="run",
        )
    try:
        wall0 = time.perf_counter()
        with tqdm(total=spec.hours * 3600.0, unit="sim-s", unit_scale=True, file=sys.stderr,
                  desc=f"{spec.scenario} seed={spec.seed}", mininterval=1.0) as bar:
            result = run(spec, progress=lambda done_s: bar.update(done_s - bar.n))
        wall_s = time.perf_counter() - wall0
        line = _result_line(result, run_id, wall_s)
        write_artifacts(result, out_dir, line)
        joblog.log_result("experiments.run", line)
        if client is not None and run_id is not None:
            tracking.finish_run(client, run_id, result.kpis, out_dir,
                                tags={"wall_s": f"{wall_s:.3f}", "digest": line["digest"]})
    except BaseException:
        if client is not None and run_id is not None:
            tracking.fail_run(client, run_id)
        raise

    sys.stdout.write(to_markdown(result.kpis).rstrip() + "\n" + json.dumps(line) + "\n")
    sys.stdout.flush()
    return line


def _run_name(schema: RunSchema) -> str:
    return schema.tracking.run_name or (
        f"{schema.scenario.name}-{schema.agent.name}-seed{schema.seed}"
    )


def _tags(schema: RunSchema) -> dict[str, str]:
    tags = {
        "scenario": schema.scenario.name,
        "agent": schema.agent.name,
        "seed": str(schema.seed),
    }
    return tags


def _result_line(result: RunResult, run_id: str | None, wall_s: float) -> dict[str, Any]:
    spec: RunSpec = result.spec
    return {
        **{key: json_safe(value) for key, value in result.kpis.items()},
        "scenario": spec.scenario,
        "agent": spec.agent,
        "hosts": spec.hosts,
        "hours": spec.hours,
        "seed": spec.seed,
        "mlflow_run_id": run_id,
        "digest": result.log.digest(),
        "wall_s": round(wall_s, 3),
    }


def write_artifacts(result: RunResult, out_dir: Path, line: dict[str, Any]) -> None:
    """Event log, KPIs (Markdown and JSON), result line, post-mortems and plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.log.write_jsonl(out_dir / "events.jsonl")
    (out_dir / "kpis.md").write_text(to_markdown(result.kpis).rstrip() + "\n", encoding="utf-8")
    kpis = {key: json_safe(value) for key, value in result.kpis.items()}
    (out_dir / "kpis.json").write_text(json.dumps(kpis, indent=2) + "\n", encoding="utf-8")
    (out_dir / "result.json").write_text(json.dumps(line) + "\n", encoding="utf-8")
    pm_dir = out_dir / "postmortems"
    pm_dir.mkdir(exist_ok=True)
    for incident_id, text in result.postmortems.items():
        (pm_dir / f"incident-{incident_id}.md").write_text(text, encoding="utf-8")
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    events = result.log.since(0)
    times_s, host, inst = result.twin.telemetry.window(result.twin.telemetry.size)
    figures = {
        "telemetry.png": plots.plot_telemetry(
            events, times_s, host, inst, inst_used=result.twin.state.inst_used,
            slo_target=result.spec.engine.slo_target,
        ),
        "timeline.png": plots.plot_timeline(events, end_s=result.spec.hours * 3600.0,
                                            slo_target=result.spec.engine.slo_target),
    }
    for name, fig in figures.items():
        fig.savefig(plot_dir / name, dpi=110)


def main() -> None:
    """Entry point: config errors become one line on stderr and exit status 2."""
    run_app(app)


if __name__ == "__main__":
    main()
