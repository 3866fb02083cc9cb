"""The Bayesian optimiser: search spaces, determinism, convergence, batches, Pareto sets."""

from __future__ import annotations

import numpy as np
import pytest

from agents.bayesopt import BayesOpt, BOParams, Param, SearchSpace, SearchSpaceError, minimize

FAST = BOParams(n_initial=4, num_restarts=2, raw_samples=32, acq_maxiter=30)


def _sphere(x: np.ndarray) -> np.ndarray:
    return ((x - 0.3) ** 2).sum(axis=1, keepdims=True)


SPACE = SearchSpace([Param("a", -1.0, 1.0), Param("b", -1.0, 1.0)])


def test_same_seed_same_suggestions() -> None:
    """Two runs with one seed suggest the same points; another seed differs."""
    a = minimize(_sphere, SPACE, 6, seed=3, params=FAST)
    b = minimize(_sphere, SPACE, 6, seed=3, params=FAST)
    c = minimize(_sphere, SPACE, 6, seed=4, params=FAST)
    assert np.array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)


def test_finds_the_minimum_of_a_smooth_function() -> None:
    """On a 2-D quadratic, 20 evaluations come within 1e-3 of the minimum."""
    opt = minimize(_sphere, SPACE, 16, seed=0,
                   params=BOParams(n_initial=5, num_restarts=2, raw_samples=64, noise_free=True,
                                   acq_maxiter=50))
    assert opt.best()[1] < 1e-3


def test_batch_suggestions_are_distinct() -> None:
    """A batch of q points (qLogEI) has q distinct rows inside the bounds."""
    opt = BayesOpt(SPACE, seed=0, params=FAST)
    x0 = opt.ask(4)
    opt.tell(x0, _sphere(x0))
    batch = opt.ask(3)
    assert batch.shape == (3, 2)
    assert len({tuple(np.round(r, 9)) for r in batch}) == 3
    assert (batch >= -1).all() and (batch <= 1).all()


def test_integer_and_log_parameters_are_respected() -> None:
    """Integer parameters come back as integers, log parameters within their bounds."""
    space = SearchSpace([Param("n", 1, 9, "int"), Param("s", 0.01, 10.0, "log")])
    opt = minimize(lambda x: np.abs(x[:, :1] - 4) + np.log(x[:, 1:]) ** 2, space, 6,
                   seed=0, params=FAST)
    assert np.all(opt.X[:, 0] == np.round(opt.X[:, 0]))
    assert (opt.X[:, 1] >= 0.01).all() and (opt.X[:, 1] <= 10.0).all()


def test_multi_objective_returns_a_pareto_set() -> None:
    """With two conflicting objectives, the set is non-dominated and has several points."""
    def two(x: np.ndarray) -> np.ndarray:
        return np.stack([(x[:, 0] - 1) ** 2 + x[:, 1] ** 2, (x[:, 0] + 1) ** 2 + x[:, 1] ** 2],
                        axis=1)

    opt = minimize(two, SPACE, 6, n_obj=2, seed=0, params=FAST)
    px, py = opt.pareto()
    assert len(px) >= 2
    for i in range(len(py)):
        dominated = np.all(py <= py[i], axis=1) & np.any(py < py[i], axis=1)
        assert not dominated.any()


@pytest.mark.parametrize(
    ("params", "words"),
    [([], "empty"), ([Param("a", 0, 1), Param("a", 0, 2)], "duplicate")],
)
def test_bad_search_space(params: list[Param], words: str) -> None:
    """An empty space or duplicate names are refused."""
    with pytest.raises(SearchSpaceError, match=words):
        SearchSpace(params)


@pytest.mark.parametrize(
    ("args", "words"),
    [(("x", 2.0, 1.0), "inverted"), (("x", 1.0, 1.0), "empty"),
     (("x", 0.0, 1.0, "log"), "log"), (("x", 0.5, 2.0, "int"), "integer"),
     (("x", 0.0, float("inf")), "finite")],
)
def test_bad_parameter(args: tuple[object, ...], words: str) -> None:
    """Inverted, empty, non-positive log and non-integer int bounds are refused."""
    with pytest.raises(SearchSpaceError, match=words):
        Param(*args)  # type: ignore[arg-type]


def test_bad_observations() -> None:
    """Observations outside the space, of the wrong width or non-finite are refused."""
    opt = BayesOpt(SPACE, seed=0, params=FAST)
    with pytest.raises(SearchSpaceError, match="outside"):
        opt.tell(np.array([[2.0, 0.0]]), np.array([[1.0]]))
    with pytest.raises(SearchSpaceError, match="values"):
        opt.tell(np.array([[0.0, 0.0, 0.0]]), np.array([[1.0]]))
    with pytest.raises(SearchSpaceError, match="finite"):
        opt.tell(np.array([[0.0, 0.0]]), np.array([[np.nan]]))
    assert opt.n_observed == 0
