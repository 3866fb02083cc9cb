"""Runbooks: for each root-cause class, ordered remediation steps with fallbacks.

A runbook is a sequence of steps; the engine runs a step, verifies that the SLO recovered
within the step's deadline, and otherwise moves to the next step, then escalates. Where a
single remedy exists (a configuration rollback, a patch, a link repair), the fallback is to
run it once more, since an action can fail on its own (``ActionSpec.success_prob``). A step is a
set of actions run together; each action names its kind and a *target rule* that turns the
root-cause component (``inst-3``, ``host-7``, ``tor-1``, ``svc-api``, ``cluster``) into concrete
targets using only what the controller observes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from control.rca import ERROR_RESPONSES, SERVICE_HANG, SLOW_RESPONSE
from sim.actions import ACTION_SPECS, Action
from sim.faults import FaultKind
from sim.telemetry import INSTANCE_FEATURES, Observation

_CPU = INSTANCE_FEATURES.index("cpu_util")

TargetRule = Callable[[str, Observation], list[str]]


def _index(component: str) -> int:
    return int(component.rsplit("-", 1)[1])


def itself(component: str, obs: Observation) -> list[str]:
    """The root-cause component itself."""
    return [component]


def instances_on_host(component: str, obs: Observation) -> list[str]:
    """Every instance placed on the host (or the host behind a host link)."""
    host = _index(component)
    return [f"inst-{i}" for i in np.flatnonzero(obs.inst_used & (obs.inst_host == host))]


def host_of(component: str, obs: Observation) -> list[str]:
    """The host behind a host link."""
    return [f"host-{_index(component)}"]


def rack_of(component: str, obs: Observation) -> list[str]:
    """The rack behind a top-of-rack switch or an uplink."""
    return [f"rack-{_index(component)}"]


def service_of(component: str, obs: Observation) -> list[str]:
    """The service an instance belongs to."""
    return [f"svc-{obs.service_names[obs.inst_service[_index(component)]]}"]


def services_on_host(component: str, obs: Observation) -> list[str]:
    """Services with an instance on the host."""
    host = _index(component)
    svcs = np.unique(obs.inst_service[obs.inst_used & (obs.inst_host == host)])
    return [f"svc-{obs.service_names[s]}" for s in svcs]


def services_in_rack(component: str, obs: Observation) -> list[str]:
    """Services with an instance in the rack of a switch."""
    rack = _index(component)
    mask = obs.inst_used & (obs.host_rack[obs.inst_host] == rack)
    return [f"svc-{obs.service_names[s]}" for s in np.unique(obs.inst_service[mask])]


def busiest_services(component: str, obs: Observation) -> list[str]:
    """Services whose mean instance utilisation is above 0.65 (at least the busiest one).

    A surge lifts every service; scaling only those already near saturation leaves the
    next ones to fail a few minutes later.
    """
    used = obs.inst_used
    n = len(obs.service_names)
    util = np.bincount(obs.inst_service[used], obs.inst[used, _CPU], minlength=n) / np.maximum(
        np.bincount(obs.inst_service[used], minlength=n), 1
    )
    hot = [int(s) for s in np.flatnonzero(util > 0.65)] or [int(np.argmax(util))]
    return [f"svc-{obs.service_names[s]}" for s in hot]


@dataclass(frozen=True, slots=True)
class Step:
    """Actions run together, and how long to wait for the SLO to recover before moving on."""

    actions: tuple[tuple[str, TargetRule], ...]
    deadline_s: float = 300.0

    def resolve(self, component: str, obs: Observation) -> list[Action]:
        """Concrete actions for a root-cause component."""
        out: list[Action] = []
        for kind, rule in self.actions:
            out += [Action(kind, target) for target in rule(component, obs)]
        return out


@dataclass(frozen=True, slots=True)
class Runbook:
    """Ordered steps for one root-cause class; the last one failing means escalation."""

    fault_class: str
    steps: tuple[Step, ...]
    follow_up: tuple[tuple[str, TargetRule], ...] = ()


def _step(*actions: tuple[str, TargetRule], deadline_s: float = 300.0) -> Step:
    return Step(tuple(actions), deadline_s)


RUNBOOKS: dict[str, Runbook] = {
    rb.fault_class: rb
    for rb in (
        Runbook(
            FaultKind.SERVICE_CRASH.value,
            (
                _step(("restart_instance", itself), deadline_s=120.0),
                _step(("cold_migrate", itself), deadline_s=240.0),
                _step(("scale_out", service_of), deadline_s=240.0),
            ),
        ),
        # One instance slow, failing or hung alone on a plant without host telemetry (live): a
        # fresh process, twice, as a passing cause may outlast the first; then a human.
        *(
            Runbook(kind, (_step(("restart_instance", itself), deadline_s=60.0),) * 2)
            for kind in (SLOW_RESPONSE, ERROR_RESPONSES, SERVICE_HANG)
        ),
        Runbook(
            FaultKind.MEMORY_LEAK.value,
            (
                _step(("restart_instance", itself), deadline_s=120.0),
                _step(("cold_migrate", itself), deadline_s=240.0),
            ),
        ),
        # A rebuild fails one time in fifty for a passing reason; the incident stays open
        # until the replica serves again, so the fallback rebuilds it once more, with a
        # replica added meanwhile (a scale-out alone never brings the lost one back).
        Runbook(
            FaultKind.VM_FAILURE.value,
            (
                _step(("cold_migrate", itself), deadline_s=240.0),
                _step(("cold_migrate", itself), ("scale_out", service_of), deadline_s=240.0),
            ),
        ),
        Runbook(
            FaultKind.HOST_FAILURE.value,
            (
                _step(("cold_migrate", instances_on_host), deadline_s=300.0),
                _step(("cold_migrate", instances_on_host), ("scale_out", services_on_host),
                      deadline_s=300.0),
                # A host down with nothing left on it (its repair, a follow-up, failed): repair
                # it again rather than page a human for an empty host.
                _step(("repair_host", itself), deadline_s=4 * 3600.0 + 900.0),
            ),
            follow_up=(("repair_host", itself),),
        ),
        Runbook(
            FaultKind.DISK_DEGRADATION.value,
            (
                _step(("drain_host", itself), deadline_s=600.0),
                # One drain in twenty fails for a passing reason; a second usually takes, and
                # only a drained host moves the worn disk's load away for good.
                _step(("drain_host", itself), deadline_s=600.0),
                _step(("cold_migrate", instances_on_host), deadline_s=300.0),
            ),
            follow_up=(("replace_disk", itself),),
        ),
        Runbook(
            FaultKind.NETWORK_PARTITION.value,
            (
                _step(("failover_rack", rack_of), ("scale_out", services_in_rack),
                      deadline_s=300.0),
                _step(("repair_switch", itself), deadline_s=900.0),
                _step(("repair_switch", itself), deadline_s=900.0),
            ),
            follow_up=(("repair_switch", itself),),
        ),
        Runbook(
            FaultKind.LINK_DEGRADATION.value,
            (
                _step(("repair_link", itself), deadline_s=600.0),
                _step(("repair_link", itself), deadline_s=600.0),
            ),
        ),
        Runbook(
            FaultKind.LOAD_SURGE.value,
            (
                _step(("scale_out", busiest_services), deadline_s=300.0),
                _step(("scale_out", busiest_services), deadline_s=300.0),
                _step(("shed_load", itself), deadline_s=300.0),
            ),
            follow_up=(("stop_shedding", itself),),
        ),
        Runbook(
            FaultKind.NOISY_NEIGHBOUR.value,
            (
                # An eviction fails one time in twenty for a passing reason; moving the
                # instances away leaves the hog on a schedulable host, so evict once more first.
                _step(("evict_noisy_neighbour", itself), deadline_s=180.0),
                _step(("evict_noisy_neighbour", itself), deadline_s=180.0),
                _step(("live_migrate", instances_on_host), deadline_s=300.0),
            ),
        ),
        Runbook(
            FaultKind.FAN_FAILURE.value,
            (
                # The hot swap takes 15 minutes while the host heats towards throttling; a
                # drain (3 minutes) moves its load away first, as for a worn disk. The fan is
                # swapped on the drained host and the host uncordoned once it is repaired.
                _step(("drain_host", itself), deadline_s=600.0),
                _step(("drain_host", itself), deadline_s=600.0),
                _step(("replace_fan", itself), deadline_s=1200.0),
            ),
            follow_up=(("replace_fan", itself),),
        ),
        Runbook(
            FaultKind.BAD_CONFIG.value,
            (
                _step(("config_rollback", itself), deadline_s=240.0),
                _step(("config_rollback", itself), deadline_s=240.0),
            ),
        ),
        Runbook(
            FaultKind.SECURITY_VULNERABILITY.value,
            (
                _step(("rolling_patch", itself), deadline_s=600.0),
                _step(("rolling_patch", itself), deadline_s=600.0),
            ),
        ),
    )
}


def runbook_for(fault_class: str) -> Runbook:
    """The runbook of a root-cause class.

    Raises:
        KeyError: with the known classes, when there is none.
    """
    if fault_class not in RUNBOOKS:
        raise KeyError(f"no runbook for {fault_class!r}; known: {sorted(RUNBOOKS)}")
    return RUNBOOKS[fault_class]


def _check_library() -> None:
    missing = {k.value for k in FaultKind} - set(RUNBOOKS)
    if missing:
        raise RuntimeError(f"fault kinds without a runbook: {sorted(missing)}")
    for rb in RUNBOOKS.values():
        for step in (*rb.steps, Step(rb.follow_up)):
            for kind, _ in step.actions:
                if kind not in ACTION_SPECS:
                    raise RuntimeError(f"runbook {rb.fault_class!r} names unknown action {kind!r}")


_check_library()
