"""Safety controls of the control plane: a gate every action passes before it reaches the plant.

:class:`SafetyGate` decides, from the action, the controller's :class:`~sim.telemetry.Observation`
and the current time, whether an action may run now. It keeps its own book of what it let
through (cooldowns, the rate window, actions in flight and the instances they take away), so
it works unchanged against the twin or a live plant: feed it ``started`` when an action is
submitted and ``finished`` or :meth:`SafetyGate.sync` with the plant's event log when it ends.

Checks run in this order; the first that fails decides the verdict:

1. emergency stop: while stopped, everything is ``blocked``;
2. unknown action kind, or a target that is malformed, of the wrong type for the kind, or not
   in the observation: ``blocked``;
3. safety mode: only risk ``low`` is allowed;
4. cooldown: the target has an action in flight, or one started on it less than
   ``cooldown_s`` ago;
5. rate limit: ``rate_limit_per_min`` actions already started in the last 60 s;
6. blast radius: too many disruptive actions taking capacity away in flight, or a service
   would have more than
   ``max_capacity_share`` of its instances under in-flight disruptive actions. An action on a
   host, link, rack, switch, service or the cluster reaches every instance there (as placed
   when it starts); only instances ready when it starts count, since an action on one that
   is already down takes no capacity away (restarting a crashed process, repairing a dead or
   drained host), and such an action counts toward neither limit. Replicas that in-flight
   ``scale_in`` will remove or ``scale_out`` may fail to add are left out of the count of a
   service's instances, and a ``scale_in`` that would push its service over the share is
   refused;
7. dry run: an otherwise admissible action gets ``dry_run`` (log the decision, do not act);
8. approval: a human must approve (``needs_approval``) when ``human_approval_required`` is
   set or the action's risk is in ``approval_risks``; once a human has approved, call
   :meth:`SafetyGate.check` again with ``approved=True`` just before submitting, because the
   world may have changed while the human thought.

``noop`` does nothing, so it never counts against cooldowns, the rate limit or the blast
radius, and needs no approval; it is still blocked by an emergency stop and still reported as
``dry_run`` in dry-run mode.

Also here: :class:`SimulatedOperator`, the human in the loop of simulated runs, and the rollback
policy (:func:`rollback_action`, :func:`should_roll_back`, :class:`Rollback`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sim.actions import (
    ACTION_SPECS,
    INVERSE,
    Action,
    ActionSpec,
    resolve_target,
)
from sim.errors import ConfigError
from sim.events import ActionRecord, ControlRecord, Event
from sim.plant import Plant
from sim.telemetry import Observation

VerdictKind = Literal["allowed", "blocked", "needs_approval", "dry_run"]
VERDICT_KINDS: tuple[str, ...] = ("allowed", "blocked", "needs_approval", "dry_run")
RISKS: tuple[str, ...] = ("low", "medium", "high")
RATE_WINDOW_S = 60.0
"""Length of the sliding window of the rate limit; a start exactly 60 s ago has left it."""

_NOOP = "noop"
_SHRINKS = frozenset({"scale_in"})
"""Kinds that remove one instance of their service when they finish; they are refused while
the smaller service would be over its capacity share."""
_GROWS = frozenset({"scale_out"})
"""Kinds that add an instance of their service which may never serve (the boot can fail)."""
_DONE_PHASES = frozenset({"succeeded", "failed"})
_SCOPE_OF = {
    "inst": "instance", "host": "host", "link-host": "host", "rack": "rack", "tor": "rack",
    "uplink": "rack", "svc": "service", "spine": "all", None: "all",
}
"""What an action on each kind of target reaches: the instances it can take away."""


@dataclass(frozen=True, slots=True)
class SafetyConfig:
    """Limits and switches of the safety gate.

    Attributes:
        human_approval_required: Every action needs a human's approval.
        approval_risks: Risk classes that need a human even when
            ``human_approval_required`` is False.
        safety_mode: Only risk ``low`` actions are allowed.
        rollback_enabled: Undo an action whose verification window shows the SLO got worse.
        dry_run: Decide and log, never act.
        cooldown_s: Per target, seconds after an action on it starts before the next may start.
        max_disruptive_in_flight: Disruptive actions taking ready instances away that run at
            once, cluster-wide.
        max_capacity_share: Largest share of a service's instances that in-flight disruptive
            actions may take away at once (a host or rack action takes every instance on it).
        rate_limit_per_min: Actions started in any sliding 60 s.
    """

    human_approval_required: bool = False
    approval_risks: tuple[str, ...] = ("high",)
    safety_mode: bool = False
    rollback_enabled: bool = True
    dry_run: bool = False
    cooldown_s: float = 120.0
    max_disruptive_in_flight: int = 2
    max_capacity_share: float = 0.25
    rate_limit_per_min: int = 10

    def __post_init__(self) -> None:
        for name in ("human_approval_required", "safety_mode", "rollback_enabled", "dry_run"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"safety.{name} must be true or false, got {value!r}")
        risks = self.approval_risks
        if isinstance(risks, str) or not isinstance(risks, Iterable):
            raise ConfigError(
                f"safety.approval_risks must be a sequence of risk classes, got {risks!r}"
            )
        risks = tuple(risks)
        bad = [r for r in risks if r not in RISKS]
        if bad:
            raise ConfigError(
                f"safety.approval_risks has unknown risk classes {bad}; known: {list(RISKS)}"
            )
        object.__setattr__(self, "approval_risks", risks)
        cooldown = self.cooldown_s
        if (
            isinstance(cooldown, bool) or not isinstance(cooldown, int | float)
            or not math.isfinite(cooldown) or cooldown < 0
        ):
            raise ConfigError(
                f"safety.cooldown_s must be a finite non-negative number, got {cooldown!r}"
            )
        for name, low in (("max_disruptive_in_flight", 0), ("rate_limit_per_min", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"safety.{name} must be an integer >= {low}, got {value!r}")
        share = self.max_capacity_share
        if (
            isinstance(share, bool) or not isinstance(share, int | float)
            or not 0.0 <= share <= 1.0
        ):
            raise ConfigError(f"safety.max_capacity_share must lie in [0, 1], got {share!r}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's decision on one action: ``kind`` and the reason for it.

    ``kind`` is ``allowed`` (submit it), ``blocked`` (do not), ``needs_approval`` (ask a human
    first) or ``dry_run`` (log the decision, do not act).
    """

    kind: VerdictKind
    reason: str

    def __post_init__(self) -> None:
        if self.kind not in VERDICT_KINDS:
            raise ValueError(
                f"verdict kind must be one of {list(VERDICT_KINDS)}, got {self.kind!r}"
            )

    @property
    def allowed(self) -> bool:
        """Whether the action may be submitted now."""
        return self.kind == "allowed"


@dataclass(frozen=True, slots=True)
class InFlight:
    """An action the gate knows to be running.

    Attributes:
        action_id: The plant's id for it.
        action: What runs.
        started_at_s: When it started.
        disruptive: Whether it takes capacity away while it runs.
        instances: Instance slots it takes away (empty unless disruptive), with the service
            each belonged to when the action started, as ``(instance, service)`` pairs.
    """

    action_id: int
    action: Action
    started_at_s: float
    disruptive: bool
    instances: tuple[tuple[int, int], ...]


def _finite_time(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class _Target:
    type: str
    scope: str
    index: int


def _resolve(target: str, obs: Observation) -> _Target | str:
    """Parse ``target`` against ``obs``; a string is why the target is invalid."""
    n_hosts = int(obs.host_rack.size)
    r = resolve_target(
        target, service_names=obs.service_names, inst_used=obs.inst_used, n_hosts=n_hosts,
        n_racks=int(obs.host_rack.max()) + 1 if n_hosts else 0,
    )
    if isinstance(r, str):
        return r
    return _Target(r.type, _SCOPE_OF[r.prefix or None], r.index)


def _footprint(target: _Target, obs: Observation) -> tuple[tuple[int, int], ...]:
    """Ready instances, with their services, that an action on ``target`` takes away.

    An instance is itself; a host or host link, every instance on the host; a rack, its
    top-of-rack switch or its uplink, every instance in the rack; a service, all its
    instances; a spine switch or the cluster, every instance.
    """
    # Only ready instances count: restarting one that is already down takes no capacity.
    used = obs.inst_used & obs.inst_ready
    if target.scope == "instance":
        mask = np.zeros_like(used)
        mask[target.index] = used[target.index]
    elif target.scope == "host":
        mask = used & (obs.inst_host == target.index)
    elif target.scope == "rack":
        mask = used & (obs.host_rack[obs.inst_host] == target.index)
    elif target.scope == "service":
        mask = used & (obs.inst_service == target.index)
    else:
        mask = used.copy()
    return tuple((int(i), int(obs.inst_service[i])) for i in np.flatnonzero(mask))


class SafetyGate:
    """Decides whether an action may run now, and keeps the book that decision needs.

    Deterministic: time is whatever the caller passes as ``now_s``; no wall clock.

    Args:
        config: Limits and switches.
        specs: Action kinds the gate knows, by kind.
    """

    def __init__(
        self, config: SafetyConfig | None = None, specs: Mapping[str, ActionSpec] = ACTION_SPECS
    ) -> None:
        if config is None:
            config = SafetyConfig()
        if not isinstance(config, SafetyConfig):
            raise ConfigError(f"safety config must be a SafetyConfig, got {type(config).__name__}")
        self.config = config
        self.specs: Mapping[str, ActionSpec] = dict(specs)
        self._in_flight: dict[int, InFlight] = {}
        self._done: set[int] = set()
        self._last_start_s: dict[str, float] = {}
        self._starts_s: deque[float] = deque()
        self._stopped_reason: str | None = None
        self._stopped_at_s = math.nan
        self.next_seq = 0
        """Sequence number after the last event :meth:`sync` has read."""

    @property
    def stopped(self) -> bool:
        """Whether an emergency stop is in force."""
        return self._stopped_reason is not None

    def emergency_stop(self, now_s: float, reason: str) -> None:
        """Block every action from now on, until :meth:`resume`.

        Actions already running are not cancelled: the gate only decides what starts.
        """
        self._stopped_at_s = _finite_time("now_s", now_s)
        self._stopped_reason = str(reason) or "no reason given"

    def resume(self) -> None:
        """Lift an emergency stop."""
        self._stopped_reason = None
        self._stopped_at_s = math.nan

    def in_flight(self) -> tuple[InFlight, ...]:
        """Actions started and not yet finished, oldest first."""
        return tuple(sorted(self._in_flight.values(), key=lambda f: (f.started_at_s, f.action_id)))

    def check(
        self, action: Action, obs: Observation, now_s: float, *, approved: bool = False
    ) -> Verdict:
        """Decide on ``action`` at ``now_s``; see the module docstring for the order of checks.

        Args:
            action: The action a policy wants to run.
            obs: What the controller currently observes.
            now_s: Current time.
            approved: A human has already approved this action, so skip the approval step.

        Returns:
            The verdict; only ``allowed`` means submit it now.

        Raises:
            TypeError: ``action`` is not an :class:`~sim.actions.Action`.
            ValueError: ``now_s`` is not a finite number.
        """
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        now_s = _finite_time("now_s", now_s)
        if self._stopped_reason is not None:
            return Verdict(
                "blocked",
                f"emergency stop since t={self._stopped_at_s:g}s: {self._stopped_reason}",
            )
        spec = self.specs.get(action.kind)
        if spec is None:
            return Verdict(
                "blocked", f"unknown action kind {action.kind!r}; known: {sorted(self.specs)}"
            )
        target = _resolve(action.target, obs)
        if isinstance(target, str):
            return Verdict("blocked", target)
        if target.type != spec.target_type:
            return Verdict(
                "blocked",
                f"{spec.kind} needs a {spec.target_type} target, "
                f"got {target.type} {action.target!r}",
            )
        cfg = self.config
        if cfg.safety_mode and spec.risk != "low":
            return Verdict("blocked", f"safety mode allows only low-risk actions; "
                                      f"{spec.kind} is {spec.risk} risk")
        if spec.kind != _NOOP:
            blocked = (
                self._cooldown(action, now_s)
                or self._rate(now_s)
                or self._blast_radius(target, spec, obs)
            )
            if blocked:
                return Verdict("blocked", blocked)
        if cfg.dry_run:
            return Verdict("dry_run", f"dry run: {spec.kind} on {action.target} would be allowed")
        if spec.kind != _NOOP and not approved:
            if cfg.human_approval_required:
                return Verdict("needs_approval", "human approval is required for every action")
            if spec.risk in cfg.approval_risks:
                return Verdict(
                    "needs_approval", f"{spec.kind} is {spec.risk} risk and needs human approval"
                )
        return Verdict("allowed", "approved by a human" if approved else "within safety limits")

    def cooling_down(self, action: Action, now_s: float) -> str:
        """Why ``action``'s target must wait now; '' when it need not.

        The reasons are an action in flight on the target and its cooldown: waits that pass
        by themselves, unlike the gate's other refusals.
        """
        return self._cooldown(action, _finite_time("now_s", now_s))

    def _cooldown(self, action: Action, now_s: float) -> str:
        if any(f.action.target == action.target for f in self._in_flight.values()):
            return f"{action.target} already has an action in flight"
        last = self._last_start_s.get(action.target)
        if last is not None and now_s - last < self.config.cooldown_s:
            return (
                f"{action.target} is cooling down: last action started at t={last:g}s, "
                f"cooldown {self.config.cooldown_s:g}s"
            )
        return ""

    def _rate(self, now_s: float) -> str:
        recent = sum(1 for t in self._starts_s if t > now_s - RATE_WINDOW_S)
        if recent >= self.config.rate_limit_per_min:
            return (
                f"rate limit: {recent} actions started in the last {RATE_WINDOW_S:g}s "
                f"(limit {self.config.rate_limit_per_min})"
            )
        return ""

    def _blast_radius(self, target: _Target, spec: ActionSpec, obs: Observation) -> str:
        cfg = self.config
        disruptive = self._disruptive_in_flight()
        new_insts: tuple[tuple[int, int], ...] = ()
        if spec.disruptive:
            new_insts = _footprint(target, obs)
            if new_insts and len(disruptive) >= cfg.max_disruptive_in_flight:
                return (
                    f"{len(disruptive)} disruptive actions already in flight "
                    f"(limit {cfg.max_disruptive_in_flight})"
                )
        shrink_svc = target.index if spec.kind in _SHRINKS else -1
        if not new_insts and shrink_svc < 0:
            return ""
        down: dict[int, set[int]] = {}
        for f in disruptive:
            for inst, svc in f.instances:
                down.setdefault(svc, set()).add(inst)
        for inst, svc in new_insts:
            down.setdefault(svc, set()).add(inst)
        uncertain: dict[int, int] = {}
        for f in self._in_flight.values():
            if f.action.kind in _SHRINKS | _GROWS:
                r = _resolve(f.action.target, obs)
                if not isinstance(r, str):
                    uncertain[r.index] = uncertain.get(r.index, 0) + 1
        if shrink_svc >= 0:
            uncertain[shrink_svc] = uncertain.get(shrink_svc, 0) + 1
        touched = {svc for _, svc in new_insts} | ({shrink_svc} if shrink_svc >= 0 else set())
        for svc in sorted(touched):
            taken = len(down.get(svc, ()))
            if taken == 0:
                continue
            total = int((obs.inst_used & (obs.inst_service == svc)).sum()) - uncertain.get(svc, 0)
            if total <= 0 or taken > cfg.max_capacity_share * total + 1e-9:
                name = obs.service_names[svc] if svc < len(obs.service_names) else str(svc)
                return (
                    f"blast radius: {taken} of {max(total, 0)} instances of svc-{name} would be "
                    f"under disruptive actions (limit {cfg.max_capacity_share:.0%})"
                )
        return ""

    def _disruptive_in_flight(self) -> list[InFlight]:
        """In-flight disruptive actions that took serving instances away."""
        return [f for f in self._in_flight.values() if f.disruptive and f.instances]

    def capacity_needed(self, action: Action, obs: Observation) -> tuple[int, int] | None:
        """The service size at which an instance action would pass the blast-radius limit.

        For an action on one instance that the limit refuses because its service is small:
        the service and the least number of its instances with which the share taken (this
        action and the disruptive ones in flight) stays within the limit.

        None when that is not the refusal: another scope, a non-disruptive action, the limit on
        disruptive actions in flight, a limit of 0, or a service already big enough (the
        instances are taken by other actions, and more replicas would only wait for them).
        """
        spec = self.specs.get(action.kind)
        target = _resolve(action.target, obs)
        cfg = self.config
        if (spec is None or not spec.disruptive or isinstance(target, str)
                or target.scope != "instance" or cfg.max_capacity_share <= 0.0):
            return None
        new_insts = _footprint(target, obs)
        disruptive = self._disruptive_in_flight()
        if not new_insts or len(disruptive) >= cfg.max_disruptive_in_flight:
            return None
        svc = new_insts[0][1]
        down = {i for f in disruptive for i, s in f.instances if s == svc} | {new_insts[0][0]}
        need = math.ceil(len(down) / cfg.max_capacity_share - 1e-9)
        total = int((obs.inst_used & (obs.inst_service == svc)).sum())
        return (svc, need) if need > total else None

    def started(self, action: Action, action_id: int, obs: Observation, now_s: float) -> None:
        """Register an action the plant accepted; it is in flight until it finishes.

        Registering the same ``action_id`` twice, or one already finished, changes nothing.

        Args:
            action: The submitted action.
            action_id: The plant's id for it (``ActionResult.action_id``).
            obs: The observation at submission, used to record which instances it takes away.
            now_s: Submission time.

        Raises:
            TypeError: ``action`` is not an :class:`~sim.actions.Action`.
            ValueError: ``action_id`` is not a non-negative integer, ``now_s`` is not finite,
                or the action kind is unknown.
        """
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        if isinstance(action_id, bool) or not isinstance(action_id, int | np.integer) \
                or action_id < 0:
            raise ValueError(f"action_id must be a non-negative integer, got {action_id!r}")
        now_s = _finite_time("now_s", now_s)
        spec = self.specs.get(action.kind)
        if spec is None:
            raise ValueError(f"unknown action kind {action.kind!r}; known: {sorted(self.specs)}")
        aid = int(action_id)
        if aid in self._in_flight or aid in self._done:
            return
        if spec.kind != _NOOP:
            self._last_start_s[action.target] = max(
                now_s, self._last_start_s.get(action.target, -math.inf)
            )
            self._starts_s.append(now_s)
            while self._starts_s and self._starts_s[0] <= now_s - RATE_WINDOW_S:
                self._starts_s.popleft()
        target = _resolve(action.target, obs) if spec.disruptive else ""
        self._in_flight[aid] = InFlight(
            aid, action, now_s, spec.disruptive,
            () if isinstance(target, str) else _footprint(target, obs),
        )

    def finished(self, action_id: int) -> None:
        """Mark an action as ended (succeeded or failed); unknown ids are remembered too."""
        aid = int(action_id)
        self._in_flight.pop(aid, None)
        self._done.add(aid)

    def sync(self, events: Iterable[Event], obs: Observation | None = None) -> None:
        """Update the book from the plant's event log.

        Action records with phase ``succeeded`` or ``failed`` end their action. With ``obs``,
        ``started`` records of actions the gate has not seen (an operator acting on the plant
        directly) are registered too, so the gate can be driven purely from the log:
        ``gate.sync(plant.events(gate.next_seq), plant.observe())``.

        Args:
            events: Event records, in log order.
            obs: Current observation, needed only to register unseen starts.
        """
        for record in events:
            self.next_seq = max(self.next_seq, record.seq + 1)
            if not isinstance(record, ActionRecord) or record.action_id < 0:
                continue
            if record.phase in _DONE_PHASES:
                self.finished(record.action_id)
            elif (
                record.phase == "started" and obs is not None
                and record.kind in self.specs and record.action_id not in self._in_flight
            ):
                self.started(Action(record.kind, record.target), record.action_id, obs,
                             record.t_s)

    def rollback_for(self, action: Action, before_kpi: float, after_kpi: float) -> Action | None:
        """The action that undoes ``action`` if rollback is enabled and the KPI got worse.

        The rollback must pass :meth:`check` like any other action.
        """
        if not self.config.rollback_enabled or not should_roll_back(before_kpi, after_kpi):
            return None
        return rollback_action(action)


def log_command(plant: Plant, command: str, reason: str = "") -> None:
    """Append an operator's ``emergency_stop`` or ``resume`` to the plant's log."""
    if command not in ("emergency_stop", "resume"):
        raise ValueError(f"unknown control command {command!r}")
    log = plant.log
    log.add(ControlRecord(log.next_seq, plant.now_s, command, reason))


def restore_gate(gate: SafetyGate, plant: Plant) -> list[Event]:
    """Bring a new controller's gate up to date with what the plant's log says happened.

    A controller started again on a plant that kept its log (a live controller restarted on
    its workdir) would otherwise begin with an empty book: actions the previous process
    started and the plant still runs would not count against the blast radius, a target
    acted on a minute ago would have no cooldown, and an emergency stop the operator pulled
    would be forgotten. Here every action record is replayed (:meth:`SafetyGate.sync`, so
    unfinished ones are in flight again, with their start times) and the last
    :class:`~sim.events.ControlRecord` decides whether the stop is in force. On a new log
    this changes nothing.

    Returns:
        The log's records, for the controller's own recovery.
    """
    events = list(plant.events(0))
    acted = any(isinstance(r, ActionRecord) for r in events)
    gate.sync(events, plant.observe() if acted else None)
    last = next((r for r in reversed(events) if isinstance(r, ControlRecord)), None)
    if last is not None and last.command == "emergency_stop":
        gate.emergency_stop(last.t_s, last.reason)
    return events


@dataclass(frozen=True, slots=True)
class ApprovalTicket:
    """A human's answer to an approval request: when it arrives and what it says."""

    decide_at_s: float
    approved: bool


class SimulatedOperator:
    """The human in the loop of a simulated run.

    Each request is answered after an exponentially distributed delay with mean
    ``response_delay_s`` and approved with probability ``approval_prob``; both are drawn from
    ``rng``, so the same seed gives the same tickets. Every answer is a human intervention.

    Args:
        response_delay_s: Mean response time of the human, seconds (0 answers at once).
        approval_prob: Probability that a request is approved.
        rng: The operator's own random stream.
        name: Operator name for approval records.

    Raises:
        ConfigError: An argument is out of range or of the wrong type.
    """

    def __init__(
        self,
        response_delay_s: float,
        approval_prob: float,
        rng: np.random.Generator,
        name: str = "simulated",
    ) -> None:
        if (
            isinstance(response_delay_s, bool) or not isinstance(response_delay_s, int | float)
            or not math.isfinite(response_delay_s) or response_delay_s < 0
        ):
            raise ConfigError(
                "operator.response_delay_s must be a finite non-negative number, "
                f"got {response_delay_s!r}"
            )
        if (
            isinstance(approval_prob, bool) or not isinstance(approval_prob, int | float)
            or not 0.0 <= approval_prob <= 1.0
        ):
            raise ConfigError(f"operator.approval_prob must lie in [0, 1], got {approval_prob!r}")
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(
                f"operator.rng must be a numpy.random.Generator, got {type(rng).__name__}"
            )
        self.response_delay_s = float(response_delay_s)
        self.approval_prob = float(approval_prob)
        self.name = name
        self._rng = rng

    def request(self, action: Action, now_s: float) -> ApprovalTicket:
        """Ask the human to approve ``action`` at ``now_s``.

        Raises:
            TypeError: ``action`` is not an :class:`~sim.actions.Action`.
            ValueError: ``now_s`` is not a finite number.
        """
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        now_s = _finite_time("now_s", now_s)
        approved = bool(self._rng.random() < self.approval_prob)
        delay_s = float(self._rng.standard_exponential()) * self.response_delay_s
        return ApprovalTicket(now_s + delay_s, approved)


def rollback_action(action: Action) -> Action | None:
    """The action that undoes ``action`` on the same target, or None if it has no inverse.

    From :data:`sim.actions.INVERSE`: ``scale_out`` → ``scale_in`` (the plant picks which
    replica goes), ``reroute_traffic`` → ``restore_traffic``, ``shed_load`` → ``stop_shedding``.
    """
    if not isinstance(action, Action):
        raise TypeError(f"expected an Action, got {type(action).__name__}")
    inverse = INVERSE.get(action.kind)
    return None if inverse is None else Action(inverse, action.target)


def should_roll_back(before_kpi: float, after_kpi: float, tolerance: float = 0.002) -> bool:
    """Whether an action made things worse and should be undone.

    True when the availability-like KPI (higher is better) over the verification window after
    the action fell below the one before it by more than ``tolerance``:
    ``after_kpi < before_kpi - tolerance``.

    Raises:
        ValueError: A KPI is not finite, or ``tolerance`` is negative or not finite.
    """
    for name, value in (("before_kpi", before_kpi), ("after_kpi", after_kpi)):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (
        isinstance(tolerance, bool) or not isinstance(tolerance, int | float)
        or not math.isfinite(tolerance) or tolerance < 0
    ):
        raise ValueError(f"tolerance must be a finite non-negative number, got {tolerance!r}")
    return after_kpi < before_kpi - tolerance


@dataclass(frozen=True, slots=True)
class Rollback:
    """Rollback policy with a fixed tolerance; see :func:`should_roll_back`."""

    tolerance: float = 0.002

    def __post_init__(self) -> None:
        t = self.tolerance
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"rollback.tolerance must be a finite non-negative number, got {t!r}")

    def rollback_action(self, action: Action) -> Action | None:
        """The action that undoes ``action``; see :func:`rollback_action`."""
        return rollback_action(action)

    def should_roll_back(self, before_kpi: float, after_kpi: float) -> bool:
        """Whether the KPI fell by more than the tolerance; see :func:`should_roll_back`."""
        return should_roll_back(before_kpi, after_kpi, self.tolerance)
