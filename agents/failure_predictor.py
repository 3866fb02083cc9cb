"""LSTM failure predictor: P(host fails within the horizon | last ``seq_len`` feature rows).

Model: a stacked LSTM (default 3 layers of 128 units over 10 features, each step given as its
levels on two scales and its change since the previous step, 0.3 dropout between layers)
whose last hidden state feeds a linear layer giving one logit. Training: binary cross-entropy
with the positive class weighted by the negative/positive ratio of the training set (class
imbalance), Adam, early stopping on the validation PR-AUC (the best epoch's weights are kept),
then Platt scaling (Platt 1999) of the logit on the validation set so that the output is a
calibrated probability. Optionally (``fit(..., onset=flags)``) a second head on the same hidden
state learns, in training only, whether the coming failure's warning fault has already begun
(:class:`OnsetTask`): on the twin's fleets it ranks the windows after the onset better and
those before it worse, leaving the PR-AUC where it was, so the twin run leaves it off.

Inputs: each feature is standardised with its training mean and standard deviation (the
deviation floored at 1 % of the mean's magnitude) and passed through ``asinh``, linear within
about one deviation and logarithmic beyond. Clipping instead would merge the sizes of the rare,
large excursions (a stalled fan, a worn-out disk), and an absolute floor on the deviation would
hide a feature that moves on a small scale (disk latency moves in its fourth decimal). Each
step's change since the previous one is scaled on its own: divided by the training windows'
standard deviation of that feature's step changes, then ``asinh``. Taken instead as the change
of the scaled level (this module before), a step's change reached the LSTM at 0.05-0.12 of the
level's scale on the twin's data, and the trends that warn of a failure with it.

Each level also comes a second time, robustly scaled: centred on its training median and divided
by its interquartile range / 1.349 (floored at 1 % of the median's magnitude), then ``asinh``.
The deviation of a level that a few hosts push far from the rest is set by those hosts: on the
twin's data a worn disk's wear reaches 1 while a healthy one's is about 1e-6, so the deviation
is 0.075 and a disk whose wear has just begun (0.01-0.07 in its first hour) barely moves the
standardised input. Its robust scale is the healthy disks' spread, so the same jump is
thousands of units there, and ``asinh`` keeps it bounded. Either scale alone was measured worse
(the robust one alone loses on leaks and fans what it gains on disks); side by side the
validation hosts preferred them to the standardised levels alone on 7 of 10 fleet seeds
(README, *Failure prediction*).

Inference: :meth:`LSTMFailurePredictor.predict_proba` for a batch of windows,
:class:`StreamingPredictor` for one new feature row per host at a time.
"""

from __future__ import annotations

import collections
import copy
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from torch import nn
from tqdm import tqdm

FloatArray = npt.NDArray[np.float32]
INPUT_SCALING = "mean-std-asinh+median-iqr-asinh+step-std-asinh"
"""Recorded in saved predictors; a file with another scaling is refused on load."""


def _floored(spread: np.ndarray, center: np.ndarray) -> np.ndarray:
    """``spread`` floored at 1 % of the centre's magnitude; 1.0 where both are 0.

    A feature constant at 0 in training: any unit will do; its excursions stay bounded by asinh.
    """
    scale = np.maximum(spread, 0.01 * np.abs(center))
    return np.where(scale > 0, scale, 1.0)


def _input_scale(flat: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature centre (mean) and scale (standard deviation, >= 1 % of the mean's size)."""
    center = flat.mean(axis=0)
    return center, _floored(flat.std(axis=0), center)


def _robust_scale(flat: npt.NDArray[np.float32]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature centre (median) and scale (interquartile range / 1.349, >= 1 % of the median)."""
    center = np.median(flat, axis=0)
    q1, q3 = np.quantile(flat, [0.25, 0.75], axis=0)
    return center, _floored((q3 - q1) / 1.349, center)


def _step_changes(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``(n, seq, f)`` -> each step's change since the previous one (0 for the first)."""
    return np.diff(x, axis=1, prepend=x[:, :1, :])


def _step_scale(x: npt.NDArray[np.float32]) -> np.ndarray:
    """Per-feature standard deviation of the step changes within the windows ``x``."""
    std = np.diff(x, axis=1).reshape(-1, x.shape[2]).std(axis=0)
    # A feature that never changes within a window in training: its changes stay bounded by asinh.
    return np.where(std > 0, std, 1.0)


MIN_IMPROVEMENT = 1e-4
"""How much an epoch's validation PR-AUC must beat the best so far for early stopping to keep it."""


def kept_epoch(history: Sequence[Mapping[str, float]]) -> int:
    """Index of the epoch whose weights :meth:`LSTMFailurePredictor.fit` kept, from its history."""
    best, kept = -1.0, 0
    for i, metrics in enumerate(history):
        if metrics["val_pr_auc"] > best + MIN_IMPROVEMENT:
            best, kept = metrics["val_pr_auc"], i
    return kept


class PredictorError(ValueError):
    """Bad training data, config or saved model."""


PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def _cpu_has_bf16() -> bool:
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


@dataclass(frozen=True, slots=True)
class PredictorConfig:
    """Architecture and training settings."""

    n_features: int = 10
    hidden: int = 128
    layers: int = 3
    seq_len: int = 24
    dropout: float = 0.3
    """Dropout between the LSTM layers. The twin data sets have few failures (43 with warning
    signs behind the default run's training set) and a 3 x 128 LSTM fits them within a few
    epochs: 0.3 rather than 0.1 raised the twin run's held-out PR-AUC from 0.557 to 0.566."""
    lr: float = 1e-3
    onset_weight: float = 1.0
    """Weight of the auxiliary onset loss when :meth:`LSTMFailurePredictor.fit` is given the
    onset targets (0 leaves it out; without the targets there is none)."""
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 4
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("n_features", "hidden", "layers", "seq_len", "batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise PredictorError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise PredictorError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise PredictorError(f"lr must be > 0, got {self.lr}")
        if not (np.isfinite(self.onset_weight) and self.onset_weight >= 0):
            raise PredictorError(
                f"onset_weight must be a finite number >= 0, got {self.onset_weight}"
            )
        if self.precision not in PRECISIONS:
            raise PredictorError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def train_dtype(self) -> torch.dtype:
        """The dtype training computes in: ``bf16`` autocast, ``fp32``, or ``auto``.

        ``auto`` is bfloat16 where the CPU has native bfloat16 instructions (oneDNN reports
        AVX512-BF16 or AMX), float32 elsewhere. Weights, optimiser state, the loss and
        inference stay float32 either way; only the LSTM's matrix products run in bfloat16.
        """
        if self.precision == "bf16" or (self.precision == "auto" and _cpu_has_bf16()):
            return torch.bfloat16
        return torch.float32


class FailureLSTM(nn.Module):
    """Stacked LSTM and a linear head giving the failure logit.

    Its input per step is ``3 * n_features`` wide: the standardised levels, the robustly
    scaled levels, then the scaled step changes (:meth:`LSTMFailurePredictor.inputs`).
    """

    def __init__(self, cfg: PredictorConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            3 * cfg.n_features,
            cfg.hidden,
            num_layers=cfg.layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.hidden, 1)

    def last_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, seq, 3 * features)`` -> the top layer's last hidden state."""
        out, _ = self.lstm(x)
        return out[:, -1, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, seq, 3 * features)`` -> logits ``(batch,)``.

        Each step comes with its change since the previous step beside it, so trends (the
        warning signs) are first-order inputs rather than something to learn to subtract.
        """
        return self.head(self.last_hidden(x)).squeeze(-1)


@dataclass(frozen=True, slots=True)
class OnsetTask:
    """The auxiliary training target: has the coming failure's warning fault begun?

    ``head`` reads the same last hidden state as the failure head; ``loss_fn`` is its
    class-weighted cross-entropy, added to the failure loss with weight ``weight``. Used in
    training only: the predictor's output, saved model and inference are the failure head's.
    """

    head: nn.Linear
    loss_fn: nn.Module
    weight: float
    targets: torch.Tensor
    """One 0 / 1 flag per training window."""

    @classmethod
    def create(cls, cfg: PredictorConfig, flags: npt.NDArray[np.float32]) -> OnsetTask:
        """A fresh head for ``cfg``'s hidden state, its loss weighted by the flags' balance.

        The head's initial weights are drawn without advancing torch's global generator, so
        the LSTM's dropout masks stay those of a training run without the onset target.
        """
        rng_state = torch.get_rng_state()
        head = nn.Linear(cfg.hidden, 1)
        torch.set_rng_state(rng_state)
        n_on = float(flags.sum())
        return cls(
            head=head,
            loss_fn=nn.BCEWithLogitsLoss(pos_weight=torch.tensor((flags.size - n_on) / n_on)),
            weight=cfg.onset_weight,
            targets=torch.from_numpy(np.asarray(flags, dtype=np.float32)),
        )


def _check_xy(x: npt.ArrayLike, y: npt.ArrayLike | None, cfg: PredictorConfig, name: str) -> None:
    xa = np.asarray(x)
    if xa.ndim != 3 or xa.shape[2] != cfg.n_features:
        raise PredictorError(
            f"{name}: expected (windows, seq, {cfg.n_features}) windows, got {xa.shape}"
        )
    if not np.all(np.isfinite(xa)):
        raise PredictorError(f"{name}: contains NaN or inf")
    if y is not None and np.asarray(y).shape != (xa.shape[0],):
        raise PredictorError(f"{name}: {np.asarray(y).shape} labels for {xa.shape[0]} windows")


def _check_onset(onset: npt.ArrayLike, y: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The onset flags as float32, checked against the training labels."""
    o = np.asarray(onset)
    if o.shape != y.shape:
        raise PredictorError(f"onset: {o.shape} flags for {y.shape[0]} training windows")
    if o.dtype != np.bool_ and not np.all((o == 0) | (o == 1)):
        raise PredictorError("onset: flags must be 0 / 1 (or bool)")
    ob = o.astype(bool)
    if np.any(ob & (y == 0)):
        raise PredictorError(
            f"onset: {int(np.sum(ob & (y == 0)))} windows flagged as begun are labelled negative"
        )
    if not ob.any() or ob.all():
        raise PredictorError("onset flags must contain both classes")
    return ob.astype(np.float32)


class LSTMFailurePredictor:
    """Train, calibrate, save and load the LSTM failure predictor."""

    def __init__(self, cfg: PredictorConfig | None = None) -> None:
        self.cfg = cfg or PredictorConfig()
        torch.manual_seed(self.cfg.seed)
        self.model = FailureLSTM(self.cfg)
        self.center = np.zeros(self.cfg.n_features, dtype=np.float32)
        self.scale = np.ones(self.cfg.n_features, dtype=np.float32)
        self.robust_center = np.zeros(self.cfg.n_features, dtype=np.float32)
        self.robust_scale = np.ones(self.cfg.n_features, dtype=np.float32)
        self.step_scale = np.ones(self.cfg.n_features, dtype=np.float32)
        self.platt = (1.0, 0.0)
        self.history: list[dict[str, float]] = []

    @property
    def seq_len(self) -> int:
        """Rows per input window."""
        return self.cfg.seq_len

    def inputs(self, x: npt.ArrayLike) -> torch.Tensor:
        """Raw ``(n, seq, f)`` windows -> the model's ``(n, seq, 3 f)`` scaled inputs.

        Per step: the standardised levels, the robustly scaled levels, the scaled step changes.
        """
        a = np.asarray(x, dtype=np.float32)
        levels = np.arcsinh((a - self.center) / self.scale)
        robust = np.arcsinh((a - self.robust_center) / self.robust_scale)
        steps = np.arcsinh(_step_changes(a) / self.step_scale)
        z = np.concatenate([levels, robust, steps], axis=-1)
        return torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))

    def logits(self, x: npt.ArrayLike, batch: int = 4096) -> npt.NDArray[np.float64]:
        """Uncalibrated logits of a batch of windows."""
        _check_xy(x, None, self.cfg, "x")
        self.model.eval()
        xt = self.inputs(x)
        out = []
        with torch.no_grad():
            for s in range(0, xt.shape[0], batch):
                out.append(self.model(xt[s : s + batch]).numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Calibrated failure probabilities of a batch of windows."""
        a, b = self.platt
        return np.asarray(1.0 / (1.0 + np.exp(-(a * self.logits(x) + b))), dtype=np.float64)

    def fit(
        self,
        x_train: npt.ArrayLike,
        y_train: npt.ArrayLike,
        x_val: npt.ArrayLike,
        y_val: npt.ArrayLike,
        progress: bool = True,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        onset: npt.ArrayLike | None = None,
    ) -> list[dict[str, float]]:
        """Train with early stopping on the validation PR-AUC, then Platt-calibrate.

        ``on_epoch(epoch, metrics)`` is called after each epoch (e.g. to log to MLflow).
        ``onset`` (optional, one flag per training window): the window is positive and its
        failure's warning fault had begun by its last step. With it (and ``onset_weight`` > 0)
        a second head on the same hidden state learns that flag alongside the label
        (:class:`OnsetTask`). Returns the per-epoch history.
        """
        cfg = self.cfg
        _check_xy(x_train, y_train, cfg, "x_train")
        _check_xy(x_val, y_val, cfg, "x_val")
        ytr = np.asarray(y_train, dtype=np.float32)
        yva = np.asarray(y_val, dtype=np.float32)
        n_pos = float(ytr.sum())
        if n_pos == 0 or n_pos == ytr.size:
            raise PredictorError("training labels must contain both classes")
        if yva.sum() == 0 or yva.sum() == yva.size:
            raise PredictorError("validation labels must contain both classes")
        ons = None if onset is None else _check_onset(onset, ytr)
        xtr_raw = np.asarray(x_train, dtype=np.float32)
        flat = xtr_raw.reshape(-1, cfg.n_features)
        center, scale = _input_scale(flat)
        self.center, self.scale = center.astype(np.float32), scale.astype(np.float32)
        r_center, r_scale = _robust_scale(flat)
        self.robust_center = r_center.astype(np.float32)
        self.robust_scale = r_scale.astype(np.float32)
        self.step_scale = _step_scale(xtr_raw).astype(np.float32)
        xtr = self.inputs(xtr_raw)
        xva = self.inputs(x_val)
        ytr_t = torch.from_numpy(ytr)
        yva_t = torch.from_numpy(yva)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = FailureLSTM(cfg)
        params = list(self.model.parameters())
        task: OnsetTask | None = None
        if ons is not None and cfg.onset_weight > 0:
            task = OnsetTask.create(cfg, ons)
            params += list(task.head.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr)
        pos_weight = torch.tensor((ytr.size - n_pos) / n_pos)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        best_ap, best_state, bad_epochs = -1.0, copy.deepcopy(self.model.state_dict()), 0
        self.history = []
        bar = tqdm(range(cfg.max_epochs), desc="lstm", unit="epoch", disable=not progress)
        for epoch in bar:
            self.model.train()
            order = torch.randperm(xtr.shape[0], generator=gen)
            total = total_onset = 0.0
            for s in range(0, xtr.shape[0], cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                label_loss, onset_loss = self._step(
                    xtr[idx], ytr_t[idx], opt, loss_fn,
                    task, None if task is None else task.targets[idx],
                )
                total += label_loss * idx.numel()
                total_onset += onset_loss * idx.numel()
            self.model.eval()
            with torch.no_grad():
                val_logits = self.model(xva)
                val_loss = float(loss_fn(val_logits, yva_t))
            val_ap = float(average_precision_score(yva, val_logits.numpy()))
            metrics = {
                "train_loss": total / xtr.shape[0],
                "val_loss": val_loss,
                "val_pr_auc": val_ap,
            }
            if task is not None:
                metrics["train_onset_loss"] = total_onset / xtr.shape[0]
            self.history.append(metrics)
            bar.set_postfix(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            if val_ap > best_ap + MIN_IMPROVEMENT:
                best_ap, best_state, bad_epochs = val_ap, copy.deepcopy(self.model.state_dict()), 0
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    break
        self.model.load_state_dict(best_state)
        self.calibrate(x_val, yva)
        return self.history

    def train_step(
        self,
        xb: torch.Tensor,
        yb: torch.Tensor,
        opt: torch.optim.Optimizer,
        loss_fn: nn.Module,
    ) -> float:
        """One optimiser step on a batch of scaled windows; returns the batch loss.

        The forward pass runs under CPU autocast in :meth:`PredictorConfig.train_dtype`; the
        loss is computed in float32 from float32 logits.
        """
        return self._step(xb, yb, opt, loss_fn)[0]

    def _step(
        self,
        xb: torch.Tensor,
        yb: torch.Tensor,
        opt: torch.optim.Optimizer,
        loss_fn: nn.Module,
        task: OnsetTask | None = None,
        ob: torch.Tensor | None = None,
    ) -> tuple[float, float]:
        """:meth:`train_step`, plus the onset head's loss when ``task`` is given.

        ``ob`` holds the batch's onset flags (``task.targets`` of the batch). Returns the
        label's and the onset's batch loss (0 without a task).
        """
        dtype = self.cfg.train_dtype()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            hidden = self.model.last_hidden(xb)
            logits = self.model.head(hidden).squeeze(-1)
            onset_logits = None if task is None else task.head(hidden).squeeze(-1)
        label_loss = loss_fn(logits.float(), yb)
        loss, onset_value = label_loss, 0.0
        if task is not None and onset_logits is not None and ob is not None:
            onset_loss = task.loss_fn(onset_logits.float(), ob)
            loss = label_loss + task.weight * onset_loss
            onset_value = float(onset_loss.detach())
        loss.backward()
        opt.step()
        return float(label_loss.detach()), onset_value

    def calibrate(self, x: npt.ArrayLike, y: npt.ArrayLike) -> None:
        """Platt scaling: fit ``P = sigmoid(a * logit + b)`` on held-out windows."""
        z = self.logits(x)[:, None]
        lr = LogisticRegression(C=1e6, max_iter=1000)
        lr.fit(z, np.asarray(y).astype(int))
        self.platt = (float(lr.coef_[0, 0]), float(lr.intercept_[0]))

    def save(self, folder: Path) -> None:
        """Write ``model.pt`` (weights) and ``predictor.json`` (config, scaler, calibration)."""
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / "model.pt")
        meta = {
            "config": asdict(self.cfg),
            "inputs": INPUT_SCALING,
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "robust_center": self.robust_center.tolist(),
            "robust_scale": self.robust_scale.tolist(),
            "step_scale": self.step_scale.tolist(),
            "platt": list(self.platt),
        }
        (folder / "predictor.json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> LSTMFailurePredictor:
        """Read a predictor written by :meth:`save`."""
        meta_path, weights = folder / "predictor.json", folder / "model.pt"
        if not (meta_path.is_file() and weights.is_file()):
            raise PredictorError(f"{folder}: predictor.json and model.pt expected")
        meta = json.loads(meta_path.read_text())
        if meta.get("inputs") != INPUT_SCALING:
            raise PredictorError(
                f"{meta_path}: input scaling {meta.get('inputs', 'mean-std-clip')!r}, this version "
                f"uses {INPUT_SCALING!r}; retrain the predictor"
            )
        pred = cls(PredictorConfig(**meta["config"]))
        pred.model.load_state_dict(torch.load(weights, weights_only=True))
        pred.model.eval()
        pred.center = np.asarray(meta["center"], dtype=np.float32)
        pred.scale = np.asarray(meta["scale"], dtype=np.float32)
        pred.robust_center = np.asarray(meta["robust_center"], dtype=np.float32)
        pred.robust_scale = np.asarray(meta["robust_scale"], dtype=np.float32)
        pred.step_scale = np.asarray(meta["step_scale"], dtype=np.float32)
        pred.platt = (float(meta["platt"][0]), float(meta["platt"][1]))
        return pred


class StreamingPredictor:
    """Feed one feature row per entity (e.g. host) at a time; get its failure probability.

    Until ``seq_len`` rows of an entity have been seen the probability is NaN.
    """

    def __init__(self, predictor: LSTMFailurePredictor) -> None:
        self.predictor = predictor
        self._rows: dict[str, collections.deque[npt.NDArray[np.float32]]] = {}

    def update(self, entity: str, row: npt.ArrayLike) -> float:
        """Append ``row`` to ``entity``'s history and return its current probability."""
        r = np.asarray(row, dtype=np.float32)
        cfg = self.predictor.cfg
        if r.shape != (cfg.n_features,) or not np.all(np.isfinite(r)):
            raise PredictorError(f"{entity}: row must be {cfg.n_features} finite values")
        hist = self._rows.setdefault(entity, collections.deque(maxlen=cfg.seq_len))
        hist.append(r)
        if len(hist) < cfg.seq_len:
            return float("nan")
        return float(self.predictor.predict_proba(np.stack(hist)[None, :, :])[0])

    def forget(self, entity: str) -> None:
        """Drop an entity's history (after a repair its old rows no longer describe it)."""
        self._rows.pop(entity, None)
