"""The compiled encoder (envs.kernels) against a numpy composition of its formulas, bit for bit.

:func:`numpy_encode_and_mask` below is the encoding written plainly in numpy: the same IEEE-754
operations on the same values as the encoder's numpy form, without its caches. The encoder's
output must equal it to the last bit (compared as raw bytes), on environment observations and
on synthetic ones built to reach the edge cases: NaN and infinite metrics, signed zeros that
tie for a host maximum, services without instances, used slots with gaps, instance and host
tables in either memory order, and runs of more than 128 slots (where numpy's pairwise sum
splits).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection

import gymnasium as gym
import numpy as np
import pytest

from envs import env_id
from envs.spaces import (
    CLUSTER_FEATURES,
    SERVICE_ACTIONS,
    SERVICE_FEATURES,
    SYMPTOM_THRESHOLDS,
    EncodeCache,
    Layout,
    action_table,
    encode_and_mask,
    layout_from,
)
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

H = {name: i for i, name in enumerate(HOST_FEATURES)}
I = {name: i for i, name in enumerate(INSTANCE_FEATURES)}  # noqa: E741
SUM_COLS = [I["ready"], I["up"], I["vm_up"], I["cpu_util"], I["mem_util"], I["queue_len"]]
SUM_TO = [0, 1, 2, 4, 6, 11]
W_COLS, W_TO = [I["latency_s"], I["error_rate"]], [8, 9]
MAX_COLS, MAX_TO = [I["cpu_util"], I["mem_util"], I["error_rate"]], [5, 7, 10]
HMAX_COLS = [H["cpu_util"], H["temp_c"], H["disk_latency_s"], H["disk_wear"], H["link_loss"]]
HMAX_TO = [2, 3, 6, 7, 8]
HMIN_COLS, HMIN_TO = [H["throttle"], H["fan_rpm"]], [4, 5]
F32 = np.float32


def numpy_encode_and_mask(
    obs: Observation, layout: Layout, advisories: Collection[str], shed: float
) -> tuple[np.ndarray, np.ndarray]:
    """The encoding and the mask, plainly in numpy (no cache, a loop over the services)."""
    names = layout.service_names
    n_s, n_per = len(names), len(SERVICE_FEATURES)
    idx = np.flatnonzero(obs.inst_used)
    svc = obs.inst_service[idx]
    inst = np.ascontiguousarray(obs.inst[idx])  # the used slots' rows, in slot order
    host = obs.host
    m = (svc[None, :] == np.arange(n_s)[:, None]).astype(F32)
    count = m.sum(axis=1)
    per = np.zeros((n_s, n_per), dtype=F32)

    # Means (a product with the 0/1 membership), request-weighted means, floored maxima.
    sums = (m @ inst[:, SUM_COLS]) * (1.0 / np.maximum(count, 1.0))[:, None]
    np.log1p(np.maximum(sums[:, 5], 0.0), out=sums[:, 5])
    per[:, SUM_TO] = sums
    w = m * inst[:, I["rps"]][None, :]
    per[:, W_TO] = (w @ inst[:, W_COLS]) / np.maximum(w.sum(axis=1), 1e-9)[:, None]
    for s in range(n_s):
        mine = inst[svc == s]
        if mine.shape[0]:
            per[s, MAX_TO] = np.maximum(mine[:, MAX_COLS].max(axis=0), 0.0)
    per[:, 3] = count / np.asarray(layout.initial_replicas, dtype=F32)
    per[:, 12] = [name in advisories for name in names]

    # Cluster-wide.
    n_h = host.shape[0]
    host_up = host[:, H["up"]] > 0.5
    up_host = host_up[obs.inst_host[idx]]
    live = inst[:, I["up"]] > 0.5
    dark = up_host & ~(live & (inst[:, I["ready"]] > 0.5))
    t_s = obs.t_s if math.isfinite(obs.t_s) else 0.0
    day = 2.0 * np.pi * t_s / 86400.0
    hmax = host[:, HMAX_COLS].max(axis=0)
    cluster = np.zeros(len(CLUSTER_FEATURES), dtype=F32)
    cluster[HMAX_TO] = hmax
    cluster[HMIN_TO] = host[:, HMIN_COLS].min(axis=0) / np.array([1.0, 12000.0], dtype=F32)
    cluster[0] = int(host_up.sum()) / n_h
    cluster[1] = host[:, H["cpu_util"]].sum() / n_h
    cluster[9] = int(dark.sum()) / max(idx.size, 1)
    cluster[10] = inst[:, I["rps"]].sum() / n_h
    cluster[11] = shed
    cluster[12] = np.sin(day)
    cluster[13] = np.cos(day)

    out = np.concatenate([per.ravel(), cluster])
    low, high = layout.bounds
    out = np.nan_to_num(out, nan=0.0, posinf=float(high.max()), neginf=0.0)
    out = np.minimum(high, np.maximum(low, out))

    # Mask.
    mask = np.ones(layout.n_actions, dtype=bool)
    maxes = per[:, MAX_TO]
    symptoms = maxes[:, 1].max() >= SYMPTOM_THRESHOLDS["memory"] or (
        maxes[:, 2].max() >= SYMPTOM_THRESHOLDS["errors"]
    )
    sick = (inst[:, I["error_rate"]] > SYMPTOM_THRESHOLDS["errors"]) | (
        inst[:, I["mem_util"]] > SYMPTOM_THRESHOLDS["memory"]
    )
    for s in range(n_s):
        first = 1 + s * len(SERVICE_ACTIONS)
        mine = svc == s
        mask[first + 4] = count[s] > 2
        restart = dark | (up_host & sick) if symptoms else dark
        mask[first] = (restart & mine).any()
        mask[first + 1] = (((inst[:, I["vm_up"]] < 0.5) | ~up_host) & mine).any()
        mask[first + 2] = (live & mine).any()
    row = 1 + n_s * len(SERVICE_ACTIONS)
    n_up = int(host_up.sum())
    mask[row] = mask[row + 1] = n_up > 0
    mask[row + 2] = n_up < n_h
    mask[row + 3] = (up_host & live & ~obs.inst_live[idx]).any()
    mask[row + 4] = hmax[4] > 0
    mask[row + 5] = shed < 0.6 - 1e-9
    mask[row + 6] = shed > 0.0
    return out, mask


def assert_same(obs: Observation, layout: Layout, adv: Collection[str] = (), shed: float = 0.0,
                cache: EncodeCache | None = None) -> None:
    """The encoder (with ``cache``, and with a fresh one) equals the composition, bit for bit."""
    with np.errstate(all="ignore"):
        want_out, want_mask = numpy_encode_and_mask(obs, layout, adv, shed)
        for c in (cache, None):
            out, mask = encode_and_mask(obs, layout, adv, shed, c)
            assert out.dtype == np.float32 and mask.dtype == bool
            assert out.tobytes() == want_out.tobytes(), np.flatnonzero(
                out.view(np.uint32) != want_out.view(np.uint32)
            )
            assert mask.tobytes() == want_mask.tobytes(), np.flatnonzero(mask != want_mask)


def synthetic(seed: int, n_hosts: int = 40, n_slots: int = 400, n_s: int = 4,
              fill: float = 0.7) -> tuple[Observation, Layout]:
    """A random observation (feature-major tables, as the twin's) and its layout."""
    rng = np.random.default_rng(seed)
    host = rng.random((n_hosts, len(HOST_FEATURES)), dtype=F32)
    host[:, H["up"]] = rng.random(n_hosts) < 0.9
    host[:, H["fan_rpm"]] *= 12000.0
    inst = rng.random((n_slots, len(INSTANCE_FEATURES)), dtype=F32)
    for col in ("up", "ready", "vm_up"):
        inst[:, I[col]] = rng.random(n_slots) < 0.85
    inst[:, I["rps"]] *= 100.0
    inst[:, I["error_rate"]] *= 0.05
    used = rng.random(n_slots) < fill
    obs = Observation(
        t_s=float(rng.uniform(0.0, 1e6)),
        host=np.asfortranarray(host),
        inst=np.asfortranarray(inst),
        inst_used=used,
        inst_service=np.where(used, rng.integers(0, n_s, n_slots), -1).astype(np.int64),
        inst_host=rng.integers(0, n_hosts, n_slots).astype(np.int64),
        inst_live=rng.random(n_slots) < 0.95,
        inst_ready=rng.random(n_slots) < 0.9,
        service_names=tuple(f"s{k}" for k in range(n_s)),
        host_rack=np.zeros(n_hosts, dtype=np.int64),
        call_edges=(),
    )
    layout = Layout(obs.service_names, n_hosts, tuple(int(r) for r in rng.integers(1, 9, n_s)),
                    action_table(n_s))
    return obs, layout


def variants(obs: Observation, rng: np.random.Generator) -> list[Observation]:
    """Edge cases derived from ``obs`` (both tables C-ordered, or as ``obs``'s)."""
    inst, host = np.ascontiguousarray(obs.inst), np.ascontiguousarray(obs.host)
    used = np.flatnonzero(obs.inst_used)
    rep = dataclasses.replace
    out = [rep(obs, inst=inst, host=host)]
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 1e30, -1.0], dtype=F32)
    for frac in (0.02, 0.2):
        a, b = inst.copy(), host.copy()
        for table in (a, b):
            hit = rng.random(table.shape) < frac
            table[hit] = rng.choice(special, int(hit.sum()))
        out.append(rep(obs, inst=a, host=b))
        out.append(rep(obs, inst=np.asfortranarray(a), host=np.asfortranarray(b)))
    zeros = host.copy()  # both signed zeros tie for the host maxima and minima
    zeros[:] = np.where(rng.random(zeros.shape) < 0.5, F32(-0.0), F32(0.0))
    out.append(rep(obs, inst=inst, host=zeros))
    neg = host.copy()
    neg[:, [H["link_loss"], H["throttle"]]] = -0.0
    out.append(rep(obs, inst=inst, host=neg))
    out.append(rep(obs, inst=-inst, host=host))
    at = inst.copy()  # exactly at the symptom thresholds
    at[used, I["error_rate"]] = F32(SYMPTOM_THRESHOLDS["errors"])
    at[used[::2], I["mem_util"]] = F32(SYMPTOM_THRESHOLDS["memory"])
    out.append(rep(obs, inst=at, host=host))
    out.append(rep(obs, inst_used=obs.inst_used & (obs.inst_service != obs.inst_service[used[0]])))
    gaps = obs.inst_used.copy()
    gaps[used[rng.random(used.size) < 0.3]] = False
    out.append(rep(obs, inst_used=gaps))
    one = np.zeros_like(obs.inst_used)
    one[used[0]] = True
    out.append(rep(obs, inst_used=one))
    out.append(rep(obs, inst_used=np.zeros_like(obs.inst_used)))
    down = host.copy()
    down[:, H["up"]] = 0.0
    out.append(rep(obs, inst=inst, host=down))
    out.append(rep(obs, t_s=float("nan")))
    return out


@pytest.fixture(scope="module")
def env_observations() -> list[tuple[Observation, Layout, frozenset[str], float]]:
    """Observations of a Mixed environment under random actions (placement changes too)."""
    env = gym.make(env_id("mixed"), hosts=30, max_episode_steps=10**6)
    _, info = env.reset(seed=3)
    rng = np.random.default_rng(3)
    twin = env.unwrapped.twin  # type: ignore[attr-defined]
    seen = []
    for step in range(60):
        _, _, _, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        twin = env.unwrapped.twin  # type: ignore[attr-defined]
        if step % 4 == 0:
            adv = frozenset(env.unwrapped._advisories)  # type: ignore[attr-defined]
            shed = env.unwrapped._shed  # type: ignore[attr-defined]
            seen.append((twin.observe(), env.unwrapped.layout, adv, shed))  # type: ignore[attr-defined]
    env.close()
    return seen


def test_env_observations(
    env_observations: list[tuple[Observation, Layout, frozenset[str], float]],
) -> None:
    """Observations the twin produces: the kernels take them, and match the composition."""
    cache = EncodeCache()
    for obs, layout, adv, shed in env_observations:
        assert layout_from(obs).service_names == layout.service_names
        assert EncodeCache().prepare(obs, layout)  # the compiled path, not the numpy form
        assert_same(obs, layout, adv, shed, cache)
        assert_same(dataclasses.replace(obs, inst=np.asfortranarray(obs.inst),
                                        host=np.asfortranarray(obs.host)), layout, adv, shed,
                    cache)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_edge_cases(seed: int) -> None:
    """NaN, infinities, signed zeros, empty services, gaps, either memory order, thresholds."""
    rng = np.random.default_rng(seed)
    obs, layout = synthetic(seed)
    cache = EncodeCache()
    for case in [obs, *variants(obs, rng)]:
        assert EncodeCache().prepare(case, layout)
        assert_same(case, layout, cache=cache)
    names = layout.service_names
    for adv, shed in (({names[0]}, 0.2), (set(names), 0.6), ((), 0.6 - 1e-9), ((), float("nan"))):
        assert_same(obs, layout, adv, shed, cache)


def test_long_runs() -> None:
    """Hundreds of slots per service and hosts: numpy's pairwise sums split their runs."""
    obs, layout = synthetic(7, n_hosts=700, n_slots=3000, n_s=3, fill=0.8)
    assert_same(obs, layout, cache=EncodeCache())
    c_ordered = dataclasses.replace(
        obs, inst=np.ascontiguousarray(obs.inst), host=np.ascontiguousarray(obs.host)
    )
    assert_same(c_ordered, layout)


def test_unusual_inputs_take_the_numpy_form() -> None:
    """Float64 tables or a used slot of no service fall back to numpy, with the same result."""
    obs, layout = synthetic(11)
    wide = dataclasses.replace(obs, inst=obs.inst.astype(np.float64))
    assert not EncodeCache().prepare(wide, layout)
    stray = obs.inst_service.copy()
    stray[np.flatnonzero(obs.inst_used)[0]] = len(layout.service_names)
    odd = dataclasses.replace(obs, inst_service=stray)
    assert not EncodeCache().prepare(odd, layout)
    assert_same(odd, layout, cache=EncodeCache())
