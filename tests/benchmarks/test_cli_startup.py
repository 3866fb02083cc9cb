"""``benchmarks/cli_startup.py``: a bad argument is one clear line, before any command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "cli_startup.py"


def test_runs_below_one_is_refused_at_start() -> None:
    """--runs 0 exits 2 with argparse's error line naming the option, and prints no JSON."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--runs", "0"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("error: --runs must be >= 1, got 0")
