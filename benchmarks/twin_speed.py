"""Speed and memory of the twin: fast mode against the per-request mode, on one core.

Fast mode runs the mixed scenario for 24 simulated hours with telemetry every 10 s at 100 and
1,000 hosts, three times each in fresh processes (so each peak RSS is its own); the median
run is reported. The per-request mode runs
the same 100-host cluster and default workload, which is far slower, over 60-second windows
at four times of day; its speed is their total simulated time over their total wall time.
Both are measured in this run, so the ratio does not depend on the machine. Prints JSON.

Usage: python benchmarks/twin_speed.py [--hours 24] [--window-s 60] [--seed 0]
       [--scenario mixed]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# numpy is imported inside the functions, after this, so it starts single-threaded.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = {
    "fast_100_hosts_sim_s_per_wall_s": 50_000.0,
    "fast_1000_hosts_sim_s_per_wall_s": 20_000.0,
    "fast_over_per_request": 1_000.0,
    "peak_rss_1000_hosts_mib": 1024.0,
}


def pin_one_core() -> int:
    """Pin this process to one core; returns the core."""
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def fast_child(hosts: int, hours: float, seed: int, scenario: str) -> dict[str, float]:
    """Run fast mode in this process and report speed and peak RSS."""
    from sim.scenarios import make_config
    from sim.twin import Twin

    pin_one_core()
    twin = Twin(make_config(scenario, hosts), seed=seed)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    twin.advance(hours * 3600.0)
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "hosts": hosts,
        "scenario": scenario,
        "sim_s": hours * 3600.0,
        "wall_s": wall_s,
        "sim_s_per_wall_s": hours * 3600.0 / wall_s,
        "sim_s_per_cpu_s": hours * 3600.0 / cpu_s,
        "events": len(twin.log),
        "faults": twin.summary()["faults"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def run_fast(
    hosts: int, hours: float, seed: int, scenario: str, repeats: int = 3
) -> dict[str, float]:
    """Fast mode in fresh interpreters; the run with the median speed of ``repeats``.

    Raises:
        SystemExit: a child failed; the message is the last line of its stderr.
    """
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(hosts), "--hours", str(hours),
             "--seed", str(seed), "--scenario", scenario],
            check=False, capture_output=True, text=True, cwd=ROOT,
        )
        if out.returncode != 0:
            lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
            raise SystemExit(
                f"error: fast-mode run ({hosts} hosts, scenario {scenario!r}) failed with exit "
                f"status {out.returncode}: {lines[-1] if lines else '(no message)'}"
            )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["sim_s_per_wall_s"])
    median = dict(runs[len(runs) // 2])
    median["repeats_sim_s_per_wall_s"] = [round(r["sim_s_per_wall_s"], 1) for r in runs]
    return median


def run_per_request(hosts: int, window_s: float, seed: int) -> dict[str, float]:
    """Per-request mode on the same cluster and default workload, four windows of a day."""
    import numpy as np

    from sim.per_request import PerRequestServing
    from sim.scenarios import make_config
    from sim.topology import build_topology
    from sim.workload import Workload

    pin_one_core()
    config = make_config("calm", hosts)
    ss = np.random.SeedSequence(seed)
    topo = build_topology(config, np.random.default_rng(ss.spawn(1)[0]))
    sim_s = wall_s = 0.0
    requests = 0
    for i, hour in enumerate((0.0, 6.0, 12.0, 18.0)):
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, i]).spawn(2)]
        workload = Workload(config.workload, hosts, rngs[0], start_s=hour * 3600.0)
        offset = hour * 3600.0

        def rate(t_s: float, dt_s: float, w: Workload = workload, o: float = offset) -> float:
            return w.rate_rps(o + t_s, dt_s)

        serving = PerRequestServing(topo, rngs[1])
        t0 = time.perf_counter()
        stats = serving.run(rate, window_s)
        wall_s += time.perf_counter() - t0
        sim_s += window_s
        requests += stats.requests
    return {
        "hosts": hosts,
        "sim_s": sim_s,
        "wall_s": wall_s,
        "sim_s_per_wall_s": sim_s / wall_s,
        "requests": requests,
    }


def main() -> None:
    """Run every measurement and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default="mixed")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from sim.scenarios import SCENARIOS

    if args.scenario not in SCENARIOS:
        parser.error(f"--scenario: unknown {args.scenario!r}; choose from {sorted(SCENARIOS)}")
    if not args.hours > 0 or not args.window_s > 0:
        parser.error("--hours and --window-s must be > 0")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.child:
        print(json.dumps(fast_child(args.child, args.hours, args.seed, args.scenario)))
        return
    fast_100 = run_fast(100, args.hours, args.seed, args.scenario)
    fast_100_calm = run_fast(100, args.hours, args.seed, "calm")
    fast_1000 = run_fast(1000, args.hours, args.seed, args.scenario)
    per_request = run_per_request(100, args.window_s, args.seed)
    figures = {
        "fast_100_hosts_sim_s_per_wall_s": fast_100["sim_s_per_wall_s"],
        "fast_1000_hosts_sim_s_per_wall_s": fast_1000["sim_s_per_wall_s"],
        "fast_over_per_request": fast_100_calm["sim_s_per_wall_s"]
        / per_request["sim_s_per_wall_s"],
        "peak_rss_1000_hosts_mib": fast_1000["peak_rss_mib"],
    }
    met = {
        k: (v <= TARGETS[k] if k.startswith("peak_rss") else v >= TARGETS[k])
        for k, v in figures.items()
    }
    print(json.dumps({
        "benchmark": "twin_speed",
        "figures": {k: round(v, 1) for k, v in figures.items()},
        "targets": TARGETS,
        "met": met,
        "fast_100": fast_100,
        "fast_100_calm": fast_100_calm,
        "fast_1000": fast_1000,
        "per_request_100": per_request,
        "note": "fast_over_per_request compares the calm (fault-free) fast mode with the "
        "per-request mode, which has no faults, on the same cluster and workload",
    }))


if __name__ == "__main__":
    main()
