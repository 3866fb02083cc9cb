"""Export a trained DQN's policy (Q-network with its observation scaling) as ONNX."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN
from torch import nn

from agents.dqn import masked_argmax
from agents.runtime import FORMAT, FORMAT_VERSION, METADATA_FILE, sha256_of
from envs.spaces import Layout

MODEL_FILE = "policy.onnx"


class _GreedyQ(nn.Module):
    """Observation -> (Q-values, greedy action, admissible actions).

    The scaling is the Q-network's first layer; the greedy action is taken over the
    admissible actions of :class:`agents.dqn.MaskedQNetwork` (all of them without a mask).
    """

    def __init__(self, q_net: nn.Module) -> None:
        super().__init__()
        self.q_net = q_net
        self.admissible = getattr(q_net, "admissible", None)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self.q_net(obs)
        if self.admissible is None:
            mask = torch.ones_like(q, dtype=torch.bool)
        else:
            mask = self.admissible(obs)
        return q, masked_argmax(q, mask), mask


def export_dqn(
    model: DQN, layout: Layout, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``policy.onnx`` and ``metadata.json`` to ``out_dir``; returns the folder.

    ``extra`` is merged into the metadata (env id, scenario, training steps, ...).
    """
    import gymnasium
    import onnx
    import stable_baselines3

    import envs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    obs_dim = int(np.prod(model.observation_space.shape))  # type: ignore[arg-type]
    if obs_dim != layout.obs_dim:
        raise ValueError(f"model takes {obs_dim} features, the layout has {layout.obs_dim}")
    n_actions = int(model.action_space.n)  # type: ignore[attr-defined]
    if n_actions != layout.n_actions:
        raise ValueError(f"model has {n_actions} actions, the layout {layout.n_actions}")
    module = _GreedyQ(model.q_net).cpu().eval()
    example = torch.zeros((2, obs_dim), dtype=torch.float32)
    path = out / MODEL_FILE
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["obs"],
        output_names=["q_values", "action", "admissible"],
        dynamic_shapes={"obs": {0: torch.export.Dim("batch")}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_file": MODEL_FILE,
        "sha256": sha256_of(path),
        "obs_dim": obs_dim,
        "n_actions": n_actions,
        "inputs": {"obs": "float32 (batch, obs_dim), raw units as envs.spaces.encode gives"},
        "outputs": {
            "q_values": "float32 (batch, n_actions)",
            "action": "int64 (batch,): argmax of q_values over the admissible actions",
            "admissible": "bool (batch, n_actions)",
        },
        "action_mask": "symptoms" if module.admissible is not None else "none",
        "layout": layout.to_dict(),
        "action_labels": list(layout.action_labels()),
        "env_module": envs.__name__,
        "versions": {
            "novacron": _package_version("novacron-autonomy-lab"),
            "torch": torch.__version__,
            "stable_baselines3": stable_baselines3.__version__,
            "gymnasium": gymnasium.__version__,
            "onnx": onnx.__version__,
            "onnx_opset": int(
                max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
            ),
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        **(extra or {}),
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
