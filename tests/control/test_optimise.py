"""Evolve / optimise cycles of the control plane, and the online tuner on the twin."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from agents.bayesopt import BOParams
from agents.evolution import GAParams
from agents.tuner import OnlineTuner
from control.optimise import (
    CycleParams,
    SelfOptimiser,
    replica_counts,
    replica_rules,
    run_tuner,
)
from sim.architecture import ArchitectureError, EvalSpec, GenomeSpace, deploy
from sim.events import DecisionRecord
from sim.scenarios import make_config
from sim.twin import Twin

SPEC = EvalSpec(hosts=20, hours=0.1, replicates=1, fault_rate_scale=50.0)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny GPs are dominated by per-call overhead; extra intra-op threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _running_twin() -> Twin:
    space = GenomeSpace(SPEC.base_config())
    twin = deploy(space.decode(space.default_genome()), space.base, seed=3)
    twin.advance(600.0)
    return twin


def test_evolve_cycle_validates_in_a_fork_and_logs_the_improvement() -> None:
    """The cycle writes one decision with both fitness values; applied means live actions."""
    twin = _running_twin()
    before = replica_counts(twin)
    opt = SelfOptimiser(twin, SPEC, params=CycleParams(validation_s=600.0))
    now = twin.now_s
    report = opt.evolve(GAParams(pop_size=4, max_generations=2, tournament_size=2), seed=1)
    assert twin.now_s == now
    decisions = [r for r in twin.log.since(report.decision_seq)
                 if isinstance(r, DecisionRecord) and r.action == "evolve"]
    assert len(decisions) == 1
    d = decisions[0]
    assert f"{report.incumbent_fitness:.4f} -> {report.candidate_fitness:.4f}" in d.reason
    assert d.verdict == ("applied" if report.applied else "rejected")
    assert report.applied == (report.improvement > 0 and bool(report.actions))
    if report.applied:
        assert twin.pending, "applied changes are submitted to the live twin"
    else:
        assert replica_counts(twin) == before and not twin.pending


def test_optimise_cycle_runs_bo_and_records_a_decision() -> None:
    """The optimise cycle proposes a configuration and records its fork validation."""
    twin = _running_twin()
    opt = SelfOptimiser(twin, SPEC, params=CycleParams(validation_s=600.0))
    report = opt.optimise(iterations=4, seed=0, bo=BOParams(n_initial=3, num_restarts=2,
                                                           raw_samples=32, acq_maxiter=20))
    assert report.search_evaluations == 4
    assert "configuration" in report.proposal
    rec = twin.log[report.decision_seq]
    assert isinstance(rec, DecisionRecord) and rec.action == "optimise"
    assert np.isfinite(report.incumbent_fitness) and np.isfinite(report.candidate_fitness)


def test_cycle_rejects_a_mismatched_spec() -> None:
    """A search spec for another cluster size is refused."""
    with pytest.raises(ArchitectureError, match="hosts"):
        SelfOptimiser(_running_twin(), EvalSpec(hosts=40))


def test_tuner_on_the_twin_respects_limits_and_cooldown() -> None:
    """Replica rules scale under load, stay within hard limits, one change per cooldown."""
    twin = Twin(make_config("performance_degradation", 20), seed=1)
    rules, initial = replica_rules(twin, 0.3, 0.5, step=1, max_factor=1.5)
    tuner = OnlineTuner(rules, initial, cooldown_s=300.0)
    run = run_tuner(twin, tuner, 2 * 3600.0, interval_s=60.0)
    assert run.adjustments == len(tuner.history) > 0
    for rule in rules:
        changes = [a.t_s for a in tuner.history if a.param == rule.param]
        assert all(b - a >= 300.0 for a, b in itertools.pairwise(changes))
        assert rule.min_value <= tuner.values[rule.param] <= rule.max_value
    assert 0.0 <= run.availability <= 1.0
