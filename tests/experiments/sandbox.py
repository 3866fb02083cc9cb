"""Run the experiment commands in a scratch folder, never in the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TINY = ["cluster.hosts=20", "scenario.hours=0.25"]
BATCH = Path(__file__).with_name("cli_batch.py")


@dataclass(frozen=True)
class Done:
    """A finished command: exit status, standard output and standard error."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def last_json(self) -> dict:
        """The JSON object on the last line of standard output."""
        return json.loads(self.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Sandbox:
    """A scratch folder with its own MLflow store; commands run there."""

    root: Path

    @property
    def tracking_uri(self) -> str:
        """SQLite MLflow store inside the sandbox."""
        return f"sqlite:///{(self.root / 'mlruns' / 'mlflow.db').as_posix()}"

    def env(self) -> dict[str, str]:
        """The environment of this process, pointed at the sandbox's MLflow store."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "MLFLOW_"))}
        env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return env

    def module(self, name: str, *args: str, timeout_s: float = 300) -> Done:
        """``python -m name args...`` run in the sandbox."""
        proc = subprocess.run(
            [sys.executable, "-m", name, *args], cwd=self.root, env=self.env(),
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
        return Done(proc.returncode, proc.stdout, proc.stderr)

    def modules(self, name: str, cases: list[list[str]], timeout_s: float = 300) -> list[Done]:
        """``python -m name args...`` for each argument list, as one process (:mod:`cli_batch`).

        For short commands that stop at start (bad configs): the import is paid once. Each
        run gets Hydra's output folder inside the sandbox, as :meth:`run` does.
        """
        env = self.env()
        env["PYTHONPATH"] = str(BATCH.parents[2])  # this checkout's packages
        outputs = f"hydra.run.dir={self.root / 'outputs'}"
        proc = subprocess.run(
            [sys.executable, str(BATCH), name],
            input=json.dumps([[*args, outputs] for args in cases]), cwd=self.root,
            env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [Done(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]

    def run(self, *overrides: str, timeout_s: float = 300) -> Done:
        """``python -m experiments.run`` with Hydra's output folders inside the sandbox."""
        return self.module(
            "experiments.run", *overrides, f"hydra.run.dir={self.root / 'outputs'}",
            f"hydra.sweep.dir={self.root / 'multirun'}", timeout_s=timeout_s,
        )
