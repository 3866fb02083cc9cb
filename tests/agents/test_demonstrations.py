"""The symptom-priority policy, demonstrations and DQN learning from them."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.buffers import NStepReplayBuffer

from agents import demonstrations
from agents.base import SYMPTOM_PRIORITY, SymptomPolicy
from agents.demonstrations import Demonstrations, DemoParams, n_step_targets
from agents.dqn import DqnParams, DqnPolicy, MaskedDQN, make_dqn
from envs import ENV_IDS
from envs.spaces import SERVICE_ACTIONS, action_table, admissible_mask, symptom_rules

HOSTS = 8


def _env(scenario: str = "performance_degradation", steps: int = 240) -> gym.Env:
    return gym.make(ENV_IDS[scenario], hosts=HOSTS, max_episode_steps=steps)


def test_symptom_policy_takes_the_most_urgent_admissible_kind() -> None:
    """Over random in-bounds observations: admissible, of the best-ranked kind, else no-op."""
    env = _env()
    dim = int(env.observation_space.shape[0])
    policy = SymptomPolicy(dim)
    n_s = len(env.unwrapped.layout.service_names)
    rules, table = symptom_rules(n_s), action_table(n_s)
    low, high = env.observation_space.low, env.observation_space.high
    batch = np.random.default_rng(3).uniform(low, high, (2_000, dim)).astype(np.float32)
    chosen = policy.predict(batch)[0]
    mask = admissible_mask(batch, rules)
    rank = {k: i for i, k in enumerate(SYMPTOM_PRIORITY)}
    for obs_mask, a in zip(mask, chosen, strict=True):
        listed = [b for b in np.flatnonzero(obs_mask) if table[b].kind in rank]
        best = min(listed, key=lambda b: (rank[table[b].kind], b)) if listed else 0
        assert a == best
    # one observation gives a scalar action, the same as in the batch
    assert policy.predict(batch[5])[0].shape == ()
    assert int(policy.predict(batch[5])[0]) == chosen[5]
    # a healthy cluster admits only the no-op; a replica down on service 2 gets a restart;
    # service 1 loaded as well gets its scale-out first
    obs, _ = env.reset(seed=0)
    assert int(policy.predict(obs)[0]) == 0
    names = env.unwrapped.layout.feature_names
    sick = obs.copy()
    sick[names.index(f"{env.unwrapped.layout.service_names[2]}.ready_share")] = 0.5
    restart_2 = 1 + 2 * len(SERVICE_ACTIONS)
    assert table[restart_2].kind == "restart_instance" and table[restart_2].service == 2
    assert int(policy.predict(sick)[0]) == restart_2
    sick[names.index(f"{env.unwrapped.layout.service_names[1]}.cpu_util_mean")] = 0.9
    scale_out_1 = int(policy.predict(sick)[0])
    assert table[scale_out_1].kind == "scale_out" and table[scale_out_1].service == 1
    # an unhealthy instance makes repair_switch admissible; without a cut-off rack the
    # env's mask gives it no target, and the policy passes to the next kind
    sick[names.index("unhealthy_share")] = 0.1
    sick[names.index(f"{env.unwrapped.layout.service_names[1]}.cpu_util_mean")] = 0.3
    switch = int(policy.predict(sick)[0])
    assert table[switch].kind == "repair_switch"
    policy.mask = np.ones(len(table), dtype=bool)
    policy.mask[switch] = False
    assert int(policy.predict(sick)[0]) == restart_2
    policy.mask = None
    # by default it holds nothing; with hold_steps, threaded through its state, an action
    # taken is passed over for that many steps
    state = None
    for step in range(3):
        action, state = policy.predict(sick, state=state, episode_start=np.array([step == 0]))
        assert int(action) == switch
    holding = SymptomPolicy(dim, hold_steps=12)
    state = None
    taken = []
    for step in range(15):
        action, state = holding.predict(sick, state=state, episode_start=np.array([step == 0]))
        taken.append(int(action))
    assert taken[0] == switch and taken[12] == switch and switch not in taken[1:12]
    assert taken[1] == restart_2 and taken[2] != restart_2
    assert int(holding.predict(sick, state=state, episode_start=np.array([True]))[0]) == switch
    with pytest.raises(ValueError, match="hold_steps"):
        SymptomPolicy(dim, hold_steps=-1)
    with pytest.raises(ValueError, match="observation of shape"):
        policy.predict(np.zeros(dim + 1, np.float32))
    policy.mask = np.ones(3, dtype=bool)
    with pytest.raises(ValueError, match="mask of shape"):
        policy.predict(obs)
    policy.mask = None
    with pytest.raises(ValueError, match="unknown action kinds"):
        SymptomPolicy(dim, priority=("scale_out", "reboot_the_world"))


def test_n_step_targets_equal_stable_baselines3s_n_step_buffer() -> None:
    """Returns, bootstrap offsets and discounts as NStepReplayBuffer samples them."""
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=11).astype(np.float32)
    gamma, n = 0.9, 3
    ret, offsets, dones, disc = n_step_targets(rewards, False, n, gamma)
    space = gym.spaces.Box(-1e6, 1e6, (1,), np.float32)
    buf = NStepReplayBuffer(64, space, gym.spaces.Discrete(2), n_steps=n, gamma=gamma,
                            handle_timeout_termination=True)
    for t, r in enumerate(rewards):
        last = t == len(rewards) - 1
        buf.add(np.array([[t]], np.float32), np.array([[t + 1]], np.float32), np.array([[0]]),
                np.array([r]), np.array([last]), [{"TimeLimit.truncated": last}])
    sample = buf._get_samples(np.arange(len(rewards)))
    np.testing.assert_allclose(ret, sample.rewards.numpy().ravel(), rtol=1e-6)
    np.testing.assert_array_equal(offsets, sample.next_observations.numpy().ravel())
    np.testing.assert_array_equal(dones, sample.dones.numpy().ravel())
    np.testing.assert_allclose(disc, sample.discounts.numpy().ravel(), rtol=1e-6)
    _, _, term_dones, _ = n_step_targets(rewards, True, n, gamma)
    assert term_dones[-n:].tolist() == [1.0] * n and not term_dones[:-n].any()


def test_demonstrations_are_deterministic_and_admissible() -> None:
    """Same seeds, same transitions; every demonstrated action admissible where taken."""
    env = _env(steps=180)
    policy = SymptomPolicy(int(env.observation_space.shape[0]))
    a = demonstrations.collect(policy, env, [11, 12], n_steps=3, gamma=0.95)
    b = demonstrations.collect(policy, env, [11, 12], n_steps=3, gamma=0.95)
    assert len(a) == 360 and a.episodes == 2
    for name in ("observations", "actions", "returns", "next_observations", "discounts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    rules = symptom_rules(len(env.unwrapped.layout.service_names))
    assert admissible_mask(a.observations, rules)[np.arange(len(a)), a.actions].all()
    with pytest.raises(ValueError, match="at least one episode"):
        demonstrations.collect(policy, env, [], n_steps=3, gamma=0.95)


def _demos_with_actions(env: gym.Env) -> Demonstrations:
    """Demonstrations in which the policy acts, on several services: mixed faults at 60x."""
    from experiments.rl_config import make_env

    denv = make_env("mixed", HOSTS, 10.0, 0.5, fault_rate_scale=60.0)
    assert denv.observation_space.shape == env.observation_space.shape
    policy = SymptomPolicy(int(denv.observation_space.shape[0]))
    demos = demonstrations.collect(policy, denv, list(range(6)), n_steps=3, gamma=0.95)
    assert (demos.actions != 0).sum() >= 100 and len(demos.action_counts()) >= 4, \
        demos.action_counts()
    return demos


def test_pretraining_on_demonstrations_imitates_the_demonstrator(tmp_path: Path) -> None:
    """After pretraining, the greedy action is the demonstrator's on most demonstrations.

    An untrained network agrees far less often; the demonstrations are not saved with the
    model, and a model loaded back acts the same.
    """
    env = _env()
    demos = _demos_with_actions(env)
    acting = demos.actions != 0
    model = make_dqn(env, DqnParams(), seed=0)
    assert isinstance(model, MaskedDQN)
    before = model.predict(demos.observations, deterministic=True)[0]
    model.set_demonstrations(demos, DemoParams(batch_size=64), seed=0)
    losses = model.pretrain(1_500)
    after = model.predict(demos.observations, deterministic=True)[0]
    agree_before = float((before == demos.actions)[acting].mean())
    agree_after = float((after == demos.actions)[acting].mean())
    assert agree_after >= 0.9 and agree_before < 0.5, (agree_before, agree_after)
    assert float((after == demos.actions).mean()) >= 0.9
    assert np.mean(losses[-100:]) < np.mean(losses[:100])
    path = tmp_path / "m.zip"
    model.save(path)
    loaded = DqnPolicy.load(str(path))
    assert loaded.model._demos is None
    np.testing.assert_array_equal(loaded.predict(demos.observations)[0], after)


def test_training_with_demonstrations_is_deterministic() -> None:
    """Same seed, same weights after pretraining and a short training with demo batches."""
    env = _env(steps=120)
    demos = _demos_with_actions(env)

    def run() -> list[np.ndarray]:
        model = make_dqn(env, DqnParams(learning_starts=50), seed=4)
        model.set_demonstrations(demos, DemoParams(pretrain_steps=50), seed=4)
        model.pretrain(50)
        model.learn(300)
        return [p.detach().clone().numpy() for p in model.q_net.parameters()]

    for x, y in zip(run(), run(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_bad_demonstrations_are_refused() -> None:
    """Wrong shape, an out-of-range or inadmissible action, bad params: clear errors."""
    env = _env()
    model = make_dqn(env, DqnParams(), seed=0)
    dim = int(env.observation_space.shape[0])
    obs, _ = env.reset(seed=0)  # healthy: only the no-op is admissible

    def demos(observations: np.ndarray, action: int) -> Demonstrations:
        n = len(observations)
        return Demonstrations(observations, np.full(n, action, np.int64), np.zeros(n, np.float32),
                              observations, np.zeros(n, np.float32), np.ones(n, np.float32), 1)

    with pytest.raises(ValueError, match="shape"):
        model.set_demonstrations(demos(np.zeros((3, dim + 1), np.float32), 0), DemoParams())
    with pytest.raises(ValueError, match="must lie in"):
        model.set_demonstrations(demos(obs[None], 10_000), DemoParams())
    with pytest.raises(ValueError, match="not admissible"):
        model.set_demonstrations(demos(obs[None], 1), DemoParams())
    with pytest.raises(ValueError, match="needs demonstrations"):
        model.pretrain(10)
    with pytest.raises(ValueError, match="no transitions"):
        demos(np.zeros((0, dim), np.float32), 0)
    for bad in ({"margin": -1.0}, {"weight": float("nan")}, {"batch_size": 0},
                {"pretrain_steps": -5}):
        with pytest.raises(ValueError, match="demo\\."):
            DemoParams(**bad)  # type: ignore[arg-type]
