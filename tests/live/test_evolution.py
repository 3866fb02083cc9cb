"""The twin's evolution service behind /autonomous/evolve and /autonomous/evolution/status."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from agents.bayesopt import BOParams
from control.engine import HealingEngine
from control.optimise import CycleParams, replica_counts
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig
from live.api import create_app
from live.evolution import Limits, TwinEvolution
from live.runtime import Runtime
from sim.architecture import EvalSpec
from sim.events import DecisionRecord
from tests.agents.conftest import one_torch_thread  # noqa: F401  (autouse: one torch thread)

TOKEN = "e" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOSTS = 6
SPEC = EvalSpec(
    scenario="service_crash", hosts=HOSTS, hours=0.1, replicates=1, fault_rate_scale=50.0
)
# With this twin (seed 0, 300 s in) the GA of seed 1 proposes four scale_ins; the fork
# validation finds them better and the one above a service's minimum (frontend) is applied.
EVOLVE = {"population": 4, "generations": 2, "seed": 1}


def _service(safety: SafetyConfig | None = None) -> tuple[Runtime, TwinEvolution, TestClient]:
    twin = build_twin(RunSpec(scenario="service_crash", hosts=HOSTS, seed=0))
    twin.advance(300.0)
    rt = Runtime(
        twin,
        HealingEngine(twin, safety or SafetyConfig()),
        mode="twin",
        step_s=0.05,
        plant_dt_s=1.0,
    )
    svc = TwinEvolution(
        rt,
        SPEC,
        CycleParams(validation_s=600.0),
        bo=BOParams(n_initial=2, num_restarts=2, raw_samples=32, acq_maxiter=20),
    )
    return rt, svc, TestClient(create_app(rt, TOKEN, svc))


def _finish(svc: TwinEvolution, client: TestClient) -> dict[str, Any]:
    assert svc.wait(120.0), "the cycle did not finish"
    resp = client.get("/autonomous/evolution/status", headers=AUTH)
    assert resp.status_code == 200
    body: dict[str, Any] = resp.json()
    return body


def test_evolve_runs_in_the_background_and_applies_through_the_gate() -> None:
    """202 with a handle at once, 409 while running, then done with the report and records."""
    rt, svc, client = _service()
    assert client.get("/autonomous/evolution/status", headers=AUTH).json()["state"] == "idle"
    before = replica_counts(rt.plant)  # type: ignore[arg-type]
    with rt.lock:  # the cycle cannot fork the twin yet, so it is surely still running
        resp = client.post("/autonomous/evolve", headers=AUTH, json={"params": EVOLVE})
        assert resp.status_code == 202
        assert resp.json() == {
            "cycle": 1,
            "kind": "evolve",
            "state": "running",
            "params": {"kind": "evolve", **EVOLVE},
        }
        busy = client.post("/autonomous/evolve", headers=AUTH, json={"params": {}})
        assert busy.status_code == 409 and "still running" in busy.json()["detail"]
        running = client.get("/autonomous/evolution/status", headers=AUTH).json()
        assert running["state"] == "running" and running["report"] is None
        assert running["finished_at"] is None and running["started_at"] > 0
    status = _finish(svc, client)
    assert status["state"] == "done" and status["cycle"] == 1 and status["error"] is None
    rep = status["report"]
    assert status["finished_at"] >= status["started_at"]
    assert rep["applied"] and rep["improvement"] > 0
    assert rep["candidate_fitness"] > rep["incumbent_fitness"]
    assert "scale_in svc-frontend" in rep["actions"]
    assert len(rep["refused"]) == len(rep["actions"]) - 1
    assert all("minimum" in r for r in rep["refused"])
    record = rt.plant.log[rep["decision_seq"]]
    assert isinstance(record, DecisionRecord) and record.action == "evolve"
    assert record.verdict == "applied" and record.executed
    gated = [
        r
        for r in rt.plant.log.since(0)
        if isinstance(r, DecisionRecord) and r.reason.startswith("evolve:")
    ]
    assert any(r.executed and r.target == "svc-frontend" for r in gated)
    assert rt.gate.in_flight(), "the applied scale_in is registered with the safety gate"
    rt.plant.advance(60.0)
    after = replica_counts(rt.plant)  # type: ignore[arg-type]
    assert after["replicas.frontend"] == before["replicas.frontend"] - 1
    again = client.post("/autonomous/evolve", headers=AUTH, json={"params": EVOLVE})
    assert again.status_code == 202 and again.json()["cycle"] == 2
    assert svc.wait(120.0)


def test_dry_run_server_leaves_the_twin_alone() -> None:
    """The same cycle on a dry-run server: better, but every change refused by the gate."""
    rt, svc, client = _service(SafetyConfig(dry_run=True))
    before = replica_counts(rt.plant)  # type: ignore[arg-type]
    assert (
        client.post("/autonomous/evolve", headers=AUTH, json={"params": EVOLVE}).status_code == 202
    )
    rep = _finish(svc, client)["report"]
    assert not rep["applied"] and rep["improvement"] > 0
    assert any("dry_run" in r for r in rep["refused"])
    record = rt.plant.log[rep["decision_seq"]]
    assert isinstance(record, DecisionRecord)
    assert record.verdict == "blocked" and not record.executed
    assert not rt.plant.pending and not rt.gate.in_flight()  # type: ignore[attr-defined]
    rt.plant.advance(60.0)
    assert replica_counts(rt.plant) == before  # type: ignore[arg-type]


def test_optimise_cycle_reports_bo() -> None:
    """kind=optimise runs the configuration search and records its decision."""
    rt, svc, client = _service()
    resp = client.post(
        "/autonomous/evolve", headers=AUTH, json={"params": {"kind": "optimise", "iterations": 3}}
    )
    assert resp.status_code == 202 and resp.json()["kind"] == "optimise"
    status = _finish(svc, client)
    assert status["state"] == "done" and status["params"]["iterations"] == 3
    rep = status["report"]
    assert rep["search_evaluations"] == 3 and "configuration" in rep["proposal"]
    record = rt.plant.log[rep["decision_seq"]]
    assert isinstance(record, DecisionRecord) and record.action == "optimise"


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"kind": "mutate"}, "kind"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"population": 1}, "population"),
        ({"population": 33}, "population"),
        ({"generations": 0}, "generations"),
        ({"iterations": 5}, "iterations"),
        ({"kind": "optimise", "iterations": 51}, "iterations"),
        ({"kind": "optimise", "population": 4}, "population"),
        ({"speed": 2}, "speed"),
    ],
)
def test_bad_parameters_are_422_naming_the_key(params: dict[str, Any], key: str) -> None:
    """A bad value or an unknown key is refused before any cycle starts."""
    _, _, client = _service()
    resp = client.post("/autonomous/evolve", headers=AUTH, json={"params": params})
    assert resp.status_code == 422
    assert key in resp.json()["detail"]
    assert client.get("/autonomous/evolution/status", headers=AUTH).json()["state"] == "idle"


def test_no_token_is_401_and_starts_nothing() -> None:
    """The evolution routes keep the bearer guard with a service configured."""
    _, svc, client = _service()
    assert client.post("/autonomous/evolve", json={"params": EVOLVE}).status_code == 401
    assert client.get("/autonomous/evolution/status").status_code == 401
    assert svc.status()["state"] == "idle"


def test_a_failed_cycle_is_reported_and_the_next_may_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception in the cycle becomes state failed with its message, never a 5xx."""
    _, svc, client = _service()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("search diverged")

    monkeypatch.setattr(svc.optimiser, "evolve", broken)
    assert client.post("/autonomous/evolve", headers=AUTH, json={}).status_code == 202
    status = _finish(svc, client)
    assert status["state"] == "failed" and status["report"] is None
    assert status["error"] == "RuntimeError: search diverged"
    assert client.post("/autonomous/evolve", headers=AUTH, json={}).status_code == 202
    assert svc.wait(120.0)


def test_cycle_beside_the_running_control_loop() -> None:
    """A cycle completes while the loop advances the twin; the loop sees no error."""
    rt, svc, client = _service()
    rt.start()
    try:
        assert (
            client.post("/autonomous/evolve", headers=AUTH, json={"params": EVOLVE}).status_code
            == 202
        )
        status = _finish(svc, client)
        assert rt.wait_steps(2)
    finally:
        rt.stop()
    assert status["state"] == "done" and rt.last_error == ""
    record = rt.plant.log[status["report"]["decision_seq"]]
    assert isinstance(record, DecisionRecord) and record.action == "evolve"


def test_limits_and_plant_are_checked() -> None:
    """Defaults outside the maxima and a plant that is not a twin are refused."""
    with pytest.raises(ValueError, match="population"):
        Limits(population=40)
    twin = build_twin(RunSpec(scenario="service_crash", hosts=HOSTS, seed=0))
    rt = Runtime(
        twin, HealingEngine(twin, SafetyConfig()), mode="twin", step_s=0.05, plant_dt_s=1.0
    )
    rt.plant = object()  # type: ignore[assignment]
    with pytest.raises(ValueError, match="twin"):
        TwinEvolution(rt)
