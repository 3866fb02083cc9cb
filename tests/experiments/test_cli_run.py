"""``python -m experiments.run``: one tiny run, a tiny multirun, and the summary over seeds."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import time
from typing import Any

from mlflow import MlflowClient

from tests.experiments.sandbox import TINY, Sandbox

REQUIRED = (
    "mttd_s", "mttr_s", "mttm_s", "healing_success_rate", "auto_resolution_rate",
    "escalation_rate", "human_intervention_rate", "availability", "rca_top1", "rca_top3",
    "faults", "actions", "seed", "scenario", "mlflow_run_id",
)
RATES = ("healing_success_rate", "auto_resolution_rate", "escalation_rate",
         "human_intervention_rate", "availability", "rca_top1", "rca_top3")


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for f in client.list_artifacts(run_id, path or None):
        out |= _artifacts(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def test_single_run_lands_one_mlflow_run_and_ends_with_json(sandbox: Sandbox) -> None:
    """A tiny run prints the KPI table, then a JSON line, and logs one finished MLflow run.

    The run holds the flattened config as params, the KPIs as metrics (undefined ones left
    out), the git revision and every artifact; the event log's sha256 is the digest printed.
    """
    done = sandbox.run(*TINY, "scenario=service_crash", "seed=3")
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.last_json
    assert set(REQUIRED) <= set(line)
    assert (line["scenario"], line["seed"], line["hosts"]) == ("service_crash", 3, 20)
    for key in RATES:
        assert line[key] is None or 0.0 <= line[key] <= 1.0, key
    assert "| metric | value |" in done.stdout
    assert "sim-s" in done.stderr
    # The store was new: MLflow's INFO lines on creating its tables stay off the console,
    # which shows warnings only.
    assert " INFO " not in done.stderr and "database tables" not in done.stderr, done.stderr

    client = MlflowClient(sandbox.tracking_uri)
    exp = client.get_experiment_by_name("novacron")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == line["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.params["cluster.hosts"] == "20"
    assert run.data.params["scenario.name"] == "service_crash"
    assert run.data.params["safety.max_capacity_share"] == "0.25"
    assert run.data.tags["git_revision"] and run.data.tags["entry_point"] == "run"
    assert run.data.tags["mlflow.source.name"] == "experiments.run"
    assert run.data.tags["git_revision"].startswith(run.data.tags["mlflow.source.git.commit"])
    for key in ("availability", "faults", "actions"):
        assert math.isclose(run.data.metrics[key], line[key]), key
    for key, value in line.items():
        if key in RATES and value is None:
            assert key not in run.data.metrics

    names = _artifacts(client, run.info.run_id)
    assert {"events.jsonl", "kpis.md", "kpis.json", "plots/telemetry.png",
            "plots/timeline.png", ".hydra/config.yaml"} <= names
    incidents = {n for n in names if n.startswith("postmortems/incident-")}
    assert len(incidents) == int(line["incidents"])

    out = sandbox.root / "outputs"
    events = (out / "events.jsonl").read_bytes()
    assert hashlib.sha256(events).hexdigest() == line["digest"]
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["availability"] == line["availability"]
    # The job log holds the composed config and the result; the console stays clean.
    log = (out / "run.log").read_text()
    assert "[experiments.run][INFO] - config:" in log and "hosts: 20" in log
    assert "[experiments.run][INFO] - result: " in log and line["digest"] in log
    assert "run.log" in names
    assert "[INFO]" not in done.stdout and "[INFO]" not in done.stderr


def test_tracking_off_writes_artifacts_but_no_mlflow_run(sandbox: Sandbox) -> None:
    """tracking=off still writes the artifacts to Hydra's output folder; no store appears."""
    done = sandbox.run(*TINY, "tracking=off", "agent=noop")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.last_json["mlflow_run_id"] is None
    assert done.last_json["agent"] == "noop"
    assert (sandbox.root / "outputs" / "plots" / "timeline.png").is_file()
    assert not (sandbox.root / "mlruns").exists()


def test_multirun_lands_one_mlflow_run_per_job_and_summarizes(sandbox: Sandbox) -> None:
    """3 seeds x 2 scenarios on the joblib launcher land 6 MLflow runs and a summary.

    The multirun's last line aggregates per scenario (mean and 95% CI over 3 seeds) from the
    job folders; ``python -m experiments.summarize`` prints the same from MLflow, takes an
    MLflow filter, and names an unknown experiment in one line.
    """
    done = sandbox.run("-m", "seed=0,1,2", "scenario=mixed,service_crash",
                       "hydra/launcher=joblib", *TINY, timeout_s=600)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(sandbox.tracking_uri)
    exp = client.get_experiment_by_name("novacron")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 6
    assert {r.info.status for r in runs} == {"FINISHED"}
    jobs = {(r.data.params["scenario.name"], r.data.params["seed"]) for r in runs}
    assert jobs == {(s, str(seed)) for s in ("mixed", "service_crash") for seed in (0, 1, 2)}
    assert len({r.data.tags["hydra_job_num"] for r in runs}) == 6

    sweep = done.last_json
    assert sweep["runs"] == 6
    assert (sandbox.root / "multirun" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert [g["scenario.name"] for g in sweep["groups"]] == ["mixed", "service_crash"]
    for group in sweep["groups"]:
        assert group["runs"] == 3
        low, high = group["availability_ci95"]
        assert low <= group["availability"] <= high

    summary = sandbox.module("experiments.summarize", "--experiment", "novacron")
    assert summary.returncode == 0, summary.stderr[-3000:]
    from_mlflow = summary.last_json
    assert from_mlflow["runs"] == 6
    for a, b in zip(from_mlflow["groups"], sweep["groups"], strict=True):
        assert a["scenario.name"] == b["scenario.name"]
        assert a["runs"] == b["runs"] == 3
        assert math.isclose(a["availability"], b["availability"], rel_tol=1e-9)
        assert a["faults_ci95"] == b["faults_ci95"]

    subset = sandbox.module("experiments.summarize", "--experiment", "novacron",
                            "--filter", "params.seed != '0'", "--by", "scenario.name")
    assert subset.returncode == 0, subset.stderr[-3000:]
    assert [(g["scenario.name"], g["runs"]) for g in subset.last_json["groups"]] == [
        ("mixed", 2), ("service_crash", 2),
    ]

    unknown = sandbox.module("experiments.summarize", "--experiment", "nope")
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"error: experiment: no MLflow experiment named 'nope' at {sandbox.tracking_uri}"
    ]


def test_summarize_without_a_store_is_one_line_and_creates_none(sandbox: Sandbox) -> None:
    """Summarizing where no MLflow store exists exits 2 with one line and creates no store."""
    done = sandbox.module("experiments.summarize", "--experiment", "novacron")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: tracking-uri: no MLflow store at {sandbox.tracking_uri}"
    ]
    assert not (sandbox.root / "mlruns").exists()


def test_a_run_killed_with_sigterm_ends_failed_not_running(sandbox: Sandbox) -> None:
    """``timeout`` or a scheduler sends SIGTERM: the run is marked FAILED, never left RUNNING."""
    (sandbox.root / "mlruns").mkdir()
    client = MlflowClient(sandbox.tracking_uri)
    exp_id = client.create_experiment("novacron")  # the store exists before the run starts
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "cluster.hosts=20", "scenario.hours=24",
         f"hydra.run.dir={sandbox.root / 'outputs'}"],
        cwd=sandbox.root, env=sandbox.env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180.0
        runs: list[Any] = []
        while time.monotonic() < deadline and not runs and proc.poll() is None:
            time.sleep(1.0)
            runs = client.search_runs([exp_id])
        assert proc.poll() is None, f"the run ended by itself with status {proc.returncode}"
        assert runs and runs[0].info.status == "RUNNING"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    run = client.get_run(runs[0].info.run_id)
    assert run.info.status == "FAILED"
