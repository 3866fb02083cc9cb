"""Durability: the controller killed with SIGKILL mid-action restarts with everything intact."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from live.procs import alive, kill
from live.store import Store
from sim.events import ActionRecord, ControlRecord, DecisionRecord, IncidentRecord
from tests.live.conftest import port_block

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "d" * 32


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(str(db), timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _wait(cond: object, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """Starts ``python -m live.serve`` on a fleet; kills whatever is left at the end."""
    procs: list[subprocess.Popen[str]] = []
    workdir = tmp_path / "ctl"
    lb_port, api_port = port_block(5), port_block(1)

    def start() -> tuple[subprocess.Popen[str], dict[str, object]]:
        env = dict(os.environ, NOVACRON_API_TOKEN=TOKEN, PYTHONPATH=str(ROOT))
        err_path = tmp_path / f"serve-{len(procs)}.err"
        with err_path.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "live.serve", "--actuate", "--replicas", "2",
                 "--max-replicas", "3", "--lb-port", str(lb_port), "--port", str(api_port),
                 "--workdir", str(workdir), "--replica-startup-delay-s", "2.0"],
                stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, env=env,
            )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=20)
            tail = err_path.read_text(encoding="utf-8")[-2000:]
            raise AssertionError(
                f"live.serve exited ({proc.returncode}) before it was ready:\n{tail}")
        ready = json.loads(line)
        assert ready["ready"] is True
        return proc, ready

    yield start, workdir
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    db = workdir / "state.db"
    if db.exists():
        pids = [int(p) for (p,) in _rows(db, "SELECT pid FROM slots WHERE pid IS NOT NULL")]
        pids += [int(v) for (v,) in _rows(db, "SELECT value FROM meta WHERE key='haproxy_pid'")]
        for pid in pids:
            if alive(pid):
                kill(pid)
        assert not any(alive(p) for p in pids)


def _api(ready: dict[str, object], method: str, path: str,
         body: dict[str, object] | None = None) -> dict[str, object]:
    """One authorised call to the control plane's API (retried while it starts listening)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{ready['url']}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    for attempt in range(100):
        try:
            with opener.open(req, timeout=10) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except urllib.error.URLError as err:
            if not isinstance(err.reason, ConnectionRefusedError) or attempt == 99:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def test_kill_9_mid_action_keeps_incident_and_runs_the_action_once(serve: object) -> None:
    """SIGKILL while a restart runs; after restart the records are intact and it ran once."""
    start, workdir = serve  # type: ignore[misc]
    db = workdir / "state.db"
    ctl, _ = start()
    (pid0,) = _rows(db, "SELECT pid FROM slots WHERE slot = 0")[0]
    os.kill(int(pid0), signal.SIGKILL)
    restart_sql = ("SELECT action_id, phase, progress FROM actions "
                   "WHERE kind = 'restart_instance' AND target = 'inst-0'")
    _wait(lambda: any("new_pid" in json.loads(r[2]) for r in _rows(db, restart_sql)), 15.0,
          "the restart to spawn its replacement")
    ctl.kill()
    ctl.wait()
    (aid, phase, progress), = _rows(db, restart_sql)
    assert phase == "started"
    before = Store(db).events()
    incidents = [r for r in before if isinstance(r, IncidentRecord)]
    assert incidents and any("inst-0" in r.root_cause for r in incidents)

    ctl2, ready = start()
    assert aid in ready["resumed_actions"]
    done_sql = (f"SELECT COUNT(*) FROM events WHERE type = 'action' AND body LIKE "
                f"'%\"action_id\":{aid},%' AND body LIKE '%\"phase\":\"succeeded\"%'")
    _wait(lambda: _rows(db, done_sql)[0][0] == 1, 20.0, "the resumed action to end")
    resolved_sql = ("SELECT COUNT(*) FROM events WHERE type = 'incident' AND body LIKE "
                    "'%\"phase\":\"resolved\"%'")
    _wait(lambda: _rows(db, resolved_sql)[0][0] >= 1, 20.0, "the incident to resolve")
    ctl2.send_signal(signal.SIGTERM)
    ctl2.wait(timeout=30)

    rows = _rows(db, restart_sql)
    assert len(rows) == 1 and rows[0][0] == aid and rows[0][1] == "succeeded"
    assert json.loads(rows[0][2])["new_pid"] == json.loads(progress)["new_pid"]
    after = Store(db).events()
    assert after[: len(before)] == before
    started = [r for r in after if isinstance(r, ActionRecord) and r.phase == "started"
               and r.kind == "restart_instance" and r.target == "inst-0"]
    assert [r.action_id for r in started] == [aid]
    phases = [r.phase for r in after if isinstance(r, ActionRecord) and r.action_id == aid]
    assert phases == ["requested", "started", "succeeded"], (phases, [
        (r.type, r.t_s) for r in after[len(before):]][:40])
    # The incident the killed controller left open is taken over by the new one at its
    # runbook step and resolved once the resumed restart has brought the replica back; no
    # escalation. The new controller's incidents take new ids.
    open_before = {r.incident_id for r in incidents} - {
        r.incident_id for r in incidents if r.phase in ("resolved", "escalated")}
    later = [r for r in after[len(before):] if isinstance(r, IncidentRecord)]
    taken = {r.incident_id for r in later if r.note.startswith("controller restarted: "
                                                               "incident taken over")}
    resolved = {r.incident_id for r in later if r.phase == "resolved"}
    assert open_before and taken == open_before and open_before <= resolved
    assert not any(r.phase == "escalated" for r in later)
    reopened = [r for r in after[len(before):] if isinstance(r, IncidentRecord)
                and r.phase == "opened" and r.incident_id <= max(r.incident_id
                                                                 for r in incidents)]
    assert not reopened


def test_an_emergency_stop_holds_across_a_kill_9_until_enabled(serve: object) -> None:
    """Stopped, killed, started again: the stop holds until the operator enables again.

    While it holds a dead replica is not restarted; after ``/autonomous/enable`` it is.
    """
    start, workdir = serve  # type: ignore[misc]
    db = workdir / "state.db"
    ctl, ready = start()
    assert _api(ready, "POST", "/autonomous/emergency-stop", {"reason": "drill"})[
        "emergency_stopped"] is True
    ctl.kill()
    ctl.wait()
    ctl2, ready2 = start()
    assert _api(ready2, "GET", "/autonomous/status")["emergency_stopped"] is True
    (pid0,) = _rows(db, "SELECT pid FROM slots WHERE slot = 0")[0]
    os.kill(int(pid0), signal.SIGKILL)

    def refused() -> bool:
        return any(isinstance(r, DecisionRecord) and r.target == "inst-0" and not r.executed
                   and "emergency" in r.reason.lower() for r in Store(db).events())

    _wait(refused, 15.0, "the stopped controller to refuse the restart")
    assert not any(isinstance(r, ActionRecord) and r.kind == "restart_instance"
                   for r in Store(db).events())
    _api(ready2, "POST", "/autonomous/enable")

    def restarted() -> bool:
        return any(isinstance(r, ActionRecord) and r.kind == "restart_instance"
                   and r.target == "inst-0" and r.phase == "succeeded"
                   for r in Store(db).events())

    _wait(restarted, 20.0, "the restart after enable")
    commands = [(r.command, r.reason) for r in Store(db).events() if isinstance(r, ControlRecord)]
    assert commands == [("emergency_stop", "drill"), ("resume", "")]
    ctl2.send_signal(signal.SIGTERM)
    ctl2.wait(timeout=30)
