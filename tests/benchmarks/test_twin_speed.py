"""``benchmarks/twin_speed.py``: bad arguments and a failing child run are one clear line."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "twin_speed.py"


def test_unknown_scenario_is_refused_at_start_naming_the_choices() -> None:
    """--scenario foo exits 2 with argparse's one error line listing the scenarios."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--scenario", "foo"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert "error: --scenario: unknown 'foo'" in last and "'mixed'" in last


def test_a_failing_child_run_surfaces_its_error() -> None:
    """A fast-mode child that fails ends the benchmark with the child's own last line."""
    spec = importlib.util.spec_from_file_location("twin_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.run_fast(10, 0.01, 0, "nope", repeats=1)
    message = str(exit_info.value.code)
    assert message.startswith("error: fast-mode run (10 hosts, scenario 'nope') failed")
    assert "unknown 'nope'" in message
