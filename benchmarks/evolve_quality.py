"""GA and NSGA-II against random search on the twin, and the evolved architecture's gain.

    python benchmarks/evolve_quality.py                  # 5 seeds, population 20, 10 generations
    python benchmarks/evolve_quality.py --seeds 2 --pop 10 --gens 4
    python benchmarks/evolve_quality.py --searches nsga2   # NSGA-II against random search only

For each search seed: the GA (weighted fitness) and NSGA-II (three objectives) run with the
given population and generations; random search then gets exactly as many twin runs as each
of them used (its genomes on one draw set, then the same final race of its leaders). Every
search's results are judged on fresh evaluation seeds (fault draws and workload noise no
search saw, :data:`agents.evolution.FRESH_SEED_BASE` on):

* weighted fitness: the GA's best, random search's best and the default architecture, each
  on ``--fresh`` fresh seeds; the gain is the ratio of the GA's best to the default's;
* hypervolume at the fixed reference point: every member of NSGA-II's front and of random
  search's front on ``--fresh-front`` fresh seeds, the hypervolume of what is then
  non-dominated. Random search's evaluations are read as NSGA-II reads its own (through
  draw-set effects by default, ``ga.draw_effects``) and, beside that, the other way.

The in-search values (mean over each genome's own draw sets) are reported beside them.
Evaluations run on ``--jobs`` processes. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.evolution import (
    FRESH_SEED_BASE,
    GAParams,
    Generation,
    SearchResult,
    TwinEvaluator,
    confirm_on_fresh_seeds,
    hypervolume,
    objective_matrix,
    pareto_front,
    random_search,
    run_search,
)
from sim.architecture import EvalSpec, GenomeSpace, evaluate_mean, mean_objectives


def fresh_hypervolume(space: GenomeSpace, spec: EvalSpec, front: SearchResult, n_seeds: int,
                      jobs: int) -> float:
    """Hypervolume of ``front``'s genomes re-evaluated on ``n_seeds`` fresh seeds."""
    genomes = front.front_genomes
    jobs_list = [(i, FRESH_SEED_BASE + s) for i in range(len(genomes)) for s in range(n_seeds)]
    runs = Parallel(n_jobs=jobs, backend="loky" if jobs > 1 else "sequential")(
        delayed(evaluate_mean)(space.decode(genomes[i]), spec, seed, space.base)
        for i, seed in jobs_list)
    objs = [mean_objectives(runs[i * n_seeds:(i + 1) * n_seeds]) for i in range(len(genomes))]
    _, nd = pareto_front(genomes, objs, front.cost_ref_usd)
    return hypervolume(objective_matrix(nd, front.cost_ref_usd))


def main() -> None:
    """Run the comparison and print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="search seeds run from here (0-4 by default; others to validate "
                        "a setting away from the benchmark's seeds)")
    parser.add_argument("--pop", type=int, default=20)
    parser.add_argument("--gens", type=int, default=10)
    parser.add_argument("--fresh", type=int, default=10)
    parser.add_argument("--fresh-front", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--replicates", type=int, default=EvalSpec().replicates)
    parser.add_argument("--fault-scale", type=float, default=EvalSpec().fault_rate_scale,
                        help="multiplier of the scenario's fault rates (24: a day's faults "
                        "in each simulated hour)")
    parser.add_argument("--no-resample", action="store_true",
                        help="every generation on draw set 0 (common random numbers only)")
    parser.add_argument("--final-draws", type=int, default=GAParams().final_draws)
    parser.add_argument("--searches", default="ga,nsga2",
                        help="comma-separated subset of ga,nsga2 to run (each with its own "
                        "random-search comparison)")
    parser.add_argument("--draw-effects", choices=("auto", "on", "off"), default="auto",
                        help="score genomes through fitted draw-set effects (ga.draw_effects): "
                        "auto (the default) for NSGA-II only, on or off for every search")
    parser.add_argument("--capacity-shift", type=float, default=None,
                        help="probability that an offspring's capacity levels all move by one "
                        "common step (ga.capacity_shift) for every search; by default each "
                        "search's own (agents.evolution.NSGA2_CAPACITY_SHIFT for NSGA-II, 0 "
                        "for the GA)")
    args = parser.parse_args()
    searches = [s.strip() for s in args.searches.split(",") if s.strip()]
    if not searches or any(s not in ("ga", "nsga2") for s in searches):
        parser.error(f"--searches must name ga and/or nsga2, got {args.searches!r}")
    if args.first_seed < 0 or args.seeds < 1:
        parser.error("--first-seed must be >= 0 and --seeds >= 1")
    spec = EvalSpec(hosts=args.hosts, hours=args.hours, replicates=args.replicates,
                    fault_rate_scale=args.fault_scale)
    space = GenomeSpace(spec.base_config())
    params = GAParams(pop_size=args.pop, max_generations=args.gens,
                      tournament_size=min(5, args.pop), period=max(args.gens, 1),
                      resample=not args.no_resample, final_draws=args.final_draws,
                      draw_effects={"auto": None, "on": True, "off": False}[args.draw_effects],
                      capacity_shift=args.capacity_shift)

    def new_evaluator(seed: int, mode: str) -> TwinEvaluator:
        return TwinEvaluator(space, spec, seed=seed, n_jobs=args.jobs,
                             draw_effects=params.draw_effects_for(mode))

    def search(seed: int, mode: str) -> SearchResult:
        """One search with a progress bar (stderr) over its generations."""
        with tqdm(total=args.gens, unit="gen", file=sys.stderr, mininterval=1.0,
                  desc=f"seed {seed} {mode}") as bar:
            def on_generation(gen: Generation) -> None:
                bar.update(1)
                bar.set_postfix(twin_runs=gen.twin_runs)

            return run_search(new_evaluator(seed, mode), params, mode, seed,
                              on_generation=on_generation)

    def stage(seed: int, what: str) -> None:
        print(f"seed {seed}: {what}", file=sys.stderr, flush=True)

    rows: list[dict[str, Any]] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        row: dict[str, Any] = {"seed": seed}
        if "ga" in searches:
            ga = search(seed, "ga")
            stage(seed, f"random search on the GA's {ga.twin_runs} twin runs")
            rs = random_search(new_evaluator(seed, "ga"), seed=seed, twin_runs=ga.twin_runs,
                               params=params)
            stage(seed, f"best genomes on {args.fresh} fresh seeds")
            fresh = confirm_on_fresh_seeds(
                space, spec, np.stack([ga.best_genome, rs.best_genome, space.default_genome()]),
                args.fresh, ga.cost_ref_usd, args.jobs)
            row.update(
                ga_evaluations=ga.evaluations, ga_twin_runs=ga.twin_runs,
                random_evaluations=rs.evaluations, random_twin_runs=rs.twin_runs,
                ga_best_search=ga.best_fitness, random_best_search=rs.best_fitness,
                ga_best_fresh=float(fresh[0].mean()), random_best_fresh=float(fresh[1].mean()),
                default_fresh=float(fresh[2].mean()),
                fresh_gain=float(fresh[0].mean() / fresh[2].mean() - 1.0),
                best_genome=[int(v) for v in ga.best_genome],
            )
        if "nsga2" in searches:
            nsga = search(seed, "nsga2")
            stage(seed, f"random search on NSGA-II's {nsga.twin_runs} twin runs")
            rs_eval = new_evaluator(seed, "nsga2")
            rs_mo = random_search(rs_eval, seed=seed + 1000, twin_runs=nsga.twin_runs,
                                  params=params, mode="nsga2")
            # The same random evaluations read the other way (plain means if NSGA-II reads
            # draw effects, and the reverse): NSGA-II should beat random search either way.
            other = TwinEvaluator(space, spec, seed=seed, draw_effects=not rs_eval.draw_effects)
            other.load(rs_eval.cache)
            other_means = other.means()
            other_front, _ = pareto_front(np.array(list(other_means), dtype=np.int64),
                                          list(other_means.values()), rs_mo.cost_ref_usd)
            stage(seed, f"fronts on {args.fresh_front} fresh seeds")
            row.update(
                nsga2_twin_runs=nsga.twin_runs, random_mo_twin_runs=rs_mo.twin_runs,
                nsga2_front=len(nsga.front_genomes), random_front=len(rs_mo.front_genomes),
                nsga2_hv_search=nsga.hypervolume, random_hv_search=rs_mo.hypervolume,
                nsga2_hv_fresh=fresh_hypervolume(space, spec, nsga, args.fresh_front,
                                                 args.jobs),
                random_hv_fresh=fresh_hypervolume(space, spec, rs_mo, args.fresh_front,
                                                  args.jobs),
                random_draw_effects=rs_eval.draw_effects,
                random_other_reading_front=len(other_front),
                random_other_reading_hv_fresh=fresh_hypervolume(
                    space, spec, replace(rs_mo, front_genomes=other_front), args.fresh_front,
                    args.jobs),
            )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    def med(key: str) -> float:
        return float(np.median([r[key] for r in rows]))

    ga_keys = ("ga_best_fresh", "random_best_fresh", "default_fresh", "fresh_gain",
               "ga_best_search", "random_best_search")
    mo_keys = ("nsga2_hv_fresh", "random_hv_fresh", "random_other_reading_hv_fresh",
               "nsga2_hv_search", "random_hv_search")
    keys = (ga_keys if "ga" in searches else ()) + (mo_keys if "nsga2" in searches else ())
    out: dict[str, Any] = {
        "benchmark": "evolve_quality", "searches": searches, "seeds": args.seeds,
        "first_seed": args.first_seed, "pop": args.pop, "gens": args.gens,
        "fresh_seeds": args.fresh, "fresh_front_seeds": args.fresh_front, "hosts": args.hosts,
        "hours": args.hours, "replicates": spec.replicates,
        "fault_rate_scale": spec.fault_rate_scale, "resample": params.resample,
        "draw_effects": args.draw_effects,
        "capacity_shift": {m: params.capacity_shift_for(m) for m in searches},
        "final_draws": params.final_draws, "jobs": args.jobs, "cpu_count": os.cpu_count(),
        "wall_s": round(time.perf_counter() - wall0, 1),
        "main_process_cpu_s": round(time.process_time() - cpu0, 1),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        **{f"{k}_median": med(k) for k in keys},
    }
    if "ga" in searches:
        out["ga_beats_random_fresh"] = sum(r["ga_best_fresh"] > r["random_best_fresh"]
                                           for r in rows)
        out["fresh_gain_min"] = float(min(r["fresh_gain"] for r in rows))
        out["pass_ga_vs_random"] = out["ga_beats_random_fresh"] == args.seeds
        out["pass_gain_10pct"] = out["fresh_gain_min"] >= 0.10
    if "nsga2" in searches:
        out["nsga2_beats_random_hv_fresh"] = sum(r["nsga2_hv_fresh"] > r["random_hv_fresh"]
                                                 for r in rows)
        out["nsga2_beats_random_other_reading_hv_fresh"] = sum(
            r["nsga2_hv_fresh"] > r["random_other_reading_hv_fresh"] for r in rows)
        out["pass_hv_vs_random"] = out["nsga2_beats_random_hv_fresh"] == args.seeds
    out["rows"] = rows
    print(json.dumps(out))


if __name__ == "__main__":
    main()
