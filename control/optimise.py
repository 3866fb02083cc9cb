"""Self-optimisation cycles of the control plane: evolve the architecture, tune the config.

:class:`SelfOptimiser` holds the architecture a running twin is deployed with (a genome of
:class:`sim.architecture.GenomeSpace`) and runs two cycles on demand (the HTTP API's
``/autonomous/evolve`` calls them):

* :meth:`SelfOptimiser.evolve` runs the GA (:mod:`agents.evolution`) on fresh deployments;
* :meth:`SelfOptimiser.optimise` runs Bayesian optimisation (:mod:`agents.bayesopt`) over
  :data:`sim.architecture.CONFIG_PARAMS`.

A proposal becomes the live changes a running cluster can take: one ``scale_out`` or
``scale_in`` per service whose replica count differs from the proposal's (bounded steps; the
next cycle continues). Those changes are validated in a fork of the running twin against a
fork with the same key left alone (identical futures otherwise), both scored by
:func:`sim.architecture.measure` over ``validation_s``. Only a proposal whose weighted
fitness beats the incumbent's by ``min_improvement`` is applied to the live twin. Either
way a :class:`sim.events.DecisionRecord` in the twin's event log records the cycle, the two
fitness values and the relative improvement; genes the live cluster cannot take (instance
size, cache, balancing policy, spread) are named in it as needing a redeploy.

A twin that another thread advances (the HTTP control plane's) is shared safely by passing
the cycle a ``lock`` and an ``apply`` callable: the search runs on fresh twins without the
lock; reading the running twin, forking it, applying the changes and logging the decision
happen under it, and each change goes through ``apply`` (for instance the safety gate), which
may refuse it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from agents.bayesopt import BayesOpt, BOParams, Param, SearchSpace
from agents.evolution import GAParams, TwinEvaluator, run_search
from agents.tuner import OnlineTuner, TuningRule
from sim.actions import Action
from sim.architecture import (
    CONFIG_PARAMS,
    SIZED_SERVICES,
    Architecture,
    ArchitectureError,
    EvalSpec,
    GenomeSpace,
    configure,
    evaluate_mean,
    measure,
    weighted_fitness,
)
from sim.events import DecisionRecord
from sim.twin import Twin, window_kpis

ApplyFn = Callable[[Action], tuple[bool, str]]
"""Submits one live change; returns whether it was executed and why (not)."""


@dataclass(frozen=True, slots=True)
class CycleParams:
    """Validation settings of a cycle."""

    validation_s: float = 1800.0
    min_improvement: float = 0.0
    fork_key: int = 7919

    def __post_init__(self) -> None:
        if not 0 < self.validation_s <= 86400.0:
            raise ArchitectureError(
                f"validation_s must lie in (0, 86400], got {self.validation_s!r}"
            )
        if not math.isfinite(self.min_improvement) or self.min_improvement < 0:
            raise ArchitectureError("min_improvement must be a non-negative number")


@dataclass
class CycleReport:
    """What one cycle proposed, how it fared in the fork, and whether it was applied."""

    kind: str
    applied: bool
    incumbent_fitness: float
    candidate_fitness: float
    improvement: float
    actions: list[str]
    needs_redeploy: list[str]
    search_evaluations: int
    proposal: dict[str, object] = field(default_factory=dict)
    decision_seq: int = -1
    refused: list[str] = field(default_factory=list)
    """Live changes the cycle chose to apply that ``apply`` refused, with the reason."""


class SelfOptimiser:
    """Evolve / optimise cycles against a running twin.

    Args:
        twin: the running plant.
        spec: how a search scores an architecture; default: ``EvalSpec`` at the twin's size.
        genome: the architecture the twin runs; default: the default genome.
        params: validation settings.
    """

    def __init__(self, twin: Twin, spec: EvalSpec | None = None,
                 genome: np.ndarray | None = None, params: CycleParams | None = None) -> None:
        self.twin = twin
        self.spec = spec or EvalSpec(hosts=twin.topo.n_hosts)
        if self.spec.hosts != twin.topo.n_hosts:
            raise ArchitectureError(
                f"spec.hosts ({self.spec.hosts}) differs from the twin's {twin.topo.n_hosts}"
            )
        self.space = GenomeSpace(self.spec.base_config())
        self.genome = self.space.check(self.space.default_genome() if genome is None
                                       else genome)
        self.params = params or CycleParams()
        self.cycles = 0

    def evolve(self, ga: GAParams | None = None, seed: int = 0, n_jobs: int = 1, *,
               lock: AbstractContextManager[object] | None = None,
               apply: ApplyFn | None = None) -> CycleReport:
        """One evolve cycle: GA on the twin, then fork validation and, if better, apply.

        ``lock`` guards every access to the running twin; ``apply`` submits each live change
        (default: straight to the twin).
        """
        params = ga or GAParams(pop_size=12, max_generations=5, tournament_size=3)
        evaluator = TwinEvaluator(self.space, self.spec, seed=seed, n_jobs=n_jobs,
                                  draw_effects=params.draw_effects_for("ga"))
        result = run_search(evaluator, params, "ga", seed)
        arch = self.space.decode(result.best_genome)
        report = self._validate_and_apply("evolve", arch, result.evaluations, lock, apply)
        report.proposal = {"genome": [int(v) for v in result.best_genome]}
        if report.applied:
            self.genome = result.best_genome.copy()
        return report

    def optimise(self, iterations: int = 100, seed: int = 0, batch_size: int = 1,
                 bo: BOParams | None = None, *,
                 lock: AbstractContextManager[object] | None = None,
                 apply: ApplyFn | None = None) -> CycleReport:
        """One optimise cycle: BO over the configuration, then fork validation and apply.

        ``lock`` and ``apply`` as in :meth:`evolve`.
        """
        space = SearchSpace([Param(n, float(lo), float(hi), k) for n, lo, hi, k in CONFIG_PARAMS])
        cost_ref = self._search_cost_ref()

        def objective(x: np.ndarray) -> np.ndarray:
            out = []
            for row in x:
                arch = configure(self.space, space.as_dict(row), self.genome)
                obj = evaluate_mean(arch, self.spec, seed, self.space.base)
                out.append([-weighted_fitness(obj, cost_ref)])
            return np.array(out)

        opt = BayesOpt(space, seed=seed, params=bo or BOParams())
        for _ in range(iterations):
            x = opt.ask(batch_size)
            opt.tell(x, objective(x))
        best_x, _ = opt.best()
        values = space.as_dict(best_x)
        arch = configure(self.space, values, self.genome)
        report = self._validate_and_apply("optimise", arch, opt.n_observed, lock, apply)
        report.proposal = {"configuration": values}
        return report

    def _search_cost_ref(self) -> float:
        return evaluate_mean(self.space.decode(self.genome), self.spec, 0,
                             self.space.base).cost_usd

    def live_actions(self, arch: Architecture) -> list[Action]:
        """One scale step per service whose running replica count differs from ``arch``'s."""
        st, topo = self.twin.state, self.twin.topo
        out: list[Action] = []
        for name, target in zip(SIZED_SERVICES, arch.replicas, strict=True):
            if name not in topo.service_names:
                continue
            s = topo.service_names.index(name)
            current = int((st.inst_used & (st.inst_service == s)).sum())
            if target > current:
                out.append(Action("scale_out", f"svc-{name}"))
            elif target < current:
                out.append(Action("scale_in", f"svc-{name}"))
        return out

    def _needs_redeploy(self, arch: Architecture) -> list[str]:
        cur = self.space.decode(self.genome)
        names = []
        for attr in ("workers", "mem_limit_bytes", "spread_racks", "cache_replicas",
                     "cache_gib", "read_replicas", "lb_policy", "timeout_s", "max_servers"):
            if getattr(arch, attr) != getattr(cur, attr):
                names.append(attr)
        return names

    def _validate_and_apply(self, kind: str, arch: Architecture, evaluations: int,
                            lock: AbstractContextManager[object] | None = None,
                            apply: ApplyFn | None = None) -> CycleReport:
        twin = self.twin
        guard = lock if lock is not None else nullcontext()

        def submit(a: Action) -> tuple[bool, str]:
            result = twin.apply(a)
            return result.accepted, result.reason

        self.cycles += 1
        key = self.params.fork_key + self.cycles
        with guard:
            actions = self.live_actions(arch)
            incumbent_fork = twin.fork(key)
            candidate_fork = twin.fork(key)
        for a in actions:
            candidate_fork.apply(a)
        horizon = self.params.validation_s
        inc = measure(incumbent_fork, self.spec, horizon)
        cand = measure(candidate_fork, self.spec, horizon)
        cost_ref = max(inc.cost_usd, 1e-9)
        f_inc = weighted_fitness(inc, cost_ref)
        f_cand = weighted_fitness(cand, cost_ref)
        improvement = f_cand / f_inc - 1.0 if f_inc > 0 else math.inf
        better = bool(actions) and improvement > self.params.min_improvement
        redeploy = self._needs_redeploy(arch)
        names = [f"{a.kind} {a.target}" for a in actions]
        refused: list[str] = []
        with guard:
            executed = 0
            if better:
                for a, name in zip(actions, names, strict=True):
                    ok, why = (apply or submit)(a)
                    if ok:
                        executed += 1
                    else:
                        refused.append(f"{name}: {why}")
            applied = executed > 0
            reason = (
                f"{kind}: fitness {f_inc:.4f} -> {f_cand:.4f} ({improvement:+.2%}) over "
                f"{horizon:.0f} s in a twin fork; live changes {names or 'none'}"
                + (f"; not applied: {'; '.join(refused)}" if refused else "")
                + (f"; needs redeploy: {', '.join(redeploy)}" if redeploy else "")
            )
            verdict = "applied" if applied else ("blocked" if better else "rejected")
            log = twin.log
            seq = log.next_seq
            log.add(DecisionRecord(seq, twin.now_s, -1, kind,
                                   "architecture" if kind == "evolve" else "configuration",
                                   verdict, reason, applied))
        return CycleReport(kind, applied, f_inc, f_cand, improvement, names, redeploy,
                           evaluations, decision_seq=seq, refused=refused)


@dataclass
class TunerRun:
    """What the online tuner did over a run, and what the plant delivered."""

    adjustments: int
    actions_applied: int
    availability: float
    time_availability: float
    instance_hours: float
    action_cost_usd: float
    final_replicas: dict[str, int]


def service_utilisation(twin: Twin) -> dict[str, float]:
    """Mean utilisation of each service's running instances, as ``util.<service>``."""
    st, topo = twin.state, twin.topo
    up = st.inst_used & st.inst_up
    n_s = topo.n_services
    count = np.bincount(st.inst_service[up], minlength=n_s)
    util = np.bincount(st.inst_service[up], st.inst_util[up], minlength=n_s)
    return {f"util.{name}": float(util[i] / count[i])
            for i, name in enumerate(topo.service_names) if count[i]}


def replica_counts(twin: Twin) -> dict[str, int]:
    """Replicas of each service (in use, whatever their state), as ``replicas.<service>``."""
    st, topo = twin.state, twin.topo
    counts = np.bincount(st.inst_service[st.inst_used], minlength=topo.n_services)
    return {f"replicas.{name}": int(counts[i]) for i, name in enumerate(topo.service_names)}


def run_tuner(twin: Twin, tuner: OnlineTuner, duration_s: float,
              interval_s: float = 60.0) -> TunerRun:
    """Drive ``twin`` for ``duration_s`` with the tuner's replica rules every ``interval_s``.

    Parameters named ``replicas.<service>`` are applied as one ``scale_out`` (value up) or
    ``scale_in`` (value down) per adjustment; the tuner's value is then re-synchronised with
    the replica count the plant actually has. A scale-out adds as many replicas as an
    autoscaler would, so a count pushed past a hard limit is brought back by one step per
    interval, whatever the cooldown.
    """
    if not duration_s > 0 or not interval_s > 0:
        raise ArchitectureError("duration_s and interval_s must be positive")
    start_seq = twin.log.next_seq
    end_s = twin.now_s + duration_s
    applied = 0
    while twin.now_s < end_s - 1e-9:
        twin.advance(min(interval_s, end_s - twin.now_s))
        for adj in tuner.step(twin.now_s, service_utilisation(twin)):
            service = adj.param.removeprefix("replicas.")
            kind = "scale_out" if adj.new > adj.old else "scale_in"
            if twin.apply(Action(kind, f"svc-{service}")).accepted:
                applied += 1
        counts = replica_counts(twin)
        for rule in tuner.rules:
            if rule.param not in counts:
                continue
            n = counts[rule.param]
            service = rule.param.removeprefix("replicas.")
            if n > rule.max_value or n < rule.min_value:
                kind = "scale_in" if n > rule.max_value else "scale_out"
                if twin.apply(Action(kind, f"svc-{service}")).accepted:
                    applied += 1
            tuner.sync(rule.param, n)
    kpis = window_kpis(twin.log.since(start_seq))
    return TunerRun(
        adjustments=len(tuner.history), actions_applied=applied,
        availability=float(kpis["availability"]),
        time_availability=float(kpis["time_availability"]),
        instance_hours=twin.summary()["instance_hours"],
        action_cost_usd=float(kpis["action_cost_usd"]),
        final_replicas=replica_counts(twin),
    )


def replica_rules(twin: Twin, low_util: float, high_util: float, step: int = 1,
                  max_factor: float = 3.0) -> tuple[list[TuningRule], dict[str, float]]:
    """One replica rule per service: utilisation band, hard limits ``[max(1, n/2), n f]``."""
    rules, initial = [], {}
    for key, n in replica_counts(twin).items():
        service = key.removeprefix("replicas.")
        rules.append(TuningRule(key, f"util.{service}", low_util, high_util, float(step),
                                float(max(1, n // 2)), float(math.ceil(n * max_factor))))
        initial[key] = float(n)
    return rules, initial
