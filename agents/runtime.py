"""Run an exported policy with numpy and onnxruntime only: no stable-baselines3, torch or gym.

An export folder holds ``policy.onnx`` (the Q-network with the observation scaling and the
action mask inside; outputs ``q_values``, ``action``, the argmax of the Q-values over the
admissible actions, and ``admissible``, the mask) and ``metadata.json`` (format version, the
observation layout, the action table, the file's sha256 and the versions it was made with). Feed the
runtime the vectors of :func:`envs.spaces.encode`; turn its actions into plant actions with
:func:`envs.spaces.decode` on the layout in ``metadata["layout"]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "novacron-policy"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"


class ExportError(ValueError):
    """An export folder that is missing, corrupt, or does not match its metadata."""


class ExportedPolicy:
    """A loaded export behind the ``predict`` protocol of :class:`agents.base.Policy`.

    Args:
        session: onnxruntime inference session of the model.
        metadata: The export's metadata.
    """

    def __init__(self, session: Any, metadata: dict[str, Any]) -> None:
        self._session = session
        self.metadata = metadata
        self.obs_dim = int(metadata["obs_dim"])
        self.n_actions = int(metadata["n_actions"])
        self._input = session.get_inputs()[0].name
        self._has_mask = "admissible" in {o.name for o in session.get_outputs()}

    def outputs(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model (``q_values``, ``action``, ``admissible``) by name."""
        batch, _ = self._batch(observation)
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {self._input: batch})
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    def q_values(self, observation: np.ndarray) -> np.ndarray:
        """Q-values, shape (batch, actions), of one observation or a batch."""
        batch, _ = self._batch(observation)
        return np.asarray(self._session.run(["q_values"], {self._input: batch})[0])

    def admissible(self, observation: np.ndarray) -> np.ndarray:
        """Admissible actions, bool (batch, actions); all of them for an unmasked export."""
        batch, _ = self._batch(observation)
        if not self._has_mask:
            return np.ones((batch.shape[0], self.n_actions), dtype=bool)
        return np.asarray(self._session.run(["admissible"], {self._input: batch})[0], bool)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The greedy admissible action: int64 scalar for one observation, (batch,) for a batch.

        A Q-network's greedy action is the policy; ``deterministic=False`` is refused rather
        than silently ignored.

        Raises:
            ValueError: the observation's shape is not ``(obs_dim,)`` or ``(batch, obs_dim)``,
                it is not numeric or not finite, or ``deterministic`` is False.
        """
        if not deterministic:
            raise ValueError("an exported Q-policy is greedy; call with deterministic=True")
        batch, single = self._batch(observation)
        action = np.asarray(self._session.run(["action"], {self._input: batch})[0], np.int64)
        return (action[0] if single else action), state

    def _batch(self, observation: np.ndarray) -> tuple[np.ndarray, bool]:
        try:
            obs = np.asarray(observation, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(
                f"observation must be numeric, got {type(observation).__name__}"
            ) from None
        single = obs.ndim == 1
        if single:
            obs = obs[None, :]
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(
                f"observation has shape {np.shape(observation)}; this policy takes "
                f"({self.obs_dim},) or (batch, {self.obs_dim})"
            )
        if not np.isfinite(obs).all():
            raise ValueError("observation has non-finite entries")
        return np.ascontiguousarray(obs), single


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(export_dir: str | Path) -> dict[str, Any]:
    """The checked metadata of an export folder.

    Raises:
        ExportError: missing folder or file, unreadable JSON, unknown format or version,
            missing fields.
    """
    folder = Path(export_dir)
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        raise ExportError(f"{folder}: no {METADATA_FILE}; not a policy export")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{meta_path}: unreadable metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{meta_path}: not a {FORMAT} metadata file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{meta_path}: format version {meta.get('format_version')!r}; this runtime reads "
            f"version {FORMAT_VERSION}"
        )
    missing = [
        k for k in ("model_file", "sha256", "obs_dim", "n_actions", "layout") if k not in meta
    ]
    if missing:
        raise ExportError(f"{meta_path}: missing fields {missing}")
    return meta


def load_policy(export_dir: str | Path) -> ExportedPolicy:
    """Load an export folder written by :func:`agents.export.export_dqn`.

    Raises:
        ExportError: the folder, metadata or model is missing or corrupt, the model's hash
            differs from the metadata's, or its input / output sizes disagree with it.
    """
    import onnxruntime as ort

    meta = read_metadata(export_dir)
    model_path = Path(export_dir) / str(meta["model_file"])
    if not model_path.is_file():
        raise ExportError(f"{model_path}: model file missing")
    digest = sha256_of(model_path)
    if digest != meta["sha256"]:
        raise ExportError(
            f"{model_path}: sha256 {digest[:12]}... differs from the metadata's "
            f"{str(meta['sha256'])[:12]}...; the model is corrupt or belongs to another export"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:
        raise ExportError(f"{model_path}: onnxruntime cannot load it ({err})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    out_names = [o.name for o in outputs]
    if len(inputs) != 1 or not {"q_values", "action"} <= set(out_names):
        raise ExportError(
            f"{model_path}: expected one input and outputs q_values, action; got "
            f"{[i.name for i in inputs]} -> {out_names}"
        )
    width = inputs[0].shape[-1]
    if not isinstance(width, int) or width != int(meta["obs_dim"]):
        raise ExportError(
            f"{model_path}: model takes {width} features, metadata says {meta['obs_dim']}"
        )
    q_width = outputs[out_names.index("q_values")].shape[-1]
    if isinstance(q_width, int) and q_width != int(meta["n_actions"]):
        raise ExportError(
            f"{model_path}: model has {q_width} actions, metadata says {meta['n_actions']}"
        )
    if len(meta["layout"].get("actions", [])) != int(meta["n_actions"]):
        raise ExportError(f"{export_dir}: layout's action table and n_actions disagree")
    return ExportedPolicy(session, meta)
