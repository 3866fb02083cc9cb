"""Demonstrations for the DQN: transitions recorded from a demonstrator policy on the env.

Deep Q-learning from demonstrations (Hester et al. 2018, "DQfD") in the form
:class:`agents.dqn.MaskedDQN` uses: a demonstrator (:class:`agents.base.SymptomPolicy` by
default) runs whole episodes of the training env; its transitions, with n-step returns
computed the way the learner's replay buffer computes them, are kept apart from the replay
buffer for the whole of training. The learner first takes gradient steps on them alone
(pre-training), then adds a demonstration batch to every update: the n-step TD loss plus a
large-margin loss ``max_a [Q(s, a) + l(a_E, a)] - Q(s, a_E)`` over the admissible actions
(``l`` is ``margin`` for every action but the demonstrator's ``a_E``), which makes the
demonstrator's action the greedy one unless the learner's own experience says otherwise.

An episode is truncated, never terminated (the self-healing envs never end on their own), so
every return bootstraps from the observation ``n`` steps later, or from the last observation
of the episode for the last ``n - 1`` steps, with the discount of the steps actually summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from agents.base import Policy, play


@dataclass(frozen=True, slots=True)
class Demonstrations:
    """Demonstrator transitions with n-step returns, as arrays of one length ``N``.

    Attributes:
        observations: (N, obs_dim) float32, the observation the action was chosen on.
        actions: (N,) int64, the demonstrator's action.
        returns: (N,) float32, the discounted sum of up to ``n_steps`` rewards from it.
        next_observations: (N, obs_dim) float32, the observation the return bootstraps from.
        dones: (N,) float32, 1 where the episode terminated inside the n steps (no bootstrap).
        discounts: (N,) float32, ``gamma ** k`` for the ``k`` rewards summed.
        episodes: Episodes recorded.
    """

    observations: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    next_observations: np.ndarray
    dones: np.ndarray
    discounts: np.ndarray
    episodes: int

    def __post_init__(self) -> None:
        n = len(self.actions)
        for name in ("observations", "returns", "next_observations", "dones", "discounts"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"demonstrations: {name} has {len(getattr(self, name))} rows, "
                                 f"actions {n}")
        if self.observations.shape != self.next_observations.shape:
            raise ValueError("demonstrations: observations and next_observations differ in shape")
        if n == 0:
            raise ValueError("demonstrations: no transitions")

    def __len__(self) -> int:
        return len(self.actions)

    def action_counts(self) -> dict[int, int]:
        """How often each action was demonstrated."""
        values, counts = np.unique(self.actions, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def n_step_targets(
    rewards: np.ndarray, terminated: bool, n_steps: int, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n-step returns of one episode's rewards.

    Returns:
        ``(returns, offsets, dones, discounts)``: for step ``t``, the return of rewards
        ``t .. t+k-1`` with ``k = min(n_steps, T - t)``, the offset ``t + k`` of the
        observation it bootstraps from (index into the episode's ``T + 1`` observations),
        1.0 where that observation is terminal, and ``gamma ** k``.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    r = np.asarray(rewards, dtype=np.float64)
    t_len = len(r)
    returns = np.zeros(t_len)
    powers = gamma ** np.arange(n_steps)
    for k in range(n_steps):
        returns[: t_len - k] += powers[k] * r[k:]
    steps = np.minimum(n_steps, t_len - np.arange(t_len))
    offsets = np.arange(t_len) + steps
    dones = np.where((offsets == t_len) & terminated, 1.0, 0.0)
    return (returns.astype(np.float32), offsets, dones.astype(np.float32),
            (gamma ** steps).astype(np.float32))


def collect(
    policy: Policy,
    env: Any,
    seeds: Sequence[int],
    n_steps: int,
    gamma: float,
    *,
    progress: bool = False,
) -> Demonstrations:
    """Run ``policy`` greedily on ``env`` for one episode per seed and keep its transitions.

    Episodes are played by :func:`agents.base.play` (recurrent state and the env's action
    mask handed to the policy as in evaluation).

    Args:
        policy: The demonstrator (its ``predict`` answers an action index of the env).
        env: A Gymnasium env (a self-healing env, possibly wrapped).
        seeds: One episode per seed, reset with it.
        n_steps: Length of the returns (the learner's ``n_steps``).
        gamma: Discount (the learner's ``gamma``).
        progress: Show a progress bar on stderr.

    Raises:
        ValueError: no seeds (an action outside the env's space is refused by the env).
    """
    if not seeds:
        raise ValueError("demonstrations need at least one episode (seed)")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "ret", "next", "done",
                                                          "disc")}
    bar = tqdm(seeds, desc="demonstrations", unit="episode", disable=not progress,
               mininterval=1.0)
    for seed in bar:
        steps = list(play(policy, env, int(seed)))
        all_obs = np.stack([steps[0].observation, *(st.next_observation for st in steps)])
        all_obs = all_obs.astype(np.float32, copy=False)
        ret, offsets, dones, disc = n_step_targets(
            np.array([st.reward for st in steps]), steps[-1].terminated, n_steps, gamma
        )
        parts["obs"].append(all_obs[:-1])
        parts["act"].append(np.array([st.action for st in steps], dtype=np.int64))
        parts["ret"].append(ret)
        parts["next"].append(all_obs[offsets])
        parts["done"].append(dones)
        parts["disc"].append(disc)
    return Demonstrations(
        observations=np.concatenate(parts["obs"]),
        actions=np.concatenate(parts["act"]),
        returns=np.concatenate(parts["ret"]),
        next_observations=np.concatenate(parts["next"]),
        dones=np.concatenate(parts["done"]),
        discounts=np.concatenate(parts["disc"]),
        episodes=len(seeds),
    )


@dataclass(frozen=True, slots=True)
class DemoParams:
    """How a DQN learns from demonstrations.

    Attributes:
        margin: ``l``: how far above every other admissible action the demonstrator's action
            is pushed (DQfD's 0.8; the rewards here are of order 0.01 to 1 per step).
        weight: Weight of the large-margin loss beside the TD losses.
        batch_size: Demonstrator transitions in every update (and pre-training step).
        pretrain_steps: Gradient steps on the demonstrations alone before training.
    """

    margin: float = 0.8
    weight: float = 1.0
    batch_size: int = 32
    pretrain_steps: int = 5_000

    def __post_init__(self) -> None:
        for name in ("margin", "weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                np.isfinite(value) and value >= 0
            ):
                raise ValueError(f"demo.{name} must be a finite number >= 0, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"demo.batch_size must be an integer >= 1, got {self.batch_size!r}")
        if isinstance(self.pretrain_steps, bool) or not isinstance(self.pretrain_steps, int) \
                or self.pretrain_steps < 0:
            raise ValueError(
                f"demo.pretrain_steps must be an integer >= 0, got {self.pretrain_steps!r}")
