"""The HTTP control plane: authentication, routes, metrics, fuzzing, bind refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from control.engine import HealingEngine
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig
from live.api import create_app
from live.evolution import Limits, TwinEvolution
from live.runtime import Runtime
from live.serve import is_loopback, resolve_token
from sim.architecture import EvalSpec

TOKEN = "t" * 32
ROOT = Path(__file__).resolve().parents[2]


def _runtime() -> Runtime:
    twin = build_twin(RunSpec(scenario="service_crash", hosts=4, seed=0))
    return Runtime(twin, HealingEngine(twin, SafetyConfig()), mode="twin", step_s=0.05,
                   plant_dt_s=1.0)


RUNTIME = _runtime()
# The fuzzed app serves the twin's evolution routes, with cycles kept tiny.
EVOLUTION = TwinEvolution(
    RUNTIME, EvalSpec(scenario="service_crash", hosts=4, hours=0.05, replicates=1),
    limits=Limits(population=2, generations=1, iterations=1, max_population=4,
                  max_generations=2, max_iterations=2))
APP = create_app(RUNTIME, TOKEN, EVOLUTION)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/autonomous/status", None),
    ("GET", "/autonomous/healing/history", None),
    ("GET", "/autonomous/predictions", None),
    ("GET", "/autonomous/evolution/status", None),
    ("GET", "/autonomous/postmortem/0", None),
    ("POST", "/autonomous/disable", None),
    ("POST", "/autonomous/enable", None),
    ("POST", "/autonomous/heal", {"component": "inst-0", "action": "restart_instance"}),
    ("POST", "/autonomous/evolve", None),
    ("POST", "/autonomous/emergency-stop", None),
]


def _state(rt: Runtime) -> tuple[Any, ...]:
    return (rt.enabled, rt.gate.stopped, len(rt.plant.log), rt.plant.now_s)


@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-0123456789", "Basic " + TOKEN,
                                  "Bearer"])
@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_no_valid_token_is_401_and_changes_nothing(
    auth: str | None, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Every /autonomous route refuses a missing or wrong token and leaves the state alone."""
    rt = _runtime()
    client = TestClient(create_app(rt, TOKEN))
    before = _state(rt)
    headers = {"Authorization": auth} if auth is not None else {}
    resp = client.request(method, path, json=body, headers=headers)
    assert resp.status_code == 401
    assert resp.headers.get("www-authenticate") == "Bearer"
    assert _state(rt) == before


def test_routes_with_the_token() -> None:
    """Status, heal through the gate, emergency stop, enable, evolution 503, metrics.

    Without an evolution service (live mode has none: no twin of the fleet to search) the
    evolution routes answer 503.
    """
    rt = _runtime()
    client = TestClient(create_app(rt, TOKEN))
    h = {"Authorization": f"Bearer {TOKEN}"}
    status = client.get("/autonomous/status", headers=h).json()
    assert status["mode"] == "twin" and status["enabled"] and not status["emergency_stopped"]
    heal = client.post("/autonomous/heal", headers={**h, "Idempotency-Key": "k1"},
                       json={"component": "inst-0", "action": "reroute_traffic"})
    assert heal.status_code == 202 and heal.json()["executed"]
    again = client.post("/autonomous/heal", headers={**h, "Idempotency-Key": "k1"},
                        json={"component": "inst-0", "action": "reroute_traffic"})
    assert again.status_code == 200 and again.json()["verdict"] == "duplicate"
    assert client.post("/autonomous/heal", headers=h, json={
        "component": "inst-0", "action": "explode"}).status_code == 422
    stop = client.post("/autonomous/emergency-stop", headers=h, json={"reason": "test"})
    assert stop.status_code == 200 and rt.gate.stopped
    blocked = client.post("/autonomous/heal", headers=h,
                          json={"component": "inst-1", "action": "restart_instance"})
    assert blocked.status_code == 409 and blocked.json()["verdict"] == "blocked"
    assert client.post("/autonomous/enable", headers=h).json() == {"enabled": True}
    assert not rt.gate.stopped
    for method, path in (("GET", "/autonomous/evolution/status"),
                         ("POST", "/autonomous/evolve")):
        resp = client.request(method, path, headers=h)
        assert resp.status_code == 503
        assert resp.json()["detail"] == "no evolution service configured"
    hist = client.get("/autonomous/healing/history", headers=h).json()
    assert any(r["type"] == "decision" and r["executed"] for r in hist["records"])
    assert client.get("/autonomous/postmortem/999", headers=h).status_code == 404
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "novacron_emergency_stopped 0.0" in metrics.text
    assert "/autonomous/heal" in client.get("/openapi.json").json()["paths"]


def test_runtime_runs_the_twin_accelerated() -> None:
    """The loop advances the twin step_s * speed per step and steps the engine."""
    rt = _runtime()
    rt.start()
    try:
        assert rt.wait_steps(5)
    finally:
        rt.stop()
    assert rt.plant.now_s >= 5.0 and rt.last_error == ""


@schema.parametrize()
@settings(max_examples=15, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_fuzz_finds_no_server_error(case: Any) -> None:
    """Schema-driven fuzzing, with and without the token, finds no 5xx (evolution included)."""
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
        resp = case.call(headers=headers)
        assert resp.status_code < 500, (case.method, case.path, resp.status_code, resp.text)
    assert EVOLUTION.wait(60.0), "a cycle the fuzzer started did not finish"


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    """resolve_token and the command both refuse 0.0.0.0 without a token."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    env = {k: v for k, v in os.environ.items() if k != "NOVACRON_API_TOKEN_TEST"}
    with pytest.raises(SystemExit, match="not a loopback address"):
        resolve_token("0.0.0.0", "NOVACRON_API_TOKEN_TEST", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "live.serve", "--host", "0.0.0.0", "--mode", "twin",
         "--token-env", "NOVACRON_API_TOKEN_TEST", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )
    assert proc.returncode != 0 and "not a loopback address" in proc.stderr
    token, source = resolve_token("127.0.0.1", "NOVACRON_API_TOKEN_TEST", tmp_path)
    assert len(token) >= 32 and source.startswith("file:")
    assert (tmp_path / "api-token").stat().st_mode & 0o077 == 0


def test_a_short_token_is_refused_at_start_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token under 16 characters stops the command before anything starts, naming it."""
    monkeypatch.setenv("NOVACRON_API_TOKEN_TEST", "short-token")
    with pytest.raises(SystemExit, match="11-character token; the API needs at least 16"):
        resolve_token("127.0.0.1", "NOVACRON_API_TOKEN_TEST", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "live.serve", "--mode", "twin",
         "--token-env", "NOVACRON_API_TOKEN_TEST", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "NOVACRON_API_TOKEN_TEST": "short-token"},
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "NOVACRON_API_TOKEN_TEST holds a 11-character token" in proc.stderr
    monkeypatch.setenv("NOVACRON_API_TOKEN_TEST", "x" * 16)
    assert resolve_token("127.0.0.1", "NOVACRON_API_TOKEN_TEST", tmp_path)[0] == "x" * 16
