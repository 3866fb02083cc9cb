"""MLflow helpers: names, revisions and where a store keeps its artifacts."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from experiments.tracking import finite_metrics, flatten, git_revision, resolve_tracking_uri


def test_flatten_joins_nested_keys_with_dots() -> None:
    """Nested config becomes dotted param names with string values."""
    assert flatten({"cluster": {"hosts": 20}, "safety": {"approval_risks": ["high"]},
                    "seed": 0}) == {
        "cluster.hosts": "20", "safety.approval_risks": "['high']", "seed": "0",
    }


def test_finite_metrics_drops_nan_inf_and_non_numbers() -> None:
    """Undefined KPIs (NaN), infinities, booleans and strings are not logged as metrics."""
    kept = finite_metrics({"a": 1, "b": math.nan, "c": math.inf, "d": True, "e": "x", "f": 0.5})
    assert kept == {"a": 1.0, "f": 0.5}


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Explicit URI, else MLFLOW_TRACKING_URI, else SQLite under ./mlruns."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{(tmp_path / 'mlruns' / 'mlflow.db')}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri(None) == "sqlite:///elsewhere.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_git_revision_outside_a_checkout_is_unknown(tmp_path: Path) -> None:
    """A folder that is not in a git checkout has revision ``unknown``."""
    assert git_revision(tmp_path) == "unknown"


def test_git_revision_of_a_checkout_is_its_head(tmp_path: Path) -> None:
    """In a checkout the revision is HEAD's commit, marked dirty with uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    head = git("rev-parse", "HEAD")
    assert git_revision(tmp_path) == head
    (tmp_path / "f.txt").write_text("b")
    assert git_revision(tmp_path) == f"{head}-dirty"


def test_a_sqlite_store_keeps_its_artifacts_beside_its_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever folder a run starts in, artifacts go beside the store's database file."""
    from mlflow import MlflowClient

    from experiments.tracking import ensure_experiment

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (tmp_path / "store").mkdir()
    client = MlflowClient(f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}")
    exp = client.get_experiment(ensure_experiment(client, "novacron"))
    assert exp.artifact_location == (tmp_path / "store" / "artifacts").as_uri()
    assert not (elsewhere / "mlruns").exists()


def test_processes_opening_a_new_store_together_all_get_it(tmp_path: Path) -> None:
    """Three processes that open a fresh SQLite store at the same moment all get it.

    A parallel sweep's jobs do that on a new checkout; without the lock MLflow's table
    migrations collide and the jobs fail.
    """
    import sys
    import time

    uri = f"sqlite:///{(tmp_path / 'new' / 'mlflow.db').as_posix()}"
    code = (
        "import sys, time\n"
        "from experiments import tracking\n"
        "start = float(sys.argv[2])\n"
        "while time.time() < start: pass\n"
        "client = tracking.client_for(sys.argv[1])\n"
        "print(tracking.ensure_experiment(client, 'novacron'))\n"
    )
    start = str(time.time() + 8.0)
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, start], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-300:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1


def test_a_sigterm_swallowed_where_it_landed_still_ends_the_run_failed(tmp_path: Path) -> None:
    """A SIGTERM swallowed where it landed still ends the process (143) and fails its run.

    Python reports a SystemExit raised inside a finaliser or a ctypes callback as ignored
    and carries on; numba's cache-loading callback is such a place, and a killed
    ``experiments.run`` carried on with its run left RUNNING. The grace-period watchdog
    ends it.
    """
    import signal
    import sys

    from mlflow import MlflowClient

    uri = f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}"
    (tmp_path / "store").mkdir()
    code = (
        "import os, signal, sys, time\n"
        "from experiments import tracking\n"
        "tracking.SIGTERM_GRACE_S = 1.0\n"
        "client = tracking.client_for(sys.argv[1])\n"
        "exp = tracking.ensure_experiment(client, 'novacron')\n"
        "run_id = tracking.start_run(client, exp, 'r', {}, {}, entry_point='run')\n"
        "print(run_id, flush=True)\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "except SystemExit:\n"
        "    pass  # what a finaliser does with it\n"
        "time.sleep(30)\n"
        "print('not stopped', flush=True)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code, uri], cwd=root, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-500:]
    assert "not stopped" not in done.stdout
    run_id = done.stdout.split()[0]
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"


def test_open_runs_are_failed_and_ended_ones_left_alone(tmp_path: Path) -> None:
    """``fail_open_runs`` marks only the runs this process started and did not end."""
    import signal

    from mlflow import MlflowClient

    from experiments import tracking

    (tmp_path / "store").mkdir()
    client = MlflowClient(f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}")
    exp = tracking.ensure_experiment(client, "novacron")
    before = signal.getsignal(signal.SIGTERM)
    try:  # start_run installs the SIGTERM handler in this (test) process: put it back
        ended = tracking.start_run(client, exp, "ended", {"a": "1"}, {}, entry_point="run")
        tracking.end_run(client, ended)
        left = tracking.start_run(client, exp, "left", {}, {}, entry_point="run")
        tracking.fail_open_runs()
    finally:
        signal.signal(signal.SIGTERM, before)
    assert client.get_run(ended).info.status == "FINISHED"
    assert client.get_run(left).info.status == "FAILED"
    tracking.fail_open_runs()  # nothing open any more: a no-op
    assert client.get_run(left).info.status == "FAILED"


def test_a_config_error_inside_a_job_fails_its_open_run_and_leaves_as_one_line(
    tmp_path: Path,
) -> None:
    """``reported_at_exit``: the run left open is FAILED; the error becomes a StartupAbort."""
    import signal

    from mlflow import MlflowClient

    from experiments import tracking
    from experiments.config import StartupAbort, reported_at_exit
    from sim.errors import ConfigError

    (tmp_path / "store").mkdir()
    client = MlflowClient(f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}")
    exp = tracking.ensure_experiment(client, "novacron")
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(StartupAbort) as abort, reported_at_exit():
            left = tracking.start_run(client, exp, "left", {}, {}, entry_point="export")
            raise ConfigError("model: x.zip is not a saved DQN model\nsecond line")
        with pytest.raises(KeyError), reported_at_exit():  # anything else passes unchanged
            raise KeyError("other")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert str(abort.value) == "model: x.zip is not a saved DQN model"
    assert client.get_run(left).info.status == "FAILED"
