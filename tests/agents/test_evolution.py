"""GA and NSGA-II on the twin: operators, determinism, caching, resume, bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agents.evolution import (
    ArchitectureProblem,
    BlockCrossover,
    GAParams,
    StructuralMutation,
    TwinEvaluator,
    hypervolume,
    random_search,
    run_search,
)
from sim.architecture import ArchitectureError, EvalSpec, GenomeSpace, Objectives, deployable

SPEC = EvalSpec(hosts=20, hours=0.1, replicates=1, fault_rate_scale=100.0)
SMALL = GAParams(pop_size=6, max_generations=3, tournament_size=3, period=3)


@pytest.fixture(scope="module")
def space() -> GenomeSpace:
    return GenomeSpace(SPEC.base_config())


def _problem(space: GenomeSpace) -> ArchitectureProblem:
    return ArchitectureProblem(TwinEvaluator(space, SPEC), 1.0, 1)


def test_ga_same_seed_same_best_and_front(space: GenomeSpace) -> None:
    """Two GA runs with one seed give the same best genome, front and history."""
    a = run_search(TwinEvaluator(space, SPEC), SMALL, "ga", seed=4)
    b = run_search(TwinEvaluator(space, SPEC), SMALL, "ga", seed=4)
    assert np.array_equal(a.best_genome, b.best_genome)
    assert np.array_equal(a.front_genomes, b.front_genomes)
    assert [h.best_fitness for h in a.history] == [h.best_fitness for h in b.history]
    assert a.history[-1].best_fitness >= a.history[0].best_fitness


def test_nsga2_same_seed_same_front(space: GenomeSpace) -> None:
    """NSGA-II is deterministic too, and its front is non-empty with positive hypervolume."""
    a = run_search(TwinEvaluator(space, SPEC, draw_effects=True), SMALL, "nsga2", seed=1)
    b = run_search(TwinEvaluator(space, SPEC, draw_effects=True), SMALL, "nsga2", seed=1)
    assert np.array_equal(a.front_genomes, b.front_genomes)
    assert a.hypervolume == b.hypervolume > 0


def test_parallel_evaluation_matches_serial(space: GenomeSpace) -> None:
    """Objectives do not depend on the number of worker processes."""
    genomes = np.stack([space.default_genome(), space.default_genome() * 0 + space.low])
    serial = TwinEvaluator(space, SPEC, n_jobs=1)(genomes)
    parallel = TwinEvaluator(space, SPEC, n_jobs=2)(genomes)
    assert serial == parallel


def test_evaluations_are_cached_by_genome(space: GenomeSpace) -> None:
    """A genome evaluated twice runs the twin once."""
    ev = TwinEvaluator(space, SPEC)
    g = space.default_genome()[None, :]
    first = ev(g)
    second = ev(np.vstack([g, g]))
    assert ev.evaluations == 1 and ev.twin_runs == 1
    assert second == [first[0], first[0]]


def test_resume_from_checkpoint_equals_uninterrupted(space: GenomeSpace, tmp_path: Path
                                                     ) -> None:
    """A run stopped after one generation and resumed ends where an uninterrupted run does."""
    full = run_search(TwinEvaluator(space, SPEC), SMALL, "ga", seed=2)
    ckpt = tmp_path / "ga.pkl"
    part = run_search(TwinEvaluator(space, SPEC), SMALL, "ga", seed=2, checkpoint=ckpt,
                      max_generations=1)
    assert len(part.history) == 1 and ckpt.exists()
    resumed = run_search(TwinEvaluator(space, SPEC), SMALL, "ga", seed=2, checkpoint=ckpt)
    assert resumed.resumed_from == 1
    assert np.array_equal(resumed.best_genome, full.best_genome)
    assert [h.best_fitness for h in resumed.history] == [h.best_fitness for h in full.history]
    with pytest.raises(ArchitectureError, match="checkpoint"):
        run_search(TwinEvaluator(space, SPEC, draw_effects=True), SMALL, "nsga2", seed=2,
                   checkpoint=ckpt)
    with pytest.raises(ArchitectureError, match="another evaluation"):
        run_search(TwinEvaluator(space, SPEC, seed=9), SMALL, "ga", seed=2, checkpoint=ckpt)


def test_operators_stay_in_bounds_and_repair_deploys(space: GenomeSpace) -> None:
    """Mutation and crossover keep genes within bounds; repaired children deploy."""
    from agents.evolution import DeployRepair

    rng = np.random.default_rng(0)
    problem = _problem(space)
    X = space.random_genomes(8, rng)
    mutated = StructuralMutation(0.5)._do(problem, X, random_state=rng)
    assert ((mutated >= space.low) & (mutated <= space.high)).all()
    assert (mutated != X).any()
    children = BlockCrossover(1.0)._do(problem, np.stack([X[:4], X[4:]]), random_state=rng)
    assert children.shape == (2, 4, space.n_genes)
    for child in children.reshape(-1, space.n_genes):
        for j in range(space.n_genes):
            assert child[j] in (X[:, j])
    repaired = DeployRepair()._do(problem, mutated)
    assert all(deployable(space, g) is None for g in repaired)


def test_random_search_uses_the_budget(space: GenomeSpace) -> None:
    """Random search evaluates exactly the number of distinct genomes asked for."""
    rs = random_search(TwinEvaluator(space, SPEC), 7, seed=0)
    assert rs.evaluations == 7
    assert rs.best_fitness >= rs.history[0].mean_fitness


def test_hypervolume_of_dominated_sets() -> None:
    """A front that dominates another has the larger hypervolume; empty is zero."""
    a = np.array([[0.1, 0.5, 0.1]])
    b = np.array([[0.2, 0.8, 0.3]])
    assert hypervolume(a) > hypervolume(b) > 0
    assert hypervolume(np.zeros((0, 3))) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"pop_size": 1}, "pop_size"), ({"mutation_rate": 1.5}, "mutation_rate"),
     ({"tournament_size": 200}, "tournament_size"), ({"max_generations": 0}, "max_gen")],
)
def test_bad_ga_params_are_clear_errors(kwargs: dict[str, object], words: str) -> None:
    """Out-of-range GA settings raise ArchitectureError naming the setting."""
    with pytest.raises(ArchitectureError, match=words):
        GAParams(**kwargs)  # type: ignore[arg-type]


def test_bad_mode_is_a_clear_error(space: GenomeSpace) -> None:
    """An unknown search mode is refused before anything runs."""
    with pytest.raises(ArchitectureError, match="mode"):
        run_search(TwinEvaluator(space, SPEC), SMALL, "sa", seed=0)


def test_draw_sets_and_fresh_seeds_never_share_a_twin_seed() -> None:
    """Search draw sets of any evaluation seed and the fresh confirmation seeds are disjoint."""
    from agents.evolution import FRESH_SEED_BASE
    from sim.architecture import replicate_seeds

    search = {s for seed in (0, 1, FRESH_SEED_BASE - 1) for d in range(4)
              for s in replicate_seeds(seed, 3, d)}
    assert len(search) == 3 * 4 * 3
    fresh = {s for k in range(10) for s in replicate_seeds(FRESH_SEED_BASE + k, 3)}
    assert not search & fresh
    assert replicate_seeds(2, 3) == [2000, 2001, 2002]
    with pytest.raises(ArchitectureError, match="draw"):
        replicate_seeds(0, 3, -1)


def test_evaluator_refuses_confirmation_seeds(space: GenomeSpace) -> None:
    """A search may not evaluate on the seeds kept for confirmation."""
    from agents.evolution import FRESH_SEED_BASE

    with pytest.raises(ArchitectureError, match="confirmation"):
        TwinEvaluator(space, SPEC, seed=FRESH_SEED_BASE)


def test_resampling_reevaluates_and_races_the_best(space: GenomeSpace) -> None:
    """Re-drawing measures the named best on final_draws draw sets; without it, draw 0 only.

    Without re-drawing every genome is scored on draw 0 (common random numbers alone).
    """
    params = GAParams(pop_size=6, max_generations=3, tournament_size=3, period=3,
                      final_draws=3)
    ev = TwinEvaluator(space, SPEC)
    res = run_search(ev, params, "ga", seed=3)
    assert len(ev.draws(res.best_genome)) >= 3
    assert max(d for k in ev.means() for d in ev.draws(k)) >= 2
    means = ev.means()[tuple(int(v) for v in res.best_genome)]
    assert res.best_objectives == means
    plain = GAParams(pop_size=6, max_generations=3, tournament_size=3, period=3,
                     resample=False, final_draws=1)
    ev0 = TwinEvaluator(space, SPEC)
    run_search(ev0, plain, "ga", seed=3)
    assert all(ev0.draws(k) == [0] for k in ev0.means())


def test_random_search_stays_within_a_twin_run_budget(space: GenomeSpace) -> None:
    """Random search given a budget of twin runs spends no more, race included."""
    params = GAParams(pop_size=6, max_generations=2, tournament_size=3, final_draws=2)
    rs = random_search(TwinEvaluator(space, SPEC), twin_runs=30, seed=1, params=params)
    assert rs.twin_runs <= 30
    assert rs.evaluations == 30 - params.n_race * (params.final_draws - 1)
    with pytest.raises(ArchitectureError, match="exactly one"):
        random_search(TwinEvaluator(space, SPEC), 5, twin_runs=30)


def test_first_population_holds_default_and_its_mutants(space: GenomeSpace) -> None:
    """The seeded share of the first population is the default and distinct mutants of it."""
    from agents.evolution import SeededSampling

    X = SeededSampling(True, 0.5)._do(_problem(space), 8, random_state=np.random.default_rng(0))
    default = space.default_genome()
    assert np.array_equal(X[0], default)
    seeded = {tuple(int(v) for v in x) for x in X[:4]}
    assert len(seeded) == 4
    assert all(deployable(space, x) is None for x in X[:4])
    assert all(int((x != default).sum()) > 0 for x in X[1:4])


@pytest.mark.parametrize(("kwargs", "words"), [({"final_draws": 0}, "final_draws"),
                                               ({"seeded_share": 2.0}, "seeded_share"),
                                               ({"resample": "yes"}, "resample"),
                                               ({"draw_effects": 1}, "draw_effects"),
                                               ({"capacity_shift": 1.5}, "capacity_shift"),
                                               ({"capacity_shift": True}, "capacity_shift")])
def test_bad_resampling_params_are_clear_errors(kwargs: dict[str, object], words: str) -> None:
    """Out-of-range re-drawing settings raise ArchitectureError naming the setting."""
    with pytest.raises(ArchitectureError, match=words):
        GAParams(**kwargs)  # type: ignore[arg-type]


def _synthetic(perf: float, cost: float, rel: float) -> Objectives:
    return Objectives(performance=perf, cost_usd=cost, reliability=rel, throughput_share=perf,
                      latency_score=1.0, resource_usd=cost, action_usd=0.0, actions=0, faults=0)


def test_draw_effects_recover_genome_means_from_an_additive_model(space: GenomeSpace) -> None:
    """Scores built as genome mean + draw effect are read back as the genome means.

    Five genomes are seen on all six draws, the rest on one each (as a GA's elite and its
    offspring). Up to one constant shared by all genomes the fitted means are exact, so
    genomes first seen on a harsh and on a mild draw compare as on the same draws; plain
    means (the default) keep the draw's effect.
    """
    rng = np.random.default_rng(0)
    genomes = [tuple(int(v) for v in g) for g in space.random_genomes(30, rng)]
    assert len(set(genomes)) == 30
    mu = np.column_stack([rng.uniform(0.3, 0.7, 30), rng.uniform(50, 90, 30),
                          rng.uniform(0.3, 0.7, 30)])
    delta = rng.normal(0.0, 0.05, (6, 3)) * np.array([1.0, 100.0, 1.0])
    cache = {}
    for i, g in enumerate(genomes):
        for d in (range(6) if i < 5 else [i % 6]):
            cache[g, d] = _synthetic(*(mu[i] + delta[d]))
    fitted = TwinEvaluator(space, SPEC, cache=dict(cache), draw_effects=True).means()
    est = np.array([[fitted[g].performance, fitted[g].cost_usd, fitted[g].reliability]
                    for g in genomes])
    offset = est - mu
    assert np.allclose(offset, offset[0], atol=1e-9)
    plain = TwinEvaluator(space, SPEC, cache=dict(cache)).means()
    plain_off = np.array([plain[g].performance for g in genomes]) - mu[:, 0]
    assert plain_off[5:].std() > 0.01


def test_draw_effects_leave_untied_draws_alone(space: GenomeSpace) -> None:
    """With no genome seen on two draws, nothing ties the draws: means are plain means."""
    rng = np.random.default_rng(1)
    genomes = [tuple(int(v) for v in g) for g in space.random_genomes(4, rng)]
    cache = {(g, d): _synthetic(0.1 * (d + 1), 10.0 * (d + 1), 0.2)
             for d, g in enumerate(genomes)}
    ev = TwinEvaluator(space, SPEC, cache=cache, draw_effects=True)
    assert ev.draw_effect_table() == {}
    assert [ev.means()[g].performance for g in genomes] == [cache[g, d].performance
                                                            for d, g in enumerate(genomes)]


def test_resume_with_draw_effects_and_refusal_of_the_other_setting(
        space: GenomeSpace, tmp_path: Path) -> None:
    """With draw effects a resumed run equals an uninterrupted one; without, it is refused."""
    ckpt = tmp_path / "ga.pkl"
    small = dataclasses.replace(SMALL, draw_effects=True)
    full = run_search(TwinEvaluator(space, SPEC, draw_effects=True), small, "ga", seed=2)
    run_search(TwinEvaluator(space, SPEC, draw_effects=True), small, "ga", seed=2,
               checkpoint=ckpt, max_generations=1)
    with pytest.raises(ArchitectureError, match="draw effects"):
        run_search(TwinEvaluator(space, SPEC), SMALL, "ga", seed=2, checkpoint=ckpt)
    resumed = run_search(TwinEvaluator(space, SPEC, draw_effects=True), small, "ga", seed=2,
                         checkpoint=ckpt)
    assert resumed.resumed_from == 1
    assert np.array_equal(resumed.best_genome, full.best_genome)
    assert resumed.best_fitness == full.best_fitness


def test_draw_effects_setting_must_match_the_evaluator(space: GenomeSpace) -> None:
    """A GAParams.draw_effects the evaluator was not built with is refused, not ignored."""
    on = dataclasses.replace(SMALL, draw_effects=True)
    with pytest.raises(ArchitectureError, match=r"ga\.draw_effects is True"):
        run_search(TwinEvaluator(space, SPEC), on, "ga", seed=0)
    with pytest.raises(ArchitectureError, match=r"ga\.draw_effects is False"):
        random_search(TwinEvaluator(space, SPEC, draw_effects=True), 4, params=SMALL)


def test_draw_effects_default_is_on_for_nsga2_only(space: GenomeSpace) -> None:
    """By default NSGA-II (and random search compared with it) reads draw effects, the GA not."""
    assert SMALL.draw_effects is None
    assert SMALL.draw_effects_for("nsga2") and not SMALL.draw_effects_for("ga")
    off = dataclasses.replace(SMALL, draw_effects=False)
    assert not off.draw_effects_for("nsga2") and not off.draw_effects_for("ga")
    with pytest.raises(ArchitectureError, match=r"ga\.draw_effects is True for nsga2"):
        run_search(TwinEvaluator(space, SPEC), SMALL, "nsga2", seed=0)
    with pytest.raises(ArchitectureError, match=r"ga\.draw_effects is True for nsga2"):
        random_search(TwinEvaluator(space, SPEC), 4, params=SMALL, mode="nsga2")
    with pytest.raises(ArchitectureError, match="mode"):
        SMALL.draw_effects_for("random")
    plain = run_search(TwinEvaluator(space, SPEC), off, "nsga2", seed=1)
    assert plain.hypervolume > 0


def test_capacity_shift_moves_every_capacity_level_by_one_common_step(space: GenomeSpace) -> None:
    """With the shift certain and no per-gene mutation, only the capacity genes move, together.

    Each offspring's five capacity levels move by the same step of +-1 or +-2 (clipped at the
    ends of their range); with the shift off, the mutation draws exactly what it drew before.
    """
    from sim.architecture import SIZED_SERVICES, TARGET_UTIL_LEVELS

    problem = _problem(space)
    capacity = [space.index(f"{s}.capacity") for s in SIZED_SERVICES]
    mid = len(TARGET_UTIL_LEVELS) // 2
    X = np.tile(space.default_genome(), (40, 1))
    X[:, capacity] = mid
    shifted = StructuralMutation(0.0, shift=1.0)._do(problem, X.copy(),
                                                     random_state=np.random.default_rng(3))
    others = [j for j in range(space.n_genes) if j not in capacity]
    assert np.array_equal(shifted[:, others], X[:, others])
    steps = shifted[:, capacity] - mid
    assert (steps == steps[:, :1]).all()
    assert set(np.unique(steps[:, 0])) <= {-2, -1, 1, 2} and len(np.unique(steps[:, 0])) > 1
    a = StructuralMutation(0.3)._do(problem, X.copy(), random_state=np.random.default_rng(4))
    b = StructuralMutation(0.3, shift=0.0)._do(problem, X.copy(),
                                               random_state=np.random.default_rng(4))
    assert np.array_equal(a, b)


def test_capacity_shift_default_is_per_search() -> None:
    """``capacity_shift=None`` takes each search's own default; a number sets both."""
    from agents.evolution import NSGA2_CAPACITY_SHIFT

    assert SMALL.capacity_shift_for("ga") == 0.0
    assert SMALL.capacity_shift_for("nsga2") == NSGA2_CAPACITY_SHIFT
    both = dataclasses.replace(SMALL, capacity_shift=0.3)
    assert both.capacity_shift_for("ga") == both.capacity_shift_for("nsga2") == 0.3
    with pytest.raises(ArchitectureError, match="mode"):
        SMALL.capacity_shift_for("random")


def test_a_mutation_pickled_before_the_capacity_shift_still_runs(space: GenomeSpace) -> None:
    """An operator restored from an older checkpoint (no ``shift`` attribute) mutates as before."""
    old = StructuralMutation(0.3)
    del old.__dict__["shift"]
    X = np.tile(space.default_genome(), (6, 1))
    a = old._do(_problem(space), X.copy(), random_state=np.random.default_rng(5))
    b = StructuralMutation(0.3)._do(_problem(space), X.copy(),
                                    random_state=np.random.default_rng(5))
    assert np.array_equal(a, b)
