"""Evolve the deployment architecture on the twin: GA or NSGA-II, MLflow, plots.

    python -m experiments.evolve                         # GA, population 100, <= 500 generations
    python -m experiments.evolve mode=nsga2              # Pareto front over the 3 objectives
    python -m experiments.evolve ga=quick eval=quick     # a small run (about a minute)
    python -m experiments.evolve compare_random=true     # plus random search, same evaluations

Each generation's best and mean weighted fitness and the hypervolume of the front so far are
logged to MLflow; at the end the front, the best genome (and the architecture it decodes to),
the history, and the front and convergence plots are written to Hydra's output folder and
logged as artifacts. The best genome and the default architecture are then re-evaluated on
``validate_seeds`` fresh seeds (fault draws the search never saw). A checkpoint is written
every generation (``checkpoint``, default ``<output dir>/checkpoint.pkl``); re-running with
the same ``checkpoint`` resumes from its last generation. The last line of standard output
is one JSON object.
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
from omegaconf import DictConfig
from tqdm import tqdm

from agents.evolution import (
    Generation,
    SearchResult,
    TwinEvaluator,
    confirm_on_fresh_seeds,
    objective_matrix,
    random_search,
    run_search,
)
from experiments import joblog, jsonout, tracking
from experiments.config import (
    register_configs,
    reported_at_exit,
    run_app,
)
from experiments.search_config import (
    EvolveSchema,
    register_search_configs,
    to_eval_spec,
    to_ga_params,
    to_object,
)
from experiments.search_plots import plot_convergence, plot_front
from sim.architecture import GenomeSpace, weighted_fitness
from sim.errors import ConfigError

register_configs()
register_search_configs()


def _validate(s: EvolveSchema) -> None:
    if s.mode not in ("ga", "nsga2"):
        raise ConfigError(f"mode must be 'ga' or 'nsga2', got {s.mode!r}")
    for name in ("seed", "eval_seed"):
        if not isinstance(getattr(s, name), int) or getattr(s, name) < 0:
            raise ConfigError(f"{name} must be a non-negative integer")
    if not isinstance(s.n_jobs, int) or s.n_jobs < 1:
        raise ConfigError(f"n_jobs must be a positive integer, got {s.n_jobs!r}")
    if not isinstance(s.validate_seeds, int) or s.validate_seeds < 0:
        raise ConfigError("validate_seeds must be a non-negative integer")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evolve")
def app(cfg: DictConfig) -> dict[str, Any]:
    """Validate, search, confirm, log."""
    joblog.log_config("experiments.evolve", cfg)
    with reported_at_exit():  # one line and exit 2, from main()
        schema: EvolveSchema = to_object(cfg, EvolveSchema)
        _validate(schema)
        params = to_ga_params(schema.ga)
        spec = to_eval_spec(schema.eval)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    ckpt = Path(schema.checkpoint) if schema.checkpoint else out_dir / "checkpoint.pkl"
    space = GenomeSpace(spec.base_config())
    evaluator = TwinEvaluator(space, spec, seed=schema.eval_seed, n_jobs=schema.n_jobs,
                             draw_effects=params.draw_effects_for(schema.mode))

    client, run_id = None, None
    if schema.tracking.enabled:
        client = tracking.client_for(schema.tracking.tracking_uri)
        exp = tracking.ensure_experiment(client, schema.tracking.experiment)
        run_id = tracking.start_run(
            client, exp, run_name=schema.tracking.run_name or f"evolve-{schema.mode}-"
            f"seed{schema.seed}", params=tracking.flatten(dataclasses.asdict(schema)),
            tags={}, entry_point="evolve",
        )
    try:
        wall0 = time.perf_counter()
        bar = tqdm(total=params.max_generations, unit="gen", file=sys.stderr,
                   desc=f"{schema.mode} seed={schema.seed}", mininterval=1.0)

        last_step = [0]

        def on_generation(gen: Generation) -> None:
            bar.update(1)
            bar.set_postfix(best=f"{gen.best_fitness:.4f}", evals=gen.evaluations)
            last_step[0] = max(last_step[0], gen.gen)
            if client is not None and run_id is not None:
                ts = int(time.time() * 1000)
                curve = {k: getattr(gen, k)
                         for k in ("best_fitness", "mean_fitness", "hypervolume", "evaluations")}
                for key, value in tracking.finite_metrics(curve).items():
                    client.log_metric(run_id, key, value, ts, gen.gen)

        result = run_search(evaluator, params, schema.mode, schema.seed, checkpoint=ckpt,
                            resume=schema.resume, on_generation=on_generation)
        bar.close()
        search_wall_s = time.perf_counter() - wall0
        line = _summary(schema, space, spec, evaluator, result, search_wall_s)
        _write(out_dir, space, evaluator, result, line)
        joblog.log_result("experiments.evolve", line)
        if client is not None and run_id is not None:
            params_too = ("seed", "eval_seed")  # logged as params already
            metrics = {k: v for k, v in line.items()
                       if isinstance(v, int | float) and k not in params_too}
            # One step past the curve: MLflow shows a metric at its highest step, and the
            # final best (after the closing race) is what the run reports.
            tracking.finish_run(client, run_id, metrics, out_dir, step=last_step[0] + 1)
        line["mlflow_run_id"] = run_id
    except BaseException:
        if client is not None and run_id is not None:
            tracking.fail_run(client, run_id)
        raise
    sys.stdout.write(jsonout.dumps(line) + "\n")
    sys.stdout.flush()
    return line


def _summary(schema: EvolveSchema, space: GenomeSpace, spec: Any, evaluator: TwinEvaluator,
             result: SearchResult, search_wall_s: float) -> dict[str, Any]:
    default = space.default_genome()
    default_obj = evaluator.mean(default[None, :])[0]
    default_fit = weighted_fitness(default_obj, result.cost_ref_usd)
    line: dict[str, Any] = {
        "mode": schema.mode, "seed": schema.seed, "eval_seed": schema.eval_seed,
        "generations": len(result.history), "resumed_from": result.resumed_from,
        "evaluations": result.evaluations, "twin_runs": result.twin_runs,
        "search_wall_s": round(search_wall_s, 2),
        "best_fitness": result.best_fitness, "default_fitness": default_fit,
        "improvement": result.best_fitness / default_fit - 1.0,
        "hypervolume": result.hypervolume, "front_size": len(result.front_objectives),
        "best_genome": [int(v) for v in result.best_genome],
        **{f"best_{k}": v for k, v in result.best_objectives.as_dict().items()},
    }
    if schema.compare_random:
        rs_eval = TwinEvaluator(space, spec, seed=schema.eval_seed, n_jobs=schema.n_jobs,
                                draw_effects=evaluator.draw_effects)
        rs = random_search(rs_eval, seed=schema.seed, twin_runs=result.twin_runs,
                           params=to_ga_params(schema.ga), mode=schema.mode)
        line.update(random_best_fitness=rs.best_fitness, random_hypervolume=rs.hypervolume,
                    random_evaluations=rs.evaluations, random_twin_runs=rs.twin_runs)
    if schema.validate_seeds:
        fit = confirm_on_fresh_seeds(space, spec, np.stack([result.best_genome, default]),
                                     schema.validate_seeds, result.cost_ref_usd, schema.n_jobs)
        line.update(fresh_best_fitness=float(fit[0].mean()),
                    fresh_default_fitness=float(fit[1].mean()),
                    fresh_improvement=float(fit[0].mean() / fit[1].mean() - 1.0),
                    fresh_seeds=schema.validate_seeds)
    return line


def _write(out_dir: Path, space: GenomeSpace, evaluator: TwinEvaluator, result: SearchResult,
           line: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    best_arch = space.decode(result.best_genome)
    (out_dir / "best_genome.json").write_text(jsonout.dumps({
        "genes": dict(zip(space.names, (int(v) for v in result.best_genome), strict=True)),
        "architecture": dataclasses.asdict(best_arch),
        "objectives": result.best_objectives.as_dict(),
        "fitness": result.best_fitness,
    }, indent=2) + "\n", encoding="utf-8")
    (out_dir / "front.json").write_text(jsonout.dumps([
        {"genome": [int(v) for v in g], **o.as_dict()}
        for g, o in zip(result.front_genomes, result.front_objectives, strict=True)
    ], indent=2) + "\n", encoding="utf-8")
    (out_dir / "history.json").write_text(jsonout.dumps(
        [dataclasses.asdict(h) for h in result.history], indent=2) + "\n", encoding="utf-8")
    (out_dir / "result.json").write_text(jsonout.dumps(line) + "\n", encoding="utf-8")
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    every = objective_matrix(list(evaluator.means().values()), result.cost_ref_usd)
    plot_front(result.front_matrix, every, title=f"{result.mode}: Pareto front").savefig(
        plots / "front.png", dpi=110)
    gens = [h.gen for h in result.history]
    plot_convergence(gens, {"best": [h.best_fitness for h in result.history],
                            "mean": [h.mean_fitness for h in result.history]}).savefig(
        plots / "convergence.png", dpi=110)
    plot_convergence(gens, {"hypervolume": [h.hypervolume for h in result.history]},
                     ylabel="hypervolume").savefig(plots / "hypervolume.png", dpi=110)


def main() -> None:
    """Entry point: config errors become one line on stderr and exit status 2."""
    run_app(app)


if __name__ == "__main__":
    main()
