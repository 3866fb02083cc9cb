"""``python -m experiments.evolve`` and ``python -m experiments.optimize`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.experiments.sandbox import Done, Sandbox

REPO = Path(__file__).resolve().parents[2]

TINY_EVAL = ["eval.hosts=20", "eval.hours=0.1", "eval.replicates=1"]


def _module(sandbox: Sandbox, name: str, *args: str) -> Done:
    """``python -m name`` in the sandbox, importing this checkout's packages."""
    env = sandbox.env()
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", name, *args, f"hydra.run.dir={sandbox.root / 'outputs'}"],
        cwd=sandbox.root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    return Done(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.slow
def test_evolve_runs_logs_and_resumes(sandbox: Sandbox) -> None:
    """A tiny GA run logs to MLflow and writes its artifacts; a rerun resumes it.

    The run ends with one JSON line; a second run on its checkpoint resumes from its last
    generation instead of starting again, with the same best genome.
    """
    ckpt = sandbox.root / "ga.pkl"
    args = ["ga.pop_size=4", "ga.max_generations=2", "ga.tournament_size=2", *TINY_EVAL,
            "validate_seeds=1", "n_jobs=1", f"checkpoint={ckpt}"]
    done = _module(sandbox, "experiments.evolve", *args)
    assert done.returncode == 0, done.stderr
    line = done.last_json
    assert line["generations"] == 2 and line["resumed_from"] == 0
    assert line["mlflow_run_id"]
    out = sandbox.root / "outputs"
    for name in ("best_genome.json", "front.json", "history.json", "plots/front.png",
                 "plots/convergence.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "best_genome.json").read_text())["fitness"] == line["best_fitness"]
    again = _module(sandbox, "experiments.evolve", *args)
    assert again.returncode == 0, again.stderr
    assert again.last_json["resumed_from"] == 2
    assert again.last_json["best_genome"] == line["best_genome"]


@pytest.mark.slow
def test_optimize_bo_runs(sandbox: Sandbox) -> None:
    """A tiny BO run ends with one JSON line holding the best configuration."""
    done = _module(sandbox, "experiments.optimize", "bo=quick", "bo.iterations=3",
                   "bo.n_initial=2", *TINY_EVAL, "validate_seeds=0", "tracking=off")
    assert done.returncode == 0, done.stderr
    line = done.last_json
    assert line["evaluations"] == 3 and "api.cpu_limit" in line["best_config"]


def test_bad_config_is_one_line(sandbox: Sandbox) -> None:
    """A bad value exits 2 with one stderr line naming its key, before any twin runs.

    tuner.low_util above tuner.high_util names both keys.
    """
    cases = {
        "experiments.evolve": [("mode=sa", "error: mode"),
                               ("ga.mutation_rate=2", "error: ga.mutation_rate")],
        "experiments.optimize": [
            ("bo.objectives=2", "error: bo.objectives"),
            ("mode=tuner tuner.low_util=0.9",
             "error: tuner.low_util (0.9) must be below tuner.high_util (0.75): the "
             "utilisation band is inverted or empty"),
        ],
    }
    for module, bad in cases.items():
        runs = sandbox.modules(
            module, [[*args.split(), "tracking=off"] for args, _ in bad]
        )
        for (args, head), done in zip(bad, runs, strict=True):
            lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
            assert done.returncode == 2, (args, done.stderr)
            assert len(lines) == 1 and lines[0].startswith(head), (args, lines)


def test_tuner_checks_name_their_keys() -> None:
    """Each tuner setting out of range is refused by its key; the defaults pass."""
    from experiments.search_config import TunerSchema, check_tuner
    from sim.errors import ConfigError

    check_tuner(TunerSchema())
    for field, value, message in (
        ("low_util", 0.75, r"tuner\.low_util \(0\.75\) must be below tuner\.high_util"),
        ("high_util", float("nan"), "tuner.high_util must be a finite number"),
        ("hosts", 0, "tuner.hosts must be a positive integer"),
        ("step", 0, "tuner.step must be a positive integer"),
        ("hours", 0.0, "tuner.hours must be a positive number"),
        ("interval_s", -1.0, "tuner.interval_s must be a positive number"),
        ("cooldown_s", -1.0, "tuner.cooldown_s must be a finite number >= 0"),
        ("cooldown_s", True, "tuner.cooldown_s must be a finite number >= 0, got True"),
    ):
        with pytest.raises(ConfigError, match=message):
            check_tuner(TunerSchema(**{field: value}))
