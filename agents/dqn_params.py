"""DQN hyper-parameters, apart from the DQN itself (:mod:`agents.dqn`).

The experiment schemas take their defaults from :class:`DqnParams`; keeping it free of torch
and stable-baselines3 lets ``experiments.train`` / ``evaluate`` / ``export`` report a bad
command line before those load. :mod:`agents.dqn` re-exports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import ConfigError


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
        n_steps: Steps of the n-step return of the target (1: the one-step TD target).
        action_mask: Learn and act over the admissible actions only (:class:`MaskedDQN`).
        double_q: Double DQN target (the online network picks the next action).
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
    n_steps: int = 3
    action_mask: bool = True
    double_q: bool = True

    def __post_init__(self) -> None:
        for name in (
            "buffer_size",
            "learning_starts",
            "batch_size",
            "train_freq",
            "gradient_steps",
            "target_update_interval",
            "n_steps",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name == "learning_starts" else 1)
            ):
                raise ConfigError(f"dqn.{name} must be a positive integer, got {value!r}")
        for name in (
            "learning_rate",
            "gamma",
            "exploration_fraction",
            "exploration_initial_eps",
            "exploration_final_eps",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"dqn.{name} must be a finite number >= 0, got {value!r}")
        for name in ("gamma", "exploration_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"dqn.{name} must lie in (0, 1], got {getattr(self, name)!r}")
        if not self.net_arch or any(int(w) < 1 for w in self.net_arch):
            raise ConfigError(f"dqn.net_arch must list positive widths, got {self.net_arch!r}")
        for name in ("action_mask", "double_q"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"dqn.{name} must be true or false, got {getattr(self, name)!r}")
