"""The DQN healing agent: stable-baselines3's DQN with scaling and action masking in the network.

The env's observations are raw units within known bounds (:mod:`envs.spaces`);
:class:`BoundsScaler` maps them to [0, 1] as the first layer of the Q-network, so the scaling
travels with the network into an export and no separate normaliser must be kept in step.

:class:`MaskedDQN` learns only over admissible actions (:func:`envs.spaces.symptom_rules`:
an action is admissible when the observation shows a symptom it addresses; the no-op always
is): exploration, warm-up included, samples uniformly among them, and the greedy action and
the target's argmax ignore the others (Double DQN by default: the online network picks the
next action, the target network values it). The mask is computed from the observation by
:class:`AdmissibleActions` inside the Q-network, so the exported graph applies the same one.
Given demonstrations (:meth:`MaskedDQN.set_demonstrations`, :mod:`agents.demonstrations`)
it pre-trains on them and adds a batch of them, with a large-margin loss, to every update.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import TrainFreq
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch.nn import functional as F
from tqdm import tqdm

from agents.demonstrations import Demonstrations, DemoParams
from agents.dqn_params import DqnParams
from envs.selfheal import SelfHealEnv
from envs.spaces import SymptomRules, admissible_mask, n_services_of, symptom_rules
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


class AdmissibleActions(torch.nn.Module):
    """Observation batch -> bool mask (batch, actions) of :class:`envs.spaces.SymptomRules`."""

    def __init__(self, rules: SymptomRules) -> None:
        super().__init__()
        self.register_buffer("feature", torch.as_tensor(rules.feature))
        self.register_buffer("sign", torch.as_tensor(rules.sign))
        self.register_buffer("signed_threshold", torch.as_tensor(rules.signed_threshold))
        self.register_buffer("symptom", torch.as_tensor(rules.symptom))
        self.register_buffer("requires", torch.as_tensor(rules.requires))
        self.register_buffer("free", torch.as_tensor(~rules.has_symptom))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """The mask, as :func:`envs.spaces.admissible_mask` computes it (exact: x * ±1)."""
        feature: torch.Tensor = self.feature  # type: ignore[assignment]
        sign: torch.Tensor = self.sign  # type: ignore[assignment]
        threshold: torch.Tensor = self.signed_threshold  # type: ignore[assignment]
        symptom: torch.Tensor = self.symptom  # type: ignore[assignment]
        requires: torch.Tensor = self.requires  # type: ignore[assignment]
        free: torch.Tensor = self.free  # type: ignore[assignment]
        held = observations.float()[:, feature] * sign > threshold
        any_symptom = torch.matmul(held.float(), symptom) > 0.5
        unmet = torch.matmul((~held).float(), requires) > 0.5
        return (any_symptom | free) & ~unmet


def masked_argmax(q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Index of the largest Q-value among the admissible actions (all when ``mask`` is None)."""
    if mask is not None:
        q = torch.where(mask, q, torch.full_like(q, torch.finfo(q.dtype).min))
    return torch.argmax(q, dim=1)


class MaskedQNetwork(QNetwork):
    """stable-baselines3's Q-network whose greedy action is taken over the admissible ones."""

    def __init__(self, *args: Any, action_mask: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action_mask = action_mask
        self.admissible: AdmissibleActions | None = None
        if action_mask:
            shape = self.observation_space.shape
            if shape is None or len(shape) != 1:
                raise ConfigError(f"action masking needs a flat observation, got {shape}")
            self.admissible = AdmissibleActions(symptom_rules(n_services_of(shape[0])))

    def mask(self, observations: torch.Tensor) -> torch.Tensor | None:
        """Admissible actions of a batch, or None without masking."""
        return None if self.admissible is None else self.admissible(observations)

    def _predict(
        self, observation: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = True
    ) -> torch.Tensor:
        assert isinstance(observation, torch.Tensor), "a flat observation is expected"
        return masked_argmax(self(observation), self.mask(observation)).reshape(-1)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "action_mask": self.action_mask}


class MaskedDqnPolicy(DQNPolicy):
    """``DQNPolicy`` building :class:`MaskedQNetwork`; ``action_mask=False`` disables masking."""

    def __init__(self, *args: Any, action_mask: bool = True, **kwargs: Any) -> None:
        self.action_mask = action_mask
        super().__init__(*args, **kwargs)

    def make_q_net(self) -> QNetwork:
        """A :class:`MaskedQNetwork` with its own features extractor."""
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return MaskedQNetwork(**net_args, action_mask=self.action_mask).to(self.device)

    def set_training_mode(self, mode: bool) -> None:
        """Switch the Q-network between train and eval mode, as stable-baselines3 does, cheaply.

        stable-baselines3 calls this before every batch of actions and every update, and
        ``Module.train`` walks the Q-network's sub-modules each time (about a tenth of a
        training step). Here a policy already in ``mode`` is left as it is, and a switch sets
        the ``training`` flag of the same modules ``Module.train`` would (the Q-network's,
        listed once: its structure is fixed) without the walk. The target network stays in
        eval mode as stable-baselines3 leaves it.
        """
        if self.training == mode and self.q_net.training == mode:
            return
        if not isinstance(mode, bool):
            raise ValueError(f"training mode must be a bool, got {mode!r}")
        modules: tuple[torch.nn.Module, ...] | None = self.__dict__.get("_q_net_modules")
        if modules is None:
            modules = tuple(self.q_net.modules())
            self.__dict__["_q_net_modules"] = modules
        for module in modules:
            module.__dict__["training"] = mode
        self.__dict__["training"] = mode

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "action_mask": self.action_mask}


class SelfHealVecEnv(DummyVecEnv):
    """``DummyVecEnv`` without its per-step deep copies, for :class:`envs.selfheal.SelfHealEnv`.

    ``DummyVecEnv`` deep-copies its observation buffer and its list of info dicts on every
    step, in case an env hands out the same objects again; that is about 60 µs of a
    training step of about 1 ms. ``SelfHealEnv`` returns a new info dict (and mask) every
    step, so the list is copied shallowly and the observation buffer with ``ndarray.copy``:
    what the caller receives is the same, and is not touched again by the vector env.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        if not isinstance(env.unwrapped, SelfHealEnv):
            raise TypeError(f"SelfHealVecEnv wraps a SelfHealEnv, got {env.unwrapped!r}")
        super().__init__([lambda: env])

    def step_wait(self) -> VecEnvStepReturn:
        """``DummyVecEnv.step_wait`` returning fresh copies without ``copy.deepcopy``."""
        for i, env in enumerate(self.envs):
            obs, self.buf_rews[i], terminated, truncated, info = env.step(self.actions[i])
            self.buf_dones[i] = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if self.buf_dones[i]:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            self.buf_infos[i] = info
            self._save_obs(i, obs)
        return (self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones),
                list(self.buf_infos))

    def _obs_from_buf(self) -> np.ndarray:
        (buf,) = self.buf_obs.values()  # a Box space: one buffer
        return buf.copy()


class MaskedDQN(DQN):
    """DQN over admissible actions, Double DQN target, and a logger that writes nothing.

    Exploration (warm-up and epsilon-greedy) draws its coin and samples uniformly from the
    admissible actions with the action space's generator (seeded with the model); greedy
    actions and the target's next action are argmaxes over them. A model whose policy has no
    mask (a plain ``DQNPolicy``, or ``action_mask=False``) explores and acts over every action
    as stable-baselines3 does.
    stable-baselines3 would otherwise create a ``/tmp/SB3-<date>`` folder for its default
    logger; training curves are kept by the caller instead.
    """

    policy_aliases = {"MlpPolicy": MaskedDqnPolicy}  # noqa: RUF012

    def __init__(self, *args: Any, double_q: bool = True, **kwargs: Any) -> None:
        self.double_q = double_q
        self._demos: dict[str, torch.Tensor] | None = None
        self._demo_params = DemoParams()
        self._demo_rng = np.random.default_rng(0)
        super().__init__(*args, **kwargs)
        self.set_logger(Logger(folder=None, output_formats=[]))

    def _excluded_save_params(self) -> list[str]:
        # demonstrations are training data, rebuilt by the caller (deterministically) on resume;
        # the greedy path's view of the Q-network is rebuilt on first use
        return [*super()._excluded_save_params(), "_demos", "_demo_params", "_demo_rng",
                "_plain_plan"]

    def set_demonstrations(
        self, demos: Demonstrations, params: DemoParams, seed: int = 0
    ) -> None:
        """Keep ``demos`` beside the replay buffer: every update adds a batch of them.

        Each update then also takes ``params.batch_size`` demonstrator transitions, with
        their n-step TD loss (the same target as the replay batch's) plus ``params.weight``
        times the large-margin loss (:mod:`agents.demonstrations`). Batches are drawn with a
        generator seeded by ``seed``.

        Raises:
            ValueError: the observations do not fit the model's space, an action is out of
                range, or (with the action mask) a demonstrated action is not admissible in
                its observation, so the masked learner could never take it.
        """
        shape = self.observation_space.shape
        assert shape is not None
        if demos.observations.shape[1:] != shape:
            raise ValueError(f"demonstration observations have shape "
                             f"{demos.observations.shape[1:]}, the model expects {shape}")
        n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
        if demos.actions.min() < 0 or demos.actions.max() >= n_actions:
            raise ValueError(f"demonstrated actions must lie in [0, {n_actions})")
        rules = self._rules()
        if rules is not None:
            ok = admissible_mask(demos.observations, rules)[np.arange(len(demos)), demos.actions]
            if not ok.all():
                raise ValueError(f"{int((~ok).sum())} of {len(demos)} demonstrated actions are "
                                 "not admissible in their observation")
        as_t = functools.partial(torch.as_tensor, device=self.device)
        self._demos = {
            "observations": as_t(demos.observations, dtype=torch.float32),
            "actions": as_t(demos.actions, dtype=torch.int64).reshape(-1, 1),
            "returns": as_t(demos.returns, dtype=torch.float32).reshape(-1, 1),
            "next_observations": as_t(demos.next_observations, dtype=torch.float32),
            "dones": as_t(demos.dones, dtype=torch.float32).reshape(-1, 1),
            "discounts": as_t(demos.discounts, dtype=torch.float32).reshape(-1, 1),
        }
        self._demo_params = params
        self._demo_rng = np.random.default_rng(seed)

    def _td_target(self, next_obs: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
                   discounts: torch.Tensor | float) -> torch.Tensor:
        """``r + (1 - done) * discount * Q_target(s', a*)``, ``a*`` admissible (Double DQN)."""
        q_net: QNetwork = self.q_net
        with torch.no_grad():
            target_q = self.q_net_target(next_obs)
            chooser = q_net(next_obs) if self.double_q else target_q
            mask = None
            if isinstance(q_net, MaskedQNetwork):
                rules = self._rules()
                if rules is not None and next_obs.device.type == "cpu":
                    # The same mask as the network's (exact: 0/1 products), without torch's
                    # per-operation overhead.
                    mask = torch.from_numpy(admissible_mask(next_obs.numpy(), rules))
                else:
                    mask = q_net.mask(next_obs)
            best = masked_argmax(chooser, mask).reshape(-1, 1)
            next_q = torch.gather(target_q, dim=1, index=best)
            return rewards + (1 - dones) * discounts * next_q

    def _demo_loss(self) -> torch.Tensor:
        """TD loss plus ``weight`` x large-margin loss on a batch of demonstrations."""
        d = self._demos
        assert d is not None
        p = self._demo_params
        idx = torch.as_tensor(
            self._demo_rng.integers(len(d["actions"]), size=p.batch_size), device=self.device
        )
        obs, act = d["observations"][idx], d["actions"][idx]
        target = self._td_target(d["next_observations"][idx], d["returns"][idx],
                                 d["dones"][idx], d["discounts"][idx])
        q_all = self.q_net(obs)
        q_demo = torch.gather(q_all, dim=1, index=act)
        margins = torch.full_like(q_all, p.margin).scatter_(1, act, 0.0)
        augmented = q_all + margins
        q_net = self.q_net
        mask = q_net.mask(obs) if isinstance(q_net, MaskedQNetwork) else None
        if mask is not None:
            augmented = torch.where(mask, augmented, torch.full_like(augmented, -torch.inf))
        large_margin = (augmented.max(dim=1, keepdim=True).values - q_demo).mean()
        return F.smooth_l1_loss(q_demo, target) + p.weight * large_margin

    def pretrain(self, steps: int, *, progress: bool = False) -> list[float]:
        """``steps`` gradient steps on the demonstrations alone, before any env step.

        The target network is copied every ``target_update_interval / train_freq``
        gradient steps, the rate at which training copies it. Returns the losses.

        Raises:
            ValueError: no demonstrations were set, or ``steps`` < 0.
        """
        if self._demos is None:
            raise ValueError("pretrain needs demonstrations (set_demonstrations)")
        if steps < 0:
            raise ValueError(f"pretrain steps must be >= 0, got {steps}")
        self.policy.set_training_mode(True)
        every = max(1, self.target_update_interval // max(1, self._train_freq_steps()))
        losses = []
        for i in tqdm(range(steps), desc="pretrain on demonstrations", unit="step",
                      disable=not progress, mininterval=1.0):
            loss = self._demo_loss()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            if (i + 1) % every == 0:
                polyak_update(self.q_net.parameters(), self.q_net_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
        self.policy.set_training_mode(False)
        return losses

    def _train_freq_steps(self) -> int:
        freq = self.train_freq  # a TrainFreq once the model is set up
        assert isinstance(freq, TrainFreq)
        return int(freq.frequency)

    @staticmethod
    def _wrap_env(env: Any, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """stable-baselines3's wrapping, with :class:`SelfHealVecEnv` for a single SelfHealEnv."""
        if not isinstance(env, VecEnv) and isinstance(getattr(env, "unwrapped", None), SelfHealEnv):
            if monitor_wrapper and not is_wrapped(env, Monitor):
                env = Monitor(env)
            env = SelfHealVecEnv(env)
        return DQN._wrap_env(env, verbose, monitor_wrapper)

    def _setup_model(self) -> None:
        # A loaded model brings its n-step buffer class and kwargs; stable-baselines3 then warns
        # that ``n_steps`` is ignored although the buffer applies exactly that n.
        with warnings.catch_warnings():
            if (
                self.replay_buffer_class is NStepReplayBuffer
                and (self.replay_buffer_kwargs or {}).get("n_steps") == self.n_steps
            ):
                warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored")
            super()._setup_model()

    def _rules(self) -> SymptomRules | None:
        q_net = getattr(self.policy, "q_net", None)
        if getattr(q_net, "admissible", None) is None:
            return None
        shape = self.observation_space.shape
        assert shape is not None
        return symptom_rules(n_services_of(shape[0]))

    def _explore(self, observation: np.ndarray, rules: SymptomRules) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float32)
        masks = admissible_mask(obs.reshape(-1, obs.shape[-1]), rules).astype(np.int8)
        actions = np.array([self.action_space.sample(mask=m) for m in masks], dtype=np.int64)
        return actions if obs.ndim == 2 else actions[0]

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Epsilon-greedy over the admissible actions (greedy when ``deterministic``)."""
        rules = self._rules()
        if rules is None:
            return super().predict(observation, state, episode_start, deterministic)
        explore = float(self.action_space.np_random.random())  # seeded by set_random_seed
        if not deterministic and explore < self.exploration_rate:
            assert isinstance(observation, np.ndarray)
            return self._explore(observation, rules), state
        return self._greedy(observation, rules), state

    def _greedy(
        self, observation: np.ndarray | dict[str, np.ndarray], rules: SymptomRules
    ) -> np.ndarray:
        """The greedy admissible action, as ``policy.predict`` returns it, in half the time.

        One forward pass of the Q-network and the mask from the observation in numpy
        (:func:`envs.spaces.admissible_mask`, equal to :class:`AdmissibleActions`), without
        stable-baselines3's per-call checks and conversions. Shapes other than one
        observation or a batch of them go to ``policy.predict``, which raises its own error.
        """
        obs = np.asarray(observation, dtype=np.float32)
        width = self.observation_space.shape[-1]  # type: ignore[index]
        if not (obs.ndim in (1, 2) and obs.shape[-1] == width):
            actions, _ = self.policy.predict(observation, deterministic=True)
            return actions
        batch = obs.reshape(-1, width)
        self.policy.set_training_mode(False)
        with torch.no_grad():
            x = torch.as_tensor(batch, device=self.device)
            plan = self._plain_layers()
            if plan is None:
                q = self.q_net(x).cpu().numpy()
            else:
                # The Q-network's own operations, called directly: what the modules compute,
                # without their per-call dispatch (a third of a greedy step).
                scaler, layers = plan
                x = (x.float() - scaler["low"]) * scaler["inv_range"]
                for layer in layers:
                    x = F.relu(x) if layer is None else F.linear(x, layer["weight"], layer["bias"])
                q = x.cpu().numpy()
        best = np.where(admissible_mask(batch, rules), q, -np.inf).argmax(axis=1)
        return best if obs.ndim == 2 else best.reshape(())

    def _plain_layers(
        self,
    ) -> tuple[dict[str, Any], list[dict[str, Any] | None]] | None:
        """The default Q-network as plain operations, or None if it is not one.

        The default is :class:`BoundsScaler` then linear layers and ReLUs without hooks.
        Returns the scaler's buffers and, per layer, a linear layer's parameters (the
        modules' own dictionaries, so updates show) or None for a ReLU. The structure is
        read once per Q-network; anything else gives None, and the caller calls the modules.
        """
        q_net = self.q_net
        cached = self.__dict__.get("_plain_plan")
        if cached is None or cached[0] is not q_net:
            plan = None
            if isinstance(q_net.features_extractor, BoundsScaler):
                layers: list[dict[str, Any] | None] = []
                for module in q_net.q_net:
                    if type(module) is torch.nn.Linear:
                        layers.append(module._parameters)
                    elif type(module) is torch.nn.ReLU and not module.inplace:
                        layers.append(None)
                    else:
                        break
                else:
                    plan = (q_net.features_extractor._buffers, layers)
            modules = (q_net, q_net.features_extractor, q_net.q_net, *q_net.q_net)
            cached = (q_net, plan, modules)
            self.__dict__["_plain_plan"] = cached
        if any(m._forward_hooks or m._forward_pre_hooks for m in cached[2]):
            return None
        return cached[1]

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        rules = self._rules()
        if rules is None or self.num_timesteps >= learning_starts:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        assert isinstance(self._last_obs, np.ndarray)
        actions = self._explore(self._last_obs, rules).reshape(n_envs)
        return actions, actions

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """stable-baselines3's update with the next action chosen among admissible ones."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        q_net: QNetwork = self.q_net
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = data.discounts if data.discounts is not None else self.gamma
            target = self._td_target(data.next_observations, data.rewards, data.dones, discounts)
            current = torch.gather(q_net(data.observations), dim=1, index=data.actions.long())
            loss = F.smooth_l1_loss(current, target)
            if self._demos is not None:
                loss = loss + self._demo_loss()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))


def make_dqn(env: Any, params: DqnParams, seed: int, device: str = "cpu") -> MaskedDQN:
    """A fresh DQN on ``env`` with the bounds scaler in front of its Q-network."""
    kwargs = dataclasses.asdict(params)
    net_arch = [int(w) for w in kwargs.pop("net_arch")]
    action_mask = bool(kwargs.pop("action_mask"))
    return MaskedDQN(
        "MlpPolicy",
        env,
        seed=seed,
        device=device,
        verbose=0,
        policy_kwargs={
            "features_extractor_class": BoundsScaler,
            "net_arch": net_arch,
            "action_mask": action_mask,
        },
        **kwargs,
    )


class DqnPolicy:
    """A trained stable-baselines3 DQN behind the :class:`agents.base.Policy` protocol."""

    def __init__(self, model: DQN) -> None:
        self.model = model

    @staticmethod
    def load(path: str, device: str = "cpu") -> DqnPolicy:
        """Load a model saved by ``DQN.save`` (a ``.zip``)."""
        return DqnPolicy(MaskedDQN.load(path, device=device))

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
