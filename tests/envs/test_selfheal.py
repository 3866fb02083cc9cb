"""The self-healing envs: API conformance, determinism, safety, encoding and decoding."""

from __future__ import annotations

import dataclasses
import functools
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from control.safety import SafetyConfig
from envs import ENV_IDS, env_id
from envs.selfheal import RewardWeights, SelfHealEnv
from envs.spaces import EncodeCache, Layout, decode, encode, encode_and_mask, layout_from
from sim.actions import Action
from sim.config import ScriptedFault
from sim.errors import ConfigError
from sim.events import ActionRecord
from sim.scenarios import SCENARIOS, make_config
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES

HOSTS = 20


def _make(name: str) -> gym.Env:
    import envs  # noqa: F401  (registers the ids in a fresh worker process)

    return gym.make(name, hosts=HOSTS)


def _rollout(env_name: str, seed: int, steps: int = 120) -> tuple[np.ndarray, ...]:
    env = gym.make(env_name, hosts=HOSTS, max_episode_steps=steps)
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, rewards, actions = [obs], [], []
    for _ in range(steps):
        a = 0
        if rng.random() < 0.2:
            a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        obs, r, _, _, info = env.step(a)
        observations.append(obs)
        rewards.append(r)
        actions.append(a)
    env.close()
    return np.array(observations), np.array(rewards), np.array(actions)


def test_one_id_per_scenario_plus_mixed() -> None:
    """Every scenario has its versioned id, Mixed among them, all in Gymnasium's registry."""
    assert set(ENV_IDS) == set(SCENARIOS)
    assert ENV_IDS["mixed"] == "NovaCron/SelfHeal-Mixed-v2"
    assert env_id("service_crash") == "NovaCron/SelfHeal-ServiceCrash-v2"
    for name in ENV_IDS.values():
        assert name in gym.registry


@pytest.mark.parametrize("name", sorted(ENV_IDS.values()))
def test_env_checkers_pass(name: str) -> None:
    """Gymnasium's and stable-baselines3's env checkers accept every id."""
    env = gym.make(name, hosts=HOSTS)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(name, hosts=HOSTS), warn=True)
    assert env.spec is not None and env.spec.max_episode_steps == 4320


@pytest.mark.parametrize("name", sorted(ENV_IDS.values()))
def test_same_seed_same_episode(name: str) -> None:
    """Same seed: identical observations, rewards and actions; another seed: a different run."""
    a = _rollout(name, seed=3)
    b = _rollout(name, seed=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    c = _rollout(name, seed=4)
    assert not np.array_equal(a[0], c[0])


def test_truncates_at_max_episode_steps_and_never_terminates() -> None:
    """A cluster does not end: episodes stop by truncation only, at the configured length."""
    env = gym.make(ENV_IDS["calm"], hosts=HOSTS, max_episode_steps=7)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(7)]
    assert [t for t, _ in flags] == [False] * 7
    assert [tr for _, tr in flags] == [False] * 6 + [True]


def test_reward_is_minus_its_terms_and_info_has_a_mask() -> None:
    """Reward = -(slo + downtime + action) and the mask allows the no-op."""
    env = gym.make(ENV_IDS["service_crash"], hosts=HOSTS)
    _, info = env.reset(seed=1)
    assert info["action_mask"].dtype == bool and info["action_mask"][0]
    for a in (0, 1, 0, 4):
        _, r, _, _, info = env.step(a)
        terms = info["reward_terms"]
        assert set(terms) == {"slo", "downtime", "action"}
        assert r == pytest.approx(-sum(terms.values()))
        assert info["action_mask"].shape == (env.action_space.n,)


def test_bad_actions_are_clear_errors() -> None:
    """Out of range -> IndexError; not an integer -> TypeError; both naming the problem."""
    env = gym.make(ENV_IDS["calm"], hosts=HOSTS)
    env.reset(seed=0)
    n = env.action_space.n
    with pytest.raises(IndexError, match=re.escape(f"outside the action space [0, {n})")):
        env.step(n)
    with pytest.raises(IndexError, match="outside"):
        env.step(-1)
    with pytest.raises(TypeError, match="integer index"):
        env.step(1.5)


def test_bad_make_kwargs_are_clear_errors() -> None:
    """A bad size, interval or reward weight is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="hosts"):
        gym.make(ENV_IDS["calm"], hosts=0)
    with pytest.raises(ConfigError, match="control_interval_s"):
        gym.make(ENV_IDS["calm"], control_interval_s=0)
    with pytest.raises(ConfigError, match=r"reward\.slo"):
        RewardWeights(slo=-1.0)


def _scale_out_index(env: SelfHealEnv, service: str = "frontend") -> int:
    labels = env.layout.action_labels()
    return labels.index(f"scale_out(service of svc-{service})")


def test_every_action_passes_the_safety_gate() -> None:
    """An emergency stop or dry-run mode keeps the agent's actions off the plant."""
    env = SelfHealEnv("calm", hosts=HOSTS)
    env.reset(seed=0)
    idx = _scale_out_index(env)
    env.gate.emergency_stop(env.twin.now_s, "test")
    _, _, _, _, info = env.step(idx)
    assert info["outcome"].startswith("blocked: emergency stop")
    assert info["reward_terms"]["action"] == RewardWeights().refused
    dry = SelfHealEnv("calm", hosts=HOSTS, safety=SafetyConfig(dry_run=True))
    dry.reset(seed=0)
    _, _, _, _, info = dry.step(idx)
    assert info["outcome"].startswith("dry_run")
    for e in (env, dry):
        assert not [
            r for r in e.twin.log.since(0) if isinstance(r, ActionRecord) and r.phase == "started"
        ]
    env.gate.resume()
    _, _, _, _, info = env.step(idx)
    assert info["outcome"] == "accepted: scale_out svc-frontend"


def test_cooldown_blocks_a_repeat_on_the_same_target() -> None:
    """The gate's per-target cooldown applies to the agent like to the engine."""
    env = SelfHealEnv("calm", hosts=HOSTS)
    env.reset(seed=0)
    idx = _scale_out_index(env)
    assert env.step(idx)[4]["outcome"].startswith("accepted")
    assert "svc-frontend" in env.step(idx)[4]["outcome"]
    assert env.step(idx)[4]["outcome"].startswith("blocked")


def test_restart_of_a_crashed_instance_through_the_table() -> None:
    """restart_instance(worst_instance) aims at the crashed replica and brings it back."""
    base = make_config("calm", HOSTS, tick_s=10.0)
    cfg = dataclasses.replace(base, scripted=(ScriptedFault(25.0, "service_crash", 3),))
    env = SelfHealEnv("calm", hosts=HOSTS, config=cfg)
    env.reset(seed=0)
    for _ in range(6):
        env.step(0)
    obs = env.twin.observe()
    assert not obs.inst_live[3]
    svc = int(obs.inst_service[3])
    idx = 1 + svc * 8
    assert decode(idx, env.layout, obs).target == "inst-3"
    _, _, _, _, info = env.step(idx)
    assert info["outcome"] == "accepted: restart_instance inst-3"
    for _ in range(8):
        env.step(0)
    assert env.twin.observe().inst_ready[3]


@pytest.mark.parametrize(
    ("column", "value"),
    [("up", 0.0), ("ready", 0.0), ("error_rate", 0.05), ("mem_util", 0.7)],
)
def test_restart_aims_only_at_a_replica_a_restart_may_help(column: str, value: float) -> None:
    """A healthy service offers no restart target (none decoded, masked out).

    One replica down, not ready, erroring or holding memory above half its limit is the target.
    """
    env = SelfHealEnv("calm", hosts=HOSTS)
    env.reset(seed=0)
    obs = env.twin.observe()
    layout = env.layout
    svc = int(obs.inst_service[3])
    idx = 1 + svc * 8
    assert layout.actions[idx].kind == "restart_instance"
    _, mask = encode_and_mask(obs, layout)
    assert decode(idx, layout, obs) is None and not mask[idx]
    inst = obs.inst.copy()
    inst[3, INSTANCE_FEATURES.index(column)] = value
    sick = dataclasses.replace(obs, inst=inst)
    _, mask = encode_and_mask(sick, layout)
    assert decode(idx, layout, sick).target == "inst-3" and mask[idx]
    # at the threshold itself a replica still counts as healthy
    if column in ("error_rate", "mem_util"):
        inst[3, INSTANCE_FEATURES.index(column)] = 0.02 if column == "error_rate" else 0.5
        same = dataclasses.replace(obs, inst=inst)
        assert decode(idx, layout, same) is None and not encode_and_mask(same, layout)[1][idx]


def test_encode_is_bounded_and_decode_is_plant_agnostic() -> None:
    """Encode stays in bounds; decode needs only the observation and names real targets."""
    env = SelfHealEnv("mixed", hosts=HOSTS)
    vec, info = env.reset(seed=2)
    obs = env.twin.observe()
    layout = layout_from(obs)
    assert layout == env.layout
    low, high = layout.bounds
    np.testing.assert_array_equal(encode(obs, layout), np.clip(vec, low, high))
    assert vec.dtype == np.float32 and vec.shape == (layout.obs_dim,)
    assert len(layout.feature_names) == layout.obs_dim
    assert decode(0, layout) is None
    for i in np.flatnonzero(info["action_mask"])[1:]:
        action = decode(int(i), layout, obs)
        assert action is not None and action.kind == layout.actions[i].kind
    with pytest.raises(ValueError, match="pass obs"):
        decode(1, layout)
    with pytest.raises(IndexError, match="outside"):
        decode(layout.n_actions, layout, obs)


def test_layout_round_trips_and_refuses_a_foreign_table() -> None:
    """Layout.to_dict / from_dict round-trip; an edited action table is refused."""
    env = SelfHealEnv("calm", hosts=HOSTS)
    data = env.layout.to_dict()
    assert Layout.from_dict(data) == env.layout
    data["actions"] = data["actions"][:-1]
    with pytest.raises(ValueError, match="action table"):
        Layout.from_dict(data)


def test_vector_envs() -> None:
    """Gymnasium's SyncVectorEnv and SB3's DummyVecEnv / SubprocVecEnv step the env.

    The subprocess workers are forked (the default forkserver would spend seconds importing
    torch again); ``_make`` imports ``envs`` so a fresh worker registers the ids too.
    """
    name = ENV_IDS["vm_failure"]
    sync = gym.vector.SyncVectorEnv([lambda: gym.make(name, hosts=HOSTS) for _ in range(2)])
    obs, _ = sync.reset(seed=[0, 1])
    obs2, rewards, *_ = sync.step(np.array([0, 4]))
    assert obs.shape == obs2.shape == (2, sync.single_observation_space.shape[0])
    assert rewards.shape == (2,)
    sync.close()
    fns = [functools.partial(_make, name) for _ in range(2)]
    for vec in (DummyVecEnv(fns), SubprocVecEnv(fns, start_method="fork")):
        vec.seed(5)
        first = vec.reset()
        out, rew, done, _ = vec.step(np.array([0, 0]))
        assert first.shape == out.shape and rew.shape == done.shape == (2,)
        vec.close()


def test_encode_cache_gives_the_uncached_encoding() -> None:
    """A kept EncodeCache changes nothing, also across placement changes (scale out / in).

    Nor does an observation of views into the twin (feature-major telemetry), whether the
    used slots form one run of rows or not.
    """
    env = SelfHealEnv("mixed", hosts=HOSTS)
    env.reset(seed=4)
    cache, view_cache = EncodeCache(), EncodeCache()
    layout = env.layout
    api = layout.service_names.index("api")
    # scale out api, restart one of its (healthy) replicas on the plant directly, since the
    # table restarts only sick ones, and scale in while it is down: the restarting replica
    # goes, which leaves a free slot among the used ones
    actions = {5: 1 + api * 8 + 3, 51: 1 + api * 8 + 4}
    placements, runs = set(), set()
    for t in range(90):
        if t == 50:
            obs = env.twin.observe()
            first = int(np.flatnonzero(obs.inst_used & (obs.inst_service == api))[0])
            assert env.twin.apply(Action("restart_instance", f"inst-{first}")).accepted
        env.step(actions.get(t, 0))
        obs = env.twin.observe()
        placements.add(obs.inst_used.tobytes())
        for shed, adv in ((0.0, ()), (0.4, ("api",))):
            cached = encode_and_mask(obs, layout, adv, shed, cache)
            fresh = encode_and_mask(obs, layout, adv, shed)
            viewed = encode_and_mask(env.twin.observe(copy=False), layout, adv, shed, view_cache)
            for got in (cached, viewed):
                assert got[0].tobytes() == fresh[0].tobytes()
                np.testing.assert_array_equal(got[1], fresh[1])
        runs.add(view_cache.span is None)
    assert len(placements) >= 2
    assert runs == {True, False}


def test_encoding_of_a_service_without_instances_and_the_per_service_maxima() -> None:
    """A service with no used slot gets zeros and no instance actions; maxima are exact."""
    env = SelfHealEnv("mixed", hosts=HOSTS)
    env.reset(seed=6)
    for _ in range(5):
        env.step(0)
    obs = env.twin.observe()
    layout = env.layout
    gone = layout.service_names.index("cache")
    used = obs.inst_used & (obs.inst_service != gone)
    vec, mask = encode_and_mask(dataclasses.replace(obs, inst_used=used), layout)
    per = vec[: len(layout.service_names) * 13].reshape(len(layout.service_names), 13)
    np.testing.assert_array_equal(per[gone, :12], 0.0)
    assert not mask[1 + gone * 8 : 1 + gone * 8 + 3].any()
    cols = [INSTANCE_FEATURES.index(c) for c in ("cpu_util", "mem_util", "error_rate")]
    for s in range(len(layout.service_names)):
        rows = obs.inst[used & (obs.inst_service == s)][:, cols]
        want = np.maximum(rows.max(axis=0), 0.0) if rows.size else np.zeros(3)
        np.testing.assert_array_equal(per[s, [5, 7, 10]], np.minimum(want, [1.0, 1.5, 1.0]))
        assert mask[1 + s * 8 + 2] == (s != gone)  # add_memory: a running replica to grow
        host_up = obs.host[obs.inst_host, HOST_FEATURES.index("up")] > 0.5
        mine = used & (obs.inst_service == s) & host_up
        sick = (
            (obs.inst[:, INSTANCE_FEATURES.index("up")] < 0.5)
            | (obs.inst[:, INSTANCE_FEATURES.index("ready")] < 0.5)
            | (obs.inst[:, INSTANCE_FEATURES.index("error_rate")] > 0.02)
            | (obs.inst[:, INSTANCE_FEATURES.index("mem_util")] > 0.5)
        )
        assert mask[1 + s * 8] == bool((mine & sick).any())


def test_the_telemetry_ring_length_does_not_change_an_episode() -> None:
    """The env's twin keeps one telemetry sample; a twin keeping an hour gives the same steps."""
    default = SelfHealEnv("mixed", HOSTS)
    hour = SelfHealEnv(
        "mixed", HOSTS, config=dataclasses.replace(default.config, telemetry_buffer=360)
    )
    assert default.twin.telemetry.size == 1
    runs = []
    for env in (default, hour):
        obs, info = env.reset(seed=4)
        rng = np.random.default_rng(4)
        steps = [(obs.tobytes(), info["action_mask"].tobytes())]
        for _ in range(200):
            mask = info["action_mask"]
            a = int(rng.choice(np.flatnonzero(mask))) if rng.random() < 0.2 else 0
            obs, reward, _, _, info = env.step(a)
            steps.append((obs.tobytes(), reward, info["action_mask"].tobytes(), info["outcome"]))
        runs.append((steps, env.twin.log.digest()))
    assert runs[0] == runs[1]


def test_a_replica_left_down_costs_downtime_every_step() -> None:
    """A crashed replica nobody restarts costs its share plus ``down_instance`` each step."""
    config = make_config(
        "calm",
        4,
        tick_s=10.0,
        telemetry_interval_s=10.0,
        scripted=(ScriptedFault(30.0, "service_crash"),),
    )
    env = SelfHealEnv("calm", 4, config=config)
    env.reset(seed=0)
    n_inst = int(env.twin.observe().inst_used.sum())
    w = RewardWeights()
    downtime = [env.step(0)[4]["reward_terms"]["downtime"] for _ in range(40)]
    assert downtime[0] == 0.0
    assert downtime[-30:] == [pytest.approx(w.downtime / n_inst + w.down_instance)] * 30


def test_symptom_mask_admits_what_the_observation_calls_for() -> None:
    """Healthy: the no-op alone; a replica not ready: its restart; torch agrees with numpy.

    Without host sensors (a live fleet) no hardware action is admissible.
    """
    import torch

    from agents.dqn import AdmissibleActions
    from envs.spaces import admissible_mask, symptom_rules

    config = make_config(
        "calm",
        4,
        tick_s=10.0,
        telemetry_interval_s=10.0,
        scripted=(ScriptedFault(30.0, "service_crash", 4),),
    )
    env = SelfHealEnv("calm", 4, config=config)
    obs, _ = env.reset(seed=0)
    layout = env.layout
    labels = layout.action_labels()
    rules = symptom_rules(len(layout.service_names))
    assert np.flatnonzero(admissible_mask(obs, rules)).tolist() == [0]
    for _ in range(6):
        obs = env.step(0)[0]
    admitted = {labels[i] for i in np.flatnonzero(admissible_mask(obs, rules))}
    assert "restart_instance(worst_instance of svc-api)" in admitted
    assert not any(a.startswith("restart_instance") and "svc-api" not in a for a in admitted)
    names = layout.feature_names
    no_sensors = obs.copy()
    no_sensors[names.index("host_temp_max_c")] = 0.0
    no_sensors[names.index("host_cpu_util_max")] = 1.0
    hot = obs.copy()
    hot[names.index("host_cpu_util_max")] = 1.0
    evict = labels.index("evict_noisy_neighbour(busiest_host)")
    assert admissible_mask(hot, rules)[evict] and not admissible_mask(no_sensors, rules)[evict]
    low, high = env.observation_space.low, env.observation_space.high
    batch = np.random.default_rng(0).uniform(low, high, (2000, low.size)).astype(np.float32)
    batch = np.concatenate([batch, obs[None], hot[None], no_sensors[None]])
    expected = admissible_mask(batch, rules)
    assert expected[:, 0].all() and 0 < expected.mean() < 1
    got = AdmissibleActions(rules)(torch.as_tensor(batch)).numpy()
    np.testing.assert_array_equal(got, expected)
    # The definition itself, condition by condition, including values right at a threshold.
    at = np.repeat(batch[:50], 2, axis=0)
    at[::2, rules.feature] = rules.threshold
    at[1::2, rules.feature] = np.nextafter(rules.threshold, np.float32(np.inf))
    for x in (batch, at):
        held = np.where(rules.greater, x[:, rules.feature] > rules.threshold,
                        x[:, rules.feature] < rules.threshold)
        unmet = (~held[:, :, None] & (rules.requires[None] > 0)).any(axis=1)
        some = (held[:, :, None] & (rules.symptom[None] > 0)).any(axis=1)
        np.testing.assert_array_equal(
            admissible_mask(x, rules), (some | ~rules.has_symptom) & ~unmet
        )
