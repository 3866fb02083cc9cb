"""GA and NSGA-II against random search on the twin, and the evolved architecture's gain.

    python benchmarks/evolve_quality.py                  # 5 seeds, population 20, 10 generations
    python benchmarks/evolve_quality.py --seeds 2 --pop 10 --gens 4

For each search seed: the GA (weighted fitness) and NSGA-II (three objectives) run with the
given population and generations; random search then gets exactly as many distinct twin
evaluations as each of them used. Reported per seed and as medians: best weighted fitness
(GA vs random) and hypervolume at the fixed reference point (NSGA-II vs random). The GA's best
architecture of each seed and the default architecture are re-evaluated on ``--fresh`` fresh
evaluation seeds (fault draws and workload noise the search never saw); the gain is the ratio
of their mean fitness. Evaluations run on ``--jobs`` processes. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.evolution import (
    GAParams,
    TwinEvaluator,
    confirm_on_fresh_seeds,
    random_search,
    run_search,
)
from sim.architecture import EvalSpec, GenomeSpace, weighted_fitness


def main() -> None:
    """Run the comparison and print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pop", type=int, default=20)
    parser.add_argument("--gens", type=int, default=10)
    parser.add_argument("--fresh", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--replicates", type=int, default=EvalSpec().replicates)
    args = parser.parse_args()
    spec = EvalSpec(hosts=args.hosts, hours=args.hours, replicates=args.replicates)
    space = GenomeSpace(spec.base_config())
    params = GAParams(pop_size=args.pop, max_generations=args.gens,
                      tournament_size=min(5, args.pop), period=max(args.gens, 1))
    rows: list[dict[str, Any]] = []
    wall0 = time.perf_counter()
    for seed in range(args.seeds):
        row: dict[str, Any] = {"seed": seed}
        ga_ev = TwinEvaluator(space, spec, seed=seed, n_jobs=args.jobs)
        ga = run_search(ga_ev, params, "ga", seed)
        rs = random_search(TwinEvaluator(space, spec, seed=seed, n_jobs=args.jobs),
                           ga.evaluations, seed=seed)
        nsga_ev = TwinEvaluator(space, spec, seed=seed, n_jobs=args.jobs)
        nsga = run_search(nsga_ev, params, "nsga2", seed)
        rs_mo = random_search(TwinEvaluator(space, spec, seed=seed, n_jobs=args.jobs),
                              nsga.evaluations, seed=seed + 1000)
        fresh = confirm_on_fresh_seeds(space, spec, np.stack([ga.best_genome,
                                                              space.default_genome()]),
                                       args.fresh, ga.cost_ref_usd, args.jobs)
        row.update(
            ga_evaluations=ga.evaluations, ga_best=ga.best_fitness, random_best=rs.best_fitness,
            nsga2_evaluations=nsga.evaluations, nsga2_hv=nsga.hypervolume,
            random_hv=rs_mo.hypervolume, default_fitness_search=weighted_fitness(
                ga_ev(space.default_genome()[None, :])[0], ga.cost_ref_usd),
            fresh_best=float(fresh[0].mean()), fresh_default=float(fresh[1].mean()),
            fresh_gain=float(fresh[0].mean() / fresh[1].mean() - 1.0),
            best_genome=[int(v) for v in ga.best_genome],
        )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    wall_s = time.perf_counter() - wall0
    out = {
        "benchmark": "evolve_quality", "seeds": args.seeds, "pop": args.pop, "gens": args.gens,
        "fresh_seeds": args.fresh, "hosts": args.hosts, "hours": args.hours,
        "replicates": spec.replicates, "fault_rate_scale": spec.fault_rate_scale,
        "jobs": args.jobs, "cpu_count": os.cpu_count(), "wall_s": round(wall_s, 1),
        "ga_best_median": float(np.median([r["ga_best"] for r in rows])),
        "random_best_median": float(np.median([r["random_best"] for r in rows])),
        "ga_beats_random_seeds": sum(r["ga_best"] > r["random_best"] for r in rows),
        "nsga2_hv_median": float(np.median([r["nsga2_hv"] for r in rows])),
        "random_hv_median": float(np.median([r["random_hv"] for r in rows])),
        "nsga2_beats_random_seeds": sum(r["nsga2_hv"] > r["random_hv"] for r in rows),
        "fresh_gain_median": float(np.median([r["fresh_gain"] for r in rows])),
        "fresh_gain_min": float(min(r["fresh_gain"] for r in rows)),
        "rows": rows,
    }
    out["pass_ga_vs_random"] = out["ga_beats_random_seeds"] == args.seeds
    out["pass_hv_vs_random"] = out["nsga2_beats_random_seeds"] == args.seeds
    out["pass_gain_10pct"] = out["fresh_gain_min"] >= 0.10
    print(json.dumps(out))


if __name__ == "__main__":
    main()
