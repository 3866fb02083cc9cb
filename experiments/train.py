"""Train a healing agent on a self-healing env; resumes from its checkpoint after a kill.

    python -m experiments.train agent=dqn scenario=service_crash
    python -m experiments.train scenario=performance_degradation total_timesteps=300000 seed=1
    python -m experiments.train scenario=mixed env.hosts=30 tracking=off run_dir=/tmp/r
    python -m experiments.train scenario=performance_degradation demo.policy=symptoms

Every ``checkpoint_freq`` steps the model, its replay buffer and the learning curve so far
are written to ``run_dir`` (atomically); starting the same command again continues from
there. Every ``eval_freq`` steps the greedy policy runs ``eval_episodes`` episodes of
``eval_hours`` on fixed seeds (apart from any evaluation seeds) and the best so far is kept
as ``best_model.zip``, as stable-baselines3's EvalCallback does. The learning curve
(episode returns, evaluations, training speed) is written to ``run_dir`` as
``learning_curve.csv`` and drawn as ``learning_curve.png``, and goes to MLflow with the
flattened config as params and the models as artifacts.
With ``demo.policy=symptoms`` the DQN learns from demonstrations as well
(:mod:`agents.demonstrations`): ``demo.episodes`` episodes of the training env played by
:class:`agents.base.SymptomPolicy` are recorded, the network is pre-trained on them for
``demo.pretrain_steps`` gradient steps, and every update adds a batch of them with a
large-margin loss; a resumed run records them again (the same seeds give the same ones).
Standard output ends with one JSON object.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig

from experiments import joblog
from experiments.config import reported_at_exit, run_app
from experiments.rl_config import (
    TrainSchema,
    check_train,
    dqn_params,
    register_rl_configs,
    to_object,
)


@hydra.main(version_base="1.3", config_path=None, config_name="train_config")
def app(cfg: DictConfig) -> dict[str, Any]:
    """Train, checkpoint, evaluate, log; returns the result line.

    A config error ends the job as one line on stderr and exit status 2 (from :func:`main`),
    after an open MLflow run is marked FAILED.
    """
    with reported_at_exit():
        return _train(cfg)


def _train(cfg: DictConfig) -> dict[str, Any]:
    joblog.log_config("experiments.train", cfg)
    schema: TrainSchema = to_object(cfg, TrainSchema)
    check_train(schema)
    params = dqn_params(schema.agent)
    from experiments.train_loop import train  # torch and stable-baselines3, after the checks

    return train(schema, params)


def main() -> None:
    """Entry point: config errors become one line on stderr and exit status 2."""
    register_rl_configs()
    run_app(app)


if __name__ == "__main__":
    main()
