"""Export a trained DQN policy as ONNX, check it against the in-memory policy, log it.

    python -m experiments.export model=runs/service_crash-dqn-seed0/model.zip
    python -m experiments.export model=runs/mixed-dqn-seed0/model.zip scenario=mixed out=x

Writes ``policy.onnx`` and ``metadata.json`` (see :mod:`agents.runtime`), then records
``parity_observations`` observations from episodes run by the in-memory policy and checks
that the exported runtime picks the same action for each. The export is logged to MLflow as
an ONNX model with the metadata beside it. The last line of standard output is one JSON
object; the exit status is 1 when any action differs.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from envs import env_id
from experiments import joblog, jsonout, tracking
from experiments.config import reported_at_exit, run_app
from experiments.rl_config import (
    ExportSchema,
    load_dqn_model,
    make_env,
    register_eval_export_configs,
    to_object,
)
from sim.errors import ConfigError
from sim.scenarios import SCENARIOS

if TYPE_CHECKING:  # torch and stable-baselines3 load after the config is checked
    from agents.dqn import DqnPolicy


def record_observations(
    policy: DqnPolicy, env: Any, n: int, epsilon: float, seed: int
) -> np.ndarray:
    """``n`` observations from episodes driven by ``policy``.

    Epsilon-greedy with its own generator, so states the greedy policy avoids are covered too.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, int(np.prod(env.observation_space.shape))), dtype=np.float32)
    obs, _ = env.reset(seed=seed)
    episode = 0
    for i in tqdm(range(n), unit="obs", file=sys.stderr, desc="record", mininterval=1.0):
        out[i] = obs
        if rng.random() < epsilon:
            action = int(rng.integers(env.action_space.n))
        else:
            action = int(policy.predict(obs)[0])
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return out


@hydra.main(version_base="1.3", config_path=None, config_name="export_config")
def app(cfg: DictConfig) -> dict[str, Any]:
    """Export, check parity, log.

    A config error ends the job as one line on stderr and exit status 2 (from :func:`main`),
    after an open MLflow run is marked FAILED.
    """
    with reported_at_exit():
        return _export(cfg)


def _export(cfg: DictConfig) -> dict[str, Any]:
    joblog.log_config("experiments.export", cfg)
    s: ExportSchema = to_object(cfg, ExportSchema)
    if s.scenario not in SCENARIOS:
        raise ConfigError(f"scenario: unknown {s.scenario!r}; known: {sorted(SCENARIOS)}")
    if s.parity_observations < 1:
        raise ConfigError(f"parity_observations must be >= 1, got {s.parity_observations}")
    if not 0.0 <= s.parity_epsilon <= 1.0:
        raise ConfigError(f"parity_epsilon must lie in [0, 1], got {s.parity_epsilon}")
    model_path = Path(s.model)
    if not model_path.is_file():
        raise ConfigError(f"model: {model_path} does not exist; train one first")
    import torch

    from agents.export import export_dqn
    from agents.runtime import load_policy

    torch.set_num_threads(1)
    policy = load_dqn_model(model_path, "model")
    env = make_env(s.scenario, s.env.hosts, s.env.control_interval_s, s.parity_hours,
                   s.env.fault_rate_scale)
    layout = env.unwrapped.layout
    out = Path(s.out) if s.out else model_path.parent / "export"
    wall0 = time.perf_counter()
    export_dqn(policy.model, layout, out, {
        "env_id": env_id(s.scenario), "scenario": s.scenario, "hosts": s.env.hosts,
        "control_interval_s": s.env.control_interval_s,
        "trained_steps": int(policy.model.num_timesteps), "source_model": str(model_path),
    })
    runtime = load_policy(out)
    observations = record_observations(policy, env, s.parity_observations, s.parity_epsilon,
                                       s.seed)
    env.close()
    in_memory = np.asarray(policy.model.predict(observations, deterministic=True)[0])
    exported, _ = runtime.predict(observations)
    agree = int((in_memory == exported).sum())
    np.savez_compressed(out / "parity_observations.npz", obs=observations,
                        in_memory=in_memory, exported=exported)
    run_id = None
    if s.tracking.enabled:
        import mlflow
        import mlflow.onnx
        import onnx

        client = tracking.client_for(s.tracking.tracking_uri)
        exp = tracking.ensure_experiment(client, s.tracking.experiment)
        params = tracking.flatten({k: v for k, v in dataclasses.asdict(s).items()
                                   if k != "defaults"})
        params.update({"model": str(model_path), "out": str(out)})
        run_id = tracking.start_run(
            client, exp, run_name=s.tracking.run_name or f"export-{s.scenario}",
            params=params, tags=_training_run(model_path), entry_point="export",
        )
        mlflow.set_tracking_uri(tracking.resolve_tracking_uri(s.tracking.tracking_uri))
        example = observations[:2]
        signature = mlflow.models.infer_signature(example, runtime.outputs(example))
        with mlflow.start_run(run_id=run_id):
            mlflow.onnx.log_model(onnx.load(str(out / "policy.onnx")), name="policy",
                                  input_example=example, signature=signature,
                                  save_as_external_data=False,
                                  onnx_execution_providers=["CPUExecutionProvider"])
            mlflow.log_artifact(str(out / "metadata.json"))
            mlflow.log_metrics({"parity_agree": agree,
                                "parity_total": float(len(observations))})
        if agree != len(observations):
            tracking.fail_run(client, run_id)  # an export that disagrees is not a result
        else:
            tracking.end_run(client, run_id)
    line = {
        "export": str(out.resolve()), "scenario": s.scenario, "model": str(model_path),
        "parity_observations": len(observations), "parity_agree": agree,
        "parity": agree / len(observations), "onnx_sha256": runtime.metadata["sha256"],
        "mlflow_run_id": run_id, "wall_s": round(time.perf_counter() - wall0, 2),
    }
    joblog.log_result("experiments.export", line)
    sys.stdout.write(jsonout.dumps(line) + "\n")
    sys.stdout.flush()
    if agree != len(observations):
        sys.exit(1)
    return line


def _training_run(model_path: Path) -> dict[str, str]:
    """``trained_by_run``: the MLflow run of the training that wrote the model, if known.

    ``python -m experiments.train`` writes ``result.json`` (with its run id) beside
    ``model.zip``; a model from elsewhere, or trained with tracking off, has none.
    """
    result = model_path.parent / "result.json"
    try:
        run = json.loads(result.read_text(encoding="utf-8")).get("mlflow_run_id")
    except (OSError, ValueError, AttributeError):
        return {}
    return {"trained_by_run": str(run)} if run else {}


def main() -> None:
    """Entry point: config errors become one line on stderr and exit status 2."""
    register_eval_export_configs()
    run_app(app)


if __name__ == "__main__":
    main()
