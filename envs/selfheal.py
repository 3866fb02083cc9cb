"""The self-healing environment: a healing policy against the digital twin."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from control.engine import SHED_MAX, SHED_STEP
from control.safety import SafetyConfig, SafetyGate
from envs import kernels as env_kernels
from envs.spaces import EncodeCache, Layout, decode, encode_and_mask, layout_from
from sim.config import TwinConfig
from sim.errors import ConfigError
from sim.events import ActionRecord, StateChange
from sim.scenarios import SCENARIOS, make_config
from sim.twin import Twin


@dataclasses.dataclass(frozen=True, slots=True)
class RewardWeights:
    """Weights of the reward terms (all costs are per control step).

    Attributes:
        slo: Per unit of the share of requests that missed their SLO during the step.
        downtime: Per unit of the share of instances not ready at the end of the step.
        down_instance: Per instance not ready at the end of the step, so that one replica
            left down costs the same every step whatever the cluster's size, also while its
            traffic is routed to the others.
        action: Per action the plant accepted (its operational risk).
        usd: Per US dollar an accepted action costs.
        refused: Per action the safety gate blocked or the plant rejected.
    """

    slo: float = 5.0
    downtime: float = 1.0
    down_instance: float = 0.1
    action: float = 0.05
    usd: float = 0.001
    refused: float = 0.1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
                raise ConfigError(f"reward.{f.name} must be a finite number >= 0, got {value!r}")


ENV_TELEMETRY_SAMPLES = 1
"""Telemetry samples the env's twin keeps: the env reads only the latest, and no controller
reads further back (the :class:`sim.plant.Plant` protocol exposes only the latest), so a
longer ring would only cost memory traffic every step."""


def env_twin_config(
    scenario: str,
    hosts: int,
    control_interval_s: float,
    customize: Callable[[TwinConfig], TwinConfig] | None = None,
) -> TwinConfig:
    """The twin config an env runs when given no ``config``.

    The scenario's on ``hosts`` hosts, one tick and one telemetry sample per control
    interval, keeping only the latest sample (:data:`ENV_TELEMETRY_SAMPLES`); ``customize``
    as in :func:`sim.scenarios.make_config`.
    """
    return make_config(
        scenario,
        hosts,
        customize=customize,
        tick_s=control_interval_s,
        telemetry_interval_s=control_interval_s,
        telemetry_buffer=ENV_TELEMETRY_SAMPLES,
    )


class SelfHealEnv(gym.Env[np.ndarray, np.int64]):
    """Keep a simulated cluster within its SLO while faults strike it.

    ## Description

    A digital twin (:mod:`sim.twin`) of a cluster of ``hosts`` hosts serving six services
    runs one of the named fault scenarios of :mod:`sim.scenarios` (``mixed`` draws from every
    kind). One step is one control interval of ``control_interval_s`` simulated seconds: the
    agent's action passes the control plane's :class:`control.safety.SafetyGate`, reaches
    the twin if allowed, and the twin advances one vectorised tick.

    ## Action Space

    ``Discrete(n)`` over the table of :func:`envs.spaces.action_table`: 0 is the no-op, then
    for each service restart its worst instance (one that is down, not ready, erroring or
    holding memory above half its limit; never a healthy one), cold-migrate a stranded instance, add
    memory to its fullest instance, scale out, scale in, roll back its configuration, patch
    it, clear its cache; then evict a noisy neighbour from the busiest host, replace the
    fan of the hottest host, repair a down host, repair the switch of a cut-off rack, repair
    the lossiest link, shed load, stop shedding (56 actions with the default services).
    ``info["action_mask"]`` marks the entries that have a target now. An action that the
    gate blocks or the twin rejects does nothing and costs ``reward.refused``.

    ## Observation Space

    ``Box(low, high, (13 * services + 14,), float32)`` in raw units, clipped to the bounds:
    the 13 per-service features for each service in order, then the 14 cluster features
    (:data:`envs.spaces.SERVICE_FEATURES`, :data:`envs.spaces.CLUSTER_FEATURES`):

    | feature | unit | low | high |
    |---|---|---:|---:|
    | ``<service>.ready_share`` | fraction | 0 | 1 |
    | ``<service>.live_share`` | fraction | 0 | 1 |
    | ``<service>.vm_up_share`` | fraction | 0 | 1 |
    | ``<service>.replicas_ratio`` | replicas / initial replicas | 0 | 4 |
    | ``<service>.cpu_util_mean`` | fraction | 0 | 1 |
    | ``<service>.cpu_util_max`` | fraction | 0 | 1 |
    | ``<service>.mem_util_mean`` | fraction of limit | 0 | 1.5 |
    | ``<service>.mem_util_max`` | fraction of limit | 0 | 1.5 |
    | ``<service>.latency_s`` | s, request-weighted mean | 0 | 2 |
    | ``<service>.error_rate`` | fraction, request-weighted | 0 | 1 |
    | ``<service>.error_rate_max`` | fraction | 0 | 1 |
    | ``<service>.queue_log1p`` | ln(1 + requests queued per instance) | 0 | 12 |
    | ``<service>.advisory`` | 1 if an unpatched CVE advisory is public | 0 | 1 |
    | ``host_up_share`` | fraction | 0 | 1 |
    | ``host_cpu_util_mean`` | fraction | 0 | 1 |
    | ``host_cpu_util_max`` | fraction | 0 | 1 |
    | ``host_temp_max_c`` | degC | 0 | 120 |
    | ``host_throttle_min`` | capacity factor | 0 | 1 |
    | ``fan_health_min`` | fraction of nominal rpm | 0 | 1 |
    | ``disk_latency_max_s`` | s | 0 | 0.1 |
    | ``disk_wear_max`` | fraction of endurance | 0 | 1 |
    | ``link_loss_max`` | fraction | 0 | 1 |
    | ``unhealthy_share`` | fraction of instances on up hosts not running or not ready | 0 | 1 |
    | ``rps_per_host`` | req/s per host | 0 | 200 |
    | ``shed_fraction`` | fraction of requests rate-limited at the gateway | 0 | 1 |
    | ``day_sin`` | sin(2 pi t / 1 day) | -1 | 1 |
    | ``day_cos`` | cos(2 pi t / 1 day) | -1 | 1 |

    ## Rewards

    ``-(slo + downtime + action)`` per step: ``reward.slo`` (5) times the share of
    requests that missed their SLO during the step, ``reward.downtime`` (1) times the share
    of instances not ready plus ``reward.down_instance`` (0.1) per instance not ready (a
    replica left down costs every step until it is restarted, whatever the cluster's size),
    and ``reward.action`` (0.05) plus ``reward.usd`` (0.001) per
    dollar for every action started on the plant in the step, whoever started it
    (``reward.refused``, 0.1, for one the gate or the plant refused).
    ``info["reward_terms"]`` holds the three terms.

    ## Starting State

    A fresh twin of the scenario seeded from the environment's generator, after one tick.

    ## Episode End

    No termination: a cluster does not end. Truncation after ``max_episode_steps`` (given
    to ``gymnasium.make``; 4,320 steps, 12 simulated hours, by default).

    ## Arguments

    ``gymnasium.make("NovaCron/SelfHeal-ServiceCrash-v2", hosts=100, max_episode_steps=4320,
    control_interval_s=10.0, safety=SafetyConfig(), reward=RewardWeights())``. Without a
    ``config``, the twin is the scenario's on ``hosts`` hosts with one tick and one
    telemetry sample per control interval, keeping only the latest sample
    (:data:`ENV_TELEMETRY_SAMPLES`).

    ## Version History

    * v2: ``scale_out`` during a load shed adds the replicas the full load needs, not
      only the load the gateway admits (the twin sizes every scale-out on offered demand).
    * v1: ``restart_instance`` aims only at a replica a restart may help (down, not ready,
      erroring or holding memory above half its limit); with none, the entry has no
      target and is masked out. In v0 it restarted the fullest healthy replica, which a
      policy could repeat into an outage of its own making.
    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        scenario: str = "mixed",
        hosts: int = 100,
        control_interval_s: float = 10.0,
        safety: SafetyConfig | None = None,
        reward: RewardWeights | None = None,
        config: TwinConfig | None = None,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ConfigError(f"unknown scenario {scenario!r}; known: {sorted(SCENARIOS)}")
        if not (isinstance(control_interval_s, int | float) and control_interval_s > 0):
            raise ConfigError(f"control_interval_s must be > 0, got {control_interval_s!r}")
        self.scenario = scenario
        self.hosts = hosts
        self.control_interval_s = float(control_interval_s)
        self.config = config or env_twin_config(scenario, hosts, self.control_interval_s)
        self.safety = safety or SafetyConfig()
        self.weights = reward or RewardWeights()
        probe = Twin(self.config, seed=0)
        probe.advance(self.control_interval_s)
        self.layout: Layout = layout_from(probe.observe())
        low, high = self.layout.bounds
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.layout.n_actions)
        self.twin: Twin = probe
        self.gate = SafetyGate(self.safety)
        self._advisories: set[str] = set()
        self._shed = 0.0
        self._seen_seq = 0
        self._encode_cache = EncodeCache()

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a fresh twin; its seed is drawn from the environment's generator."""
        super().reset(seed=seed)
        twin_seed = int(self.np_random.integers(0, 2**31 - 1))
        self.twin = Twin(self.config, seed=twin_seed)
        self.gate = SafetyGate(self.safety)
        self._advisories = set()
        self._shed = 0.0
        self._seen_seq = 0
        self.twin.advance(self.control_interval_s)
        self._read_events()
        obs = self.twin.observe(copy=False)  # read here and dropped
        vec, mask = encode_and_mask(
            obs, self.layout, self._advisories, self._shed, self._encode_cache
        )
        return vec, {"action_mask": mask, "twin_seed": twin_seed}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` through the safety gate, advance one control interval."""
        if isinstance(action, np.ndarray) and action.shape in ((), (1,)):
            action = action.reshape(()).item()
        if isinstance(action, bool) or not isinstance(action, int | np.integer):
            raise TypeError(f"action must be an integer index, got {action!r}")
        index = int(action)
        if not 0 <= index < self.layout.n_actions:
            raise IndexError(
                f"action {index} is outside the action space [0, {self.layout.n_actions})"
            )
        twin, st = self.twin, self.twin.state
        total0, good0 = st.requests_total, st.requests_good
        outcome, refused = "noop", 0.0
        if index:
            obs = twin.observe()
            act = decode(index, self.layout, obs)
            if act is None:
                outcome, refused = "no_target", self.weights.refused
            else:
                verdict = self.gate.check(act, obs, twin.now_s)
                if verdict.kind != "allowed":
                    outcome, refused = f"{verdict.kind}: {verdict.reason}", self.weights.refused
                else:
                    result = twin.apply(act)
                    if result.accepted:
                        self.gate.started(act, result.action_id, obs, twin.now_s)
                        outcome = f"accepted: {act.kind} {act.target}"
                    else:
                        outcome, refused = f"rejected: {result.reason}", self.weights.refused
        twin.advance(self.control_interval_s)
        act_cost = refused + self._read_events()
        st = twin.state
        n_req = st.requests_total - total0
        bad_share = 1.0 - (st.requests_good - good0) / n_req if n_req > 0 else 0.0
        obs = twin.observe(copy=False)  # read here and dropped
        n_down, n_used = env_kernels.down_count(obs.inst_used, obs.inst_ready)
        down_share = n_down / max(n_used, 1)
        terms = {
            "slo": self.weights.slo * bad_share,
            "downtime": self.weights.downtime * down_share + self.weights.down_instance * n_down,
            "action": act_cost,
        }
        reward = -(terms["slo"] + terms["downtime"] + terms["action"])
        vec, mask = encode_and_mask(
            obs, self.layout, self._advisories, self._shed, self._encode_cache
        )
        info = {
            "action_mask": mask,
            "reward_terms": terms,
            "outcome": outcome,
            "good_share": 1.0 - bad_share,
        }
        return vec, float(reward), False, False, info

    def _read_events(self) -> float:
        """Let the gate see finished actions, cost new ones, track advisories and shedding.

        Every action started on the plant since the last read is charged, whoever started it
        (this env's agent, or a controller acting on the plant itself), so rewards compare.
        """
        events = self.twin.events(self._seen_seq)
        if not events:
            return 0.0
        self._seen_seq = events[-1].seq + 1
        self.gate.sync(events)
        cost = 0.0
        w = self.weights
        for e in events:
            if isinstance(e, ActionRecord) and e.phase == "started" and e.kind != "noop":
                cost += w.action + w.usd * e.cost_usd
            if isinstance(e, StateChange) and e.state == "vulnerable":
                self._advisories.add(e.target.removeprefix("svc-"))
            elif isinstance(e, ActionRecord) and e.phase == "succeeded":
                if e.kind == "rolling_patch":
                    self._advisories.discard(e.target.removeprefix("svc-"))
                elif e.kind == "shed_load":
                    self._shed = min(self._shed + SHED_STEP, SHED_MAX)
                elif e.kind == "stop_shedding":
                    self._shed = 0.0
        return cost
