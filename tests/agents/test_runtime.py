"""Exported policies: parity, a runtime free of the training stack, clear errors.

Parity with the in-memory DQN; loading where stable-baselines3, torch and gymnasium are
absent; bad observations and corrupt or mismatched export files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from agents.dqn import DqnParams, make_dqn
from agents.export import export_dqn
from agents.runtime import ExportError, load_policy
from envs import ENV_IDS

HOSTS = 20
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, np.ndarray]:
    """A briefly trained DQN, its export and 1,000 observations recorded on its env."""
    env = gym.make(ENV_IDS["service_crash"], hosts=HOSTS, max_episode_steps=500)
    model = make_dqn(env, DqnParams(learning_starts=100), seed=0)
    model.learn(600)
    out = tmp_path_factory.mktemp("export")
    export_dqn(model, env.unwrapped.layout, out, {"scenario": "service_crash"})
    obs, _ = env.reset(seed=9)
    rng = np.random.default_rng(0)
    recorded = []
    for _ in range(1000):
        recorded.append(obs)
        obs, *_ = env.step(int(rng.integers(env.action_space.n)) if rng.random() < 0.1 else 0)
    return model, out, np.array(recorded)


def test_exported_actions_match_in_memory_on_10000_observations(exported) -> None:
    """Same greedy action on 1,000 recorded and 9,000 in-bounds observations."""
    model, out, recorded = exported
    low, high = model.observation_space.low, model.observation_space.high
    rng = np.random.default_rng(1)
    synthetic = rng.uniform(low, high, size=(9000, low.size)).astype(np.float32)
    obs = np.concatenate([recorded, synthetic])
    assert obs.shape[0] == 10_000
    policy = load_policy(out)
    in_memory = model.predict(obs, deterministic=True)[0]
    runtime, state = policy.predict(obs)
    assert state is None
    np.testing.assert_array_equal(runtime, in_memory)
    single, _ = policy.predict(obs[0])
    assert single.shape == () and int(single) == int(in_memory[0])
    np.testing.assert_allclose(policy.q_values(obs[:50]),
                               model.q_net(__import__("torch").as_tensor(obs[:50]))
                               .detach().numpy(), rtol=1e-5, atol=1e-5)
    outputs = policy.outputs(obs[:50])
    assert set(outputs) == {"q_values", "action", "admissible"}
    np.testing.assert_array_equal(outputs["action"].reshape(-1), in_memory[:50])
    np.testing.assert_array_equal(outputs["q_values"], policy.q_values(obs[:50]))


def test_metadata_describes_layout_actions_and_versions(exported) -> None:
    """The metadata has the observation layout, the action table and the versions."""
    _, out, _ = exported
    meta = load_policy(out).metadata
    assert meta["obs_dim"] == len(meta["layout"]["feature_names"]) == len(meta["layout"]["low"])
    assert meta["n_actions"] == len(meta["action_labels"]) == len(meta["layout"]["actions"])
    assert {"torch", "stable_baselines3", "onnx_opset", "numpy"} <= set(meta["versions"])
    assert meta["scenario"] == "service_crash"


_NO_TRAINING_STACK = """
import sys
for name in ("stable_baselines3", "torch", "gymnasium"):
    sys.modules[name] = None  # any import of them now raises ImportError
import numpy as np
from agents.runtime import load_policy
p = load_policy(sys.argv[1])
a, _ = p.predict(np.zeros(p.obs_dim, dtype=np.float32))
print(int(a))
"""


def test_runtime_loads_without_stable_baselines3_torch_or_gymnasium(exported) -> None:
    """A process where stable-baselines3, torch and gymnasium cannot be imported runs it."""
    model, out, _ = exported
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _NO_TRAINING_STACK, str(out)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    expected = int(model.predict(np.zeros(model.observation_space.shape, np.float32),
                                 deterministic=True)[0])
    assert int(proc.stdout.strip()) == expected


def test_wrong_observation_shape_is_a_clear_error(exported) -> None:
    """Wrong width, rank or values: ValueError naming the expected shape."""
    _, out, _ = exported
    p = load_policy(out)
    for bad in (np.zeros(p.obs_dim + 1), np.zeros((2, 3, p.obs_dim)), np.zeros((4, 5))):
        with pytest.raises(ValueError, match=re.escape(f"takes ({p.obs_dim},)")):
            p.predict(bad)
    with pytest.raises(ValueError, match="non-finite"):
        p.predict(np.full(p.obs_dim, np.nan))
    with pytest.raises(ValueError, match="numeric"):
        p.predict(["a"] * p.obs_dim)
    with pytest.raises(ValueError, match="deterministic"):
        p.predict(np.zeros(p.obs_dim), deterministic=False)


def _copy(out: Path, tmp: Path) -> Path:
    dest = tmp / "copy"
    shutil.copytree(out, dest)
    return dest


def test_corrupt_or_mismatched_files_are_clear_errors(exported, tmp_path: Path) -> None:
    """Missing metadata, bad JSON, wrong version, corrupt or swapped model: ExportError."""
    _, out, _ = exported
    with pytest.raises(ExportError, match=r"no metadata\.json"):
        load_policy(tmp_path / "nowhere")

    d = _copy(out, tmp_path / "a")
    model_file = d / "policy.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="corrupt"):
        load_policy(d)

    d = _copy(out, tmp_path / "b")
    meta = json.loads((d / "metadata.json").read_text())
    (d / "policy.onnx").write_bytes(b"not an onnx model")
    meta["sha256"] = __import__("hashlib").sha256(b"not an onnx model").hexdigest()
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="onnxruntime cannot load"):
        load_policy(d)

    d = _copy(out, tmp_path / "c")
    meta = json.loads((d / "metadata.json").read_text())
    meta["obs_dim"] += 1
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="features, metadata says"):
        load_policy(d)

    d = _copy(out, tmp_path / "d")
    meta["obs_dim"] -= 1
    meta["format_version"] = 99
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="format version 99"):
        load_policy(d)

    d = _copy(out, tmp_path / "e")
    (d / "metadata.json").write_text("{not json")
    with pytest.raises(ExportError, match="unreadable metadata"):
        load_policy(d)


def test_importing_the_runtime_imports_no_training_stack() -> None:
    """agents.runtime pulls in neither stable-baselines3, torch nor gymnasium."""
    code = ("import sys, agents.runtime; "
            "print([m for m in ('stable_baselines3', 'torch', 'gymnasium') if m in sys.modules])")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "[]"
