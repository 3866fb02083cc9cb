"""The control plane's HTTP API (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Every ``/autonomous/*`` route needs ``Authorization: Bearer <token>``; a request without a
valid token gets 401 and changes nothing. ``/metrics`` (Prometheus text format) and the
OpenAPI document are open, as scrapers expect.

The evolution routes are served by an optional :class:`EvolutionService` (the twin's is
:class:`live.evolution.TwinEvolution`); without one, as in live mode, they answer 503 ("no
evolution service configured"). The service refuses bad parameters with ``ValueError``
(422) and a request while a cycle runs with :class:`EvolutionBusy` (409).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from pydantic import BaseModel, Field

from control.incidents import postmortem
from live.runtime import Runtime
from sim.actions import ACTION_SPECS, TARGET_PATTERN, Action
from sim.events import ActionRecord, AlertRecord, DecisionRecord, IncidentRecord

_BEARER = HTTPBearer(auto_error=False)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
"""The ``Authorization: Bearer`` credentials of a request, None when absent."""


class EvolutionBusy(RuntimeError):
    """The evolution service is already running a cycle."""


class EvolutionService(Protocol):
    """What the evolution / optimisation module offers the API."""

    def status(self) -> dict[str, Any]:
        """Current state of the evolution (generation, best candidate, running or not)."""
        ...

    def evolve(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start an evolution run; returns its handle.

        Raises:
            ValueError: bad parameters (answered 422).
            EvolutionBusy: a run is in progress (answered 409).
        """
        ...


class HealRequest(BaseModel):
    """A manual healing action."""

    component: str = Field(..., min_length=1, max_length=64,
                           description="target, e.g. inst-0, svc-api, cluster")
    action: str = Field(..., min_length=1, max_length=64,
                        description="action kind, e.g. restart_instance")


class StopRequest(BaseModel):
    """Why the emergency stop was pulled."""

    reason: str = Field(default="operator request", max_length=500)


class EvolveRequest(BaseModel):
    """Parameters handed to the evolution service."""

    params: dict[str, float | int | str | bool] = Field(default_factory=dict)


def _record(r: Any) -> dict[str, Any]:
    d: dict[str, Any] = r.to_dict()
    return d


MIN_TOKEN_CHARS = 16
"""Shortest API token accepted: a guessable bearer token would guard nothing."""


def create_app(runtime: Runtime, token: str,
               evolution: EvolutionService | None = None) -> FastAPI:
    """The FastAPI application over ``runtime``, guarded by ``token``."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the API token must be at least {MIN_TOKEN_CHARS} characters long")
    app = FastAPI(title="NovaCron autonomous control plane", version="0.1.0",
                  description="Status, healing history, post-mortems and safety switches of "
                              "the autonomous control plane.")

    def auth(creds: BearerCredentials) -> None:
        if creds is None or creds.scheme.lower() != "bearer" or not hmac.compare_digest(
            creds.credentials.encode(), token.encode()
        ):
            raise HTTPException(401, "missing or invalid bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]
    registry = CollectorRegistry()
    g_enabled = Gauge("novacron_autonomous_enabled", "1 while autonomous mode is on",
                      registry=registry)
    g_stopped = Gauge("novacron_emergency_stopped", "1 while the emergency stop holds",
                      registry=registry)
    g_open = Gauge("novacron_incidents_open", "incidents opened and not resolved or escalated",
                   registry=registry)
    g_events = Gauge("novacron_events", "event-log records by type", ["type"],
                     registry=registry)
    g_actions = Gauge("novacron_actions", "action records by phase", ["phase"],
                      registry=registry)
    g_time = Gauge("novacron_plant_time_seconds", "the plant's clock", registry=registry)

    def _incident_phases() -> dict[int, str]:
        last: dict[int, str] = {}
        for r in runtime.plant.log.since(0):
            if isinstance(r, IncidentRecord):
                last[r.incident_id] = r.phase
        return last

    @app.get("/autonomous/status", dependencies=guarded)
    def status() -> dict[str, Any]:
        """Mode, switches, clock and fleet summary."""
        with runtime.lock:
            obs = runtime.plant.observe()
            phases = _incident_phases()
            return {
                "mode": runtime.mode,
                "enabled": runtime.enabled,
                "emergency_stopped": runtime.gate.stopped,
                "dry_run": runtime.gate.config.dry_run,
                "now_s": runtime.plant.now_s,
                "steps": runtime.steps,
                "instances": int(obs.inst_used.sum()),
                "instances_ready": int((obs.inst_used & obs.inst_ready).sum()),
                "incidents": len(phases),
                "incidents_open": sum(p in ("opened", "mitigating") for p in phases.values()),
                "last_error": runtime.last_error,
            }

    @app.get("/autonomous/healing/history", dependencies=guarded)
    def history(limit: int = Query(100, ge=1, le=10000)) -> dict[str, Any]:
        """The latest decisions and action records, newest last."""
        with runtime.lock:
            recs = [r for r in runtime.plant.log.since(0)
                    if isinstance(r, DecisionRecord | ActionRecord)]
        return {"records": [_record(r) for r in recs[-limit:]], "total": len(recs)}

    @app.get("/autonomous/predictions", dependencies=guarded)
    def predictions(limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        """Early warnings: the detectors' latest warning alerts (no failure predictor here)."""
        with runtime.lock:
            alerts = [r for r in runtime.plant.log.since(0)
                      if isinstance(r, AlertRecord) and r.severity == "warning"]
        return {"predictor": None, "warnings": [_record(a) for a in alerts[-limit:]]}

    @app.get("/autonomous/postmortem/{incident_id}", dependencies=guarded)
    def get_postmortem(incident_id: int = Path(..., ge=0, le=2**31 - 1)) -> dict[str, Any]:
        """An incident's post-mortem (Markdown), built from the event log."""
        with runtime.lock:
            events = runtime.plant.log.since(0)
            if not any(isinstance(r, IncidentRecord) and r.incident_id == incident_id
                       for r in events):
                raise HTTPException(404, f"no incident {incident_id}")
            text = postmortem(events, incident_id)
            store = getattr(runtime.plant, "store", None)
            if store is not None:
                store.put_postmortem(incident_id, runtime.plant.now_s, text)
        return {"incident_id": incident_id, "markdown": text}

    @app.post("/autonomous/disable", dependencies=guarded)
    def disable() -> dict[str, Any]:
        """Stop stepping the controller (telemetry keeps flowing)."""
        with runtime.lock:
            runtime.enabled = False
        return {"enabled": False}

    @app.post("/autonomous/enable", dependencies=guarded)
    def enable() -> dict[str, Any]:
        """Step the controller again and lift an emergency stop."""
        with runtime.lock:
            runtime.enabled = True
            runtime.resume()
        return {"enabled": True}

    @app.post("/autonomous/emergency-stop", dependencies=guarded)
    def emergency_stop(body: StopRequest | None = None) -> dict[str, Any]:
        """Block every action from now on, until enabled again."""
        t = runtime.emergency_stop((body or StopRequest()).reason)
        return {"emergency_stopped": True, "at_s": t}

    @app.post("/autonomous/heal", dependencies=guarded, status_code=202)
    def heal(body: HealRequest, response: Response,
             idempotency_key: str | None = Header(None, max_length=128)) -> dict[str, Any]:
        """Run one action on one component through the safety gate."""
        if body.action not in ACTION_SPECS:
            raise HTTPException(422, f"unknown action {body.action!r}; "
                                     f"known: {sorted(ACTION_SPECS)}")
        if TARGET_PATTERN.match(body.component) is None:
            raise HTTPException(422, f"malformed component {body.component!r}; "
                                     "expected e.g. inst-0, svc-api, cluster")
        out = runtime.heal(Action(body.action, body.component), idempotency_key)
        if out["verdict"] in ("blocked", "rejected", "needs_approval"):
            response.status_code = 409
        elif out["verdict"] == "duplicate":
            response.status_code = 200
        return out

    @app.get("/autonomous/evolution/status", dependencies=guarded)
    def evolution_status() -> dict[str, Any]:
        """State of the evolution service."""
        if evolution is None:
            raise HTTPException(503, "no evolution service configured")
        return evolution.status()

    @app.post("/autonomous/evolve", dependencies=guarded, status_code=202)
    def evolve(body: EvolveRequest | None = None) -> dict[str, Any]:
        """Start an evolution run."""
        if evolution is None:
            raise HTTPException(503, "no evolution service configured")
        try:
            return evolution.evolve(dict((body or EvolveRequest()).params))
        except EvolutionBusy as exc:
            raise HTTPException(409, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus metrics."""
        with runtime.lock:
            events = runtime.plant.log.since(0)
            g_enabled.set(float(runtime.enabled))
            g_stopped.set(float(runtime.gate.stopped))
            g_time.set(runtime.plant.now_s)
        counts: dict[str, int] = {}
        phases: dict[str, int] = {}
        for r in events:
            counts[r.type] = counts.get(r.type, 0) + 1
            if isinstance(r, ActionRecord):
                phases[r.phase] = phases.get(r.phase, 0) + 1
        for k, v in counts.items():
            g_events.labels(type=k).set(v)
        for k, v in phases.items():
            g_actions.labels(phase=k).set(v)
        g_open.set(sum(p in ("opened", "mitigating") for p in _incident_phases().values()))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
