"""LSTM one-step forecaster whose prediction error is an anomaly score.

The forecaster reads the previous ``seq_len`` standardised rows and predicts the next one;
the anomaly score of a row is ``max_j |x_j - x_hat_j| / s_j`` where ``s_j`` is the standard
deviation of the training residuals of feature ``j`` (Malhotra et al., "Long Short Term Memory
Networks for Anomaly Detection in Time Series", ESANN 2015, use the same residual idea).
"""

from __future__ import annotations

import collections

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agents.detectors import DetectorInputError, as_rows

FloatArray = npt.NDArray[np.float64]


class Forecaster(nn.Module):
    """LSTM encoder and a linear head predicting the next row."""

    def __init__(self, n_features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, seq, features)`` -> predicted next row ``(batch, features)``."""
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


def _windows(z: FloatArray, seq_len: int) -> tuple[FloatArray, FloatArray]:
    idx = np.arange(seq_len)[None, :] + np.arange(z.shape[0] - seq_len)[:, None]
    return z[idx], z[seq_len:]


class LSTMErrorDetector:
    """Anomaly detector scoring each row by the LSTM forecaster's standardised residual."""

    def __init__(
        self,
        seq_len: int = 30,
        hidden: int = 32,
        layers: int = 1,
        epochs: int = 5,
        batch_size: int = 64,
        lr: float = 3e-3,
        contamination: float = 0.005,
        seed: int = 0,
    ) -> None:
        if seq_len < 2:
            raise DetectorInputError(f"seq_len must be >= 2, got {seq_len}")
        if not 0.0 < contamination < 0.5:
            raise DetectorInputError(f"contamination must be in (0, 0.5), got {contamination}")
        self.seq_len = seq_len
        self.hidden = hidden
        self.layers = layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.contamination = contamination
        self.seed = seed
        self.threshold = float("inf")
        self.training_scores: FloatArray = np.zeros(0)
        self.n_features: int | None = None
        self._model: Forecaster | None = None
        self._mean: FloatArray | None = None
        self._std: FloatArray | None = None
        self._resid_std: FloatArray | None = None
        self._tail: FloatArray | None = None
        self._history: collections.deque[FloatArray] = collections.deque(maxlen=seq_len)

    def _standardise(self, x: FloatArray) -> FloatArray:
        assert self._mean is not None and self._std is not None
        return (x - self._mean) / self._std

    def _predict(self, windows: FloatArray) -> FloatArray:
        assert self._model is not None
        with torch.no_grad():
            out = self._model(torch.as_tensor(windows, dtype=torch.float32))
        return np.asarray(out.numpy(), dtype=np.float64)

    def _errors(self, z: FloatArray, history: FloatArray | None) -> FloatArray:
        assert self._resid_std is not None
        full = z if history is None else np.concatenate([history, z])
        scores = np.zeros(full.shape[0])
        if full.shape[0] > self.seq_len:
            inputs, targets = _windows(full, self.seq_len)
            resid = np.abs(targets - self._predict(inputs)) / self._resid_std
            scores[self.seq_len :] = resid.max(axis=1)
        return scores[full.shape[0] - z.shape[0] :]

    def fit(self, train: FloatArray) -> LSTMErrorDetector:
        """Train the forecaster on ``train`` (mean squared error, Adam); set the threshold."""
        train = as_rows(train, "train")
        if train.shape[0] <= self.seq_len + 1:
            raise DetectorInputError(
                f"train has {train.shape[0]} rows; seq_len {self.seq_len} needs more"
            )
        self.n_features = train.shape[1]
        self._mean = train.mean(axis=0)
        self._std = np.maximum(train.std(axis=0), 1e-9)
        z = self._standardise(train)
        inputs, targets = _windows(z, self.seq_len)
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        self._model = Forecaster(self.n_features, self.hidden, self.layers)
        opt = torch.optim.Adam(self._model.parameters(), lr=self.lr)
        xs = torch.as_tensor(inputs, dtype=torch.float32)
        ys = torch.as_tensor(targets, dtype=torch.float32)
        self._model.train()
        for _ in range(self.epochs):
            order = torch.randperm(xs.shape[0], generator=gen)
            for start in range(0, xs.shape[0], self.batch_size):
                batch = order[start : start + self.batch_size]
                opt.zero_grad()
                loss = nn.functional.mse_loss(self._model(xs[batch]), ys[batch])
                loss.backward()
                opt.step()
        self._model.eval()
        resid = targets - self._predict(inputs)
        self._resid_std = np.maximum(resid.std(axis=0), 1e-6)
        self.training_scores = self._errors(z, None)
        self.threshold = float(
            np.quantile(self.training_scores[self.seq_len :], 1.0 - self.contamination)
        )
        self._tail = z[-self.seq_len :]
        self.reset_stream()
        return self

    def score(self, x: FloatArray) -> FloatArray:
        """Scores of ``x`` as a stream that follows the training data."""
        if self._model is None or self.n_features is None:
            raise DetectorInputError("fit the detector before scoring")
        z = self._standardise(as_rows(x, "x", self.n_features))
        return self._errors(z, self._tail)

    def update(self, row: FloatArray) -> float:
        """Score one row from the previous ``seq_len`` rows of the stream."""
        if self._model is None or self.n_features is None:
            raise DetectorInputError("fit the detector before scoring")
        r = as_rows(np.asarray(row, dtype=np.float64).reshape(1, -1), "row", self.n_features)
        z = self._standardise(r)[0]
        value = 0.0
        if len(self._history) == self.seq_len:
            assert self._resid_std is not None
            pred = self._predict(np.stack(self._history)[None, :, :])[0]
            value = float(np.max(np.abs(z - pred) / self._resid_std))
        self._history.append(z)
        return value

    def reset_stream(self) -> None:
        """Forget streamed rows; the stream starts right after the training data."""
        self._history.clear()
        if self._tail is not None:
            self._history.extend(self._tail)

    def set_threshold(self, threshold: float) -> None:
        """Replace the threshold."""
        self.threshold = float(threshold)
