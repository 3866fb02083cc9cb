"""The digital twin: vectorised fast-mode physics on a SimPy clock, forkable and deterministic.

Dense work (workload, routing, compute, serving, memory, storage, network, power, thermal,
probes, telemetry) is one vectorised :meth:`Twin._tick` over all hosts and instances every
``tick_s``. SimPy carries only sparse events: fault arrivals, action executions, timed
clearances. All pending sparse events are kept as data, so :meth:`Twin.fork` rebuilds a twin's
SimPy processes from state instead of copying generators.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
from scipy.special import gammainc
from simpy.events import URGENT

from sim import kernels
from sim.actions import ACTION_SPECS, Action, ActionResult, ResolvedTarget, check
from sim.actions import _destination as destination_host
from sim.config import TwinConfig
from sim.events import (
    ActionRecord,
    Event,
    EventLog,
    FaultCleared,
    FaultRecord,
    SloWindow,
    StateChange,
)
from sim.faults import (
    FAULT_SPECS,
    FaultKind,
    draw_lifetimes_s,
    exploit,
    inject_faults,
    strike,
    wear_out,
)
from sim.physics.storage import WEAR_SHAPE
from sim.physics.thermal import thermal_resistance_k_per_w
from sim.state import (
    DISK_DEGRADED,
    DISK_FAILED,
    DISK_OK,
    ClusterState,
    initial_state,
    mmc_servers,
)
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation, TelemetryBuffer
from sim.topology import Topology, build_topology
from sim.workload import Workload

_STREAMS = {
    "topology": 1, "workload": 2, "faults": 3, "actions": 4, "lifetime": 5, "disk": 6,
    "exploit": 7, "script": 8, "fork": 9, "deploys": 10,
}
DISK_BASE_HAZARD_PER_S = 0.01 / (365.25 * 86400.0)
FLAT_HAZARD_WEAR = 2.0**-14
"""Wear up to which the disk hazard h0 (1 + w^4) is h0 exactly: w^4 <= 2^-56 is below half
an ulp of 1, so 1 + w^4 rounds to 1 (the twin then skips the power)."""
DISK_DEGRADED_WEAR = 0.8
DISK_WEAR_OUT = 1.0
DEGRADED_IOPS_FACTOR = 0.25
LIVE_MIGRATION_PAUSE_S = 0.3
SPARE_SLOT_FRACTION = 1.5
SCALE_OUT_TARGET_UTIL = 0.6
PANIC_READY_SHARE = 0.5
P99_OVER_MEAN = -np.log(0.01)
_INSTANCE_FAULTS = (FaultKind.SERVICE_CRASH, FaultKind.MEMORY_LEAK, FaultKind.VM_FAILURE)


def _same(array: np.ndarray) -> np.ndarray:
    return array


@dataclass(frozen=True, slots=True)
class PendingAction:
    """An accepted action in flight; ``success`` was drawn when it was accepted."""

    action_id: int
    kind: str
    target: ResolvedTarget
    start_s: float
    done_at_s: float
    success: bool
    aux: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Timer:
    """A scheduled sparse event: a self-limiting fault ending, or an OOM kill inside a tick."""

    at_s: float
    fault_id: int
    what: str
    index: int


class Twin:
    """A digital twin of a cluster; implements the :class:`sim.plant.Plant` protocol.

    Args:
        config: validated configuration.
        seed: integer seed; every random draw of the run comes from streams derived from it.
    """

    def __init__(self, config: TwinConfig, seed: int = 0) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            from sim.errors import ConfigError

            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.config = config
        self.seed = seed
        self._ss = np.random.SeedSequence(seed)
        self.topo: Topology = build_topology(config, self.rng_for("topology"))
        n_h = self.topo.n_hosts
        faults = config.faults
        lifetimes = (
            draw_lifetimes_s(
                self.rng_for("lifetime", 0), n_h, faults.annual_failure_rate, faults.weibull_shape
            )
            if faults.hardware_lifetimes
            else np.full(n_h, np.inf)
        )
        spare = max(8, int(SPARE_SLOT_FRACTION * self.topo.initial_service.shape[0]))
        self.state: ClusterState = initial_state(
            self.topo,
            config.topology.host.cores,
            config.topology.host.mem_bytes,
            self.rng_for("disk").exponential(1.0, n_h),
            lifetimes,
            spare,
        )
        self.workload = Workload(config.workload, n_h, self.rng_for("workload"))
        self.log = EventLog()
        self.telemetry = TelemetryBuffer(
            config.telemetry_buffer, n_h, self.state.capacity, len(HOST_FEATURES),
            len(INSTANCE_FEATURES),
        )
        self.fault_of: dict[str, int] = {}
        self.active_faults: dict[int, tuple[FaultKind, str]] = {}
        self.pending: dict[int, PendingAction] = {}
        self.timers: list[Timer] = []
        self._next_fault_id = 0
        self._next_action_id = 0
        self._script_pos = 0
        self._next_tick_s = 0.0
        self._next_probe_s = 0.0
        self._next_sample_s = 0.0
        self._next_window_s = config.slo_window_s
        self._window_start_s = 0.0
        self._tick_count = 0
        self._action_rng = self.rng_for("actions")
        self._energy_j = 0.0
        self._action_cost_usd = 0.0
        self._instance_seconds = 0.0
        self._init_constants()
        self.env = simpy.Environment()
        self._start_processes(self.rng_for("faults"))

    def _init_constants(self) -> None:
        topo, cfg = self.topo, self.config
        self._host = cfg.topology.host
        self._uplink_capacity_bps = cfg.topology.uplink_bps * topo.n_spines
        self._cross_rack = 1.0 - 1.0 / topo.n_racks
        host = self._host
        self._disk_iops = host.disk_iops
        self._host_tx_s = cfg.topology.packet_bits / host.nic_bps
        self._uplink_tx_s = cfg.topology.packet_bits / cfg.topology.uplink_bps
        self._hops_s = 2.0 * cfg.topology.hop_latency_s * (1.0 + self._cross_rack)
        # The power law's exponent (sim.physics.power.fan_power_w), None for the linear law.
        self._fan_exponent = host.fan_exponent if host.power_model == "fan" else None
        self._cores = float(host.cores)
        self._empty = np.empty(0)
        # Per service rows the tick's kernels fill and the tick itself reads at once.
        self._svc_buf = np.empty((4, topo.n_services))
        self._class_buf = np.empty((2, topo.class_share.shape[0]))
        self._thermal_key: tuple[int, float] | None = None
        self._inv_host_mem = 1.0 / host.mem_bytes
        self._inv_nic = 1.0 / host.nic_bps
        # Throttling never takes a host's CPU to zero, so every slot's service rate mu is
        # positive and finite, which the idle slots' exact M/M/c latency (1 / mu) needs.
        self._idle_mmc_exact = host.throttle_min_factor > 0
        self._svc_key: bytes | None = None
        self._dirty = True

    # ------------------------------------------------------------------ streams and names
    def rng_for(self, stream: str, *keys: int) -> np.random.Generator:
        """Independent generator for a named stream, derived from the run's seed."""
        ss = np.random.SeedSequence(
            entropy=self._ss.entropy,
            spawn_key=(*self._ss.spawn_key, _STREAMS[stream], *keys),
        )
        return np.random.Generator(np.random.PCG64(ss))

    @property
    def now_s(self) -> float:
        """Simulated time, seconds."""
        return float(self.env.now)

    def inst_name(self, inst: int) -> str:
        """Name of an instance slot, e.g. ``inst-12``."""
        return f"inst-{inst}"

    def tor_up_of_host(self) -> np.ndarray:
        """Whether each host's top-of-rack switch is up."""
        return self.state.tor_up[self.topo.host_rack]

    def busy(self, target: str) -> bool:
        """Whether an action on ``target`` is in progress."""
        return any(p.target.name == target for p in self.pending.values())

    # ------------------------------------------------------------------ processes
    def _start_processes(self, fault_rng: np.random.Generator) -> None:
        env = self.env
        env.process(self._ticker(self._next_tick_s - self.now_s))
        hours_scale = self.topo.n_hosts / 100.0 / 86400.0
        for i, (kind, rate) in enumerate(self.config.faults.rates_per_day_per_100_hosts):
            if rate > 0:
                stream = np.random.Generator(
                    np.random.PCG64(fault_rng.bit_generator.seed_seq.spawn(i + 1)[-1])  # type: ignore[attr-defined]
                )
                env.process(inject_faults(env, self, FaultKind(kind), rate * hours_scale, stream))
        if self._script_pos < len(self.config.scripted):
            env.process(self._run_schedule())
        for h in np.flatnonzero(np.isfinite(self.state.hw_fail_at_s) & ~self.state.host_hw_failed):
            env.process(wear_out(env, self, int(h), int(self.state.hw_epoch[h])))
        for s in np.flatnonzero(self.state.svc_exploit_hazard_per_s > 0):
            fid = self.fault_of.get(f"svc-{self.topo.service_names[s]}", -1)
            self.start_exploit(int(s), fid)
        for timer in self.timers:
            env.process(self._clear_later(timer))
        for p in self.pending.values():
            env.process(self._execute(p))

    def _ticker(self, delay_s: float) -> Generator[simpy.Event, Any, None]:
        dt = self.config.tick_s
        if delay_s > 0:
            yield self.env.timeout(delay_s)
        while True:
            self._tick(dt)
            self._next_tick_s = self.now_s + dt
            yield self.env.timeout(dt)

    def _run_schedule(self) -> Generator[simpy.Event, Any, None]:
        script = self.config.scripted
        rng = self.rng_for("script", self._tick_count)
        while self._script_pos < len(script):
            item = script[self._script_pos]
            if item.at_s > self.now_s:
                yield self.env.timeout(item.at_s - self.now_s)
            self._script_pos += 1
            strike(self, FaultKind(item.kind), item.target, rng)

    def start_exploit(self, service: int, fault_id: int) -> None:
        """Start the exploitation hazard of a disclosed vulnerability."""
        rng = self.rng_for("exploit", fault_id, self._tick_count)
        self.env.process(exploit(self.env, self, service, fault_id, rng))

    def schedule_clear(self, at_s: float, fault_id: int, what: str, index: int) -> None:
        """Clear a self-limiting fault at ``at_s`` unless it was healed before."""
        timer = Timer(at_s, fault_id, what, index)
        self.timers.append(timer)
        self.env.process(self._clear_later(timer))

    def _clear_later(self, timer: Timer) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(max(0.0, timer.at_s - self.now_s))
        if timer in self.timers:
            self.timers.remove(timer)
        if timer.what == "oom_kill":
            self._oom_kill(timer.index)
            return
        if timer.fault_id not in self.active_faults:
            return
        if timer.what == "promote_config":
            self._promote_config(timer.fault_id, timer.index)
            return
        if timer.what == "noisy_end":
            self.state.noisy_cores[timer.index] = 0.0
        self.clear_fault(timer.fault_id, "self-limiting")

    def apply_config(self, instances: np.ndarray, version: int, error_rate: float) -> None:
        """Deploy configuration ``version`` to ``instances``.

        Each of them fails ``error_rate`` of its requests and runs 20% slower while it holds
        it; its health endpoint still answers, so it stays in rotation.
        """
        st = self.state
        st.inst_config_version[instances] = version
        st.inst_cfg_error[instances] = error_rate
        st.inst_slowdown[instances] *= 0.8
        self._dirty = True

    def _promote_config(self, fault_id: int, service: int) -> None:
        """The canary's bake time ran out before a rollback: the deploy reaches every replica.

        Replicas booted since the canary started (with the good configuration) get it too,
        as a deploy system's promotion would give it to them.
        """
        st = self.state
        version = int(st.svc_good_config_version[service]) + 1
        rest = np.flatnonzero(
            st.inst_used & (st.inst_service == service) & (st.inst_config_version != version)
        )
        if not rest.size:
            return
        error_rate = next(
            r.detail["error_rate"] for r in self.log.of_type(FaultRecord)
            if isinstance(r, FaultRecord) and r.fault_id == fault_id
        )
        self.apply_config(rest, version, error_rate)
        self.record_state(f"svc-{self.topo.service_names[service]}", "config_promoted",
                          fault_id, f"canary baked; {rest.size} more replicas")

    # ------------------------------------------------------------------ records
    def _record(self, record: Event) -> None:
        # Every change of sparse state (faults, actions, state changes) writes a record, so
        # this is where the arrays derived from sparse state are marked stale.
        self._dirty = True
        self.log.add(record)

    def invalidate(self) -> None:
        """Mark derived arrays stale after changing ``state`` from outside the twin."""
        self._dirty = True

    def record_fault(
        self,
        kind: FaultKind,
        target: str,
        detail: dict[str, float],
        *,
        warning_signs: bool | None = None,
    ) -> int:
        """Write a ground-truth fault record and register the fault as active."""
        spec = FAULT_SPECS[kind]
        fid = self._next_fault_id
        self._next_fault_id += 1
        self._record(
            FaultRecord(
                self.log.next_seq, self.now_s, fid, kind.value, target, spec.root_cause,
                spec.warning_signs if warning_signs is None else warning_signs, detail,
                self.affected_by(target),
            )
        )
        self.active_faults[fid] = (kind, target)
        return fid

    def affected_by(self, target: str) -> tuple[str, ...]:
        """Components a fault on ``target`` impairs.

        Itself, the hosts and instances below it and their services: the ground truth for
        attributing alerts to faults.
        """
        st, topo = self.state, self.topo
        used = st.inst_used
        if target == "cluster":
            return ("cluster", *(f"svc-{n}" for n in topo.service_names))
        kind, _, ident = target.rpartition("-")
        idx = int(ident) if ident.isdigit() else -1
        names: list[str] = [target]
        if kind == "inst":
            insts = np.array([idx])
        elif kind in ("host", "link-host"):
            if kind == "link-host":
                names.append(f"host-{idx}")
            insts = np.flatnonzero(used & (st.inst_host == idx))
        elif kind in ("tor", "uplink", "rack"):
            hosts = np.flatnonzero(topo.host_rack == idx)
            names += [f"host-{h}" for h in hosts]
            insts = np.flatnonzero(used & np.isin(st.inst_host, hosts))
        elif kind == "svc":
            insts = np.flatnonzero(used & (st.inst_service == topo.service_names.index(ident)))
        else:
            insts = np.zeros(0, dtype=np.int64)
        names += [self.inst_name(int(i)) for i in insts]
        names += sorted({f"svc-{topo.service_names[st.inst_service[i]]}" for i in insts})
        return tuple(dict.fromkeys(names))

    def record_state(
        self, target: str, state: str, fault_id: int | None, cause: str, t_s: float | None = None
    ) -> None:
        """Write a state-change record (``t_s`` defaults to now)."""
        self._record(
            StateChange(
                self.log.next_seq, self.now_s if t_s is None else t_s, target, state,
                fault_id if fault_id is not None and fault_id >= 0 else None, cause,
            )
        )

    def clear_fault(self, fault_id: int, by: str) -> None:
        """Mark an active fault as cleared."""
        kind_target = self.active_faults.pop(fault_id, None)
        if kind_target is None:
            return
        if self.fault_of.get(kind_target[1]) == fault_id:
            del self.fault_of[kind_target[1]]
        self._record(FaultCleared(self.log.next_seq, self.now_s, fault_id, by))

    def _clear_faults_on(self, target: str, kinds: Sequence[FaultKind], by: str) -> None:
        fid = self.fault_of.get(target)
        if fid is not None and self.active_faults[fid][0] in kinds:
            self.clear_fault(fid, by)

    # ------------------------------------------------------------------ state transitions
    def take_instance_down(
        self, inst: int, fault_id: int | None, cause: str, *, vm_down: bool = False
    ) -> None:
        """Stop an instance's process (and its VM with ``vm_down``): queued requests are lost."""
        st = self.state
        if vm_down:
            st.inst_vm_up[inst] = False
        if not st.inst_up[inst]:
            return
        st.inst_up[inst] = False
        self._lose_requests(float(st.inst_backlog[inst]))
        st.inst_backlog[inst] = 0.0
        self.record_state(self.inst_name(inst), "down", fault_id, cause)

    def _bring_instance_up(self, inst: int, cause: str) -> None:
        st = self.state
        svc = st.inst_service[inst]
        st.inst_mem_bytes[inst] = self.topo.svc_mem_base_bytes[svc]
        st.inst_leak_bps[inst] = 0.0
        st.inst_backlog[inst] = 0.0
        st.inst_probe_fails[inst] = 0
        st.inst_probe_passes[inst] = self.config.probes.success_threshold
        self._recompute_slowdown(inst)
        st.inst_vm_up[inst] = True
        if not st.inst_up[inst]:
            st.inst_up[inst] = True
            self.record_state(self.inst_name(inst), "up", None, cause)
        self._clear_faults_on(self.inst_name(inst), _INSTANCE_FAULTS, cause)

    def _recompute_slowdown(self, inst: int) -> None:
        st = self.state
        st.inst_slowdown[inst] = (0.8 if st.inst_cfg_error[inst] > 0 else 1.0) * (
            0.4 if st.inst_compromised[inst] else 1.0
        )

    def take_host_down(self, host: int, fault_id: int | None, cause: str) -> None:
        """Power a host off: every instance on it stops."""
        st = self.state
        if not st.host_up[host]:
            return
        st.host_up[host] = False
        self.record_state(f"host-{host}", "down", fault_id, cause)
        for inst in np.flatnonzero(st.inst_used & (st.inst_host == host)):
            self.take_instance_down(int(inst), fault_id, f"host-{host} down", vm_down=True)

    def _bring_host_up(self, host: int, cause: str) -> None:
        st = self.state
        if st.host_up[host] or st.host_hw_failed[host] or st.disk_state[host] == DISK_FAILED:
            return
        st.host_up[host] = True
        self.record_state(f"host-{host}", "up", None, cause)
        for inst in np.flatnonzero(st.inst_used & (st.inst_host == host) & ~st.inst_isolated):
            self._bring_instance_up(int(inst), f"host-{host} up")

    def _lose_requests(self, n: float) -> None:
        st = self.state
        st.window_requests += n
        st.requests_total += n

    def _move_instance(self, inst: int, dest: int) -> None:
        st = self.state
        src = st.inst_host[inst]
        st.host_free_cores[src] += st.inst_workers[inst]
        st.host_free_mem_bytes[src] += st.inst_mem_limit_bytes[inst]
        st.inst_host[inst] = dest
        self._dirty = True

    def _reserve(self, host: int, inst: int) -> None:
        st = self.state
        st.host_free_cores[host] -= st.inst_workers[inst]
        st.host_free_mem_bytes[host] -= st.inst_mem_limit_bytes[inst]

    def _release(self, host: int, inst: int) -> None:
        st = self.state
        st.host_free_cores[host] += st.inst_workers[inst]
        st.host_free_mem_bytes[host] += st.inst_mem_limit_bytes[inst]

    def scale_out_host(self, service: int) -> int:
        """Host a new replica of ``service`` would be placed on; -1 if none fits."""
        st = self.state
        workers = self.topo.svc_workers[service]
        mem = self.topo.svc_mem_limit_bytes[service]
        ok = (
            st.host_up & st.host_schedulable & (st.host_free_cores >= workers)
            & (st.host_free_mem_bytes >= mem) & (st.disk_state == DISK_OK)
            & self.tor_up_of_host() & (st.throttle >= 1.0)
        )
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            return -1
        holders = st.inst_host[st.inst_used & (st.inst_service == service)]
        fresh = cand[~np.isin(cand, holders)]
        pool = fresh if fresh.size else cand
        return int(pool[np.argmax(st.host_free_cores[pool])])

    # ------------------------------------------------------------------ Plant protocol
    def observe(self, *, copy: bool = True) -> Observation:
        """Latest telemetry sample with probe state and per-service aggregates.

        Without ``copy`` the arrays are views into the twin's telemetry buffer and state,
        valid only until the twin next changes (cheaper, for a caller that reads them at
        once and keeps nothing).
        """
        st = self.state
        own = np.copy if copy else _same
        return Observation(
            t_s=self.telemetry.last_t_s,
            host=self.telemetry.last_host(copy=copy),
            inst=self.telemetry.last_inst(copy=copy),
            inst_used=own(st.inst_used),
            inst_service=own(st.inst_service),
            inst_host=own(st.inst_host),
            inst_live=own(st.inst_live),
            inst_ready=own(st.inst_ready),
            inst_config_version=own(st.inst_config_version),
            service_names=self.topo.service_names,
            host_rack=self.topo.host_rack,
            call_edges=self.topo.call_edges,
        )

    def apply(self, action: Action) -> ActionResult:
        """Submit an action; invalid ones are rejected with a reason and change nothing."""
        checked = check(self, action)
        kind = getattr(action, "kind", "?")
        target = getattr(action, "target", "?")
        if isinstance(checked, str):
            self._record(
                ActionRecord(self.log.next_seq, self.now_s, -1, str(kind), str(target),
                             "rejected", checked, 0.0)
            )
            return ActionResult(False, -1, str(kind), str(target), checked, self.now_s)
        spec, tgt = checked
        aid = self._next_action_id
        self._next_action_id += 1
        success = bool(self._action_rng.random() < spec.success_prob)
        done_at = self.now_s + spec.duration_s
        aux = self._on_start(spec.kind, tgt)
        pending = PendingAction(aid, spec.kind, tgt, self.now_s, done_at, success, aux)
        self.pending[aid] = pending
        self._action_cost_usd += spec.cost_usd
        self._record(
            ActionRecord(self.log.next_seq, self.now_s, aid, spec.kind, tgt.name, "started",
                         spec.description, spec.cost_usd)
        )
        self.env.process(self._execute(pending))
        return ActionResult(True, aid, spec.kind, tgt.name, "accepted", done_at)

    def advance(self, dt_s: float) -> None:
        """Run the twin for ``dt_s`` simulated seconds."""
        if not math.isfinite(dt_s) or dt_s < 0:
            raise ValueError(f"dt_s must be a finite non-negative number, got {dt_s!r}")
        if dt_s > 0:
            self._run_until(self.now_s + dt_s)

    def _run_until(self, at_s: float) -> None:
        """``self.env.run(until=at_s)``, without its stop event and exception.

        SimPy's ``run(until=t)`` queues an urgent stop event at ``t``, steps through every
        event ordered before it by (time, priority, id), and stops with an exception. The
        loop below steps through exactly those events, in the same order, then sets the clock
        to ``t``: the same run at a fraction of the cost when a tick is all there is to do.
        """
        env = self.env
        if not at_s > env.now:
            env.run(until=at_s)  # raises SimPy's own error
            return
        stop = (at_s, URGENT, next(env._eid))
        queue = env._queue
        step = env.step
        while queue and queue[0][:3] < stop:
            step()
        env._now = at_s

    def events(self, since: int = 0) -> list[Event]:
        """Event records with sequence number >= ``since``."""
        return self.log.since(since)

    # ------------------------------------------------------------------ actions
    def _on_start(self, kind: str, tgt: ResolvedTarget) -> tuple[int, ...]:
        st = self.state
        i = tgt.index
        if kind == "restart_instance":
            self.take_instance_down(i, None, "restart")
        elif kind in ("live_migrate", "cold_migrate"):
            dest = destination_host(self, i)
            self._reserve(dest, i)
            if kind == "cold_migrate":
                self.take_instance_down(i, None, "cold migration")
            return (dest,)
        elif kind == "scale_out":
            slots: list[int] = []
            for _ in range(self._scale_out_count(i)):
                free = np.flatnonzero(~st.inst_used)
                host = self.scale_out_host(i)
                if free.size == 0 or host < 0:
                    break
                self._init_slot(int(free[0]), i, host)
                slots.append(int(free[0]))
            return tuple(slots)
        elif kind == "scale_in":
            members = np.flatnonzero(st.inst_used & (st.inst_service == i))
            rank = st.inst_up[members].astype(float) * 2 + st.inst_ready[members]
            victim = int(members[np.lexsort((-members, rank))[0]])
            st.inst_in_rotation[victim] = False
            return (victim,)
        elif kind == "drain_host":
            st.host_schedulable[i] = False
        elif kind in ("replace_disk", "reboot_host"):
            self.take_host_down(i, None, kind)
        return ()

    def _scale_out_count(self, service: int) -> int:
        """Replicas a scale-out adds, as a horizontal autoscaler would.

        Enough to bring the service's offered CPU demand per running worker down to
        ``SCALE_OUT_TARGET_UTIL``; at least one, at most as many as it has running.
        """
        st = self.state
        members = st.inst_used & (st.inst_service == service) & st.inst_up
        n = int(members.sum())
        if n == 0:
            return 1
        # What the service would serve without the admission shed: a scale-out sized on
        # the admitted load alone falls short by the shed share once the shed stops.
        demand = float((st.inst_rps[members] / st.inst_slowdown[members]).sum())
        demand /= 1.0 - st.shed_fraction
        util = demand * self.topo.svc_cpu_s[service] / float(st.inst_servers[members].sum())
        need = math.ceil(n * util / SCALE_OUT_TARGET_UTIL) - n
        return int(min(max(need, 1), n))

    def _init_slot(self, slot: int, service: int, host: int) -> None:
        st, topo = self.state, self.topo
        self._dirty = True
        st.inst_used[slot] = True
        st.inst_service[slot] = service
        st.inst_host[slot] = host
        st.inst_workers[slot] = topo.svc_workers[service]
        st.inst_servers[slot] = mmc_servers(topo.svc_workers[service],
                                            topo.svc_max_servers[service])
        st.inst_mem_limit_bytes[slot] = topo.svc_mem_limit_bytes[service]
        st.inst_mem_bytes[slot] = topo.svc_mem_base_bytes[service]
        st.inst_up[slot] = False
        st.inst_vm_up[slot] = False
        st.inst_in_rotation[slot] = False
        st.inst_ready[slot] = False
        st.inst_live[slot] = False
        st.inst_isolated[slot] = False
        st.inst_compromised[slot] = False
        st.inst_vulnerable[slot] = bool(st.svc_exploit_hazard_per_s[service] > 0)
        st.inst_config_version[slot] = st.svc_good_config_version[service]
        st.inst_cfg_error[slot] = 0.0
        st.inst_leak_bps[slot] = 0.0
        st.inst_backlog[slot] = 0.0
        st.inst_slowdown[slot] = 1.0
        self._reserve(host, slot)

    def _free_slot(self, slot: int) -> None:
        st = self.state
        self._release(int(st.inst_host[slot]), slot)
        st.inst_used[slot] = False
        st.inst_up[slot] = False
        st.inst_vm_up[slot] = False
        st.inst_in_rotation[slot] = False
        st.inst_ready[slot] = False
        st.inst_live[slot] = False
        st.inst_rps[slot] = 0.0
        st.inst_backlog[slot] = 0.0
        st.inst_host[slot] = 0
        self._dirty = True

    def _execute(self, p: PendingAction) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(max(0.0, p.done_at_s - self.now_s))
        self.pending.pop(p.action_id, None)
        ok = self._on_done(p)
        self._record(
            ActionRecord(self.log.next_seq, self.now_s, p.action_id, p.kind, p.target.name,
                         "succeeded" if ok else "failed", "" if ok else "action did not take",
                         0.0)
        )

    def _on_done(self, p: PendingAction) -> bool:
        st, topo = self.state, self.topo
        i, kind = p.target.index, p.kind
        if not p.success:
            if kind in ("live_migrate", "cold_migrate"):
                self._release(p.aux[0], i)
            elif kind == "scale_out":
                for slot in p.aux:
                    self._free_slot(slot)
            elif kind == "scale_in":
                st.inst_in_rotation[p.aux[0]] = True
            elif kind == "drain_host":
                st.host_schedulable[i] = True
            return False
        if kind == "restart_instance":
            if not st.host_up[st.inst_host[i]]:
                return False
            self._bring_instance_up(i, "restart")
        elif kind == "live_migrate":
            self._lose_requests(float(st.inst_rps[i]) * LIVE_MIGRATION_PAUSE_S)
            self._move_instance(i, p.aux[0])
            self._clear_faults_on(self.inst_name(i), (FaultKind.VM_FAILURE,), "live_migrate")
        elif kind == "cold_migrate":
            self._move_instance(i, p.aux[0])
            if st.inst_compromised[i]:
                st.inst_compromised[i] = False
                self.record_state(self.inst_name(i), "rebuilt", None, "cold_migrate")
            if st.host_up[p.aux[0]]:
                self._bring_instance_up(i, "cold_migrate")
        elif kind == "scale_out":
            booted = 0
            for slot in p.aux:
                if not st.host_up[st.inst_host[slot]]:
                    self._free_slot(slot)
                    continue
                st.inst_up[slot] = st.inst_in_rotation[slot] = st.inst_ready[slot] = True
                st.inst_vm_up[slot] = True
                st.inst_live[slot] = True
                booted += 1
                self.record_state(self.inst_name(slot), "up", None, "scale_out")
            if not booted:
                return False
        elif kind == "scale_in":
            victim = p.aux[0]
            self._lose_requests(float(st.inst_backlog[victim]))
            self._free_slot(victim)
            self.record_state(self.inst_name(victim), "removed", None, "scale_in")
        elif kind == "config_rollback":
            mask = st.inst_used & (st.inst_service == i)
            st.inst_config_version[mask] = st.svc_good_config_version[i]
            st.inst_cfg_error[mask] = 0.0
            for inst in np.flatnonzero(mask):
                self._recompute_slowdown(int(inst))
            self._clear_faults_on(p.target.name, (FaultKind.BAD_CONFIG,), kind)
        elif kind == "reroute_traffic":
            st.inst_in_rotation[i] = False
        elif kind == "restore_traffic":
            st.inst_in_rotation[i] = True
        elif kind == "failover_rack":
            st.inst_in_rotation[st.inst_used & (topo.host_rack[st.inst_host] == i)] = False
        elif kind == "failback_rack":
            # Quarantined instances stay isolated; everything else in the rack serves again.
            back = st.inst_used & ~st.inst_isolated & (topo.host_rack[st.inst_host] == i)
            st.inst_in_rotation[back] = True
        elif kind == "drain_host":
            for inst in np.flatnonzero(st.inst_used & (st.inst_host == i)):
                dest = destination_host(self, int(inst))
                if dest >= 0:
                    self._reserve(dest, int(inst))
                    self._move_instance(int(inst), dest)
        elif kind == "add_cpu":
            st.inst_workers[i] += 2
            st.inst_servers[i] = mmc_servers(st.inst_workers[i],
                                         self.topo.svc_max_servers[st.inst_service[i]])
            st.host_free_cores[st.inst_host[i]] -= 2
        elif kind == "add_memory":
            extra = 0.5 * st.inst_mem_limit_bytes[i]
            st.inst_mem_limit_bytes[i] += extra
            st.host_free_mem_bytes[st.inst_host[i]] -= extra
        elif kind == "rolling_patch":
            mask = st.inst_used & (st.inst_service == i)
            was_vulnerable = bool(st.inst_vulnerable[mask].any())
            st.inst_vulnerable[mask] = False
            if was_vulnerable:
                self.record_state(p.target.name, "patched", None, kind)
            st.svc_exploit_hazard_per_s[i] = 0.0
            for inst in np.flatnonzero(mask & st.inst_compromised):
                st.inst_compromised[inst] = False
                self.record_state(self.inst_name(int(inst)), "rebuilt", None, kind)
            for inst in np.flatnonzero(mask & st.inst_up):
                self._bring_instance_up(int(inst), kind)
            self._clear_faults_on(p.target.name, (FaultKind.SECURITY_VULNERABILITY,), kind)
        elif kind == "quarantine_instance":
            st.inst_isolated[i] = True
            st.inst_in_rotation[i] = False
        elif kind == "replace_disk":
            st.disk_wear[i] = 0.0
            st.disk_wear_rate_per_s[i] = 0.0
            st.disk_hazard_acc[i] = 0.0
            st.disk_fail_threshold[i] = float(self._action_rng.exponential(1.0))
            if st.disk_state[i] != DISK_OK:
                st.disk_state[i] = DISK_OK
                self.record_state(p.target.name, "disk_ok", None, kind)
            self._clear_faults_on(p.target.name, (FaultKind.DISK_DEGRADATION,), kind)
            self._bring_host_up(i, kind)
        elif kind == "reboot_host":
            if st.temp_c[i] >= self._host.shutdown_c:
                return False
            self._bring_host_up(i, kind)
        elif kind == "repair_host":
            st.host_hw_failed[i] = False
            st.hw_epoch[i] += 1
            cfg = self.config.faults
            if cfg.hardware_lifetimes:
                rng = self.rng_for("lifetime", i + 1, int(st.hw_epoch[i]))
                st.hw_fail_at_s[i] = self.now_s + float(
                    draw_lifetimes_s(rng, 1, cfg.annual_failure_rate, cfg.weibull_shape)[0]
                )
                self.env.process(wear_out(self.env, self, i, int(st.hw_epoch[i])))
            st.fan_health[i], st.fan_decay_per_s[i] = 1.0, 0.0
            st.disk_wear[i] = st.disk_wear_rate_per_s[i] = st.disk_hazard_acc[i] = 0.0
            st.disk_state[i] = DISK_OK
            st.temp_c[i] = topo.host_inlet_c[i]
            self._clear_faults_on(
                p.target.name,
                (FaultKind.HOST_FAILURE, FaultKind.DISK_DEGRADATION, FaultKind.FAN_FAILURE),
                kind,
            )
            self._bring_host_up(i, kind)
        elif kind == "replace_fan":
            st.fan_health[i], st.fan_decay_per_s[i] = 1.0, 0.0
            self._clear_faults_on(p.target.name, (FaultKind.FAN_FAILURE,), kind)
        elif kind == "uncordon_host":
            st.host_schedulable[i] = True
        elif kind == "repair_switch":
            up = st.tor_up if p.target.name.startswith("tor") else st.spine_up
            up[i] = True
            self.record_state(p.target.name, "up", None, kind)
            self._clear_faults_on(p.target.name, (FaultKind.NETWORK_PARTITION,), kind)
        elif kind == "repair_link":
            loss = st.host_link_loss if p.target.name.startswith("link-host") else st.uplink_loss
            loss[i] = 0.0
            self._clear_faults_on(p.target.name, (FaultKind.LINK_DEGRADATION,), kind)
        elif kind == "evict_noisy_neighbour":
            st.noisy_cores[i] = 0.0
            self._clear_faults_on(p.target.name, (FaultKind.NOISY_NEIGHBOUR,), kind)
        elif kind == "shed_load":
            st.shed_fraction = min(0.6, st.shed_fraction + 0.2)
        elif kind == "stop_shedding":
            st.shed_fraction = 0.0
        elif kind == "clear_cache":
            mask = st.inst_used & (st.inst_service == i)
            st.inst_mem_bytes[mask] = topo.svc_mem_base_bytes[i]
        return True

    # ------------------------------------------------------------------ the tick
    def _refresh_derived(self) -> None:
        """Arrays that change only with sparse state, rebuilt after any sparse change."""
        st, topo = self.state, self.topo
        svc, hst, used = st.inst_service, st.inst_host, st.inst_used
        n_s = topo.n_services
        svc_key = svc.tobytes()
        if svc_key != self._svc_key:  # a slot changed service (scale-out): per-service costs
            self._svc_key = svc_key
            self._i_cpu_base = topo.svc_cpu_s.take(svc)
            self._i_iops = topo.svc_iops_per_req.take(svc)
            self._i_write_iops = self._i_iops * topo.svc_write_share.take(svc)
            self._i_bits = topo.svc_bytes_per_req.take(svc) * 8.0
            self._i_timeout_s = topo.svc_timeout_s.take(svc)
            self._i_mem_per_req = topo.svc_mem_per_req_bytes.take(svc)
        self._spines_up = int(st.spine_up.sum())
        self._uplink_cap_bps = (
            self._uplink_capacity_bps * max(self._spines_up, 1) / topo.n_spines
        )
        # Routing, serving slots, success shares and leaks: sim.kernels.derive.
        (self._i_cpu_s, self._i_share, self._r_idx, self._r_svc, self._svc_routable,
         self._serving, self._s_idx, self._s_host, self._s_cpu_s, self._s_iops, self._s_bits,
         self._s_write_iops, self._i_static_ok, self._leak_idx, self._leak_bps) = kernels.derive(
            svc, hst, used, st.inst_in_rotation, st.inst_isolated, st.inst_ready, st.inst_up,
            self._i_cpu_base, st.inst_slowdown, self._i_iops, self._i_bits, self._i_write_iops,
            st.inst_cfg_error, st.inst_compromised, st.inst_leak_bps, st.host_up, st.tor_up,
            topo.host_rack, st.host_link_loss, st.uplink_loss, n_s, PANIC_READY_SHARE,
            self._cross_rack, self._spines_up == 0,
        )
        self._background_cores = topo.host_background_cores + st.noisy_cores
        self._iops_cap = self._disk_iops * np.where(
            st.disk_state == DISK_OK, 1.0, DEGRADED_IOPS_FACTOR
        )
        # Sparse inputs of the dense update, and the tests on them that pick its branches.
        self._svc_load_factor = 1.0 + st.svc_extra_load
        # Leaking slots alone: the others' memory grows by 0 (a no-op) and cannot cross.
        self._leaking = bool(self._leak_idx.size)
        self._up_per_core = st.host_up / self._host.cores
        self._fans_decaying = bool(st.fan_decay_per_s.any())
        self._disks_wearing = bool(st.disk_wear_rate_per_s.any())
        self._dirty = False

    def _nominal_thermal(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Per host thermal resistance and RC decay over ``dt`` with healthy fans.

        As :func:`~sim.physics.thermal.rc_step_temp_c` computes them from the scalar
        resistance (numpy's exp), spread over the hosts; kept while ``dt`` is unchanged.
        """
        n_h = self.topo.n_hosts
        if self._thermal_key != (n_h, dt):
            r, c = self._host.thermal_r_k_per_w, self._host.thermal_c_j_per_k
            self._nominal_r = np.full(n_h, r)
            self._nominal_decay = np.full(n_h, np.exp(-dt / (r * c)))
            self._thermal_key = (n_h, dt)
        return self._nominal_r, self._nominal_decay

    def _tick(self, dt: float) -> None:
        st, topo, host = self.state, self.topo, self._host
        t = self.now_s
        self._tick_count += 1
        if t >= self._next_window_s - 1e-9:
            self._close_window(t)
        if self._dirty:
            self._refresh_derived()
        svc, hst = st.inst_service, st.inst_host

        offered = self.workload.rate_rps(t, dt)
        admitted = offered * (1.0 - st.shed_fraction)
        services = self._svc_buf
        lam_svc = services[3]
        # Load, CPU contention, disks, queues, network and per-slot latency: the laws of
        # sim.physics fused into compiled loops (sim.kernels, bit-identical to them).
        serving = self._serving
        slots, hosts, st.uplink_util = kernels.serve(
            admitted, topo.visit_ratio, self._svc_load_factor, lam_svc, svc, self._i_share,
            serving, self._s_idx, self._s_host, self._s_cpu_s,
            self._s_iops, self._s_bits, hst, self._i_cpu_s, self._i_iops, st.inst_servers,
            self._i_timeout_s, st.inst_backlog, self._background_cores, st.throttle,
            self._iops_cap, topo.host_rack, self._up_per_core, topo.n_racks, self._cores,
            host.disk_service_s, self._host_tx_s, host.nic_bps, self._cross_rack,
            self._uplink_cap_bps, self._uplink_tx_s, self._hops_s, dt, self._idle_mmc_exact,
        )
        lam, capacity, backlog, dropped, neg_timeout, latency = slots
        st.cpu_util, st.disk_util, st.disk_latency_s, st.net_bps = hosts
        st.inst_backlog = backlog
        # Requests slower than the client timeout (exponential latency): numpy's exp.
        st.inst_error_rate, st.inst_util = kernels.outcome(
            lam, serving, capacity, dropped, latency, np.exp(neg_timeout), self._i_static_ok,
            svc, self._r_idx, self._r_svc, lam_svc, self._svc_routable, dt,
            self._idle_mmc_exact, services,
        )
        svc_lat, svc_sq, svc_ok = services[:3]
        st.inst_rps = lam
        st.inst_latency_s = latency
        # End-to-end per class along its path (sim.physics.serving.path_latency_cdf: the
        # moment-matched gamma of the visits' sojourns), with numpy's products, exp, log and
        # scipy's incomplete gamma between the kernels.
        path = topo.path_matrix
        class_lat = path @ svc_lat
        class_ok = np.exp(path @ np.log(svc_ok))
        gamma = self._class_buf
        kernels.gamma_args(class_lat, path @ svc_sq, topo.class_slo_s, gamma)
        n_req = offered * dt
        admitted_req = admitted * dt
        class_good = kernels.class_windows(
            class_ok, gammainc(gamma[0], gamma[1]), topo.class_share, n_req, admitted_req,
            st.window_class_requests, st.window_class_good,
        )
        good = admitted_req * float(topo.class_share @ class_good)
        st.requests_total += n_req
        st.requests_good += good
        st.window_requests += n_req
        st.window_good += good

        # Memory: leaks grow exactly over the tick; the OOM killer fires at the crossing.
        if self._leaking:
            self._advance_leaks(dt, lam, latency)

        # Power and thermal: Fan et al. power curve, exact RC update, throttling, shutdown;
        # storage wear (sim.kernels.hosts). The power of the fan curve and the RC decay are
        # numpy's, as in the laws.
        cpu_util = st.cpu_util
        upow = self._empty
        if self._fan_exponent is not None:
            upow = np.minimum(np.maximum(cpu_util, 0.0), 1.0) ** self._fan_exponent
        if self._fans_decaying:
            st.fan_health = np.maximum(0.05, st.fan_health - st.fan_decay_per_s * dt)
            r = thermal_resistance_k_per_w(host.thermal_r_k_per_w, st.fan_health)
            decay = np.exp(-dt / (r * host.thermal_c_j_per_k))
        else:
            r, decay = self._nominal_thermal(dt)
        hosts, temp_max, wear_max = kernels.hosts(
            cpu_util, st.host_up, upow, self._fan_exponent is not None, host.idle_w,
            host.busy_w, st.temp_c, topo.host_inlet_c, r, decay, host.throttle_c,
            host.shutdown_c, host.throttle_min_factor, lam, self._s_idx, self._s_host,
            self._s_write_iops, st.disk_wear, host.disk_endurance_writes,
            st.disk_wear_rate_per_s, self._disks_wearing, dt,
        )
        power, st.temp_c, st.throttle, wear, worn = hosts
        st.power_w = power
        self._energy_j += float(power.sum()) * dt
        if temp_max >= host.shutdown_c:
            for h in np.flatnonzero(st.host_up & (st.temp_c >= host.shutdown_c)):
                self.take_host_down(int(h), self.fault_of.get(f"host-{h}"), "thermal shutdown")

        # Disk degradation and failure (exponential clock on the cumulative hazard).
        st.disk_wear = wear
        # At the law's flat bottom its value is exact without the power (numpy's, else).
        flat = bool(wear_max <= FLAT_HAZARD_WEAR)
        wear_pow = self._empty if flat else worn**WEAR_SHAPE
        change = kernels.disk_hazard_step(
            st.disk_hazard_acc, flat, DISK_BASE_HAZARD_PER_S * dt, wear_pow,
            DISK_BASE_HAZARD_PER_S, dt, st.disk_fail_threshold, wear, st.disk_state,
            DISK_FAILED, DISK_OK, DISK_WEAR_OUT, DISK_DEGRADED_WEAR,
        )
        if change:
            self._disk_transitions()

        if t >= self._next_probe_s:
            self._tick_probes(t, serving)
        if t >= self._next_sample_s:
            self._sample(t)
            self._next_sample_s = t + self.config.telemetry_interval_s

    def _oom_kill(self, inst: int) -> None:
        st = self.state
        if not (st.inst_up[inst] and st.inst_leak_bps[inst] > 0):
            return
        self.take_instance_down(inst, self.fault_of.get(self.inst_name(inst)), "oom_kill")
        st.inst_mem_bytes[inst] = st.inst_mem_limit_bytes[inst]

    def _advance_leaks(self, dt: float, lam: np.ndarray, latency: np.ndarray) -> None:
        st = self.state
        idx, leak_bps = self._leak_idx, self._leak_bps
        headroom, crossing, n_crossing = kernels.leaks(
            idx, leak_bps, lam, latency, st.inst_mem_bytes, st.inst_mem_limit_bytes,
            self._i_mem_per_req, dt,
        )
        if not n_crossing:
            return
        for j in np.flatnonzero(crossing):
            i = int(idx[j])
            if any(tm.what == "oom_kill" and tm.index == i for tm in self.timers):
                continue
            t_cross = max(float(headroom[j]), 0.0) / float(leak_bps[j])
            fid = self.fault_of.get(self.inst_name(i), -1)
            self.schedule_clear(self.now_s + t_cross, fid, "oom_kill", i)

    def _disk_transitions(self) -> None:
        st = self.state
        failing = (st.disk_state != DISK_FAILED) & (
            (st.disk_hazard_acc >= st.disk_fail_threshold) | (st.disk_wear >= DISK_WEAR_OUT)
        )
        degrading = (st.disk_state == DISK_OK) & (st.disk_wear >= DISK_DEGRADED_WEAR)
        for h in np.flatnonzero(degrading):
            st.disk_state[h] = DISK_DEGRADED
            self.record_state(f"host-{h}", "disk_degraded", self.fault_of.get(f"host-{h}"),
                              "disk wear")
        for h in np.flatnonzero(failing):
            st.disk_state[h] = DISK_FAILED
            fid = self.fault_of.get(f"host-{h}")
            if fid is None:
                fid = self.record_fault(FaultKind.DISK_DEGRADATION, f"host-{h}",
                                        {"random_failure": 1.0}, warning_signs=False)
                self.fault_of[f"host-{h}"] = fid
            self.record_state(f"host-{h}", "disk_failed", fid, "disk failure")
            self.take_host_down(int(h), fid, "disk failure")

    def _tick_probes(self, t: float, serving: np.ndarray) -> None:
        """Liveness and readiness probes.

        The health endpoint answers on its own thread, as is usual, so a probe fails when
        the process is down or unreachable (a timeout), not when requests queue: overload is
        for the control plane's SLO alerts to find, and the load balancer does not amplify it.
        """
        probes = self.config.probes
        self._next_probe_s = t + probes.interval_s
        st = self.state
        # Unready after failure_threshold consecutive failures, ready after
        # success_threshold consecutive passes.
        new_ready, counts, n_changed = kernels.probes(
            serving, st.inst_used, st.inst_ready, st.inst_probe_fails, st.inst_probe_passes,
            probes.failure_threshold, probes.success_threshold,
        )
        st.inst_probe_fails, st.inst_probe_passes = counts
        st.inst_live = serving
        if n_changed:
            changed = np.flatnonzero(new_ready != st.inst_ready)
            st.inst_ready = new_ready
            for inst in changed:
                name = self.inst_name(int(inst))
                self.record_state(name, "ready" if new_ready[inst] else "not_ready",
                                  self._fault_behind(int(inst)), "readiness probe")

    def _fault_behind(self, inst: int) -> int | None:
        """The active fault that explains an instance's probe result, outermost cause first.

        A partitioned rack explains everything in it, a host down everything on it; only
        then does the instance's own fault count.
        """
        st = self.state
        host = int(st.inst_host[inst])
        rack = int(self.topo.host_rack[host])
        order = []
        if not st.tor_up[rack]:
            order.append(f"tor-{rack}")
        if not st.host_up[host]:
            order.append(f"host-{host}")
        order += [self.inst_name(inst), f"host-{host}", f"tor-{rack}"]
        for name in order:
            fid = self.fault_of.get(name)
            if fid is not None:
                return fid
        return None

    def _sample(self, t: float) -> None:
        st, host = self.state, self._host
        host_out, inst_out = self.telemetry.next_slot(t)
        kernels.sample(
            host_out, inst_out, st.cpu_util, st.host_free_mem_bytes, self._inv_host_mem,
            st.power_w, st.temp_c, st.fan_health, host.fan_rpm, st.disk_util,
            st.disk_latency_s, st.disk_wear, st.net_bps, self._inv_nic, st.host_link_loss,
            st.throttle, st.host_up, st.inst_util, st.inst_mem_bytes, self._i_mem_per_req,
            st.inst_mem_limit_bytes, st.inst_rps, st.inst_latency_s, P99_OVER_MEAN,
            st.inst_error_rate, st.inst_backlog, self._i_bits, st.inst_host, st.inst_up,
            st.inst_ready, st.inst_vm_up,
        )

    def _close_window(self, t_end: float) -> None:
        st = self.state
        share = np.divide(
            st.window_class_good, st.window_class_requests,
            out=np.ones_like(st.window_class_good), where=st.window_class_requests > 0,
        )
        self.log.add(
            SloWindow(
                self.log.next_seq, t_end, t_end - self._window_start_s, st.window_requests,
                st.window_good, tuple(float(x) for x in share),
            )
        )
        st.window_requests = st.window_good = 0.0
        st.window_class_good[:] = 0.0
        st.window_class_requests[:] = 0.0
        self._window_start_s = t_end
        self._next_window_s = t_end + self.config.slo_window_s
        self._instance_seconds += float(np.count_nonzero(st.inst_used)) * self.config.slo_window_s

    # ------------------------------------------------------------------ fork and what-if
    def fork(self, key: int = 0) -> Twin:
        """Independent twin from the current state with its own RNG stream.

        The copy's stream depends only on this twin's seed, the current tick and ``key``, so
        forking twice with the same key gives identical futures, and forking never changes the
        parent (not even its random streams).
        """
        new = Twin.__new__(Twin)
        new.config = self.config
        new.seed = self.seed
        new._ss = np.random.SeedSequence(
            entropy=self._ss.entropy,
            spawn_key=(*self._ss.spawn_key, _STREAMS["fork"], self._tick_count, key),
        )
        new.topo = self.topo
        new.state = self.state.copy()
        new.workload = self.workload.fork(new.rng_for("workload"))
        new.log = self.log.copy()
        new.telemetry = self.telemetry.copy()
        new.fault_of = dict(self.fault_of)
        new.active_faults = dict(self.active_faults)
        new.pending = dict(self.pending)
        new.timers = list(self.timers)
        for attr in ("_next_fault_id", "_next_action_id", "_script_pos", "_next_tick_s",
                     "_next_probe_s", "_next_sample_s", "_next_window_s", "_window_start_s",
                     "_tick_count", "_energy_j", "_action_cost_usd", "_instance_seconds"):
            setattr(new, attr, getattr(self, attr))
        new._action_rng = new.rng_for("actions")
        new._init_constants()
        new.env = simpy.Environment(initial_time=self.now_s)
        new._start_processes(new.rng_for("faults"))
        return new

    def what_if(
        self, actions: Sequence[Action] = (), duration_s: float = 3600.0, key: int = 0
    ) -> dict[str, Any]:
        """Apply ``actions`` to a fork, run it ``duration_s`` (at most 24 h), return its KPIs.

        The twin itself is left untouched.
        """
        if not 0 < duration_s <= 86400.0:
            raise ValueError(f"duration_s must lie in (0, 86400], got {duration_s!r}")
        fork = self.fork(key)
        start_seq = fork.log.next_seq
        results = [fork.apply(a) for a in actions]
        fork.advance(duration_s)
        kpis = window_kpis(fork.log.since(start_seq))
        kpis["rejected_actions"] = [r.reason for r in results if not r.accepted]
        return kpis

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """Headline figures of the run so far."""
        st = self.state
        counts = self.log.counts()
        total = st.requests_total
        return {
            "sim_seconds": self.now_s,
            "hosts": self.topo.n_hosts,
            "instances": int(st.inst_used.sum()),
            "faults": counts.get("fault", 0),
            "faults_active": len(self.active_faults),
            "actions": sum(
                1 for r in self.log.of_type(ActionRecord)
                if isinstance(r, ActionRecord) and r.phase == "started"
            ),
            "events": len(self.log),
            "requests": total,
            "availability": st.requests_good / total if total else 1.0,
            "energy_kwh": self._energy_j / 3.6e6,
            "action_cost_usd": self._action_cost_usd,
            "instance_hours": self._instance_seconds / 3600.0,
            "digest": self.log.digest(),
        }


def window_kpis(records: Sequence[Event], slo_target: float = 0.99) -> dict[str, Any]:
    """Request- and time-weighted availability and SLO-violation minutes from SLO windows."""
    windows = [r for r in records if isinstance(r, SloWindow)]
    requests = sum(w.requests for w in windows)
    good = sum(w.good for w in windows)
    bad_windows = [w for w in windows if w.requests > 0 and w.good / w.requests < slo_target]
    span = sum(w.window_s for w in windows)
    return {
        "availability": good / requests if requests else 1.0,
        "time_availability": 1.0 - sum(w.window_s for w in bad_windows) / span if span else 1.0,
        "slo_violation_minutes": sum(w.window_s for w in bad_windows) / 60.0,
        "requests": requests,
        "faults": sum(1 for r in records if isinstance(r, FaultRecord)),
        "actions": sum(
            1 for r in records if isinstance(r, ActionRecord) and r.phase == "started"
        ),
        "action_cost_usd": sum(r.cost_usd for r in records if isinstance(r, ActionRecord)),
    }


__all__ = ["ACTION_SPECS", "Twin", "window_kpis"]
