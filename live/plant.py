"""The live plant: a fleet of real replica processes on loopback behind HAProxy.

:class:`LivePlant` implements :class:`sim.plant.Plant` like the twin does, so the rule-based
engine, the safety gate and the KPIs run on it unchanged:

* ``observe()`` returns a :class:`sim.telemetry.Observation` with the twin's feature columns:
  one host (this machine) and one instance slot per replica slot of one service. Measured:
  instance CPU (share of the cores the process may use), memory (RSS over its limit),
  request rate, mean and p99 latency, error rate (from the replica's counters), queue length
  (HAProxy's per-server queue), liveness and readiness (probes every ``probe_interval_s``),
  and host CPU and memory. Not measured on a live host and reported as 0: power,
  temperature, fan speed, disk and network figures (throttle and up read 1).
* ``apply()`` executes actions for real (restart, scale out / in, reroute / restore traffic,
  configuration rollback, add CPU by widening the CPU affinity, shed / stop shedding load)
  in worker threads, journaled in SQLite under an idempotency key; other kinds come back
  rejected with the reason. A plant built with ``actuate=False`` (the default) rejects every
  action: live mode is dry-run unless actuation is asked for.
* ``advance(dt_s)`` waits ``dt_s`` of wall-clock time and then moves what the monitor and the
  action workers saw into the event log: the log only changes in ``advance``, as in the twin.
* Faults are recorded with their true onset by :mod:`live.chaos` through
  :meth:`LivePlant.record_fault`; a restart or rollback that removes a fault writes its
  :class:`~sim.events.FaultCleared`.

Time is wall-clock seconds since the fleet was first started (kept in the database), so a
restarted controller continues the same time line.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from live.lb import FRONTEND, HAProxy, LbSpec, server_name
from live.procs import alive, kill
from live.store import ActionRow, DurableEventLog, SlotRow, Store
from sim.actions import ACTION_SPECS, Action, ActionResult, resolve_target
from sim.events import (
    ActionRecord,
    Event,
    EventLog,
    FaultCleared,
    FaultRecord,
    SloWindow,
    StateChange,
)
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

REPLICA_MARKER = "live.replica"
LIVE_ACTIONS = frozenset({
    "noop", "restart_instance", "scale_out", "scale_in", "reroute_traffic", "restore_traffic",
    "config_rollback", "add_cpu", "shed_load", "stop_shedding",
})
"""Action kinds the live plant executes; the rest of :data:`sim.actions.ACTION_SPECS` is
rejected with a reason (there are no VMs, hosts or switches to act on here)."""
SHED_STEP_PERCENT, SHED_MAX_PERCENT = 20, 60
_H = {n: j for j, n in enumerate(HOST_FEATURES)}
_I = {n: j for j, n in enumerate(INSTANCE_FEATURES)}


def _cleared(seq: int, *, t_s: float, fault_id: int, by: str) -> Event:
    return FaultCleared(seq, t_s, fault_id, by)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """The live fleet: one service's replicas, their limits and the monitor's timing.

    Attributes:
        replicas: replicas started.
        max_replicas: replica slots (scale-out head-room).
        min_replicas: scale-in floor.
        service: the service's name.
        lb_port: HAProxy's loopback port; replica slot ``k`` listens on ``lb_port + 1 + k``.
        probe_interval_s: monitor period (probes, telemetry).
        probe_timeout_s: a probe slower than this fails.
        failure_threshold: consecutive failed probes that make a replica down.
        mem_limit_bytes: each replica's memory limit (it exits, as if OOM-killed, above it).
        replica_startup_delay_s: a replica sleeps this long before it serves (slow boot).
        slo_window_s: length of the request-success windows taken from HAProxy.
        ready_timeout_s: how long a restart or scale-out waits for the new replica's probe.
        seed: seed of the replicas' error draws.
    """

    replicas: int = 4
    max_replicas: int = 8
    min_replicas: int = 1
    service: str = "api"
    lb_port: int = 18100
    probe_interval_s: float = 0.1
    probe_timeout_s: float = 0.15
    failure_threshold: int = 2
    mem_limit_bytes: int = 256 * 2**20
    replica_startup_delay_s: float = 0.0
    slo_window_s: float = 1.0
    ready_timeout_s: float = 15.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                "fleet needs 1 <= min_replicas <= replicas <= max_replicas, got "
                f"{self.min_replicas}, {self.replicas}, {self.max_replicas}"
            )
        if not 1024 <= self.lb_port <= 65535 - 1 - self.max_replicas:
            raise ValueError(f"lb_port must leave room for the replica ports, got {self.lb_port}")
        for name in ("probe_interval_s", "probe_timeout_s", "slo_window_s", "ready_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if self.mem_limit_bytes < 32 * 2**20:
            raise ValueError(f"mem_limit_bytes must be at least 32 MiB, got {self.mem_limit_bytes}")
        if not self.service.isidentifier():
            raise ValueError(f"service name must be an identifier, got {self.service!r}")


@dataclass(slots=True)
class _Slot:
    slot: int
    port: int
    pid: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    used: bool = False
    in_rotation: bool = True
    busy: bool = False
    live: bool = False
    ready: bool = False
    fails: int = 0
    seen_up: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    prev: tuple[float, int, int, float] | None = None
    metrics: np.ndarray = field(default_factory=lambda: np.zeros(len(INSTANCE_FEATURES)))
    faults: dict[int, str] = field(default_factory=dict)
    cleared_s: float = -math.inf
    config_version: int = 0


class LivePlant:
    """A live fleet behind HAProxy as a :class:`sim.plant.Plant`.

    Args:
        spec: the fleet.
        workdir: folder for HAProxy's files, the service configuration and the database.
        actuate: execute actions; False (the default) rejects every action (dry run).
        store: the durable store; ``workdir/state.db`` when None.
    """

    def __init__(self, spec: FleetSpec, workdir: str | Path, *, actuate: bool = False,
                 store: Store | None = None) -> None:
        self.spec = spec
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.actuate = actuate
        self.store = store or Store(self.workdir / "state.db")
        stage = self.store.get_meta("canary")
        self._canary: dict[str, Any] | None = json.loads(stage) if stage else None
        """The pending canary promotion, mirrored in the store (read here, not every tick)."""
        self._log = DurableEventLog(self.store)
        self.lb = HAProxy(LbSpec(spec.lb_port, spec.max_replicas,
                                 check_interval_s=spec.probe_interval_s), self.workdir)
        self.config_path = self.workdir / f"{spec.service}.config.json"
        self._slots = [_Slot(k, spec.lb_port + 1 + k) for k in range(spec.max_replicas)]
        self._lock = threading.Lock()
        self._deploy_lock = threading.RLock()
        self._queue: list[Callable[[int], Event]] = []
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._workers = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="action")
        self._probe_pool = concurrent.futures.ThreadPoolExecutor(
            spec.max_replicas, thread_name_prefix="probe")
        self._obs: Observation | None = None
        self._host = np.zeros(len(HOST_FEATURES))
        self._host[_H["throttle"]] = self._host[_H["up"]] = 1.0
        self._fe_prev: tuple[float, int, int] | None = None
        self._shed_percent = 0
        self._next_fault = 0
        self._next_action = self.store.next_action_id()
        epoch = self.store.get_meta("epoch_wall_s")
        if epoch is None:
            epoch = repr(time.time())
            self.store.set_meta("epoch_wall_s", epoch)
        self._epoch = float(epoch)
        self.resumed_actions: list[int] = []
        self.monitor_errors: list[str] = []
        self._busy_targets: set[str] = set()
        for r in self._log:
            if isinstance(r, FaultRecord):
                self._next_fault = max(self._next_fault, r.fault_id + 1)

    # ------------------------------------------------------------------ Plant protocol
    @property
    def now_s(self) -> float:
        """Wall-clock seconds since the fleet was first started."""
        return time.time() - self._epoch

    @property
    def log(self) -> EventLog:
        """The durable event log."""
        return self._log

    def observe(self) -> Observation:
        """The telemetry snapshot taken at the last :meth:`advance`."""
        if self._obs is None:
            self._obs = self._snapshot()
        return self._obs

    def events(self, since: int = 0) -> Sequence[Event]:
        """Records with sequence number >= ``since``."""
        return self._log.since(since)

    def advance(self, dt_s: float) -> None:
        """Wait ``dt_s`` seconds, then log what happened meanwhile and take a snapshot."""
        if not (math.isfinite(dt_s) and dt_s >= 0):
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
        if dt_s > 0:
            time.sleep(dt_s)
        self.poll()

    def poll(self) -> None:
        """Move queued monitor and action records into the log and refresh the snapshot."""
        with self._lock:
            queued, self._queue = self._queue, []
        for make in queued:
            self._log.add(make(self._log.next_seq))
        self._obs = self._snapshot()

    def apply(self, action: Action, idempotency_key: str | None = None) -> ActionResult:
        """Execute an action in the background; rejected ones come back with the reason.

        The idempotency key defaults to the action, the state it acts on (the target
        replica's incarnation, the service's replica count or configuration, the shed level)
        and how many actions on the target had finished: the same decision about the same
        state is not executed twice, while a later decision after the target changed is.
        """
        now = self.now_s
        reason = self._check(action)
        if reason is None and not self.actuate:
            reason = "dry run: the live plant was started without actuation"
        key = ""
        if reason is None:
            key = idempotency_key or self._default_key(action)
            prior = self.store.action_by_key(key)
            if prior is not None:
                reason = (f"already executed as action {prior.action_id} ({prior.phase}); "
                          f"idempotency key {key!r}")
        if reason is not None:
            aid = self._new_action_id()
            self._log.add(ActionRecord(self._log.next_seq, now, aid, getattr(action, "kind", ""),
                                       str(getattr(action, "target", "")), "rejected", reason,
                                       0.0))
            return ActionResult(False, aid, getattr(action, "kind", ""),
                                str(getattr(action, "target", "")), reason, now)
        spec = ACTION_SPECS[action.kind]
        aid = self._new_action_id()
        self.store.insert_action(ActionRow(aid, key, action.kind, action.target, "started",
                                           "", now, None, {}))
        for phase in ("requested", "started"):
            self._log.add(ActionRecord(self._log.next_seq, now, aid, action.kind, action.target,
                                       phase, "", spec.cost_usd if phase == "started" else 0.0))
        self._mark_busy(action, True)
        self._workers.submit(self._execute, aid, action, {})
        return ActionResult(True, aid, action.kind, action.target, "", now + 1.0)

    # ------------------------------------------------------------------ fleet lifecycle
    def start(self) -> None:
        """Start the fleet and HAProxy, or adopt the ones a previous controller left running.

        Actions journaled as started but never finished are resumed from their recorded
        progress, not started again.
        """
        rows = {r.slot: r for r in self.store.slots()}
        adopted = bool(rows) and self._adopt(rows)
        if not adopted:
            self._write_config({"version": 1, "valid": True})
            self.store.set_meta("good_config", json.dumps({"version": 1, "valid": True}))
            for k in range(self.spec.replicas):
                s = self._slots[k]
                s.used = True
                self._spawn(s)
            ports = {s.slot: s.port for s in self._slots if s.used}
            self._lb_pid(self.lb.start(ports))
            for s in self._slots:
                if s.used:
                    self._wait_ready(s)
        self._monitor = threading.Thread(target=self._monitor_loop, daemon=True,
                                         name="monitor")
        self._monitor.start()
        for row in self.store.actions():
            if row.phase == "started":
                self.resumed_actions.append(row.action_id)
                act = Action(row.kind, row.target)
                self._mark_busy(act, True)
                self._workers.submit(self._execute, row.action_id, act, dict(row.progress))
        self.poll()

    def close(self, *, stop_fleet: bool = True) -> None:
        """Stop the monitor and workers and, unless ``stop_fleet`` is False, every process."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._probe_pool.shutdown(wait=True)
        self.poll()
        try:
            if stop_fleet:
                for s in self._slots:
                    if s.pid is not None:
                        kill(s.pid)
                        self._reap(s)
                self.lb.stop()
        finally:
            self.store.close()

    def pids(self) -> dict[str, int]:
        """Pids of the running processes: ``inst-k`` and ``haproxy``."""
        out = {f"inst-{s.slot}": s.pid for s in self._slots if s.used and s.pid is not None}
        if self.lb.pid is not None:
            out["haproxy"] = self.lb.pid
        return out

    def replica_port(self, slot: int) -> int:
        """Loopback port of a replica slot."""
        return self._slots[slot].port

    def used_slots(self) -> list[int]:
        """Slots with a replica."""
        return [s.slot for s in self._slots if s.used]

    def busy(self, slot: int) -> bool:
        """Whether an action is running on a slot's replica."""
        return self._slots[slot].busy

    def acting_on(self, target: str) -> bool:
        """Whether an action on ``target`` (``inst-k``, ``svc-<name>``, ``cluster``) is running."""
        with self._lock:
            return target in self._busy_targets

    def active_faults(self, slot: int) -> dict[int, str]:
        """Injected faults on a slot's replica not yet cleared: fault id -> kind."""
        return dict(self._slots[slot].faults)

    def last_cleared_s(self, slot: int) -> float:
        """When the last fault on a slot's replica was cleared (-inf if never)."""
        return self._slots[slot].cleared_s

    def incarnation(self, slot: int) -> int:
        """How many times a slot's process has been (re)started."""
        return self._slots[slot].incarnation

    @property
    def lb_url(self) -> str:
        """Base URL of the load balancer."""
        return f"http://127.0.0.1:{self.spec.lb_port}"

    # ------------------------------------------------------------------ faults
    def record_fault(self, kind: str, target: str, *, root_cause: str = "",
                     affected: tuple[str, ...] = (),
                     detail: dict[str, float] | None = None) -> FaultRecord:
        """Log a fault at its true onset (now) and remember it on the replicas it hits.

        Call it just before the fault is made to happen.
        """
        rec = FaultRecord(self._log.next_seq, self.now_s, self._next_fault, kind, target,
                          root_cause or f"{target}:{kind}", False, dict(detail or {}), affected)
        self._next_fault += 1
        self._log.add(rec)
        for name in (target, *affected):
            if name.startswith("inst-"):
                self._slots[int(name[5:])].faults[rec.fault_id] = kind
        return rec

    def write_config(self, config: dict[str, Any]) -> None:
        """Deploy a service configuration to every replica at once (a bad one breaks all)."""
        self._write_config(config)

    def deploy_canary(self, config: dict[str, Any], slots: Sequence[int], bake_s: float,
                      fault_id: int | None = None) -> None:
        """Deploy a configuration to the replicas of ``slots`` only, and promote it later.

        The deploy system promotes it to every replica (and to the service's configuration,
        which new replicas start with) ``bake_s`` seconds from now, unless a
        ``config_rollback`` comes first. The pending promotion is kept in the store, so a
        restarted controller carries it out too.
        """
        used = set(self.used_slots())
        if not slots or not set(slots) <= used or set(slots) == used:
            raise ValueError(f"canary slots must be some, not all, of the replicas in use "
                             f"{sorted(used)}, got {list(slots)}")
        if not (math.isfinite(bake_s) and bake_s > 0):
            raise ValueError(f"bake_s must be a positive number of seconds, got {bake_s!r}")
        with self._deploy_lock:
            self._canary = {"config": config, "slots": sorted(slots),
                            "due_s": self.now_s + bake_s, "fault_id": fault_id}
            self.store.set_meta("canary", json.dumps(self._canary))
            for k in slots:
                self._write_file(self._slot_config_path(k), config)

    # ------------------------------------------------------------------ internals
    def _new_action_id(self) -> int:
        with self._lock:
            aid = self._next_action
            self._next_action += 1
        return aid

    def _enqueue(self, make: Callable[[int], Event]) -> None:
        with self._lock:
            self._queue.append(make)

    def _lb_pid(self, pid: int) -> None:
        self.store.set_meta("haproxy_pid", str(pid))

    def _save(self, s: _Slot) -> None:
        self.store.put_slot(SlotRow(s.slot, s.port, s.pid, s.incarnation, s.used,
                                    s.in_rotation))

    def _adopt(self, rows: dict[int, SlotRow]) -> bool:
        pid_text = self.store.get_meta("haproxy_pid")
        if pid_text is None or not alive(int(pid_text), "haproxy"):
            return False
        if not self.lb.adopt(int(pid_text)):
            return False
        for k, row in rows.items():
            s = self._slots[k]
            s.used, s.in_rotation, s.incarnation = row.used, row.in_rotation, row.incarnation
            s.pid = row.pid if row.pid is not None and alive(row.pid, REPLICA_MARKER) else None
        return True

    def _slot_config_path(self, slot: int) -> Path:
        """The configuration file one replica slot reads (the deploy system writes it)."""
        return self.workdir / f"{self.spec.service}.config.{slot}.json"

    @staticmethod
    def _write_file(path: Path, config: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config), encoding="utf-8")
        os.replace(tmp, path)

    def _write_config(self, config: dict[str, Any]) -> None:
        """The service's configuration, and every slot's: ends any canary stage."""
        with self._deploy_lock:
            self._write_file(self.config_path, config)
            for s in self._slots:
                self._write_file(self._slot_config_path(s.slot), config)
            if self._canary is not None:
                self._canary = None
                self.store.set_meta("canary", "null")

    def _promote_due_canary(self) -> None:
        """Promote a canaried configuration whose bake time is over (monitor thread)."""
        with self._deploy_lock:
            stage = self._canary
            if stage is None or self.now_s < float(stage["due_s"]):
                return
            fid = stage.get("fault_id")
            if fid is not None:
                for s in self._slots:
                    if s.used and s.slot not in stage["slots"]:
                        s.faults[int(fid)] = "bad_config"
            self._write_config(stage["config"])
        t, n = self.now_s, len(self.used_slots()) - len(stage["slots"])
        self._enqueue(lambda seq: StateChange(
            seq, t, f"svc-{self.spec.service}", "config_promoted",
            None if fid is None else int(fid), f"canary baked; {n} more replicas"))

    def _spawn(self, s: _Slot) -> None:
        cores = sorted(os.sched_getaffinity(0))
        cmd = [sys.executable, "-m", "live.replica", "--port", str(s.port),
               "--config", str(self._slot_config_path(s.slot)), "--mem-limit-bytes",
               str(self.spec.mem_limit_bytes), "--seed", str(self.spec.seed * 1000 + s.slot),
               "--startup-delay-s", str(self.spec.replica_startup_delay_s)]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        s.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True, env=env)
        s.pid = s.popen.pid
        s.incarnation += 1
        s.seen_up = False
        s.prev = None
        with contextlib.suppress(OSError):
            os.sched_setaffinity(s.pid, {cores[s.slot % len(cores)]})
        self._save(s)

    def _reap(self, s: _Slot) -> None:
        if s.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.popen.wait(timeout=2)
            s.popen = None

    def _probe_ok(self, port: int, path: str = "/healthz") -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
            conn.request("GET", path)
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def _wait_ready(self, s: _Slot) -> bool:
        deadline = time.monotonic() + self.spec.ready_timeout_s + self.spec.replica_startup_delay_s
        while time.monotonic() < deadline:
            if s.pid is None or not alive(s.pid):
                return False
            if self._probe_ok(s.port):
                return True
            time.sleep(0.02)
        return False

    def _mark_busy(self, action: Action, busy: bool) -> None:
        with self._lock:
            if busy:
                self._busy_targets.add(action.target)
            else:
                self._busy_targets.discard(action.target)
        if action.target.startswith("inst-") and action.target[5:].isdigit():
            k = int(action.target[5:])
            if k < len(self._slots):
                self._slots[k].busy = busy

    def _check(self, action: Action) -> str | None:
        if not isinstance(action, Action):
            return f"expected an Action, got {type(action).__name__}"
        spec = ACTION_SPECS.get(action.kind)
        if spec is None:
            return f"unknown action kind {action.kind!r}; known: {sorted(ACTION_SPECS)}"
        if action.kind not in LIVE_ACTIONS:
            return (f"{action.kind} is not available on the live plant; available: "
                    f"{sorted(LIVE_ACTIONS)}")
        used = np.array([s.used for s in self._slots])
        tgt = resolve_target(action.target, service_names=(self.spec.service,), inst_used=used,
                             n_hosts=1, n_racks=1, n_spines=0)
        if isinstance(tgt, str):
            return tgt
        if tgt.type != spec.target_type:
            return f"{spec.kind} needs a {spec.target_type} target, got {tgt.type} {tgt.name!r}"
        n_used = int(used.sum())
        if tgt.name in self._busy_targets:
            return f"{tgt.name} already has an action in progress"
        if tgt.type == "instance":
            s = self._slots[tgt.index]
            in_rot = sum(1 for o in self._slots if o.used and o.in_rotation)
            if action.kind == "reroute_traffic" and (not s.in_rotation or in_rot <= 1):
                return f"{tgt.name} is out of rotation already or the last one in rotation"
            if action.kind == "restore_traffic" and s.in_rotation:
                return f"{tgt.name} is already in rotation"
        if action.kind == "scale_out" and n_used >= self.spec.max_replicas:
            return f"no free replica slot: {self.spec.max_replicas} replicas run"
        if action.kind == "scale_in" and n_used <= self.spec.min_replicas:
            return f"svc-{self.spec.service} is at its minimum of {n_used} replicas"
        if action.kind == "config_rollback" and self._config_is_good():
            return f"svc-{self.spec.service} already runs its last good configuration"
        if action.kind == "shed_load" and self._shed_percent >= SHED_MAX_PERCENT:
            return f"already shedding the maximum of {SHED_MAX_PERCENT}% of requests"
        if action.kind == "stop_shedding" and self._shed_percent <= 0:
            return "not shedding any load"
        return None

    def _config(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.config_path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {"version": -1, "valid": False}

    def _slot_configs(self) -> list[dict[str, Any]]:
        """The configuration each replica in use reads."""
        out = []
        for k in self.used_slots():
            try:
                out.append(dict(json.loads(self._slot_config_path(k).read_text("utf-8"))))
            except (OSError, ValueError):
                out.append({"version": -1, "valid": False})
        return out

    def _config_is_good(self) -> bool:
        good = self.store.get_meta("good_config")
        if good is None:
            return False
        want = json.loads(good)
        return want == self._config() and all(c == want for c in self._slot_configs())

    def _default_key(self, action: Action) -> str:
        state = ""
        if action.target.startswith("inst-"):
            state = f"incarnation={self._slots[int(action.target[5:])].incarnation}"
        elif action.kind in ("scale_out", "scale_in"):
            state = f"replicas={len(self.used_slots())}"
        elif action.kind == "config_rollback":
            versions = sorted({c.get("version") for c in self._slot_configs()}, key=str)
            state = f"config={self._config().get('version')}/{versions}"
        elif action.kind in ("shed_load", "stop_shedding"):
            state = f"shed={self._shed_percent}"
        done = self.store.finished_on(action.target)
        return f"{action.kind}:{action.target}:{state}:after={done}"

    # ------------------------------------------------------------------ action execution
    def _execute(self, aid: int, action: Action, progress: dict[str, Any]) -> None:
        ok, reason = False, ""
        try:
            ok, reason = self._run(aid, action, progress)
        except Exception as exc:  # an action must end in succeeded or failed
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        finally:
            self._mark_busy(action, False)
        t = self.now_s
        phase = "succeeded" if ok else "failed"
        self.store.update_action(aid, phase=phase, reason=reason, done_s=t)
        self._enqueue(lambda seq: ActionRecord(seq, t, aid, action.kind, action.target, phase,
                                               reason, 0.0))

    def _progress(self, aid: int, progress: dict[str, Any], **step: Any) -> None:
        progress.update(step)
        self.store.update_action(aid, progress=progress)

    def _clear_faults(self, s: _Slot, by: str, kinds: frozenset[str] | None = None) -> None:
        t = self.now_s
        for fid, kind in list(s.faults.items()):
            if kinds is None or kind in kinds:
                del s.faults[fid]
                s.cleared_s = t
                self._enqueue(functools.partial(_cleared, t_s=t, fault_id=fid, by=by))

    def _run(self, aid: int, action: Action, progress: dict[str, Any]) -> tuple[bool, str]:
        kind = action.kind
        if kind == "noop":
            return True, ""
        if action.target.startswith("inst-"):
            s = self._slots[int(action.target[5:])]
            if kind == "restart_instance":
                return self._restart(aid, s, progress)
            if kind == "reroute_traffic":
                self.lb.set_server(s.slot, None, "maint")
                s.in_rotation = False
                self._save(s)
                return True, ""
            if kind == "restore_traffic":
                self.lb.set_server(s.slot, None, "ready")
                s.in_rotation = True
                self._save(s)
                return True, ""
            if kind == "add_cpu":
                if s.pid is None:
                    return False, f"{action.target} has no process"
                psutil.Process(s.pid).cpu_affinity(sorted(os.sched_getaffinity(0)))
                return True, ""
        if kind == "scale_out":
            return self._scale_out(aid, progress)
        if kind == "scale_in":
            return self._scale_in(aid, progress)
        if kind == "config_rollback":
            good = self.store.get_meta("good_config")
            if good is None:
                return False, "no known good configuration"
            self._write_config(json.loads(good))
            for s in self._slots:
                self._clear_faults(s, kind, frozenset({"bad_config"}))
            return True, ""
        if kind in ("shed_load", "stop_shedding"):
            pct = min(self._shed_percent + SHED_STEP_PERCENT, SHED_MAX_PERCENT) \
                if kind == "shed_load" else 0
            self.lb.set_shed_percent(pct)
            self._shed_percent = pct
            return True, ""
        return False, f"{kind} has no live implementation"

    def _restart(self, aid: int, s: _Slot, progress: dict[str, Any]) -> tuple[bool, str]:
        old = progress.get("old_pid", s.pid)
        if "new_pid" not in progress:
            self._progress(aid, progress, old_pid=old)
            if old is not None:
                kill(int(old))
            self._reap(s)
            self._spawn(s)
            self._progress(aid, progress, new_pid=s.pid)
        elif s.pid != progress["new_pid"] or not alive(s.pid, REPLICA_MARKER):
            return False, "the replacement process started before a controller restart is gone"
        if not self._wait_ready(s):
            return False, f"inst-{s.slot} did not become ready"
        self._clear_faults(s, "restart_instance")
        if s.in_rotation:
            self.lb.mark_up(s.slot)
        return True, ""

    def _scale_out(self, aid: int, progress: dict[str, Any]) -> tuple[bool, str]:
        if "slot" in progress:
            s = self._slots[int(progress["slot"])]
        else:
            free = [s for s in self._slots if not s.used]
            if not free:
                return False, "no free replica slot"
            s = free[0]
            self._progress(aid, progress, slot=s.slot)
            s.used, s.in_rotation = True, True
            self._write_file(self._slot_config_path(s.slot), self._config())
            self._spawn(s)
        if not self._wait_ready(s):
            return False, f"new replica inst-{s.slot} did not become ready"
        self.lb.set_server(s.slot, s.port, "ready")
        self.lb.mark_up(s.slot)
        return True, ""

    def _scale_in(self, aid: int, progress: dict[str, Any]) -> tuple[bool, str]:
        if "slot" in progress:
            s = self._slots[int(progress["slot"])]
        else:
            s = [s for s in self._slots if s.used][-1]
            self._progress(aid, progress, slot=s.slot)
        self.lb.set_server(s.slot, None, "maint")
        if s.pid is not None:
            kill(s.pid)
            self._reap(s)
        s.used, s.pid = False, None
        self._save(s)
        self._clear_faults(s, "scale_in")
        t = self.now_s
        self._enqueue(lambda seq: StateChange(seq, t, f"inst-{s.slot}", "removed", None,
                                              "scale_in"))
        return True, ""

    # ------------------------------------------------------------------ monitor
    def _probe(self, s: _Slot) -> tuple[dict[str, Any] | None, float]:
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", s.port,
                                              timeout=self.spec.probe_timeout_s)
            conn.request("GET", "/stats")
            resp = conn.getresponse()
            body = json.loads(resp.read()) if resp.status == 200 else None
            conn.close()
        except (OSError, ValueError):
            body = None
        return body, time.perf_counter() - t0

    def _monitor_loop(self) -> None:
        psutil.cpu_percent(None)
        next_window = time.monotonic() + self.spec.slo_window_s
        while not self._stop.is_set():
            tick = time.monotonic()
            try:
                self._promote_due_canary()
                self._monitor_tick()
                if tick >= next_window:
                    next_window += self.spec.slo_window_s
                    self._slo_window()
            except Exception as exc:
                self.monitor_errors.append(f"{type(exc).__name__}: {exc}")
                del self.monitor_errors[:-20]
            self._stop.wait(max(0.0, self.spec.probe_interval_s - (time.monotonic() - tick)))

    def _state(self, s: _Slot, state: str, cause: str) -> None:
        t = self.now_s
        self._enqueue(lambda seq: StateChange(seq, t, f"inst-{s.slot}", state, None, cause))

    def _monitor_tick(self) -> None:
        slots = [s for s in self._slots if s.used]
        futures = {s.slot: self._probe_pool.submit(self._probe, s) for s in slots}
        try:
            lb_stats = self.lb.stats()
        except (OSError, RuntimeError):
            lb_stats = {}
        now = time.monotonic()
        for s in slots:
            body, probe_s = futures[s.slot].result()
            proc_alive = s.pid is not None and (
                s.popen.poll() is None if s.popen is not None else alive(s.pid))
            if body is not None and proc_alive:
                s.fails = 0
                live, ready = True, bool(body.get("config_valid", False))
                version = body.get("config_version")
                if isinstance(version, int) and not isinstance(version, bool):
                    s.config_version = version
            else:
                s.fails += 1
                live = proc_alive and s.fails < self.spec.failure_threshold and s.live
                ready = live and s.ready
            if s.busy and not live:
                s.live = s.ready = False
                continue
            if live != s.live:
                if live:
                    s.seen_up = True
                self._state(s, "up" if live else "down",
                            "probe ok" if live else ("process exited" if not proc_alive
                                                     else "probe timed out"))
            if live and ready != s.ready:
                self._state(s, "ready" if ready else "not_ready",
                            "readiness probe" if ready else "readiness probe failed")
            if not live and s.ready:
                s.ready = False
            s.live, s.ready = live, ready and live
            m = np.zeros(len(INSTANCE_FEATURES))
            if body is not None:
                cpu_s = 0.0
                try:
                    ct = psutil.Process(s.pid).cpu_times() if s.pid else None
                    cpu_s = (ct.user + ct.system) if ct else 0.0
                    n_cores = len(psutil.Process(s.pid).cpu_affinity() or [1]) if s.pid else 1
                except (psutil.Error, OSError):
                    n_cores = 1
                req, err = int(body["requests"]), int(body["errors"])
                if s.prev is not None and now > s.prev[0]:
                    dt = now - s.prev[0]
                    d_req = max(req - s.prev[1], 0)
                    m[_I["rps"]] = d_req / dt
                    m[_I["error_rate"]] = max(err - s.prev[2], 0) / d_req if d_req else 0.0
                    m[_I["cpu_util"]] = min(max(cpu_s - s.prev[3], 0.0) / dt / n_cores, 1.0)
                s.prev = (now, req, err, cpu_s)
                m[_I["latency_s"]] = max(float(body["mean_latency_s"]), probe_s)
                m[_I["p99_latency_s"]] = float(body["p99_latency_s"])
            if proc_alive and s.pid is not None:
                # Memory is read from outside, like a cgroup's usage: a replica too busy
                # leaking to answer its probe is still measured.
                with contextlib.suppress(psutil.Error):
                    rss = psutil.Process(s.pid).memory_info().rss
                    m[_I["mem_util"]] = rss / self.spec.mem_limit_bytes
            row = lb_stats.get(server_name(s.slot), {})
            m[_I["queue_len"]] = float(row.get("qcur") or 0)
            m[_I["up"]] = float(s.live)
            m[_I["ready"]] = float(s.ready)
            m[_I["vm_up"]] = 1.0
            s.metrics = m
        vm = psutil.virtual_memory()
        host = np.zeros(len(HOST_FEATURES))
        host[_H["cpu_util"]] = psutil.cpu_percent(None) / 100.0
        host[_H["mem_alloc"]] = vm.percent / 100.0
        host[_H["throttle"]] = 1.0
        host[_H["up"]] = 1.0
        self._host = host
        self._t_sample = self.now_s

    def _slo_window(self) -> None:
        row = self.lb.stats().get(FRONTEND)
        if row is None:
            return
        now = self.now_s
        req, bad = int(row.get("req_tot") or 0), int(row.get("hrsp_5xx") or 0)
        if self._fe_prev is not None:
            t0, r0, b0 = self._fe_prev
            n, nb = max(req - r0, 0), max(bad - b0, 0)
            good = float(n - nb)
            share = good / n if n else 1.0
            self._enqueue(lambda seq: SloWindow(seq, now, now - t0, float(n), good, (share,)))
        self._fe_prev = (now, req, bad)

    def _snapshot(self) -> Observation:
        n = len(self._slots)
        inst = np.stack([s.metrics.copy() for s in self._slots]).astype(np.float32)
        used = np.array([s.used for s in self._slots], dtype=bool)
        return Observation(
            t_s=getattr(self, "_t_sample", self.now_s),
            host=self._host.astype(np.float32).reshape(1, -1).copy(),
            inst=inst,
            inst_used=used,
            inst_service=np.zeros(n, dtype=np.int64),
            inst_host=np.zeros(n, dtype=np.int64),
            inst_live=np.array([s.used and s.live for s in self._slots], dtype=bool),
            inst_ready=np.array([s.used and s.ready for s in self._slots], dtype=bool),
            inst_config_version=np.array([s.config_version for s in self._slots],
                                         dtype=np.int64),
            service_names=(self.spec.service,),
            host_rack=np.zeros(1, dtype=np.int64),
            call_edges=(),
        )
