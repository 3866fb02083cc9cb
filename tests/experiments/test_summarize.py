"""Aggregation over seeds and the JSON it prints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from experiments.jsonout import json_safe
from experiments.summarize import RunKpis, by_fault_kind, main, report, summarize
from sim.errors import ConfigError
from sim.events import EventLog


def _run(scenario: str, seed: int, availability: float, mttd_s: float) -> RunKpis:
    params = {"scenario.name": scenario, "agent.name": "rules", "seed": str(seed)}
    return RunKpis(params, {"availability": availability, "mttd_s": mttd_s})


def test_groups_by_scenario_and_agent_with_mean_and_ci() -> None:
    """Runs of one scenario and agent form one group: its size, mean and a CI around it."""
    runs = [_run("a", 0, 0.99, 10.0), _run("b", 0, 0.5, math.nan), _run("a", 1, 0.97, 20.0),
            _run("a", 2, 0.98, 30.0)]
    groups = summarize(runs, ("scenario.name", "agent.name"))
    assert [(g["scenario.name"], g["runs"]) for g in groups] == [("a", 3.0), ("b", 1.0)]
    a = groups[0]
    assert math.isclose(a["availability"], 0.98)
    low, high = a["availability_ci95"]
    assert low < 0.98 < high
    assert math.isclose(a["mttd_s"], 20.0)
    assert math.isnan(groups[1]["mttd_s"])


def test_report_ends_with_json_and_nan_as_null() -> None:
    """The last line is valid JSON (NaN written as null) naming the grouping keys."""
    text = report("test", [_run("b", 0, 0.5, math.nan)], ("scenario.name",))
    line = json.loads(text.strip().splitlines()[-1])
    assert line["by"] == ["scenario.name"]
    assert line["groups"][0]["mttd_s"] is None
    assert line["groups"][0]["mttd_s_ci95"] == [None, None]
    assert json_safe({"x": (1.0, math.inf)}) == {"x": [1.0, None]}


def _sweep(tmp_path: Path) -> Path:
    """A two-job sweep folder as experiments.run writes it (event log, KPIs, Hydra config).

    Two 2-hour runs on 20 hosts: a crash (seed 1 of service_crash) and a partition (seed 1
    of network_partition), each healed by the rules engine.
    """
    from control.run import RunSpec, run

    for job, scenario in enumerate(("service_crash", "network_partition")):
        result = run(RunSpec(scenario=scenario, hosts=20, hours=2.0, seed=1))
        folder = tmp_path / str(job)
        (folder / ".hydra").mkdir(parents=True)
        result.log.write_jsonl(folder / "events.jsonl")
        (folder / "kpis.json").write_text(json.dumps(json_safe(result.kpis)))
        (folder / ".hydra" / "config.yaml").write_text(
            f"scenario:\n  name: {scenario}\nagent:\n  name: rules\n"
            "engine:\n  slo_target: 0.999\n")
    return tmp_path


def test_by_kind_table_matches_the_runs_outcomes(tmp_path: Path) -> None:
    """--by-kind counts each job's faults that needed healing and charges lost requests."""
    from control.kpi import fault_outcomes, lost_requests_by_kind

    sweep = _sweep(tmp_path)
    rows = {r["kind"]: r for r in by_fault_kind(sweep)}
    logs = [EventLog.read_jsonl(sweep / str(j) / "events.jsonl") for j in (0, 1)]
    needed = [o for log in logs for o in fault_outcomes(log) if o.needed_healing]
    assert sum(r["faults"] for r in rows.values()) == len(needed)
    assert rows["service_crash"]["faults"] == rows["network_partition"]["faults"] == 1
    assert rows["network_partition"]["lost_per_10k"] > rows["service_crash"]["lost_per_10k"] > 0
    assert rows["network_partition"]["restoration_s"] > rows["network_partition"]["detection_s"]
    lost = sum(lost_requests_by_kind(log)[0].get(k, 0.0) for log in logs for k in rows)
    total = sum(lost_requests_by_kind(log)[1] for log in logs)
    assert math.isclose(sum(r["lost_per_10k"] for r in rows.values()), 1e4 * lost / total)
    assert main(["--sweep-dir", str(sweep), "--by-kind"]) == 0


def test_by_kind_refuses_mlflow_and_names_a_corrupt_log(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--by-kind needs a sweep folder; an unreadable event log is named with its line."""
    assert main(["--experiment", "x", "--by-kind"]) == 2
    assert "--by-kind needs --sweep-dir" in capsys.readouterr().err
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "events.jsonl").write_text('{"type": "slo", "seq": 0}\nnot json\n')
    with pytest.raises(ConfigError, match=r"events\.jsonl:1: slo record lacks fields"):
        by_fault_kind(tmp_path)
    with pytest.raises(ConfigError, match=r"no job folder with events\.jsonl"):
        by_fault_kind(tmp_path / "0")


def test_from_mlflow_reads_only_the_healing_runs(tmp_path: Path) -> None:
    """Only ``experiments.run`` runs (or untagged ones with a scenario) are summarised.

    Training, search and evaluation runs share the default experiment.
    """
    from mlflow import MlflowClient

    from experiments import tracking
    from experiments.summarize import from_mlflow

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, "novacron")
    params = {"scenario.name": "calm", "agent.name": "rules", "seed": "0"}
    for entry_point, metric in (("run", 0.999), ("evolve", 0.5), ("train", 0.25)):
        run_id = tracking.start_run(client, exp, f"{entry_point}-0", params, {},
                                    entry_point=entry_point)
        (tmp_path / "out").mkdir(exist_ok=True)
        tracking.finish_run(client, run_id, {"availability": metric}, tmp_path / "out")
    legacy = client.create_run(exp, run_name="before-tags")
    client.log_param(legacy.info.run_id, "scenario.name", "calm")
    client.log_metric(legacy.info.run_id, "availability", 0.998)
    client.set_terminated(legacy.info.run_id, "FINISHED")
    runs = from_mlflow("novacron", uri)
    assert sorted(r.kpis["availability"] for r in runs) == [0.998, 0.999]
    with pytest.raises(ValueError, match="entry_point must be one of"):
        tracking.start_run(client, exp, "x", {}, {}, entry_point="notebook")


def test_plot_draws_each_run_and_the_groups_interval(tmp_path: Path) -> None:
    """--plot writes a PNG; each panel holds every run's value and the aggregate's interval."""
    from experiments.plots import plot_kpis
    from experiments.summarize import write_plot

    runs = [_run("a", 0, 0.99, 10.0), _run("a", 1, 0.97, 20.0), _run("a", 2, 0.98, math.nan),
            _run("b", 0, 0.5, 5.0)]
    fig = plot_kpis({"a": [r.kpis for r in runs[:3]], "b": [runs[3].kpis]},
                    keys=("availability", "mttd_s"))
    avail, mttd = fig.axes
    dots = sorted(float(y) for c in avail.collections if hasattr(c, "get_offsets")
                  for _, y in c.get_offsets() if c.get_offsets().size)
    assert 0.97 in dots and 0.99 in dots and 0.5 in dots
    group = summarize(runs[:3], ("scenario.name",))[0]
    lo, hi = group["availability_ci95"]
    bars = [seg for c in avail.collections if c.__class__.__name__ == "LineCollection"
            for seg in c.get_segments()]
    assert any(np.allclose(seg[:, 1], [lo, hi]) for seg in bars)
    assert [t.get_text() for t in mttd.get_xticklabels()] == ["a", "b"]
    out = write_plot(runs, ("scenario.name", "agent.name"), tmp_path / "s" / "summary.png")
    assert out is not None and out.read_bytes()[:4] == b"\x89PNG"
    assert write_plot([], ("scenario.name",), tmp_path / "none.png") is None
    assert main(["--sweep-dir", str(tmp_path), "--plot", str(tmp_path / "p.png")]) == 2
    assert not (tmp_path / "p.png").exists()  # no job folders: refused, nothing drawn
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        write_plot(runs, ("scenario.name",), tmp_path / "file" / "x.png")


def test_plot_to_an_unwritable_path_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --plot path under a file names the path and writes nothing else."""
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / "kpis.json").write_text('{"availability": 0.99}')
    (sweep / "0" / ".hydra" / "config.yaml").write_text("scenario:\n  name: a\n")
    (tmp_path / "file").write_text("")
    assert main(["--sweep-dir", str(sweep), "--plot", str(tmp_path / "file" / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --plot: cannot write") and "file/p.png" in err


def test_a_filter_mlflow_cannot_parse_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--filter 'garbage((' exits 2 with one line quoting the filter, no MLflow traceback."""
    from experiments import tracking

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    tracking.ensure_experiment(tracking.client_for(uri), "novacron")
    args = ["--experiment", "novacron", "--tracking-uri", uri]
    assert main([*args, "--filter", "garbage(("]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --filter: MLflow cannot use 'garbage((': Invalid clause")
    assert len(err.strip().splitlines()) == 1
    assert main([*args, "--filter", "params.seed = '0'"]) == 0  # a valid filter still runs


def test_a_missing_sweep_folder_and_an_unknown_by_key_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing folder, or one without jobs, or an unknown --by key: exit 2.

    The --by error names the key and the keys the runs have. A key only some runs have
    still groups the others under "?".
    """
    assert main(["--sweep-dir", str(tmp_path / "nonexistent")]) == 2
    assert "sweep-dir: no folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--sweep-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert f"sweep-dir: no job folder with kpis.json in {tmp_path / 'empty'}" in err
    sweep = tmp_path / "sweep"
    for job, config in enumerate(("scenario:\n  name: a\nseed: 0\n",
                                  "scenario:\n  name: a\nseed: 1\nextra: 1\n")):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        (sweep / str(job) / "kpis.json").write_text('{"availability": 0.99}')
        (sweep / str(job) / ".hydra" / "config.yaml").write_text(config)
    assert main(["--sweep-dir", str(sweep), "--by", "scenario.name", "nokey"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --by: no run has the key 'nokey'; keys include: extra, "
                          "scenario.name, seed (3 keys in all)"), err
    assert main(["--sweep-dir", str(sweep), "--by", "scenario.nme"]) == 2
    assert "closest: scenario.name" in capsys.readouterr().err
    assert main(["--sweep-dir", str(sweep), "--by", "extra"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(g["extra"] for g in line["groups"]) == ["1", "?"]
    assert main(["--sweep-dir", str(sweep)]) == 0  # default keys older runs lack: "?"
