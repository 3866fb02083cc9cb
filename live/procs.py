"""Process helpers: whether a pid is one of ours and alive, and stopping it for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


def alive(pid: int | None, marker: str = "") -> bool:
    """Whether ``pid`` runs (not a zombie) and its command line has ``marker`` (when given)."""
    if pid is None or pid <= 0:
        return False
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        return not marker or marker in " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def terminate(pid: int, timeout_s: float = 2.0) -> None:
    """Stop ``pid``: continue it if stopped, SIGTERM, then SIGKILL after ``timeout_s``."""
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(pid)
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.02)
    kill(pid)


def kill(pid: int, timeout_s: float = 2.0) -> None:
    """SIGKILL ``pid`` and wait (up to ``timeout_s``) until it is gone."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        _reap(pid)
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.01)
