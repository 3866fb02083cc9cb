"""Real faults on a real fleet: detection, time to restore, healing success, request success.

    python benchmarks/live_healing.py [--faults 100] [--replicas 4] [--rate 100] [--seed 0]
        [--mix service_crash=0.4,service_hang=0.35,memory_leak=0.25]
        [--canary-share 0.25 --bake-s 60]

Starts ``--replicas`` replica processes behind HAProxy on loopback, drives them with the
rule-based engine (``live.controller.live_engine``, actuation on) every 0.1 s, sends a
bounded load of ``--rate`` requests per second through HAProxy from a separate process
(``python -m live.loadgen``), and injects ``--faults`` faults of mixed kinds, one every
``--interval-s`` into a healthy replica (kind by ``--mix`` weight and target drawn from a
seeded generator; ``slow_response``, ``error_responses`` and ``bad_config``, which strikes
the whole service, may be added to the mix; with ``--canary-share`` a bad deploy reaches
that share of the replicas first and is promoted after ``--bake-s`` unless rolled back).
KPIs come from the event log through ``control.kpi`` exactly as in simulation (recovery held
for 1 s, healing deadline 30 s). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from control.kpi import compute_kpis, fault_outcomes  # noqa: E402
from live.chaos import FAULT_KINDS, ChaosInjector  # noqa: E402
from live.controller import control_loop, live_engine  # noqa: E402
from live.plant import FleetSpec, LivePlant  # noqa: E402
from sim.events import IncidentRecord, StateChange  # noqa: E402

MIX = {"service_crash": 0.4, "service_hang": 0.35, "memory_leak": 0.25}
MIX_KINDS = FAULT_KINDS
"""Chaos kinds ``--mix`` draws among (``bad_config`` strikes the service, the rest one
replica)."""
QUIET_S = 1.0
"""A replica gets its next fault no sooner than this after its last one was cleared, and not
while an incident about it is still open: the engine resolves an incident only once every
replica of the service has been ready for its verification hold, and a new fault on a
replica whose incident is still open joins that incident instead of being remediated (see
the README's live section)."""
STALL_S = 60.0
"""Injection stops when no replica has been healthy for this long (reported as stalled)."""
RESTORE_KINDS = ("service_crash", "service_hang", "memory_leak")
HOLD_S, DEADLINE_S = 1.0, 30.0


def _open_incident_targets(plant: LivePlant) -> set[str]:
    """Components named by the root cause of incidents still opened or mitigating."""
    phase: dict[int, tuple[str, str]] = {}
    for r in plant.log.since(0):
        if isinstance(r, IncidentRecord):
            phase[r.incident_id] = (r.phase, r.root_cause.rpartition(":")[0])
    return {c for p, c in phase.values() if p in ("opened", "mitigating")}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", type=int, default=100)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--interval-s", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lb-port", type=int, default=18300)
    ap.add_argument("--events-out", default="", help="write the event log here (JSON Lines)")
    ap.add_argument("--mix", default=",".join(f"{k}={w}" for k, w in MIX.items()),
                    help="fault kinds and weights, KIND=WEIGHT,... (kinds of live.chaos)")
    ap.add_argument("--canary-share", type=float, default=0.0,
                    help="a bad deploy reaches this share of the replicas first (0: all)")
    ap.add_argument("--bake-s", type=float, default=60.0,
                    help="seconds before a canaried deploy is promoted to every replica")
    args = ap.parse_args()
    if args.faults < 1 or args.replicas < 2 or args.interval_s <= 0:
        ap.error("need --faults >= 1, --replicas >= 2 and --interval-s > 0")
    if not 0.0 <= args.canary_share < 1.0 or not args.bake_s > 0:
        ap.error("need 0 <= --canary-share < 1 and --bake-s > 0")
    try:
        mix = {k.strip(): float(w) for k, w in (p.split("=", 1) for p in args.mix.split(","))}
    except ValueError:
        ap.error(f"--mix must read KIND=WEIGHT,..., got {args.mix!r}")
    wrong = sorted(set(mix) - set(MIX_KINDS))
    if wrong:
        ap.error(f"--mix: {wrong} are not live fault kinds; known: {list(MIX_KINDS)}")

    workdir = Path(tempfile.mkdtemp(prefix="live_healing_"))
    spec = FleetSpec(replicas=args.replicas, max_replicas=args.replicas + 2,
                     lb_port=args.lb_port, seed=args.seed)
    plant = LivePlant(spec, workdir, actuate=True)
    load: subprocess.Popen[str] | None = None
    t_wall = time.monotonic()
    try:
        plant.start()
        engine = live_engine(plant, actuate=True)
        chaos = ChaosInjector(plant, mix, seed=args.seed, canary_share=args.canary_share,
                              bake_s=args.bake_s)
        duration_s = args.faults * args.interval_s + 15.0
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        load = subprocess.Popen(
            [sys.executable, "-m", "live.loadgen", "--url", plant.lb_url + "/", "--rate",
             str(args.rate), "--duration-s", str(duration_s), "--connections", "8"],
            stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
        )
        control_loop(plant, engine, 3.0, 0.1)
        injected, stalled, last_healthy_s = 0, False, plant.now_s
        with tqdm(total=args.faults, desc="faults", file=sys.stderr) as bar:
            while injected < args.faults:
                next_at = plant.now_s + args.interval_s
                obs = plant.observe()
                healthy = [k for k in plant.used_slots()
                           if obs.inst_live[k] and obs.inst_ready[k] and not plant.busy(k)
                           and not plant.active_faults(k)
                           and plant.now_s - plant.last_cleared_s(k) >= QUIET_S
                           and f"inst-{k}" not in _open_incident_targets(plant)]
                if healthy:
                    last_healthy_s = plant.now_s
                    # Not while the service scales: a scale-in picks its replica when it
                    # runs, and a fault injected into that one would leave no trace.
                    if not plant.acting_on(f"svc-{spec.service}"):
                        chaos.inject_next(healthy)
                        injected += 1
                        bar.update(1)
                elif plant.now_s - last_healthy_s > STALL_S:
                    stalled = True
                    break
                control_loop(plant, engine, max(next_at - plant.now_s, 0.1), 0.1)
        control_loop(plant, engine, 8.0, 0.1)
        out, _ = load.communicate(timeout=duration_s + 60.0)
        load_result = json.loads(out.strip().splitlines()[-1])
        load = None
    finally:
        if load is not None:
            load.kill()
            load.wait()
        events = plant.log.since(0)
        if args.events_out:
            plant.log.write_jsonl(args.events_out)
        plant.close()

    outcomes = fault_outcomes(events, hold_s=HOLD_S, deadline_s=DEADLINE_S)
    kpis = compute_kpis(events, hold_s=HOLD_S, deadline_s=DEADLINE_S)
    detect = [o.detected_s - o.t0_s for o in outcomes if o.detected_s is not None]
    restore = [o.recovered_s - o.t0_s for o in outcomes
               if o.kind in RESTORE_KINDS and o.recovered_s is not None]
    needing = [o for o in outcomes if o.needed_healing]
    by_kind: dict[str, dict[str, float]] = {}
    for kind in sorted({o.kind for o in outcomes}):
        mine = [o for o in outcomes if o.kind == kind]
        d = [o.detected_s - o.t0_s for o in mine if o.detected_s is not None]
        r = [o.recovered_s - o.t0_s for o in mine if o.recovered_s is not None]
        by_kind[kind] = {
            "faults": len(mine), "detected": len(d), "recovered": len(r),
            "auto_recovered": sum(o.auto_recovered for o in mine),
            "detect_p95_s": _pct(d, 95), "restore_p95_s": _pct(r, 95),
            "rca_top1_faults": sum(o.rca_rank == 1 for o in mine),
        }
    result = {
        "benchmark": "live_healing",
        "replicas": args.replicas,
        "stalled": stalled,
        "faults": len(outcomes),
        "faults_needing_healing": len(needing),
        "faults_undetected": len(outcomes) - len(detect),
        "detection_p50_s": _pct(detect, 50),
        "detection_p95_s": _pct(detect, 95),
        "detection_max_s": max(detect) if detect else float("nan"),
        "restore_p50_s_crash_hang_leak": _pct(restore, 50),
        "restore_p95_s_crash_hang_leak": _pct(restore, 95),
        "restore_max_s_crash_hang_leak": max(restore) if restore else float("nan"),
        "restore_count_crash_hang_leak": len(restore),
        "healing_success_rate": kpis["healing_success_rate"],
        "request_success_client": load_result["success"],
        "requests_sent": load_result["sent"],
        "requests_failed": load_result["failed"],
        "availability_lb_windows": kpis["availability"],
        "mttd_s": kpis["mttd_s"],
        "mttr_s": kpis["mttr_s"],
        "rca_top1": kpis["rca_top1"],
        "actions": kpis["actions"],
        "incidents": kpis["incidents"],
        "by_kind": by_kind,
        "targets": {"detection_p95_s": 1.0, "restore_p95_s_crash_hang_leak": 5.0,
                    "healing_success_rate": 0.99, "request_success_client": 0.999},
        "wall_s": time.monotonic() - t_wall,
        "load_avg_1m": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "seed": args.seed,
        "canary_share": args.canary_share,
        "configs_promoted": sum(1 for r in events if isinstance(r, StateChange)
                                and r.state == "config_promoted"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
