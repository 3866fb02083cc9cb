"""The training checkpoint: a kill mid-write leaves the previous one whole and consistent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agents.dqn import DqnParams, make_dqn
from experiments import train_loop
from experiments.rl_config import TrainSchema, make_env
from sim.errors import ConfigError


def _env():  # type: ignore[no-untyped-def]
    return make_env("service_crash", 20, 10.0, 0.1, 1.0)


def test_a_kill_before_the_state_is_replaced_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model files of step 400 written, state not yet: a resume is at step 200, model too."""
    env = _env()
    model = make_dqn(env, DqnParams(learning_starts=10), seed=0)
    run = train_loop._Run(TrainSchema(), tmp_path, bar=None)
    model.num_timesteps = 200
    run.checkpoint(model, 200)

    real_replace = os.replace

    def killed_at_the_state(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == train_loop.STATE:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(train_loop.os, "replace", killed_at_the_state)
    model.num_timesteps = 400
    with pytest.raises(KeyboardInterrupt):
        run.checkpoint(model, 400)
    monkeypatch.setattr(train_loop.os, "replace", real_replace)

    loaded = train_loop._load_checkpoint(tmp_path, _env(), seed=0)
    assert loaded is not None
    resumed, state = loaded
    assert state["num_timesteps"] == 200 == resumed.num_timesteps
    # The next complete checkpoint prunes the files no state names.
    resumed.num_timesteps = 600
    run.checkpoint(resumed, 600)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["checkpoint-600.zip", "checkpoint.json", "checkpoint_replay-600.pkl"]


def test_an_inconsistent_or_incomplete_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    """A state whose model is at another step, or whose files are gone, is a clear error."""
    env = _env()
    model = make_dqn(env, DqnParams(learning_starts=10), seed=0)
    run = train_loop._Run(TrainSchema(), tmp_path, bar=None)
    model.num_timesteps = 200
    run.checkpoint(model, 200)
    state_path = tmp_path / train_loop.STATE
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "num_timesteps": 400}))
    with pytest.raises(ConfigError, match=r"at step 400 but its model checkpoint-200\.zip"):
        train_loop._load_checkpoint(tmp_path, env, seed=0)
    state_path.write_text(json.dumps(state))
    (tmp_path / state["replay"]).unlink()
    with pytest.raises(ConfigError, match=r"checkpoint_replay-200\.pkl, which is missing"):
        train_loop._load_checkpoint(tmp_path, env, seed=0)
