"""MLflow helpers: where runs go, and how a run's params, metrics and artifacts are logged.

Everything goes through an explicit :class:`mlflow.MlflowClient` and run id, never MLflow's
global active run, so parallel jobs that share a worker process cannot nest runs.

Every run carries the same tags whatever made it: ``entry_point`` (``run``, ``train``,
``evaluate``, ``export``, ``evolve``, ``optimize``, ``detect``), ``git_revision`` (with
``-dirty`` for uncommitted or untracked changes), MLflow's own ``mlflow.source.name`` and
``mlflow.source.git.commit``, and from Hydra ``hydra_output_dir`` (plus ``hydra_sweep_dir``
and ``hydra_job_num`` in a multirun, to pick one sweep's runs). A run ends FINISHED or
FAILED: an exception, Ctrl-C or a SIGTERM (``timeout``, a scheduler's kill) marks it FAILED;
only SIGKILL leaves it RUNNING. A SIGTERM ends the process with status 143 within
``SIGTERM_GRACE_S``, also when its ``SystemExit`` lands where Python ignores it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.errors import ConfigError

if TYPE_CHECKING:  # MLflow takes seconds to import: a run with tracking off never needs it
    from mlflow import MlflowClient

DEFAULT_STORE_DIR = "mlruns"
_PARAM_MAX_CHARS = 6000
_BATCH = 100
_OPEN: dict[str, MlflowClient] = {}
"""Runs this process started and has not ended yet (see :func:`fail_open_runs`)."""
_TERMINATED_BY: list[int] = []
"""The signal that asked this process to stop, once one has (see :func:`terminated_by`)."""


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``; else ``MLFLOW_TRACKING_URI``; else an embedded SQLite store in ``./mlruns``.

    MLflow's plain-file store is refused by recent MLflow unless ``MLFLOW_ALLOW_FILE_STORE``
    is set, so the embedded default is SQLite, with artifacts in the same folder.
    """
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORE_DIR / 'mlflow.db').as_posix()}"


def client_for(uri: str | None) -> MlflowClient:
    """A client for the resolved tracking URI, one per process and URI.

    Raises:
        ConfigError: MLflow cannot use the URI.
    """
    return _client(resolve_tracking_uri(uri))


@functools.lru_cache(maxsize=8)
def _client(resolved: str) -> MlflowClient:
    from mlflow import MlflowClient

    try:
        with _store_lock(resolved), _quiet_mlflow():
            client = MlflowClient(tracking_uri=resolved)
            client.search_experiments(max_results=1)  # creates or migrates the store's tables
        return client
    except Exception as err:
        raise ConfigError(f"tracking.tracking_uri: cannot use {resolved!r}: "
                          f"{_first_line(str(err))}") from None


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's INFO records kept off the console while a store is opened.

    MLflow logs the creation and migration of a SQLite store's tables at INFO through its own
    console handler, which Hydra's job logging (INFO to the job's log file, warnings to the
    console) does not replace; ``experiments.run`` opens the store in a callback, before that
    job logging even exists. Warnings and errors still show. ``MLFLOW_LOGGING_LEVEL`` set by
    the user is left to rule.
    """
    logger = logging.getLogger("mlflow")
    level = logger.level
    if os.environ.get("MLFLOW_LOGGING_LEVEL"):
        yield
        return
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _store_lock(resolved: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store while it is opened.

    MLflow creates and migrates a SQLite store's tables on first use; processes that open a
    new store at the same moment (the jobs of a parallel sweep on a fresh checkout) run the
    migrations over each other and fail ("table metrics already exists"). The lock
    serialises the opening; other URIs need none.
    """
    db = _sqlite_file(resolved)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Id of experiment ``name``, created if missing; safe when parallel jobs race to create it.

    Raises:
        ConfigError: the tracking store cannot be opened or written.
    """
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        from mlflow.exceptions import MlflowException

        try:
            return str(client.create_experiment(name, artifact_location=_artifact_root(client)))
        except MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)
    except Exception as err:
        raise ConfigError(f"tracking: {_first_line(str(err))}") from None


def _artifact_root(client: MlflowClient) -> str | None:
    """For a SQLite store, ``artifacts/`` beside its database file; MLflow's default otherwise.

    MLflow's default artifact root for a database store is ``./mlruns`` under the working
    directory of whichever process creates the experiment, so a store named elsewhere
    (``MLFLOW_TRACKING_URI=sqlite:////data/mlflow.db``) would get its artifacts scattered
    over the folders runs happened to start in.
    """
    uri = str(getattr(client, "tracking_uri", "") or "")
    db = _sqlite_file(uri)
    return None if db is None else (db.resolve().parent / "artifacts").as_uri()


def _sqlite_file(uri: str) -> Path | None:
    """The database file a ``sqlite:///`` tracking URI names; None for other stores."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def git_revision(path: str | Path | None = None) -> str:
    """Commit of the git checkout holding ``path`` (this package by default), or ``unknown``.

    A checkout with uncommitted changes, or with files git does not ignore and does not
    track (a new module not yet added), gets ``-dirty`` appended.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    rev = _git(where, "rev-parse", "HEAD")
    if not rev:
        return "unknown"
    return f"{rev}-dirty" if _git(where, "status", "--porcelain") else rev


def _git(where: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def flatten(tree: Mapping[Any, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping to ``{"a.b": "value"}`` strings, as MLflow params."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:_PARAM_MAX_CHARS]
    return out


def finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric, finite entries of ``values``; undefined KPIs (NaN) are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


ENTRY_POINTS = ("run", "train", "evaluate", "export", "evolve", "optimize", "detect")


def start_run(
    client: MlflowClient, experiment_id: str, run_name: str, params: Mapping[str, str],
    tags: Mapping[str, str], *, entry_point: str,
) -> str:
    """Create a run with its params and tags plus the common ones; returns its id.

    Also turns a SIGTERM into ``SystemExit(143)`` in this process (main thread only), so the
    caller's ``except BaseException`` marks the run FAILED instead of leaving it RUNNING.

    Raises:
        ValueError: ``entry_point`` is not one of :data:`ENTRY_POINTS`.
    """
    if entry_point not in ENTRY_POINTS:
        raise ValueError(f"entry_point must be one of {ENTRY_POINTS}, got {entry_point!r}")
    from mlflow.entities import Param

    revision = tags.get("git_revision") or git_revision()
    common = {"entry_point": entry_point, "git_revision": revision,
              "mlflow.source.name": f"experiments.{entry_point}"}
    if revision != "unknown":
        common["mlflow.source.git.commit"] = revision.removesuffix("-dirty")
    common.update(_hydra_tags())
    _terminate_raises()
    # A SIGTERM between the run's creation and its registration would leave it RUNNING:
    # it waits (blocked) until the run is registered, then raises inside the try below.
    held = _hold_sigterm()
    try:
        run = client.create_run(experiment_id, run_name=run_name, tags={**common, **tags})
    except BaseException:
        _release_sigterm(held)
        raise
    run_id = str(run.info.run_id)
    _OPEN[run_id] = client
    try:
        _release_sigterm(held)
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            client.log_batch(run_id, params=items[i : i + _BATCH])
    except BaseException:
        fail_run(client, run_id)
        raise
    return run_id


def finish_run(
    client: MlflowClient, run_id: str, metrics: Mapping[str, Any], artifact_dir: str | Path,
    tags: Mapping[str, str] | None = None, step: int = 0,
) -> None:
    """Log finite ``metrics``, everything under ``artifact_dir`` and ``tags``; mark FINISHED.

    ``step``: the metrics' step. A run that logged a curve under the same keys passes one
    past its last step, since MLflow shows a metric's value at its highest step.
    """
    from mlflow.entities import Metric, RunTag

    now_ms = int(time.time() * 1000)
    items = [Metric(k, v, now_ms, step) for k, v in finite_metrics(metrics).items()]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, metrics=items[i : i + _BATCH])
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_artifacts(run_id, str(artifact_dir))
    end_run(client, run_id)


def end_run(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    """Mark a run ``status`` (FINISHED or FAILED); it is no longer open in this process."""
    client.set_terminated(run_id, status=status)
    _OPEN.pop(run_id, None)


def fail_open_runs() -> None:
    """Mark FAILED every run this process started and did not end (best effort).

    The entry points call this when they stop on an exception, so a run is not left RUNNING
    whatever line the exception (a SIGTERM among them) interrupted.
    """
    for run_id, client in list(_OPEN.items()):
        fail_run(client, run_id)


def terminated_by() -> int | None:
    """The signal (SIGTERM) that stopped this process, or None if none did."""
    return _TERMINATED_BY[0] if _TERMINATED_BY else None


def _hydra_tags() -> dict[str, str]:
    """The Hydra job's output folder, and its sweep folder and job number in a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    cfg = HydraConfig.get()
    tags = {"hydra_output_dir": str(cfg.runtime.output_dir)}
    if cfg.mode == RunMode.MULTIRUN:
        tags["hydra_sweep_dir"] = str(cfg.sweep.dir)
        tags["hydra_job_num"] = str(cfg.job.num)
    return tags


SIGTERM_GRACE_S = 10.0
"""How long after a SIGTERM the process may take to stop by itself before it is ended."""


def _on_sigterm(signum: int, frame: object) -> None:
    """Raise ``SystemExit(128 + signum)`` here, and make sure the process ends regardless.

    The handler runs between two bytecodes of whatever the main thread is doing; if that is
    a finaliser (``__del__``, a weakref callback), Python reports the exception as ignored
    and carries on. So the first SIGTERM also starts a watchdog thread that, if the process
    is still alive ``SIGTERM_GRACE_S`` later, marks the open runs FAILED and exits with the
    same status.
    """
    if not _TERMINATED_BY:
        _TERMINATED_BY.append(signum)
        threading.Thread(target=_end_after_grace, args=(128 + signum,), daemon=True,
                         name="sigterm-grace").start()
    raise SystemExit(128 + signum)


def _end_after_grace(status: int) -> None:
    time.sleep(SIGTERM_GRACE_S)
    fail_open_runs()
    os._exit(status)


def _hold_sigterm() -> bool:
    """Block SIGTERM in this (main) thread; whether it was blocked here."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (AttributeError, OSError, ValueError):
        return False
    return signal.SIGTERM not in before


def _release_sigterm(held: bool) -> None:
    """Unblock SIGTERM if :func:`_hold_sigterm` blocked it; a pending one is delivered now."""
    if held:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _terminate_raises() -> None:
    """Make SIGTERM raise SystemExit here, unless someone else already handles it."""
    if threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)


def fail_run(client: MlflowClient, run_id: str) -> None:
    """Mark a run FAILED (best effort: the original error matters more)."""
    with contextlib.suppress(Exception):
        end_run(client, run_id, "FAILED")


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return text
