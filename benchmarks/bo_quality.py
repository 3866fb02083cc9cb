"""Quality and speed of the Bayesian optimiser against random search, optuna TPE and GP.

    python benchmarks/bo_quality.py                 # 10 seeds, 50 evaluations, all methods
    python benchmarks/bo_quality.py --seeds 3 --jobs 2
    python benchmarks/bo_quality.py --first-seed 10 --seeds 30 --functions hartmann6 \
        --methods bayesopt,optuna_gp        # other seeds, for a check not tuned on the benchmark's

For each test function (Branin, 2-D; Hartmann-6) and each method, every seed runs 50
evaluations; the figure is the median over seeds of the best-found regret (best value minus
the known global minimum). Our optimiser is ``agents.bayesopt.BayesOpt`` (noise-free GP,
``n_initial = max(5, d)`` Sobol points, then log-EI with a local exploitation step every
third iteration); its time per iteration (ask + tell, the test function being free) is the
median over all its iterations, as wall time and as the process's CPU time (on a shared
machine the wall time includes waiting for a core; the CPU time does not). Seeds run in
parallel processes with one torch thread each (``--jobs``), so the timing is per core.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FUNCTIONS = {"branin": 0.397887357729738, "hartmann6": -3.322368011391339}
METHODS = ("bayesopt", "random", "optuna_tpe", "optuna_gp")


def _function(name: str) -> tuple[Any, np.ndarray]:
    from botorch.test_functions import Branin, Hartmann

    f = Branin() if name == "branin" else Hartmann(dim=6)
    return f, f.bounds.numpy()


def run_one(function: str, method: str, seed: int, n_evals: int) -> dict[str, Any]:
    """One seed of one method on one function: best regret and per-iteration times."""
    import torch

    torch.set_num_threads(1)
    f, bounds = _function(function)
    dim = bounds.shape[1]

    def value(x: np.ndarray) -> float:
        return float(f(torch.as_tensor(np.atleast_2d(x), dtype=torch.float64))[0])

    times: list[float] = []
    cpu: list[float] = []
    best = math.inf
    if method == "bayesopt":
        from agents.bayesopt import BayesOpt, BOParams, Param, SearchSpace

        space = SearchSpace([Param(f"x{i}", float(bounds[0, i]), float(bounds[1, i]))
                             for i in range(dim)])
        opt = BayesOpt(space, seed=seed, params=BOParams(
            n_initial=max(5, dim), noise_free=True, num_restarts=4, raw_samples=128))
        for _ in range(n_evals):
            t0, c0 = time.perf_counter(), time.process_time()
            x = opt.ask(1)
            y = value(x[0])
            opt.tell(x, np.array([[y]]))
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            best = min(best, y)
    elif method == "random":
        rng = np.random.default_rng(seed)
        for _ in range(n_evals):
            best = min(best, value(rng.uniform(bounds[0], bounds[1])))
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = (optuna.samplers.TPESampler(seed=seed) if method == "optuna_tpe"
                   else optuna.samplers.GPSampler(seed=seed))
        study = optuna.create_study(sampler=sampler)

        def objective(trial: Any) -> float:
            x = np.array([trial.suggest_float(f"x{i}", float(bounds[0, i]), float(bounds[1, i]))
                          for i in range(dim)])
            return value(x)

        t0, c0 = time.perf_counter(), time.process_time()
        study.optimize(objective, n_trials=n_evals)
        times.append((time.perf_counter() - t0) / n_evals)
        cpu.append((time.process_time() - c0) / n_evals)
        best = float(study.best_value)
    return {"function": function, "method": method, "seed": seed,
            "regret": best - FUNCTIONS[function], "times": times, "cpu": cpu}


def main() -> None:
    """Run every method on every function over the seeds; print the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed + seeds - 1 (default 0)")
    parser.add_argument("--functions", default=",".join(FUNCTIONS),
                        help=f"comma-separated subset of {', '.join(FUNCTIONS)}")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {', '.join(METHODS)}; the pass flags "
                        "need bayesopt (and optuna_gp for Hartmann-6)")
    args = parser.parse_args()
    if args.seeds < 1 or args.evals < 2 or args.jobs < 1 or args.first_seed < 0:
        parser.error("--seeds and --jobs must be >= 1, --evals >= 2 and --first-seed >= 0")
    functions = [f.strip() for f in args.functions.split(",") if f.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for given, known, flag in ((functions, FUNCTIONS, "--functions"),
                               (methods, METHODS, "--methods")):
        unknown = sorted(set(given) - set(known))
        if unknown or not given:
            parser.error(f"{flag}: unknown or empty {unknown or given}; choose from "
                         f"{', '.join(known)}")
    from joblib import Parallel, delayed

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tasks = [(fn, m, s) for fn in functions for m in methods for s in seeds]
    wall0 = time.perf_counter()
    runs = Parallel(n_jobs=args.jobs, backend="loky")(
        delayed(run_one)(fn, m, s, args.evals) for fn, m, s in tasks)
    wall_s = time.perf_counter() - wall0
    out: dict[str, Any] = {"benchmark": "bo_quality", "seeds": args.seeds,
                           "first_seed": args.first_seed,
                           "evaluations": args.evals, "jobs": args.jobs,
                           "cpu": platform.processor() or platform.machine(),
                           "cpu_count": os.cpu_count(), "wall_s": round(wall_s, 1)}
    for fn in functions:
        res: dict[str, Any] = {}
        for m in methods:
            regrets = [r["regret"] for r in runs if r["function"] == fn and r["method"] == m]
            res[f"{m}_median_regret"] = float(np.median(regrets))
            res[f"{m}_regrets"] = [float(f"{v:.3g}") for v in regrets]
            t = [x for r in runs if r["function"] == fn and r["method"] == m for x in r["times"]]
            if t:
                res[f"{m}_s_per_iter_median"] = round(float(np.median(t)), 4)
                c = [x for r in runs if r["function"] == fn and r["method"] == m
                     for x in r["cpu"]]
                res[f"{m}_cpu_s_per_iter_median"] = round(float(np.median(c)), 4)
        bo_t = [x for r in runs if r["function"] == fn and r["method"] == "bayesopt"
                for x in r["times"]]
        if bo_t:
            res["bayesopt_s_per_iter_p90"] = round(float(np.percentile(bo_t, 90)), 4)
        out[fn] = res
    if "bayesopt" in methods:
        if "branin" in functions:
            out["branin_regret_target"] = 1e-4
            out["branin_pass"] = out["branin"]["bayesopt_median_regret"] <= 1e-4
        if "hartmann6" in functions and "optuna_gp" in methods:
            out["hartmann6_pass"] = (out["hartmann6"]["bayesopt_median_regret"]
                                     <= out["hartmann6"]["optuna_gp_median_regret"])
        worst = max(out[fn]["bayesopt_s_per_iter_median"] for fn in functions)
        out["bayesopt_s_per_iter_max_median"] = worst
        out["speed_pass"] = worst <= 0.5
        worst_cpu = max(out[fn]["bayesopt_cpu_s_per_iter_median"] for fn in functions)
        out["bayesopt_cpu_s_per_iter_max_median"] = worst_cpu
    out["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
