"""The training loop of ``python -m experiments.train`` (:func:`train`).

Kept apart from :mod:`experiments.train` so that torch and stable-baselines3 load only once
the config has been checked: a bad command line is reported without them. Checkpoints,
periodic evaluation, the learning curve and MLflow logging are described there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from tqdm import tqdm

from agents import demonstrations
from agents.base import SymptomPolicy, evaluate
from agents.dqn import DqnPolicy, MaskedDQN, make_dqn
from agents.dqn_params import DqnParams
from experiments import joblog, jsonout, plots, tracking
from experiments.rl_config import TrainSchema, demo_params, make_env, run_dir_of
from sim.errors import ConfigError

CHECKPOINT = "checkpoint-{step}.zip"
REPLAY = "checkpoint_replay-{step}.pkl"
STATE = "checkpoint.json"
"""The commit point of a checkpoint: it names the model and replay files of its step."""
BEST = "best_model.zip"
EVAL_SEED_BASE = 1_000_000
DEMO_SEED_BASE = 2_000_000


class _Training(BaseCallback):
    """Progress bar, checkpoints, periodic evaluation and the learning curve."""

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run

    def _on_step(self) -> bool:
        run, n = self.run, self.num_timesteps
        run.bar.update(n - run.bar.n)
        rewards = self.training_env.env_method("get_episode_rewards")[0]
        for r in rewards[run.episodes_seen :]:
            run.metric("train/episode_return", float(r), n)
        run.episodes_seen = len(rewards)
        model = self.model
        assert isinstance(model, DQN)
        if n % run.schema.eval_freq == 0:
            run.evaluate(model, n)
        if n % run.schema.checkpoint_freq == 0:
            run.checkpoint(model, n)
        return True


@dataclasses.dataclass
class _Run:
    schema: TrainSchema
    run_dir: Path
    bar: Any
    client: Any = None
    mlflow_run_id: str | None = None
    curve: list[tuple[str, float, int]] = dataclasses.field(default_factory=list)
    logged: int = 0
    episodes_seen: int = 0
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    best_return: float = -np.inf
    started_wall: float = 0.0
    started_steps: int = 0

    def metric(self, key: str, value: float, step: int) -> None:
        self.curve.append((key, value, step))

    def flush(self) -> None:
        if self.client is None or self.mlflow_run_id is None:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        items = [Metric(k, v, now_ms, s) for k, v, s in self.curve[self.logged :] if np.isfinite(v)]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.mlflow_run_id, metrics=items[i : i + 500])
        self.logged = len(self.curve)

    def evaluate(self, model: DQN, step: int) -> None:
        s = self.schema
        env = make_env(
            s.scenario.name,
            s.env.hosts,
            s.env.control_interval_s,
            s.eval_hours,
            s.env.fault_rate_scale,
        )
        seeds = [EVAL_SEED_BASE + i for i in range(s.eval_episodes)]
        results = evaluate(DqnPolicy(model), env, seeds)
        env.close()
        self.last_eval = {
            "eval/return": float(np.mean([r.episode_return for r in results])),
            "eval/availability": float(np.mean([r.kpis["availability"] for r in results])),
            "eval/actions": float(np.mean([r.kpis["actions"] for r in results])),
        }
        for k, v in self.last_eval.items():
            self.metric(k, v, step)
        if self.last_eval["eval/return"] > self.best_return:
            self.best_return = self.last_eval["eval/return"]
            model.save(self.run_dir / f"tmp-{BEST}")
            os.replace(self.run_dir / f"tmp-{BEST}", self.run_dir / BEST)
            self.metric("eval/best_return", self.best_return, step)
        elapsed = time.perf_counter() - self.started_wall
        if elapsed > 0:
            self.metric("train/steps_per_s", (step - self.started_steps) / elapsed, step)
        self.flush()

    def checkpoint(self, model: DQN, step: int) -> None:
        """Write the step's model and replay files, then the state naming them, then prune.

        The state file is replaced last and atomically, so a kill at any moment leaves the
        previous checkpoint whole: a state never names files of another step (a model saved
        ahead of its state once resumed with the steps counted twice).
        """
        d = self.run_dir
        files = {"model": CHECKPOINT.format(step=step), "replay": REPLAY.format(step=step)}
        model.save(d / f"tmp-{files['model']}")
        model.save_replay_buffer(d / f"tmp-{files['replay']}")
        os.replace(d / f"tmp-{files['model']}", d / files["model"])
        os.replace(d / f"tmp-{files['replay']}", d / files["replay"])
        state = {
            **files,
            "num_timesteps": step,
            "mlflow_run_id": self.mlflow_run_id,
            "episodes_seen": self.episodes_seen,
            "curve": self.curve,
            "best_return": _finite_or_none(self.best_return),
        }
        (d / f"tmp-{STATE}").write_text(json.dumps(state), encoding="utf-8")
        os.replace(d / f"tmp-{STATE}", d / STATE)
        patterns = (CHECKPOINT, REPLAY, f"tmp-{CHECKPOINT}", f"tmp-{REPLAY}")
        for stale in [p for pattern in patterns for p in d.glob(pattern.format(step="*"))]:
            if stale.name not in files.values():
                stale.unlink(missing_ok=True)
        self.flush()


def _demonstrate(schema: TrainSchema, model: DQN, *, pretrain: bool) -> dict[str, Any] | None:
    """Record the demonstrations ``schema.demo`` asks for, hand them to the model, pretrain.

    The same seeds give the same demonstrations, so a resumed run rebuilds them exactly; it
    does not pretrain again (its network already went through that).
    """
    params = demo_params(schema.demo)
    if params is None:
        return None
    if not isinstance(model, MaskedDQN):
        raise TypeError("demonstrations need a MaskedDQN")
    s = schema
    env = make_env(s.scenario.name, s.env.hosts, s.env.control_interval_s, s.scenario.hours,
                   s.env.fault_rate_scale)
    assert env.observation_space.shape is not None
    demonstrator = SymptomPolicy(int(env.observation_space.shape[0]))
    t0 = time.perf_counter()
    seeds = [DEMO_SEED_BASE + i for i in range(s.demo.episodes)]
    demos = demonstrations.collect(demonstrator, env, seeds, model.n_steps, model.gamma,
                                   progress=True)
    env.close()
    model.set_demonstrations(demos, params, seed=s.seed)
    collect_s = time.perf_counter() - t0
    losses = model.pretrain(params.pretrain_steps, progress=True) if pretrain else []
    return {
        "policy": s.demo.policy,
        "episodes": demos.episodes,
        "transitions": len(demos),
        "actions": int((demos.actions != 0).sum()),
        "collect_s": round(collect_s, 1),
        "pretrain_steps": len(losses),
        "pretrain_s": round(time.perf_counter() - t0 - collect_s, 1),
        "pretrain_last_loss": round(float(np.mean(losses[-100:])), 5) if losses else None,
    }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _load_checkpoint(run_dir: Path, env: Any, seed: int) -> tuple[DQN, dict[str, Any]] | None:
    state_path = run_dir / STATE
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text(encoding="utf-8"))
    step = int(state["num_timesteps"])
    # States written before the files were named by step used these fixed names.
    names = {"model": "checkpoint.zip", "replay": "checkpoint_replay.pkl"}
    files = {k: run_dir / str(state.get(k, default)) for k, default in names.items()}
    for path in files.values():
        if not path.is_file():
            raise ConfigError(f"{state_path} names {path.name}, which is missing; the "
                              "checkpoint cannot be resumed, start a new run_dir")
    model = MaskedDQN.load(files["model"], env=env, device="cpu")
    model.load_replay_buffer(files["replay"])
    if model.num_timesteps != step:
        raise ConfigError(
            f"{state_path} is at step {step} but its model {files['model'].name} at step "
            f"{model.num_timesteps}; the checkpoint is inconsistent, start a new run_dir")
    # The env restarts on resume; a seed derived from the step keeps that reproducible.
    model.set_random_seed(seed + step)
    return model, state


def train(schema: TrainSchema, params: DqnParams) -> dict[str, Any]:
    """Train (or resume) as ``schema`` says with ``params``; prints and returns the result line."""
    torch.set_num_threads(schema.torch_threads)
    run_dir = run_dir_of(schema)
    run_dir.mkdir(parents=True, exist_ok=True)
    s = schema
    env = Monitor(
        make_env(
            s.scenario.name,
            s.env.hosts,
            s.env.control_interval_s,
            s.scenario.hours,
            s.env.fault_rate_scale,
        )
    )
    loaded = _load_checkpoint(run_dir, env, s.seed)
    state: dict[str, Any] = {}
    model: DQN
    if loaded is None:
        model = make_dqn(env, params, seed=s.seed)
    else:
        model, state = loaded
    resumed_from = int(state.get("num_timesteps", 0))
    demo_info = _demonstrate(schema, model, pretrain=loaded is None)

    client, run_id = None, None
    if s.tracking.enabled:
        client = tracking.client_for(s.tracking.tracking_uri)
        experiment_id = tracking.ensure_experiment(client, s.tracking.experiment)
        params_flat = tracking.flatten(dataclasses.asdict(schema))
        params_flat.pop("defaults", None)
        run_id = tracking.start_run(
            client,
            experiment_id,
            run_name=s.tracking.run_name or f"train-{s.scenario.name}-{s.agent.name}-seed{s.seed}",
            params=params_flat,
            tags={
                "scenario": s.scenario.name,
                "agent": s.agent.name,
                "seed": str(s.seed),
                "resumed_from_step": str(resumed_from),
                "resumed_from_run": str(state.get("mlflow_run_id") or ""),
            },
            entry_point="train",
        )
    bar = tqdm(
        total=s.total_timesteps,
        initial=resumed_from,
        unit="step",
        file=sys.stderr,
        desc=f"train {s.agent.name} {s.scenario.name}",
        mininterval=1.0,
    )
    run = _Run(
        schema,
        run_dir,
        bar,
        client,
        run_id,
        curve=[(str(k), float(v), int(st)) for k, v, st in state.get("curve", [])],
        episodes_seen=0,
    )
    run.logged = 0 if run_id is not None else len(run.curve)
    run.best_return = float(state.get("best_return") or -np.inf)
    try:
        run.started_wall = time.perf_counter()
        run.started_steps = resumed_from
        remaining = max(s.total_timesteps - resumed_from, 0)
        if remaining:
            model.learn(remaining, callback=_Training(run), reset_num_timesteps=False)
        wall_s = time.perf_counter() - run.started_wall
        bar.close()
        steps_per_s = remaining / wall_s if wall_s > 0 and remaining else float("nan")
        model_path = run_dir / "model.zip"
        model.save(model_path)
        if not run.last_eval or run.curve[-1][2] != model.num_timesteps:
            run.evaluate(model, int(model.num_timesteps))
        run.flush()
        line = {
            "scenario": s.scenario.name,
            "agent": s.agent.name,
            "seed": s.seed,
            "hosts": s.env.hosts,
            "timesteps": int(model.num_timesteps),
            "resumed_from": resumed_from,
            "trained_steps_this_run": remaining,
            "steps_per_s": round(steps_per_s, 1) if np.isfinite(steps_per_s) else None,
            "wall_s": round(wall_s, 3),
            "model": str(model_path.resolve()),
            "best_model": str((run_dir / BEST).resolve()),
            "best_eval_return": _finite_or_none(run.best_return),
            "demonstrations": demo_info,
            **{k.replace("/", "_"): v for k, v in run.last_eval.items()},
            "mlflow_run_id": run_id,
        }
        (run_dir / "result.json").write_text(jsonout.dumps(line) + "\n", encoding="utf-8")
        curve_path = run_dir / "learning_curve.csv"
        curve_path.write_text(
            "metric,value,step\n" + "".join(f"{k},{v},{st}\n" for k, v, st in run.curve),
            encoding="utf-8",
        )
        figure_path = run_dir / "learning_curve.png"
        plots.plot_learning_curve(run.curve).savefig(figure_path, dpi=110)
        if client is not None and run_id is not None:
            client.log_artifact(run_id, str(model_path))
            client.log_artifact(run_id, str(run_dir / BEST))
            client.log_artifact(run_id, str(curve_path))
            client.log_artifact(run_id, str(figure_path))
            client.log_artifact(run_id, str(run_dir / "result.json"))
            client.set_tag(run_id, "steps_per_s", str(line["steps_per_s"]))
            tracking.end_run(client, run_id)
    except BaseException:
        if client is not None and run_id is not None:
            tracking.fail_run(client, run_id)
        raise
    finally:
        env.close()
    joblog.log_result("experiments.train", line)
    sys.stdout.write(jsonout.dumps(line) + "\n")
    sys.stdout.flush()
    return line
