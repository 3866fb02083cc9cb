"""Agents: the predict protocol, the rule-based engine as a policy, DQN determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents.base import NoopPolicy, Policy, RandomPolicy, RulePolicy, run_episode
from agents.dqn import BoundsScaler, DqnParams, DqnPolicy, make_dqn
from envs import ENV_IDS
from envs.selfheal import SelfHealEnv
from sim.config import ScriptedFault
from sim.events import ActionRecord
from sim.scenarios import make_config

HOSTS = 20


def test_every_agent_speaks_the_protocol() -> None:
    """No-op, random, rules and DQN are all Policy instances with SB3's predict signature."""
    env = gym.make(ENV_IDS["calm"], hosts=HOSTS)
    model = make_dqn(env, DqnParams(learning_starts=10), seed=0)
    policies = [
        NoopPolicy(),
        RandomPolicy(env.action_space.n, seed=0),
        RulePolicy(lambda: env.unwrapped.twin),
        DqnPolicy(model),
    ]
    obs, _ = env.reset(seed=0)
    for p in policies:
        assert isinstance(p, Policy)
        action, state = p.predict(obs, state=None, episode_start=None, deterministic=True)
        assert state is None
        assert env.action_space.contains(int(action))


def test_random_policy_is_seeded_and_respects_the_mask() -> None:
    """Same seed, same actions; every action it takes is allowed by the mask."""
    mask = np.zeros(10, dtype=bool)
    mask[[0, 3, 7]] = True
    runs = []
    for _ in range(2):
        p = RandomPolicy(10, seed=4, act_prob=1.0)
        p.mask = mask
        runs.append([int(p.predict(np.zeros(3))[0]) for _ in range(50)])
    assert runs[0] == runs[1]
    assert set(runs[0]) <= {0, 3, 7} and len(set(runs[0])) > 1


def test_rule_policy_heals_a_crash_through_the_engine() -> None:
    """The engine, driven by predict, restarts a crashed replica; the env charges its action."""
    base = make_config("calm", HOSTS, tick_s=10.0)
    cfg = dataclasses.replace(base, scripted=(ScriptedFault(25.0, "service_crash", 3),))
    env = gym.wrappers.TimeLimit(SelfHealEnv("calm", hosts=HOSTS, config=cfg), 60)
    policy = RulePolicy(lambda: env.unwrapped.twin)
    result = run_episode(policy, env, seed=0)
    started = [
        r
        for r in env.unwrapped.twin.log.since(0)
        if isinstance(r, ActionRecord) and r.phase == "started"
    ]
    assert any(r.kind == "restart_instance" and r.target == "inst-3" for r in started)
    assert env.unwrapped.twin.observe().inst_ready[3]
    assert result.kpis["actions"] >= 1 and result.steps == 60
    assert result.episode_return < 0


def test_bounds_scaler_maps_bounds_to_unit_interval() -> None:
    """The network's first layer scales low to 0 and high to 1."""
    space = gym.spaces.Box(np.array([0.0, -1.0], np.float32), np.array([2.0, 1.0], np.float32))
    scaler = BoundsScaler(space)
    out = scaler(torch.tensor([[0.0, -1.0], [2.0, 1.0], [1.0, 0.0]]))
    np.testing.assert_allclose(out.numpy(), [[0, 0], [1, 1], [0.5, 0.5]])


def _train(seed: int) -> list[np.ndarray]:
    torch.manual_seed(seed)
    env = gym.make(ENV_IDS["service_crash"], hosts=HOSTS, max_episode_steps=200)
    model = make_dqn(env, DqnParams(learning_starts=100, target_update_interval=50), seed=seed)
    model.learn(500)
    return [p.detach().clone().numpy() for p in model.q_net.parameters()]


def test_dqn_short_training_is_deterministic() -> None:
    """Same seed, same trained weights after a short budget; another seed, other weights."""
    a, b, c = _train(1), _train(1), _train(2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_dqn_defaults_match_the_issue() -> None:
    """Learning rate 1e-3, epsilon falling linearly to 0.1, 10,000 buffer, target every 100."""
    p = DqnParams()
    assert (p.learning_rate, p.exploration_final_eps, p.buffer_size, p.target_update_interval) == (
        1e-3,
        0.1,
        10_000,
        100,
    )


def test_masked_dqn_explores_and_acts_over_admissible_actions_only(tmp_path: Path) -> None:
    """Training and greedy actions are admissible; the logger writes no folder."""
    from envs.spaces import admissible_mask, symptom_rules

    env = gym.make(ENV_IDS["service_crash"], hosts=4, max_episode_steps=200)
    params = DqnParams(learning_starts=100, exploration_fraction=0.5)
    model = make_dqn(env, params, seed=0)
    model.learn(400)
    assert model.logger.output_formats == []
    rules = symptom_rules(len(env.unwrapped.layout.service_names))
    buf = model.replay_buffer
    n = buf.size()
    obs = buf.observations[:n, 0]
    acts = buf.actions[:n, 0, 0].astype(int)
    assert admissible_mask(obs, rules)[np.arange(n), acts].all()
    low, high = env.observation_space.low, env.observation_space.high
    batch = np.random.default_rng(0).uniform(low, high, (500, low.size)).astype(np.float32)
    greedy = model.predict(batch, deterministic=True)[0]
    assert admissible_mask(batch, rules)[np.arange(500), greedy].all()
    path = tmp_path / "m.zip"
    model.save(path)
    loaded = DqnPolicy.load(str(path))
    np.testing.assert_array_equal(loaded.predict(batch)[0], greedy)
    unmasked = make_dqn(env, dataclasses.replace(params, action_mask=False), seed=0)
    assert getattr(unmasked.q_net, "admissible", None) is None


def test_masked_dqn_greedy_path_equals_the_policy_predict() -> None:
    """The fast greedy action is stable-baselines3's ``policy.predict``, batch and single."""
    env = gym.make(ENV_IDS["mixed"], hosts=4, max_episode_steps=200)
    model = make_dqn(env, DqnParams(learning_starts=50), seed=0)
    model.learn(300)
    low, high = env.observation_space.low, env.observation_space.high
    batch = np.random.default_rng(1).uniform(low, high, (400, low.size)).astype(np.float32)
    expected = model.policy.predict(batch, deterministic=True)[0]
    assert len(set(expected.tolist())) > 1
    np.testing.assert_array_equal(model.predict(batch, deterministic=True)[0], expected)
    single = model.predict(batch[7], deterministic=True)[0]
    assert single.shape == () and int(single) == int(expected[7])
    assert not model.policy.training
    model.policy.set_training_mode(True)
    assert model.policy.training and model.q_net.training
    model.policy.set_training_mode(False)
    assert not model.policy.training and not model.q_net.training
    try:
        model.predict(batch[:, :5], deterministic=True)
    except ValueError as err:
        assert "observation shape" in str(err)
    else:
        raise AssertionError("a wrong observation shape must be refused")


def test_masked_dqn_plain_greedy_path_is_the_q_network_bit_for_bit() -> None:
    """The greedy path's direct operations give the modules' Q-values; a hook is honoured."""
    import torch

    env = gym.make(ENV_IDS["mixed"], hosts=4, max_episode_steps=200)
    model = make_dqn(env, DqnParams(learning_starts=50), seed=0)
    model.learn(200)
    plan = model._plain_layers()
    assert plan is not None
    low, high = env.observation_space.low, env.observation_space.high
    batch = np.random.default_rng(2).uniform(low, high, (300, low.size)).astype(np.float32)
    scaler, layers = plan
    with torch.no_grad():
        x = (torch.as_tensor(batch) - scaler["low"]) * scaler["inv_range"]
        for layer in layers:
            x = torch.relu(x) if layer is None else torch.nn.functional.linear(
                x, layer["weight"], layer["bias"])
        expected = model.q_net(torch.as_tensor(batch))
    assert torch.equal(x, expected)
    # After more training the same dictionaries hold the updated parameters.
    model.learn(200, reset_num_timesteps=False)
    assert model._plain_layers() is plan
    seen = []
    handle = model.q_net.register_forward_hook(lambda *args: seen.append(1))
    try:
        assert model._plain_layers() is None
        model.predict(batch[:3], deterministic=True)
        assert seen
    finally:
        handle.remove()
    assert model._plain_layers() is plan


def test_selfheal_vec_env_trains_as_stable_baselines3s_dummy_vec_env() -> None:
    """Same weights as with SB3's own DummyVecEnv; returned arrays and infos are not shared."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.dqn import SelfHealVecEnv

    params = DqnParams(learning_starts=100, target_update_interval=50)

    def weights(wrap: bool) -> tuple[list[np.ndarray], str]:
        env = gym.make(ENV_IDS["mixed"], hosts=HOSTS, max_episode_steps=150)
        given = DummyVecEnv([lambda: Monitor(env)]) if wrap else env
        model = make_dqn(given, params, seed=4)
        model.learn(400)  # crosses two truncations
        return [p.detach().clone().numpy() for p in model.q_net.parameters()], type(
            model.env
        ).__name__

    lean, lean_kind = weights(False)
    plain, plain_kind = weights(True)
    assert (lean_kind, plain_kind) == ("SelfHealVecEnv", "DummyVecEnv")
    for x, y in zip(lean, plain, strict=True):
        np.testing.assert_array_equal(x, y)

    vec = SelfHealVecEnv(gym.make(ENV_IDS["mixed"], hosts=HOSTS, max_episode_steps=3))
    vec.seed(0)
    first = vec.reset()
    seen = []
    for _ in range(4):
        obs, _, dones, infos = vec.step(np.zeros(1, dtype=np.int64))
        seen.append((obs, infos))
    assert dones.tolist() == [False] and seen[2][1][0]["TimeLimit.truncated"]
    assert "terminal_observation" in seen[2][1][0]
    snapshot = seen[1][0].copy()
    seen[3][0][:] = -1.0  # the caller's array is its own
    seen[3][1][0]["action_mask"][:] = False
    np.testing.assert_array_equal(seen[1][0], snapshot)
    assert first is not seen[0][0] and seen[0][1][0] is not seen[1][1][0]
    try:
        SelfHealVecEnv(gym.make("CartPole-v1"))
    except TypeError as err:
        assert "SelfHealEnv" in str(err)
    else:
        raise AssertionError("a foreign env must be refused")


def test_training_mode_switch_sets_every_q_net_module() -> None:
    """The cheap switch leaves every module's flag where ``Module.train`` would."""
    env = gym.make(ENV_IDS["mixed"], hosts=4, max_episode_steps=50)
    model = make_dqn(env, DqnParams(), seed=0)
    for mode in (True, False, True, False):
        model.policy.set_training_mode(mode)
        assert model.policy.training is mode
        assert all(m.training is mode for m in model.q_net.modules())
        assert not any(m.training for m in model.q_net_target.modules())
    try:
        model.policy.set_training_mode(1)  # type: ignore[arg-type]
    except ValueError as err:
        assert "bool" in str(err)
    else:
        raise AssertionError("a non-bool mode must be refused")
