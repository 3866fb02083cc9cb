"""``python -m live.serve``: the control plane, a plant and the HTTP API in one process.

    python -m live.serve                                  # live fleet, dry run, 127.0.0.1:9090
    python -m live.serve --actuate --replicas 4           # live fleet, actions executed
    python -m live.serve --mode twin --speed 60           # the twin, 60 simulated s per s

In twin mode the evolution routes run :class:`live.evolution.TwinEvolution` cycles against the
twin; live mode has no twin of the fleet to search, so they answer 503 there.

The bearer token comes from the environment variable named by ``--token-env``
(``NOVACRON_API_TOKEN``); on a loopback address without one, a random token is generated and
written to ``<workdir>/api-token`` (mode 0600). A non-loopback ``--host`` without a token is
refused. Live state lives in ``<workdir>/state.db`` (SQLite, WAL); started again on the same
workdir after a crash, the server adopts the running fleet and resumes unfinished actions.
Prints one JSON line when it is ready and one JSON object, its summary, as the last line on
shutdown (SIGINT / SIGTERM).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import uvicorn

from control.engine import HealingEngine
from control.run import RunSpec, build_twin
from control.safety import SafetyConfig
from live.api import MIN_TOKEN_CHARS, EvolutionService, create_app
from live.controller import live_engine
from live.plant import FleetSpec, LivePlant
from live.runtime import Runtime
from sim.actions import Action, ActionResult
from sim.architecture import EvalSpec

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9090


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, env_name: str, workdir: Path) -> tuple[str, str]:
    """The API token and where it came from; refuses a non-loopback host without one.

    Raises:
        SystemExit: non-loopback bind without a configured token, or a token shorter than
            ``MIN_TOKEN_CHARS``.
    """
    token = os.environ.get(env_name, "")
    if token:
        if len(token) < MIN_TOKEN_CHARS:
            raise SystemExit(
                f"{env_name} holds a {len(token)}-character token; the API needs at least "
                f"{MIN_TOKEN_CHARS} (make one with: python -c "
                f"'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return token, f"env:{env_name}"
    if not is_loopback(host):
        raise SystemExit(
            f"refusing to bind {host}, which is not a loopback address, without a token: "
            f"set {env_name}"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "api-token"
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token, f"file:{path}"


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    ap = argparse.ArgumentParser(prog="python -m live.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=DEFAULT_HOST)
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--mode", choices=("live", "twin"), default="live")
    ap.add_argument("--workdir", default="outputs/live")
    ap.add_argument("--token-env", default="NOVACRON_API_TOKEN")
    ap.add_argument("--actuate", action="store_true",
                    help="execute actions (live mode is a dry run without it)")
    ap.add_argument("--step-s", type=float, default=0.1, help="control period, wall seconds")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--max-replicas", type=int, default=8)
    ap.add_argument("--lb-port", type=int, default=18100)
    ap.add_argument("--replica-startup-delay-s", type=float, default=0.0)
    ap.add_argument("--keep-fleet", action="store_true",
                    help="leave the fleet running on shutdown (a later start adopts it)")
    ap.add_argument("--scenario", default="service_crash", help="twin scenario")
    ap.add_argument("--hosts", type=int, default=10, help="twin hosts")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="twin: simulated seconds per wall second")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> None:
    """Start the plant, the control loop and the API; serve until stopped."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if not 1 <= args.port <= 65535:
        ap.error(f"--port must lie in 1..65535, got {args.port}")
    if not args.step_s > 0 or not args.speed > 0:
        ap.error("--step-s and --speed must be positive")
    workdir = Path(args.workdir)
    token, token_source = resolve_token(args.host, args.token_env, workdir)

    plant: Any
    evolution: EvolutionService | None = None
    if args.mode == "live":
        try:
            spec = FleetSpec(replicas=args.replicas, max_replicas=args.max_replicas,
                             lb_port=args.lb_port, seed=args.seed,
                             replica_startup_delay_s=args.replica_startup_delay_s)
        except ValueError as exc:
            ap.error(str(exc))
        plant = LivePlant(spec, workdir, actuate=args.actuate)
        plant.start()
        controller = live_engine(plant, actuate=args.actuate)
        live_plant = plant

        def apply(action: Action, key: str | None) -> ActionResult:
            return live_plant.apply(action, key)

        runtime = Runtime(plant, controller, mode="live", step_s=args.step_s, plant_dt_s=0.0,
                          apply=apply)
    else:
        # Only twin mode evolves (BoTorch and torch behind it: seconds to import).
        from live.evolution import TwinEvolution

        plant = build_twin(RunSpec(scenario=args.scenario, hosts=args.hosts, seed=args.seed))
        controller = HealingEngine(plant, SafetyConfig(dry_run=not args.actuate))
        runtime = Runtime(plant, controller, mode="twin", step_s=args.step_s,
                          plant_dt_s=args.step_s * args.speed, substep_s=plant.config.tick_s)
        evolution = TwinEvolution(runtime, EvalSpec(scenario=args.scenario, hosts=args.hosts,
                                                    hours=0.25, replicates=1))
    app = create_app(runtime, token, evolution)
    runtime.start()
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="warning", lifespan="off"))
    print(json.dumps({"ready": True, "url": f"http://{args.host}:{args.port}",
                      "mode": args.mode, "actuate": args.actuate, "token": token_source,
                      "pid": os.getpid(), "resumed_actions":
                          getattr(plant, "resumed_actions", [])}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    try:
        server.run()
    finally:
        runtime.stop()
        summary = {"mode": args.mode, "steps": runtime.steps, "now_s": plant.now_s,
                   "events": len(plant.log)}
        if isinstance(plant, LivePlant):
            plant.close(stop_fleet=not args.keep_fleet)
        print(json.dumps(summary), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
