"""Compare healing agents on scenarios over seeds, with intervals and significance tests.

    python -m experiments.evaluate                      # noop, random, rules, symptoms, dqn
    python -m experiments.evaluate 'scenarios=[service_crash,vm_failure]' seeds=20 hours=12
    python -m experiments.evaluate 'agents=[rules,dqn]' +models.service_crash=exports/sc

Every agent runs the same seeds (so the same fault schedules) on each scenario's env. For
each scenario and agent the table gives the mean and Student-t 95% interval of the KPIs
(clipped to each KPI's range: an availability's interval does not pass 1);
for each agent against the baseline (``rules``) on ``metric`` (availability) a two-sided
Mann-Whitney U test with its rank-biserial effect size (positive: the agent tends higher),
and, since the seeds pair the episodes, a Wilcoxon signed-rank test as well. Printed as
Markdown, written with per-episode rows and a figure (``comparison.png``: every seed's
``metric`` per agent, mean and interval, the tests' p-values) to ``out_dir`` (default: the
run's Hydra output folder, like the other entry points), logged to MLflow; the last line of
standard output is one JSON object.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from agents.base import (
    NoopPolicy,
    Policy,
    RandomPolicy,
    RulePolicy,
    SymptomPolicy,
    run_episode,
)
from experiments import joblog, jsonout, plots, tracking
from experiments.config import reported_at_exit, run_app
from experiments.rl_config import (
    EvaluateSchema,
    episode_steps,
    load_dqn_model,
    make_env,
    register_eval_export_configs,
    to_object,
)
from experiments.stats import t_interval
from sim.errors import ConfigError
from sim.scenarios import SCENARIOS

AGENTS = ("noop", "random", "rules", "symptoms", "dqn")
KPIS = ("availability", "time_availability", "slo_violation_minutes", "mttr_s",
        "healing_success_rate", "actions", "action_cost_usd", "episode_return")
KPI_BOUNDS = {"availability": (0.0, 1.0), "time_availability": (0.0, 1.0),
              "healing_success_rate": (0.0, 1.0), "slo_violation_minutes": (0.0, math.inf),
              "mttr_s": (0.0, math.inf), "actions": (0.0, math.inf),
              "action_cost_usd": (0.0, math.inf), "episode_return": (-math.inf, math.inf)}
"""The range each KPI can take; its interval is clipped to it."""


def check(schema: EvaluateSchema) -> None:
    """Range checks, each naming its key.

    Raises:
        ConfigError: a bad value.
    """
    bad = [a for a in schema.agents if a not in AGENTS]
    if bad or not schema.agents:
        raise ConfigError(f"agents: unknown {bad}; known: {list(AGENTS)}")
    bad = [s for s in schema.scenarios if s not in SCENARIOS]
    if bad or not schema.scenarios:
        raise ConfigError(f"scenarios: unknown {bad}; known: {sorted(SCENARIOS)}")
    if schema.seeds < 2:
        raise ConfigError(f"seeds must be >= 2 for an interval, got {schema.seeds}")
    if schema.seed_base < 0:
        raise ConfigError(f"seed_base must be >= 0, got {schema.seed_base}")
    if schema.baseline not in schema.agents:
        raise ConfigError(f"baseline: {schema.baseline!r} is not among agents {schema.agents}")
    if schema.metric not in KPIS:
        raise ConfigError(f"metric: unknown {schema.metric!r}; known: {list(KPIS)}")
    bad = [s for s in schema.models if s not in SCENARIOS]
    if bad:
        raise ConfigError(f"models: unknown scenarios {bad}")
    if schema.env.hosts < 1 or not schema.env.control_interval_s > 0:
        raise ConfigError("env.hosts must be >= 1 and env.control_interval_s > 0")
    episode_steps(schema.hours, schema.env.control_interval_s, "hours")


def model_for(schema: EvaluateSchema, scenario: str) -> Path:
    """The DQN model (zip or export folder) evaluated on ``scenario``.

    Raises:
        ConfigError: none is configured and neither default exists.
    """
    if scenario in schema.models:
        path = Path(schema.models[scenario])
        if not path.exists():
            raise ConfigError(f"models.{scenario}: {path} does not exist")
        return path
    tried = [Path(schema.model_dir) / f"{name}-dqn-seed0" / f
             for name in (scenario, "mixed") for f in ("best_model.zip", "model.zip")]
    for path in tried:
        if path.is_file():
            return path
    raise ConfigError(
        f"models.{scenario}: no DQN model given and none at {[str(p) for p in tried]}; "
        "train one with python -m experiments.train or leave dqn out of agents"
    )


def load_dqn(path: Path, key: str = "models") -> Policy:
    """A DQN policy from a ``model.zip`` (stable-baselines3) or an export folder (runtime).

    Raises:
        ConfigError: a file that is not a saved DQN model, led by ``key``.
    """
    if path.is_dir():
        from agents.runtime import load_policy

        return load_policy(path)
    return load_dqn_model(path, key)


def _twin_of(env: Any) -> Any:
    return env.unwrapped.twin


def compare(agent: np.ndarray, base: np.ndarray) -> dict[str, float]:
    """Mann-Whitney U (two-sided), rank-biserial effect, paired Wilcoxon p of agent vs base."""
    from scipy import stats

    mw = stats.mannwhitneyu(agent, base, alternative="two-sided")
    n1, n2 = agent.size, base.size
    diff = agent - base
    if np.allclose(diff, 0.0):
        wil_p = 1.0
    else:
        wil_p = float(stats.wilcoxon(agent, base, zero_method="zsplit").pvalue)
    return {
        "mw_u": float(mw.statistic),
        "mw_p": float(mw.pvalue),
        "rank_biserial": float(2.0 * mw.statistic / (n1 * n2) - 1.0),
        "wilcoxon_p": wil_p,
        "median_diff": float(np.median(diff)),
    }


def _fmt(x: float, digits: int = 5) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.{digits}f}" if abs(x) < 10 else f"{x:,.1f}"


def table(rows: list[dict[str, Any]], metric: str, baseline: str) -> str:
    """The comparison as Markdown."""
    out = [
        f"| scenario | agent | {metric} (95% CI) | SLO-violation min | MTTR s | actions | "
        f"return | MW p vs {baseline} | effect r | Wilcoxon p |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r[metric]
        out.append(
            f"| {r['scenario']} | {r['agent']} | {_fmt(m['mean'], 6)} "
            f"[{_fmt(m['lo'], 6)}, {_fmt(m['hi'], 6)}] | "
            f"{_fmt(r['slo_violation_minutes']['mean'], 1)} "
            f"| {_fmt(r['mttr_s']['mean'], 0)} | {_fmt(r['actions']['mean'], 1)} | "
            f"{_fmt(r['episode_return']['mean'], 1)} | "
            f"{_fmt(r.get('mw_p', math.nan), 4)} | {_fmt(r.get('rank_biserial', math.nan), 2)} "
            f"| {_fmt(r.get('wilcoxon_p', math.nan), 4)} |"
        )
    return "\n".join(out)


@hydra.main(version_base="1.3", config_path=None, config_name="evaluate_config")
def app(cfg: DictConfig) -> dict[str, Any]:
    """Run every agent on every scenario and seed; report and log the comparison.

    A config error ends the job as one line on stderr and exit status 2 (from :func:`main`),
    after an open MLflow run is marked FAILED.
    """
    with reported_at_exit():
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, Any]:
    joblog.log_config("experiments.evaluate", cfg)
    schema: EvaluateSchema = to_object(cfg, EvaluateSchema)
    check(schema)
    import torch  # after the checks: a bad command line is reported without loading it

    torch.set_num_threads(1)
    models = {s: model_for(schema, s) for s in schema.scenarios} if "dqn" in schema.agents \
        else {}
    seeds = list(range(schema.seed_base, schema.seed_base + schema.seeds))
    out_dir = Path(schema.out_dir or HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    episodes: list[dict[str, Any]] = []
    wall0 = time.perf_counter()
    bar = tqdm(total=len(schema.scenarios) * len(schema.agents) * len(seeds), unit="episode",
               file=sys.stderr, desc="evaluate", mininterval=1.0)
    for scenario in schema.scenarios:
        env = make_env(scenario, schema.env.hosts, schema.env.control_interval_s, schema.hours,
                       schema.env.fault_rate_scale)
        n_actions = int(env.action_space.n)
        for agent in schema.agents:
            for seed in seeds:
                policy: Policy
                if agent == "noop":
                    policy = NoopPolicy()
                elif agent == "random":
                    policy = RandomPolicy(n_actions, seed=seed)
                elif agent == "rules":
                    policy = RulePolicy(functools.partial(_twin_of, env))
                elif agent == "symptoms":
                    policy = SymptomPolicy(int(env.observation_space.shape[0]))
                else:
                    policy = load_dqn(models[scenario], f"models.{scenario}")
                res = run_episode(policy, env, seed)
                episodes.append({"scenario": scenario, "agent": agent, "seed": seed,
                                 "episode_return": res.episode_return, "steps": res.steps,
                                 **res.kpis})
                bar.update(1)
        env.close()
    bar.close()

    rows: list[dict[str, Any]] = []
    for scenario in schema.scenarios:
        base = np.array([e[schema.metric] for e in episodes
                         if e["scenario"] == scenario and e["agent"] == schema.baseline])
        for agent in schema.agents:
            eps = [e for e in episodes if e["scenario"] == scenario and e["agent"] == agent]
            row: dict[str, Any] = {"scenario": scenario, "agent": agent, "episodes": len(eps)}
            for k in KPIS:
                mean, lo, hi = t_interval(np.array([e[k] for e in eps], dtype=float),
                                          KPI_BOUNDS[k])
                row[k] = {"mean": mean, "lo": lo, "hi": hi}
            if agent != schema.baseline:
                row.update(compare(np.array([e[schema.metric] for e in eps]), base))
            rows.append(row)
    md = table(rows, schema.metric, schema.baseline)
    (out_dir / "comparison.md").write_text(md + "\n", encoding="utf-8")
    (out_dir / "episodes.json").write_text(jsonout.dumps(episodes, indent=1) + "\n",
                                           encoding="utf-8")
    (out_dir / "comparison.json").write_text(jsonout.dumps(rows, indent=1) + "\n",
                                             encoding="utf-8")
    plots.plot_comparison(episodes, rows, schema.metric, schema.baseline).savefig(
        out_dir / "comparison.png", dpi=110)
    run_id = None
    if schema.tracking.enabled:
        client = tracking.client_for(schema.tracking.tracking_uri)
        exp = tracking.ensure_experiment(client, schema.tracking.experiment)
        params = tracking.flatten({k: v for k, v in dataclasses.asdict(schema).items()
                                   if k != "defaults"})
        params.update({f"model.{s}": str(p) for s, p in models.items()})
        name = schema.tracking.run_name or (
            f"evaluate-{'+'.join(schema.scenarios)}-{'+'.join(schema.agents)}"
            f"-{schema.seeds}seeds")
        run_id = tracking.start_run(client, exp, run_name=name[:250], params=params, tags={},
                                    entry_point="evaluate")
        metrics: dict[str, float] = {}
        for r in rows:
            prefix = f"{r['scenario']}.{r['agent']}"
            for k in KPIS:
                metrics[f"{prefix}.{k}"] = r[k]["mean"]
                metrics[f"{prefix}.{k}_ci95_lo"] = r[k]["lo"]
                metrics[f"{prefix}.{k}_ci95_hi"] = r[k]["hi"]
            for k in ("mw_p", "rank_biserial", "wilcoxon_p"):
                if k in r:
                    metrics[f"{prefix}.{k}"] = r[k]
        tracking.finish_run(client, run_id, metrics, out_dir)
    wall_s = time.perf_counter() - wall0
    line = {
        "metric": schema.metric, "baseline": schema.baseline, "seeds": len(seeds),
        "hours": schema.hours, "hosts": schema.env.hosts,
        "rows": [{"scenario": r["scenario"], "agent": r["agent"],
                  schema.metric: r[schema.metric]["mean"],
                  "ci95": [r[schema.metric]["lo"], r[schema.metric]["hi"]],
                  **{k: r[k] for k in ("mw_p", "rank_biserial", "wilcoxon_p") if k in r}}
                 for r in rows],
        "models": {s: str(p) for s, p in models.items()},
        "out_dir": str(out_dir.resolve()), "mlflow_run_id": run_id, "wall_s": round(wall_s, 1),
    }
    joblog.log_result("experiments.evaluate", line)
    sys.stdout.write(md + "\n" + jsonout.dumps(line) + "\n")
    sys.stdout.flush()
    return line


def main() -> None:
    """Entry point: config errors become one line on stderr and exit status 2."""
    register_eval_export_configs()
    run_app(app)


if __name__ == "__main__":
    main()
