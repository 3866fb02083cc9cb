"""Twin evaluations per second for the architecture search (default evaluation).

    python benchmarks/evolve_speed.py                # 100 hosts, 1 simulated hour, 2 processes
    python benchmarks/evolve_speed.py --n 60 --jobs 2

Evaluates ``--n`` distinct repaired random genomes (one twin run each: ``replicates=1``) on
one process, then again on ``--jobs`` processes through the search's own evaluator, and
reports twin runs per second for both, with the projected wall time of the issue's
full-size search (population 100 x 200 generations = 20,000 evaluations) at the parallel
rate. The pool is started and warmed up before timing. The serial pass also reports its
CPU time per evaluation, which on a shared machine excludes the time spent waiting for a core
(``2 / cpu_s`` is then what two free cores would sustain). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.evolution import TwinEvaluator
from sim.architecture import EvalSpec, GenomeSpace, repair


def main() -> None:
    """Time serial and parallel evaluation; print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--hours", type=float, default=1.0)
    args = parser.parse_args()
    spec = EvalSpec(hosts=args.hosts, hours=args.hours, replicates=1)
    space = GenomeSpace(spec.base_config())
    rng = np.random.default_rng(0)
    genomes = np.unique(np.array([repair(space, g) for g in space.random_genomes(
        args.n + 4, rng)]), axis=0)
    warm, timed = genomes[:4], genomes[4:]
    serial = TwinEvaluator(space, spec, n_jobs=1)
    serial(warm)
    t0, c0 = time.perf_counter(), time.process_time()
    serial_objs = serial(timed)
    serial_s = time.perf_counter() - t0
    serial_cpu_s = time.process_time() - c0
    parallel = TwinEvaluator(space, spec, n_jobs=args.jobs)
    parallel(warm)
    t0 = time.perf_counter()
    parallel_objs = parallel(timed)
    parallel_s = time.perf_counter() - t0
    rate = len(timed) / parallel_s
    out = {
        "benchmark": "evolve_speed", "hosts": args.hosts, "hours": args.hours,
        "evaluations": len(timed), "jobs": args.jobs, "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "serial_evals_per_s": round(len(timed) / serial_s, 2),
        "serial_cpu_s_per_eval": round(serial_cpu_s / len(timed), 4),
        "evals_per_s_on_2_free_cores_from_cpu_time": round(2 * len(timed) / serial_cpu_s, 2),
        "parallel_evals_per_s": round(rate, 2),
        "projected_100x200_min": round(20_000 / rate / 60.0, 1),
        "same_results": serial_objs == parallel_objs,
        "target_evals_per_s": 20.0,
        "pass": rate >= 20.0,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
