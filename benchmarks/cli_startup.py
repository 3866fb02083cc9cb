"""How long each command takes to refuse a mistyped command line, against importing torch.

    python benchmarks/cli_startup.py               # 3 runs of each command, median
    python benchmarks/cli_startup.py --runs 5

Each command is started as a user would (``python -m MODULE ARGS``, a fresh process) with an
unknown key, which Hydra rejects while composing the config (``live.serve``: a non-loopback
bind without a token, which it refuses before starting anything); the figure is the median
wall time from start to exit. Every command must exit with its refusal status (2; 1 for
``live.serve``) and one line on stderr: otherwise the benchmark stops naming the command.
References measured in the same run, with the same interpreter: an empty ``python -c pass``,
and ``python -c "import torch"``, which is what a command importing torch at module level
pays before it can report anything. The
``ratio_to_torch`` of each command is its median over the torch import's median (below 1:
the mistake is reported before torch would even have loaded). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REFUSAL_STATUS = {"live.serve": 1}
"""Exit status of a refused start where it is not 2."""
COMMANDS: dict[str, list[str]] = {
    "experiments.run": ["-m", "experiments.run", "nope=1"],
    "experiments.detect": ["-m", "experiments.detect", "nope=1"],
    "experiments.evolve": ["-m", "experiments.evolve", "nope=1"],
    "experiments.optimize": ["-m", "experiments.optimize", "nope=1"],
    "experiments.train": ["-m", "experiments.train", "nope=1"],
    "experiments.evaluate": ["-m", "experiments.evaluate", "nope=1"],
    "experiments.export": ["-m", "experiments.export", "nope=1"],
    "live.serve": ["-m", "live.serve", "--host", "0.0.0.0", "--mode", "twin"],
}
REFERENCES: dict[str, list[str]] = {
    "python_empty": ["-c", "pass"],
    "import_torch": ["-c", "import torch"],
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HYDRA_", "MLFLOW_", "NOVACRON_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _time(args: list[str], cwd: Path, refusal_status: int | None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    wall = time.perf_counter() - t0
    if refusal_status is not None:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        if done.returncode != refusal_status or len(lines) != 1:
            sys.exit(f"error: {' '.join(args)} did not stop with one error line and status "
                     f"{refusal_status} (status {done.returncode}): {done.stderr[-500:]}")
    elif done.returncode != 0:
        sys.exit(f"error: {' '.join(args)} failed: {done.stderr[-500:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each command (median)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)  # Hydra writes nothing for a rejected config, but never in the checkout
        _time(REFERENCES["import_torch"], cwd, None)  # warm the file cache once
        medians: dict[str, float] = {}
        for name, argv in {**REFERENCES, **COMMANDS}.items():
            status = REFUSAL_STATUS.get(name, 2) if name in COMMANDS else None
            medians[name] = statistics.median(
                _time(argv, cwd, status) for _ in range(args.runs)
            )
    torch_s = medians["import_torch"]
    out = {
        "runs": args.runs,
        "python_empty_s": round(medians["python_empty"], 3),
        "import_torch_s": round(torch_s, 3),
        "commands": {
            name: {"refusal_s": round(medians[name], 3),
                   "ratio_to_torch": round(medians[name] / torch_s, 3)}
            for name in COMMANDS
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
