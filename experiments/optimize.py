"""Tune the configuration on the twin: Bayesian optimisation, or the online rule-based tuner.

    python -m experiments.optimize                       # BO, 100 iterations, weighted fitness
    python -m experiments.optimize bo.objectives=3       # multi-objective: a Pareto set
    python -m experiments.optimize bo=quick eval=quick   # a small run
    python -m experiments.optimize bo.batch_size=4       # batches evaluated in parallel
    python -m experiments.optimize mode=tuner            # online tuner vs none, same seed

BO searches :data:`sim.architecture.CONFIG_PARAMS` around the default architecture; each
suggestion is scored on the twin (``eval`` group) and the best configuration is confirmed
against the default on ``validate_seeds`` fresh seeds. The tuner mode runs the ``tuner``
scenario twice from the same seed, with and without the replica rules, and compares them.
Metrics go to MLflow per iteration; the convergence plot (and, with three objectives, the
front) to the output folder. The last line of standard output is one JSON object.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from joblib import Parallel, delayed
from omegaconf import DictConfig
from tqdm import tqdm

from agents.evolution import FRESH_SEED_BASE, HV_REF_POINT, hypervolume, objective_matrix
from experiments import joblog, jsonout, tracking
from experiments.config import (
    register_configs,
    reported_at_exit,
    run_app,
)
from experiments.search_config import (
    OptimizeSchema,
    check_tuner,
    register_search_configs,
    to_bo_params,
    to_eval_spec,
    to_object,
)
from experiments.search_plots import plot_convergence, plot_front
from sim.architecture import (
    CONFIG_PARAMS,
    DEFAULT_DB_POOL,
    DEFAULT_WORKER_THREADS,
    EvalSpec,
    GenomeSpace,
    Objectives,
    configure,
    evaluate_mean,
    weighted_fitness,
)
from sim.errors import ConfigError
from sim.scenarios import SCENARIOS, make_config
from sim.twin import Twin, window_kpis

register_configs()
register_search_configs()


def _score(space: GenomeSpace, spec: EvalSpec, seed: int, values: dict[str, float]
           ) -> Objectives:
    return evaluate_mean(configure(space, values), spec, seed, space.base)


@hydra.main(version_base="1.3", config_path="../conf", config_name="optimize")
def app(cfg: DictConfig) -> dict[str, Any]:
    """Validate, run BO or the tuner, log."""
    joblog.log_config("experiments.optimize", cfg)
    with reported_at_exit():  # one line and exit 2, from main()
        schema: OptimizeSchema = to_object(cfg, OptimizeSchema)
        if schema.mode not in ("bo", "tuner"):
            raise ConfigError(f"mode must be 'bo' or 'tuner', got {schema.mode!r}")
        if not isinstance(schema.n_jobs, int) or schema.n_jobs < 1:
            raise ConfigError(f"n_jobs must be a positive integer, got {schema.n_jobs!r}")
        bo_params = to_bo_params(schema.bo)
        spec = to_eval_spec(schema.eval)
        if schema.tuner.scenario not in SCENARIOS:
            raise ConfigError(f"tuner.scenario: unknown scenario {schema.tuner.scenario!r}")
        check_tuner(schema.tuner)
    import torch  # after the checks: a bad command line is reported without loading it

    torch.set_num_threads(1)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    client, run_id = None, None
    if schema.tracking.enabled:
        client = tracking.client_for(schema.tracking.tracking_uri)
        exp = tracking.ensure_experiment(client, schema.tracking.experiment)
        run_id = tracking.start_run(
            client, exp, run_name=schema.tracking.run_name or f"optimize-{schema.mode}-"
            f"seed{schema.seed}", params=tracking.flatten(dataclasses.asdict(schema)),
            tags={}, entry_point="optimize",
        )

    last_step = [0]

    def log_step(step: int, metrics: dict[str, float]) -> None:
        last_step[0] = max(last_step[0], step)
        if client is not None and run_id is not None:
            ts = int(time.time() * 1000)
            for k, v in tracking.finite_metrics(metrics).items():
                client.log_metric(run_id, k, v, ts, step)

    try:
        wall0 = time.perf_counter()
        if schema.mode == "bo":
            line = _run_bo(schema, bo_params, spec, out_dir, log_step)
        else:
            line = _run_tuner(schema, out_dir)
        line["wall_s"] = round(time.perf_counter() - wall0, 2)
        (out_dir / "result.json").write_text(jsonout.dumps(line) + "\n", encoding="utf-8")
        joblog.log_result("experiments.optimize", line)
        if client is not None and run_id is not None:
            params_too = ("seed", "objectives", "iterations", "batch_size")  # params already
            metrics = {k: v for k, v in line.items()
                       if isinstance(v, int | float) and k not in params_too}
            # One step past the curve: MLflow shows a metric at its highest step.
            tracking.finish_run(client, run_id, metrics, out_dir, step=last_step[0] + 1)
        line["mlflow_run_id"] = run_id
    except BaseException:
        if client is not None and run_id is not None:
            tracking.fail_run(client, run_id)
        raise
    sys.stdout.write(jsonout.dumps(line) + "\n")
    sys.stdout.flush()
    return line


def _run_bo(schema: OptimizeSchema, bo_params: Any, spec: EvalSpec, out_dir: Path,
            log_step: Any) -> dict[str, Any]:
    from agents.bayesopt import BayesOpt, Param, SearchSpace

    space = GenomeSpace(spec.base_config())
    search = SearchSpace([Param(n, float(lo), float(hi), k) for n, lo, hi, k in CONFIG_PARAMS])
    default_values = {n: v for n, v in zip(
        search.names, _default_config(space), strict=True)}
    default_obj = _score(space, spec, schema.eval_seed, default_values)
    cost_ref = default_obj.cost_usd
    n_obj = schema.bo.objectives
    opt = BayesOpt(search, n_obj=n_obj, seed=schema.seed, params=bo_params,
                   ref_point=HV_REF_POINT if n_obj == 3 else None)
    best_trace: list[float] = []
    objs_all: list[Objectives] = []
    for it in tqdm(range(schema.bo.iterations), unit="iter", file=sys.stderr,
                   desc=f"bo seed={schema.seed}", mininterval=1.0):
        x = opt.ask(schema.bo.batch_size)
        rows = [search.as_dict(r) for r in x]
        if len(rows) > 1 and schema.n_jobs > 1:
            objs = Parallel(n_jobs=schema.n_jobs, backend="loky")(
                delayed(_score)(space, spec, schema.eval_seed, r) for r in rows)
        else:
            objs = [_score(space, spec, schema.eval_seed, r) for r in rows]
        objs_all += objs
        if n_obj == 1:
            y = np.array([[-weighted_fitness(o, cost_ref)] for o in objs])
        else:
            y = objective_matrix(objs, cost_ref)
        opt.tell(x, y)
        best_trace.append(max(weighted_fitness(o, cost_ref) for o in objs_all))
        log_step(it + 1, {"best_fitness": best_trace[-1]})
    fits = np.array([weighted_fitness(o, cost_ref) for o in objs_all])
    best_i = int(np.argmax(fits))
    best_values = search.as_dict(opt.X[best_i])
    line: dict[str, Any] = {
        "mode": "bo", "objectives": n_obj, "seed": schema.seed, "iterations":
        schema.bo.iterations, "batch_size": schema.bo.batch_size,
        "evaluations": opt.n_observed, "default_fitness": weighted_fitness(default_obj, cost_ref),
        "best_fitness": float(fits[best_i]), "best_config": best_values,
    }
    line["improvement"] = line["best_fitness"] / line["default_fitness"] - 1.0
    if schema.validate_seeds:
        fresh = [(weighted_fitness(_score(space, spec, FRESH_SEED_BASE + s, best_values),
                                   cost_ref),
                  weighted_fitness(_score(space, spec, FRESH_SEED_BASE + s, default_values),
                                   cost_ref)) for s in range(schema.validate_seeds)]
        arr = np.array(fresh)
        line.update(fresh_best_fitness=float(arr[:, 0].mean()),
                    fresh_default_fitness=float(arr[:, 1].mean()),
                    fresh_improvement=float(arr[:, 0].mean() / arr[:, 1].mean() - 1.0))
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    plot_convergence(range(1, len(best_trace) + 1), {"best so far": best_trace},
                     xlabel="iteration").savefig(plots / "convergence.png", dpi=110)
    if n_obj == 3:
        px, py = opt.pareto()
        line["pareto_size"] = len(px)
        line["hypervolume"] = hypervolume(py)
        line["pareto_set"] = [search.as_dict(p) for p in px]
        plot_front(py, opt.Y, title="BO: Pareto set").savefig(plots / "front.png", dpi=110)
    return line


def _default_config(space: GenomeSpace) -> list[float]:
    arch = space.decode(space.default_genome())
    api = space.base.app.service_index("api")
    api_spec = space.base.app.services[api]
    values = {
        "frontend.target_util": 0.6, "api.target_util": 0.6, "database.target_util": 0.6,
        "api.cpu_limit": float(api_spec.workers),
        "api.mem_limit_gib": api_spec.mem_limit_bytes / 2**30,
        "cache.size_gib": arch.cache_gib, "api.timeout_s": api_spec.timeout_s,
        "autoscale.up_util": 0.95, "autoscale.down_util": 0.05,
        "api.worker_threads": DEFAULT_WORKER_THREADS, "api.db_pool": DEFAULT_DB_POOL,
    }
    return [values[n] for n, *_ in CONFIG_PARAMS]


def _run_tuner(schema: OptimizeSchema, out_dir: Path) -> dict[str, Any]:
    from agents.tuner import OnlineTuner
    from control.optimise import replica_rules, run_tuner

    t = schema.tuner
    config = make_config(t.scenario, t.hosts)
    results = {}
    for label in ("none", "tuner"):
        twin = Twin(config, seed=schema.seed)
        duration = t.hours * 3600.0
        if label == "none":
            twin.advance(duration)
            k = window_kpis(twin.log.since(0))
            results[label] = {"availability": k["availability"],
                              "time_availability": k["time_availability"],
                              "instance_hours": twin.summary()["instance_hours"],
                              "action_cost_usd": k["action_cost_usd"], "adjustments": 0}
            continue
        rules, initial = replica_rules(twin, t.low_util, t.high_util, t.step, t.max_factor)
        tuner = OnlineTuner(rules, initial, cooldown_s=t.cooldown_s)
        run = run_tuner(twin, tuner, duration, t.interval_s)
        results[label] = dataclasses.asdict(run)
        (out_dir / "adjustments.json").write_text(jsonout.dumps(
            [dataclasses.asdict(a) for a in tuner.history], indent=2) + "\n", encoding="utf-8")
    return {"mode": "tuner", "scenario": t.scenario, "hosts": t.hosts, "hours": t.hours,
            "seed": schema.seed, **{f"{label}_{k}": v for label, r in results.items()
                                    for k, v in r.items() if not isinstance(v, dict)}}


def main() -> None:
    """Entry point: config errors become one line on stderr and exit status 2."""
    run_app(app)


if __name__ == "__main__":
    main()
