"""The policy protocol, the simple policies, the rule-based engine as a policy, evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from control.engine import EngineConfig, HealingEngine
from control.kpi import compute_kpis
from control.safety import SafetyConfig, SimulatedOperator
from envs.spaces import action_table, admissible_mask, n_services_of, symptom_rules
from sim.twin import Twin


@runtime_checkable
class Policy(Protocol):
    """What every healing policy offers, in stable-baselines3's shape.

    ``predict`` maps an observation vector to an action index of the env's action table;
    ``state`` and ``episode_start`` are for recurrent policies and pass through otherwise.
    """

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Action index (an integer array) for ``observation``, and the next state."""
        ...


class NoopPolicy:
    """Never acts: the do-nothing baseline."""

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Always the no-op (index 0)."""
        return np.zeros((), dtype=np.int64), state


class RandomPolicy:
    """Uniform over the actions, or over those an ``action_mask`` allows.

    Args:
        n_actions: Size of the discrete action space.
        seed: Seed of its own generator.
        act_prob: Probability of acting at all in a step (else the no-op); a uniformly
            random action every 10 s would be a denial-of-service, not a baseline.
    """

    def __init__(self, n_actions: int, seed: int = 0, act_prob: float = 0.05) -> None:
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        if not 0.0 <= act_prob <= 1.0:
            raise ValueError(f"act_prob must lie in [0, 1], got {act_prob}")
        self.n_actions = n_actions
        self.act_prob = act_prob
        self.rng = np.random.default_rng(seed)
        self.mask: np.ndarray | None = None

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """A random action (the no-op with probability ``1 - act_prob``)."""
        if self.rng.random() >= self.act_prob:
            return np.zeros((), dtype=np.int64), state
        allowed = np.flatnonzero(self.mask) if self.mask is not None else None
        if allowed is None or allowed.size == 0:
            return np.asarray(self.rng.integers(self.n_actions), dtype=np.int64), state
        return np.asarray(self.rng.choice(allowed), dtype=np.int64), state


SYMPTOM_PRIORITY: tuple[str, ...] = (
    "scale_out",
    "repair_switch",
    "repair_link",
    "cold_migrate",
    "config_rollback",
    "restart_instance",
    "add_memory",
    "rolling_patch",
    "evict_noisy_neighbour",
    "replace_fan",
    "repair_host",
)
"""Action kinds :class:`SymptomPolicy` takes, most urgent first: capacity under load, then
what takes many replicas down at once (a rack's switch, a link, replicas stranded on a dead
VM or host, a bad configuration on every replica) before one replica's restart, then
memory, patches and noisy neighbours, and last the repairs whose symptom stays while they
run (a fan's swap, 15 minutes; a host's repair, hours), so that a stateless policy retrying
them does not block everything ranked below. Left out: ``scale_in`` (capacity handed back
under load is the costliest mistake a healing policy makes), ``shed_load`` /
``stop_shedding`` (refusing requests is itself an outage) and ``clear_cache``
(``add_memory`` answers the same symptom without a cold cache). The order was set by
reasoning about root causes and checked on seeds 100-109 of six scenarios, apart from the
evaluation seeds (0-19)."""


class SymptomPolicy:
    """The first admissible action in :data:`SYMPTOM_PRIORITY` order, over the env's own table.

    A hand-written baseline that acts through the same action table and admissible mask
    (:func:`envs.spaces.admissible_mask`) as the DQN: of the admissible actions it takes
    the kind listed first, and among services the one listed first in the layout; when
    nothing in the list is admissible, the no-op. ``mask``, when set (the env's
    ``info["action_mask"]``, as :func:`run_episode` does), further limits it to entries
    that have a target now: ``repair_switch`` is admissible whenever an instance is
    unhealthy, but only a cut-off rack gives it one. It is also the DQN's demonstrator
    (:mod:`agents.demonstrations`).

    With ``hold_steps`` > 0 its recurrent state (the ``state`` of ``predict``) holds when
    each action was last taken: an action taken less than ``hold_steps`` steps ago is
    passed over, as the safety gate's per-target cooldown would refuse it again, so that a
    repair in progress (a host for hours, a fan for 15 minutes), whose symptom stays, does
    not block every action ranked below it. Off by default: a demonstrator that holds is
    not a function of the observation, and a DQN imitating one learns mostly the no-ops
    of the held steps (in a test, 6% of the acting steps imitated against 100% without).

    Args:
        obs_dim: Length of the env's observation vector (fixes the number of services).
        priority: Action kinds to take, most urgent first.
        hold_steps: Steps an action is passed over after it was taken (0: none; 12 control
            intervals of 10 s match the gate's default 120 s cooldown).

    Raises:
        ValueError: ``obs_dim`` fits no layout, ``priority`` names an unknown kind, or
            ``hold_steps`` < 0.
    """

    def __init__(
        self, obs_dim: int, priority: Sequence[str] = SYMPTOM_PRIORITY, hold_steps: int = 0
    ) -> None:
        if isinstance(hold_steps, bool) or not isinstance(hold_steps, int) or hold_steps < 0:
            raise ValueError(f"hold_steps must be an integer >= 0, got {hold_steps!r}")
        self.hold_steps = hold_steps
        n_services = n_services_of(obs_dim)
        self.rules = symptom_rules(n_services)
        kinds = [entry.kind for entry in action_table(n_services)]
        unknown = sorted(set(priority) - set(kinds) - {"noop"})
        if unknown:
            raise ValueError(f"unknown action kinds in priority: {unknown}")
        rank = {kind: i for i, kind in enumerate(priority)}
        # one sort key per action: (rank of its kind, index); unlisted kinds never chosen
        big = len(kinds) * (len(priority) + 1)
        self._key = np.array(
            [rank[k] * len(kinds) + a if k in rank else big for a, k in enumerate(kinds)],
            dtype=np.int64,
        )
        self._big = big
        self.obs_dim = int(obs_dim)
        self.mask: np.ndarray | None = None

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The admissible action of the most urgent kind (index 0, the no-op, if none).

        For a single observation, ``mask`` applies and ``state`` (None or what the previous
        call returned; reset where ``episode_start`` is true) passes over the actions held
        since they were taken; the new state is returned. A batch is answered without
        either, and its state is returned unchanged.
        """
        obs = np.asarray(observation, dtype=np.float32)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observation of shape {obs.shape}: expected ({self.obs_dim},) "
                             f"or (batch, {self.obs_dim})")
        allowed = admissible_mask(obs.reshape(-1, self.obs_dim), self.rules)
        if obs.ndim != 1:
            return self._choose(allowed), state
        if self.mask is not None:
            if np.shape(self.mask) != (self._key.size,):
                raise ValueError(f"mask of shape {np.shape(self.mask)}: expected "
                                 f"({self._key.size},), one entry per action")
            allowed &= np.asarray(self.mask, dtype=bool)
        fresh = state is None or (episode_start is not None and bool(np.any(episode_start)))
        if fresh:
            last = np.full(self._key.size, np.iinfo(np.int64).min // 2, dtype=np.int64)
            step = 0
        else:
            assert state is not None
            last, step = state[0].copy(), int(state[1])
            allowed[0] &= step - last >= self.hold_steps
        action = int(self._choose(allowed)[0])
        if action:
            last[action] = step
        new_state = (last, np.asarray(step + 1, dtype=np.int64))
        return np.asarray(action, dtype=np.int64), new_state

    def _choose(self, allowed: np.ndarray) -> np.ndarray:
        """Per row of ``allowed`` (batch, actions): the allowed action of least key, else 0."""
        keys = np.where(allowed, self._key, self._big)
        return np.where(keys.min(axis=1) < self._big, keys.argmin(axis=1), 0).astype(np.int64)


class RulePolicy:
    """The control plane's rule-based :class:`control.engine.HealingEngine` as a policy.

    The engine heals the env's plant itself: its runbooks aim at concrete instances and
    hosts, outside the env's aggregate action table, and every action passes its own safety
    gate. ``predict`` runs one engine step at the plant's current time and answers the
    no-op, so the env only advances time; the env charges the engine's actions like its own.

    Args:
        plant_of: Returns the plant the env currently runs (a fresh twin per episode).
        safety: The engine's safety controls.
        engine: The engine's timing and thresholds.
    """

    def __init__(
        self,
        plant_of: Callable[[], Twin],
        safety: SafetyConfig | None = None,
        engine: EngineConfig | None = None,
    ) -> None:
        self.plant_of = plant_of
        self.safety = safety or SafetyConfig()
        self.engine_config = engine or EngineConfig()
        self.engine: HealingEngine | None = None

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """One engine step on the current plant; the env action is the no-op."""
        plant = self.plant_of()
        if self.engine is None or self.engine.plant is not plant:
            operator = SimulatedOperator(120.0, 0.95, plant.rng_for("fork", 7_000_001))
            self.engine = HealingEngine(plant, self.safety, operator, self.engine_config)
        self.engine.step()
        return np.zeros((), dtype=np.int64), state


@dataclass(frozen=True, slots=True)
class EpisodeResult:
    """One evaluated episode: its seed, return, steps and the KPIs of its event log."""

    seed: int
    episode_return: float
    steps: int
    kpis: dict[str, float]


@dataclass(frozen=True, slots=True)
class Step:
    """One env step of an episode: the observation acted on, the action and what followed."""

    observation: np.ndarray
    action: int
    reward: float
    next_observation: np.ndarray
    terminated: bool
    truncated: bool


def play(
    policy: Policy, env: Any, seed: int, *, deterministic: bool = True
) -> Iterator[Step]:
    """Run one episode of ``env`` under ``policy``, reset with ``seed``, step by step.

    The policy's recurrent ``state`` is passed from step to step, with ``episode_start``
    true on the first; a policy with a ``mask`` attribute (:class:`RandomPolicy`,
    :class:`SymptomPolicy`) is given the env's ``info["action_mask"]`` before each step.
    """
    obs, info = env.reset(seed=seed)
    state: tuple[np.ndarray, ...] | None = None
    first, done = True, False
    while not done:
        if hasattr(policy, "mask"):
            policy.mask = info.get("action_mask")
        action, state = policy.predict(
            obs, state=state, episode_start=np.array([first]), deterministic=deterministic
        )
        a = int(np.asarray(action).reshape(-1)[0])
        nxt, reward, terminated, truncated, info = env.step(a)
        yield Step(obs, a, float(reward), nxt, bool(terminated), bool(truncated))
        obs, first, done = nxt, False, terminated or truncated


def run_episode(
    policy: Policy, env: Any, seed: int, *, deterministic: bool = True,
    on_step: Callable[[np.ndarray, int], None] | None = None,
) -> EpisodeResult:
    """Run one episode of ``env`` (a Gymnasium env over the twin) under ``policy``.

    Steps as :func:`play`. ``on_step`` receives every observation and the action chosen
    for it.
    """
    total, steps = 0.0, 0
    for step in play(policy, env, seed, deterministic=deterministic):
        if on_step is not None:
            on_step(step.observation, step.action)
        total += step.reward
        steps += 1
    twin: Twin = env.unwrapped.twin
    kpis = compute_kpis(twin.log.since(0))
    return EpisodeResult(seed, total, steps, kpis)


def evaluate(
    policy: Policy, env: Any, seeds: Sequence[int], *, deterministic: bool = True
) -> list[EpisodeResult]:
    """One episode per seed, in order."""
    return [run_episode(policy, env, s, deterministic=deterministic) for s in seeds]
