"""Run one command's entry point several times in one process (``Sandbox.modules``).

Usage: ``python cli_batch.py MODULE`` with a JSON list of argument lists on standard input;
prints a JSON list of ``{"returncode", "stdout", "stderr"}``, one per argument list, as
``python -m MODULE ARGS...`` would have ended. Importing a command takes seconds (torch,
scikit-learn, MLflow); the bad-config tests run many short commands, so they pay it once.
Each run executes the module as ``__main__`` (:func:`runpy.run_module`, as ``-m`` does, so
Hydra finds its config the same way); what it imports stays loaded for the next. An exception
other than ``SystemExit`` is written to that run's stderr as Python would at the top level
(with its traceback) and gives status 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
import traceback


def _status(code: object) -> int:
    """Exit status of ``SystemExit(code)``; a message is printed to stderr, as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main() -> None:
    name = sys.argv[1]
    cases = json.loads(sys.stdin.read())
    results = []
    for args in cases:
        out, err = io.StringIO(), io.StringIO()
        status = 0
        sys.argv = [name, *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_module(name, run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                status = _status(exc.code)
            except BaseException:  # what would have reached the top level
                traceback.print_exc()
                status = 1
        results.append({"returncode": status, "stdout": out.getvalue(), "stderr": err.getvalue()})
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
