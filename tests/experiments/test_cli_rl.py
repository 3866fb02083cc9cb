"""experiments.train / evaluate / export from the command line, in a scratch folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.experiments.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = ["scenario=service_crash", "env.hosts=20", "scenario.hours=0.5",
              "agent.learning_starts=100", "eval_episodes=1", "eval_hours=0.1",
              "eval_freq=100000"]


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(root / 'mlruns' / 'mlflow.db').as_posix()}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _cmd(module: str, root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args, f"hydra.run.dir={root / 'hydra'}"]


def _run(
    module: str, root: Path, *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(module, root, *args), cwd=root, env=_env(root),
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_resumes_after_being_killed(tmp_path: Path) -> None:
    """SIGKILL after a checkpoint; the same command continues from it to the full budget."""
    run_dir = tmp_path / "run"
    args = [*TINY_TRAIN, "total_timesteps=800", "checkpoint_freq=200", f"run_dir={run_dir}"]
    proc = subprocess.Popen(_cmd("experiments.train", tmp_path, *args), cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = run_dir / "checkpoint.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["num_timesteps"] >= 400:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = json.loads(state.read_text())["num_timesteps"]
    assert not (run_dir / "model.zip").exists()

    done = _run("experiments.train", tmp_path, *args)
    assert done.returncode == 0, done.stderr[-2000:]
    line = _last_json(done.stdout)
    assert line["resumed_from"] == saved >= 400
    assert line["timesteps"] == 800
    assert line["trained_steps_this_run"] == 800 - saved
    assert (run_dir / "model.zip").is_file() and line["mlflow_run_id"]
    assert 0.0 < line["eval_availability"] <= 1.0
    rows = (run_dir / "learning_curve.csv").read_text().splitlines()
    assert rows[0] == "metric,value,step"
    assert f"eval/availability,{line['eval_availability']},800" in rows
    assert (run_dir / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    from mlflow import MlflowClient

    tags = MlflowClient(_env(tmp_path)["MLFLOW_TRACKING_URI"]).get_run(
        line["mlflow_run_id"]).data.tags
    assert tags["entry_point"] == "train" and tags["hydra_output_dir"] == str(tmp_path / "hydra")
    assert tags["resumed_from_step"] == str(saved)


def test_train_with_demonstrations_and_resume(tmp_path: Path) -> None:
    """``demo.policy=symptoms`` records, pre-trains and reports; a resume does not pre-train."""
    run_dir = tmp_path / "run"
    args = [*TINY_TRAIN, "checkpoint_freq=200", f"run_dir={run_dir}", "tracking=off",
            "demo.policy=symptoms", "demo.episodes=2", "demo.pretrain_steps=40"]
    first = _run("experiments.train", tmp_path, *args, "total_timesteps=200")
    assert first.returncode == 0, first.stderr[-2000:]
    demo = _last_json(first.stdout)["demonstrations"]
    assert demo["policy"] == "symptoms" and demo["episodes"] == 2
    assert demo["transitions"] == 2 * 180 and demo["pretrain_steps"] == 40
    again = _run("experiments.train", tmp_path, *args, "total_timesteps=400")
    assert again.returncode == 0, again.stderr[-2000:]
    line = _last_json(again.stdout)
    assert line["resumed_from"] == 200 and line["timesteps"] == 400
    assert line["demonstrations"]["transitions"] == demo["transitions"]
    assert line["demonstrations"]["pretrain_steps"] == 0
    # Without tracking the curve and its figure are still written beside the model.
    assert (run_dir / "learning_curve.csv").is_file()
    assert (run_dir / "learning_curve.png").is_file()


def test_evaluate_rule_agents_writes_tables_and_figure(tmp_path: Path) -> None:
    """Without a DQN: the comparison's files, the figure, and intervals inside [0, 1]."""
    ev = _run("experiments.evaluate", tmp_path, "agents=[random,rules]",
              "scenarios=[service_crash]", "seeds=5", "hours=1", "env.hosts=20",
              "tracking=off", f"out_dir={tmp_path / 'eval'}")
    assert ev.returncode == 0, ev.stderr[-2000:]
    line = _last_json(ev.stdout)
    for row in line["rows"]:
        assert 0.0 <= row["ci95"][0] <= row["availability"] <= row["ci95"][1] <= 1.0
    rows = {r["agent"]: r for r in line["rows"]}
    # One of the random agent's five episodes loses about 7% of its requests: unclipped, its
    # interval would end at 1.024.
    assert rows["random"]["ci95"][1] == 1.0 and rows["random"]["availability"] < 0.99
    assert 0.0 <= rows["random"]["mw_p"] <= 1.0 and "mw_p" not in rows["rules"]
    episodes = json.loads((tmp_path / "eval" / "episodes.json").read_text())
    assert len(episodes) == 10
    assert (tmp_path / "eval" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_evaluate_and_export_a_trained_policy(tmp_path: Path) -> None:
    """Evaluate rules, no-op and DQN with statistics; export the DQN with full parity."""
    train = _run("experiments.train", tmp_path, *TINY_TRAIN, "total_timesteps=300",
                 "checkpoint_freq=1000", "tracking=off", f"run_dir={tmp_path / 'runs' / 'm'}")
    assert train.returncode == 0, train.stderr[-2000:]
    model = tmp_path / "runs" / "m" / "model.zip"

    ev = _run("experiments.evaluate", tmp_path, "agents=[noop,rules,dqn]",
              "scenarios=[service_crash]", "seeds=3", "hours=0.1", "env.hosts=20",
              f"+models.service_crash={model}", f"out_dir={tmp_path / 'eval'}")
    assert ev.returncode == 0, ev.stderr[-2000:]
    line = _last_json(ev.stdout)
    rows = {r["agent"]: r for r in line["rows"]}
    assert set(rows) == {"noop", "rules", "dqn"}
    assert 0.0 <= rows["dqn"]["mw_p"] <= 1.0 and -1.0 <= rows["dqn"]["rank_biserial"] <= 1.0
    assert "mw_p" not in rows["rules"]
    assert "| service_crash | dqn |" in ev.stdout
    assert (tmp_path / "eval" / "comparison.md").is_file() and line["mlflow_run_id"]
    assert (tmp_path / "eval" / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "export"
    ex = _run("experiments.export", tmp_path, f"model={model}", f"out={out}", "env.hosts=20",
              "parity_observations=400", "parity_hours=0.05")
    assert ex.returncode == 0, ex.stderr[-2000:]
    line = _last_json(ex.stdout)
    assert line["parity"] == 1.0 and line["parity_observations"] == 400
    assert (out / "policy.onnx").is_file() and line["mlflow_run_id"]

    ev = _run("experiments.evaluate", tmp_path, "agents=[rules,dqn]",
              "scenarios=[service_crash]", "seeds=2", "hours=0.05", "env.hosts=20",
              f"+models.service_crash={out}", "tracking=off")
    assert ev.returncode == 0, ev.stderr[-2000:]
    # Without out_dir the tables land in the run's Hydra folder, not the working directory.
    assert Path(_last_json(ev.stdout)["out_dir"]) == (tmp_path / "hydra").resolve()
    assert (tmp_path / "hydra" / "comparison.json").is_file()
    assert not (tmp_path / "comparison.json").exists()


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A bad value stops at start with one line naming the key, and nothing else on stderr."""
    cases = {
        "experiments.evaluate": [(["agents=[noop,foo]"], "agents: unknown ['foo']")],
        "experiments.train": [
            (["agent.learning_rate=-1"], "agent.learning_rate"),
            (["demo.policy=oracle"], "demo.policy: unknown demonstrator"),
        ],
        "experiments.export": [(["model=missing.zip"], "model: missing.zip does not exist")],
    }
    for module, bad in cases.items():
        runs = Sandbox(tmp_path).modules(
            module, [[*args, "tracking=off"] for args, _ in bad],
            timeout_s=120,
        )
        for (args, message), done in zip(bad, runs, strict=True):
            assert done.returncode == 2, (args, done.stderr[-2000:])
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1, done.stderr[-2000:]  # not Hydra's "Error executing job"
            assert lines[0].startswith("error: ") and message in lines[0], lines[0]


def test_config_checks_name_their_keys() -> None:
    """The in-process checks behind the command lines name the offending key."""
    from experiments.config import ScenarioSchema, TrackingSchema
    from experiments.evaluate import check
    from experiments.rl_config import (
        DemoSchema,
        DqnSchema,
        EvaluateSchema,
        TrainSchema,
        check_train,
        demo_params,
        dqn_params,
    )
    from sim.errors import ConfigError

    base = TrainSchema(scenario=ScenarioSchema(name="service_crash"), agent=DqnSchema(),
                       tracking=TrackingSchema())
    check_train(base)
    assert dqn_params(base.agent).net_arch == (64, 64)
    for field, value in (("gamma", 1.5), ("exploration_fraction", 0.0)):
        with pytest.raises(ConfigError) as bad:
            dqn_params(DqnSchema(**{field: value}))
        assert str(bad.value) == f"agent.{field} must lie in (0, 1], got {value!r}"
    for field, value, message in (
        ("total_timesteps", 0, "total_timesteps must be >= 1"),
        ("eval_hours", 0.0, "eval_hours must be a positive number"),
        ("seed", -1, "seed must be >= 0"),
    ):
        bad = TrainSchema(**{**base.__dict__, field: value})
        with pytest.raises(ConfigError, match=message):
            check_train(bad)
    assert demo_params(base.demo) is None  # no demonstrations by default
    assert demo_params(DemoSchema(policy="symptoms")) is not None
    for field, value, message in (
        ("episodes", 0, "demo.episodes must be >= 1"),
        ("margin", -0.5, "demo.margin must be"),
        ("batch_size", 0, "demo.batch_size must be"),
        ("pretrain_steps", -1, "demo.pretrain_steps must be"),
    ):
        demo = DemoSchema(**{**DemoSchema(policy="symptoms").__dict__, field: value})
        with pytest.raises(ConfigError, match=message):
            check_train(TrainSchema(**{**base.__dict__, "demo": demo}))
    ev = EvaluateSchema(tracking=TrackingSchema())
    check(ev)
    for field, value, message in (
        ("scenarios", ["nowhere"], "scenarios: unknown"),
        ("seeds", 1, "seeds must be >= 2"),
        ("baseline", "dqn2", "baseline"),
        ("metric", "speed", "metric: unknown"),
    ):
        with pytest.raises(ConfigError, match=message):
            check(EvaluateSchema(**{**ev.__dict__, field: value}))


def test_a_file_that_is_not_a_saved_model_is_one_line_naming_it(tmp_path: Path) -> None:
    """``experiments.export model=<a CSV>`` exits 2 naming the file; evaluate refuses it too."""
    from experiments.evaluate import load_dqn
    from sim.errors import ConfigError

    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    done = _run("experiments.export", tmp_path, f"model={csv}", "tracking=off", timeout_s=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"error: model: {csv} is not a saved DQN model"), done.stderr
    not_a_model = tmp_path / "other.zip"
    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("notes.txt", "no model here")
    for path in (csv, not_a_model):
        with pytest.raises(ConfigError, match=f"models.calm: {path} is not a saved DQN model"):
            load_dqn(path, "models.calm")


def test_an_export_names_the_training_run_of_its_model(tmp_path: Path) -> None:
    """The training's ``result.json`` beside ``model.zip`` gives the export its source run."""
    from experiments.export import _training_run

    model = tmp_path / "model.zip"
    assert _training_run(model) == {}
    (tmp_path / "result.json").write_text('{"mlflow_run_id": "abc123"}')
    assert _training_run(model) == {"trained_by_run": "abc123"}
    (tmp_path / "result.json").write_text('{"mlflow_run_id": null}')
    assert _training_run(model) == {}
    (tmp_path / "result.json").write_text("not json")
    assert _training_run(model) == {}
