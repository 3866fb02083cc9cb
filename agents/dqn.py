"""The DQN healing agent: stable-baselines3's DQN with the observation scaling in the network.

The env's observations are raw units within known bounds (:mod:`envs.spaces`);
:class:`BoundsScaler` maps them to [0, 1] as the first layer of the Q-network, so the scaling
travels with the network into an export and no separate normaliser must be kept in step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from sim.errors import ConfigError


class BoundsScaler(BaseFeaturesExtractor):
    """``(x - low) / (high - low)`` with the observation space's bounds, as fixed buffers."""

    def __init__(self, observation_space: gym.spaces.Box) -> None:
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ConfigError(f"BoundsScaler needs a flat Box space, got {observation_space}")
        super().__init__(observation_space, features_dim=int(observation_space.shape[0]))
        low = np.asarray(observation_space.low, dtype=np.float32)
        high = np.asarray(observation_space.high, dtype=np.float32)
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
            raise ConfigError("BoundsScaler needs finite bounds with high > low")
        self.register_buffer("low", torch.as_tensor(low))
        self.register_buffer("inv_range", torch.as_tensor(1.0 / (high - low)))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Scale each feature to [0, 1]."""
        low: torch.Tensor = self.low  # type: ignore[assignment]
        inv_range: torch.Tensor = self.inv_range  # type: ignore[assignment]
        return (observations.float() - low) * inv_range


@dataclass(frozen=True, slots=True)
class DqnParams:
    """DQN hyper-parameters (stable-baselines3 names).

    Attributes:
        learning_rate: Adam step size.
        buffer_size: Replay buffer capacity, transitions.
        learning_starts: Transitions collected before the first update.
        batch_size: Transitions per gradient step.
        gamma: Discount factor.
        train_freq: Env steps between updates.
        gradient_steps: Gradient steps per update.
        target_update_interval: Env steps between target-network copies.
        exploration_fraction: Share of training over which epsilon falls linearly.
        exploration_initial_eps: Epsilon at the start.
        exploration_final_eps: Epsilon at the end of the fall and after.
        net_arch: Hidden layer widths of the Q-network.
    """

    learning_rate: float = 1e-3
    buffer_size: int = 10_000
    learning_starts: int = 1_000
    batch_size: int = 32
    gamma: float = 0.95
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 100
    exploration_fraction: float = 0.3
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.1
    net_arch: tuple[int, ...] = (64, 64)

    def __post_init__(self) -> None:
        for name in ("buffer_size", "learning_starts", "batch_size", "train_freq",
                     "gradient_steps", "target_update_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (
                0 if name == "learning_starts" else 1
            ):
                raise ConfigError(f"dqn.{name} must be a positive integer, got {value!r}")
        for name in ("learning_rate", "gamma", "exploration_fraction",
                     "exploration_initial_eps", "exploration_final_eps"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"dqn.{name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.gamma <= 1 or not 0 < self.exploration_fraction <= 1:
            raise ConfigError("dqn.gamma and dqn.exploration_fraction must lie in (0, 1]")
        if not self.net_arch or any(int(w) < 1 for w in self.net_arch):
            raise ConfigError(f"dqn.net_arch must list positive widths, got {self.net_arch!r}")


def make_dqn(env: Any, params: DqnParams, seed: int, device: str = "cpu") -> DQN:
    """A fresh DQN on ``env`` with the bounds scaler in front of its Q-network."""
    kwargs = dataclasses.asdict(params)
    net_arch = [int(w) for w in kwargs.pop("net_arch")]
    return DQN(
        "MlpPolicy", env, seed=seed, device=device, verbose=0,
        policy_kwargs={"features_extractor_class": BoundsScaler, "net_arch": net_arch},
        **kwargs,
    )


class DqnPolicy:
    """A trained stable-baselines3 DQN behind the :class:`agents.base.Policy` protocol."""

    def __init__(self, model: DQN) -> None:
        self.model = model

    @staticmethod
    def load(path: str, device: str = "cpu") -> DqnPolicy:
        """Load a model saved by ``DQN.save`` (a ``.zip``)."""
        return DqnPolicy(DQN.load(path, device=device))

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The greedy action (or epsilon-greedy when not ``deterministic``)."""
        action, _ = self.model.predict(observation, state, episode_start, deterministic)
        return np.asarray(action, dtype=np.int64), state

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        """Q-values of a batch of observations, shape (batch, actions)."""
        with torch.no_grad():
            obs = torch.as_tensor(np.asarray(observations, dtype=np.float32))
            return self.model.q_net(obs).cpu().numpy()
