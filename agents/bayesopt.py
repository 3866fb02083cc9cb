"""Bayesian optimisation on BoTorch: a GP surrogate, Expected Improvement, ask / tell.

Model -> acquisition -> optimise, as BoTorch lays it out. The surrogate is BoTorch's
``SingleTaskGP`` (Matern-5/2 kernel with automatic relevance determination and its
dimension-scaled priors, outputs standardised, inputs in the unit cube), refitted by
marginal likelihood after every ``tell``. The acquisition is Expected Improvement in its
log form (``LogExpectedImprovement``; ``qLogExpectedImprovement`` for a batch of ``q``
suggestions evaluated in parallel), whose values do not underflow once improvements become
rare (Ament et al., NeurIPS 2023). With several objectives the acquisition is
``qLogNoisyExpectedHypervolumeImprovement`` and :meth:`BayesOpt.pareto` returns the
non-dominated set. Integer parameters are rounded before evaluation, and the surrogate sees
the rounded values.

The optimiser minimises. Everything random (the Sobol design, the acquisition optimiser's
restarts) is seeded from the optimiser's seed and the iteration, so the same seed and the
same observations give the same suggestions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.analytic import LogExpectedImprovement, PosteriorMean
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.acquisition.multi_objective.logei import (
    qLogNoisyExpectedHypervolumeImprovement,
)
from botorch.exceptions.warnings import BotorchWarning, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf
from botorch.utils.multi_objective.pareto import is_non_dominated
from gpytorch.mlls import ExactMarginalLogLikelihood

DTYPE = torch.float64
LOCAL_POINTS_PER_DIM = 4
NOISE_FREE_VAR = 2e-6
"""Observation variance, relative to the outcomes' variance, for a noise-free objective."""


class SearchSpaceError(ValueError):
    """An empty or inconsistent search space, or observations that do not fit it."""


@dataclass(frozen=True, slots=True)
class Param:
    """One dimension of a search space.

    ``kind`` is ``float``, ``int`` or ``log`` (a positive float searched on a log scale).
    """

    name: str
    low: float
    high: float
    kind: str = "float"

    def __post_init__(self) -> None:
        if not self.name:
            raise SearchSpaceError("parameter name must be non-empty")
        if self.kind not in ("float", "int", "log"):
            raise SearchSpaceError(
                f"parameter {self.name!r}: kind must be float, int or log, got {self.kind!r}"
            )
        for bound in (self.low, self.high):
            if not isinstance(bound, int | float) or not math.isfinite(bound):
                raise SearchSpaceError(f"parameter {self.name!r}: bounds must be finite numbers")
        if self.low > self.high:
            raise SearchSpaceError(
                f"parameter {self.name!r}: bounds inverted (low {self.low} > high {self.high})"
            )
        if self.low == self.high:
            raise SearchSpaceError(
                f"parameter {self.name!r}: empty range [{self.low}, {self.high}]"
            )
        if self.kind == "log" and self.low <= 0:
            raise SearchSpaceError(f"parameter {self.name!r}: a log scale needs low > 0")
        if self.kind == "int" and (self.low != round(self.low) or self.high != round(self.high)):
            raise SearchSpaceError(f"parameter {self.name!r}: integer bounds must be integers")


class SearchSpace:
    """An ordered box of parameters, mapped to and from the unit cube.

    Raises:
        SearchSpaceError: no parameters, or duplicate names.
    """

    def __init__(self, params: Sequence[Param]) -> None:
        self.params = tuple(params)
        if not self.params:
            raise SearchSpaceError("the search space is empty: give at least one parameter")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise SearchSpaceError(f"duplicate parameter names in {names}")
        self.names = tuple(names)

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return len(self.params)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Unit-cube points to parameter values (integers rounded)."""
        u = np.clip(np.atleast_2d(np.asarray(u, dtype=float)), 0.0, 1.0)
        out = np.empty_like(u)
        for j, p in enumerate(self.params):
            if p.kind == "log":
                lo, hi = math.log(p.low), math.log(p.high)
                out[:, j] = np.exp(lo + u[:, j] * (hi - lo))
            else:
                out[:, j] = p.low + u[:, j] * (p.high - p.low)
                if p.kind == "int":
                    out[:, j] = np.round(out[:, j])
        return out

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Parameter values to the unit cube.

        Raises:
            SearchSpaceError: wrong width or values outside the bounds.
        """
        x = np.atleast_2d(np.asarray(x, dtype=float))
        if x.shape[1] != self.dim:
            raise SearchSpaceError(f"points have {x.shape[1]} values, the space {self.dim}")
        out = np.empty_like(x)
        for j, p in enumerate(self.params):
            col = x[:, j]
            if not np.all(np.isfinite(col)) or np.any(col < p.low - 1e-9) or np.any(
                    col > p.high + 1e-9):
                raise SearchSpaceError(f"values of {p.name!r} outside [{p.low}, {p.high}]")
            if p.kind == "log":
                lo, hi = math.log(p.low), math.log(p.high)
                out[:, j] = (np.log(col) - lo) / (hi - lo)
            else:
                out[:, j] = (col - p.low) / (p.high - p.low)
        return np.clip(out, 0.0, 1.0)

    def as_dict(self, x: np.ndarray) -> dict[str, float]:
        """One point as ``{name: value}`` (integers as int)."""
        return {p.name: (int(v) if p.kind == "int" else float(v))
                for p, v in zip(self.params, np.asarray(x, dtype=float), strict=True)}


@dataclass(frozen=True, slots=True)
class BOParams:
    """Settings of the optimiser.

    ``n_initial`` Sobol points come before the model is used; ``num_restarts`` and
    ``raw_samples`` size the acquisition optimiser (multi-start L-BFGS-B from the best of
    ``raw_samples`` random points, at most ``acq_maxiter`` iterations each). Every
    ``exploit_every``-th model-based suggestion (0: never) is instead the posterior-mean
    minimiser of a GP fitted to the incumbent's nearest observations, which refines the
    incumbent's basin once EI has found it; a point already observed falls back to EI.
    ``noise_free`` fixes the observation noise near zero (a deterministic objective) instead
    of inferring it, so the surrogate interpolates the data.
    """

    n_initial: int = 10
    num_restarts: int = 8
    raw_samples: int = 256
    max_iter: int = 100
    exploit_every: int = 3
    noise_free: bool = False
    acq_maxiter: int = 200

    def __post_init__(self) -> None:
        if not isinstance(self.exploit_every, int) or self.exploit_every < 0:
            raise SearchSpaceError(
                f"bo.exploit_every must be a non-negative integer, got {self.exploit_every!r}"
            )
        for name in ("n_initial", "num_restarts", "raw_samples", "max_iter", "acq_maxiter"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SearchSpaceError(f"bo.{name} must be a positive integer, got {value!r}")


class BayesOpt:
    """Ask / tell Bayesian optimiser over a :class:`SearchSpace`; minimises ``n_obj`` objectives.

    Args:
        space: the search space.
        n_obj: 1 for Expected Improvement, >= 2 for the hypervolume mode (Pareto set).
        seed: seed of every random draw.
        params: optimiser settings.
        ref_point: with ``n_obj >= 2``, the worst objective values worth anything (the
            hypervolume's reference, in the minimised objectives); None takes the worst
            observed value of each objective plus 10% of its range.
    """

    def __init__(self, space: SearchSpace, n_obj: int = 1, seed: int = 0,
                 params: BOParams | None = None,
                 ref_point: Sequence[float] | None = None) -> None:
        if not isinstance(n_obj, int) or n_obj < 1:
            raise SearchSpaceError(f"n_obj must be a positive integer, got {n_obj!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SearchSpaceError(f"seed must be a non-negative integer, got {seed!r}")
        if ref_point is not None and len(ref_point) != n_obj:
            raise SearchSpaceError(f"ref_point needs {n_obj} values, got {len(ref_point)}")
        self.space = space
        self.n_obj = n_obj
        self.seed = seed
        self.params = params or BOParams()
        self.ref_point = None if ref_point is None else tuple(float(v) for v in ref_point)
        self.X = np.zeros((0, space.dim))
        self.Y = np.zeros((0, n_obj))
        self._asked = 0
        self._sobol = torch.quasirandom.SobolEngine(space.dim, scramble=True, seed=seed)

    @property
    def n_observed(self) -> int:
        """Observations told so far."""
        return int(self.X.shape[0])

    def tell(self, x: np.ndarray, y: np.ndarray) -> None:
        """Record observations: parameter values ``x`` (n, dim) and objectives ``y`` (n, n_obj).

        Raises:
            SearchSpaceError: shapes that do not match, values outside the space, or
                non-finite objectives.
        """
        x = np.atleast_2d(np.asarray(x, dtype=float))
        y = np.asarray(y, dtype=float).reshape(x.shape[0], -1)
        if y.shape[1] != self.n_obj:
            raise SearchSpaceError(f"expected {self.n_obj} objective(s), got {y.shape[1]}")
        if not np.all(np.isfinite(y)):
            raise SearchSpaceError("objective values must be finite")
        self.space.to_unit(x)
        self.X = np.vstack([self.X, x])
        self.Y = np.vstack([self.Y, y])

    def ask(self, q: int = 1) -> np.ndarray:
        """``q`` points to evaluate next (parameter values, shape (q, dim))."""
        if not isinstance(q, int) or q < 1:
            raise SearchSpaceError(f"q must be a positive integer, got {q!r}")
        self._asked += 1
        if self.n_observed < self.params.n_initial:
            u = self._sobol.draw(q, dtype=DTYPE).numpy()
            return self.space.from_unit(u)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 100_003 + self._asked)
            u = self._suggest(q)
        return self.space.from_unit(u)

    def _exploit(self) -> np.ndarray:
        """Posterior-mean minimiser of a GP fitted to the incumbent's neighbourhood.

        The ``LOCAL_POINTS_PER_DIM * dim`` observations nearest the incumbent get their own
        GP, standardised on their own spread, so its mean resolves the basin far more finely
        than the global model; it is minimised over their bounding box.
        """
        unit = self.space.to_unit(self.X)
        best = unit[int(np.argmin(self.Y[:, 0]))]
        n_local = min(len(unit), max(LOCAL_POINTS_PER_DIM * self.space.dim, 6))
        near = np.argsort(np.abs(unit - best).max(axis=1), kind="stable")[:n_local]
        model = self._model(near)
        lo = unit[near].min(axis=0)
        hi = unit[near].max(axis=0)
        pad = np.maximum(1e-6, 0.05 * (hi - lo))
        bounds = torch.as_tensor(np.stack([np.clip(lo - pad, 0, 1), np.clip(hi + pad, 0, 1)]),
                                 dtype=DTYPE)
        return self._optimize(PosteriorMean(model), 1, bounds)

    def _model(self, rows: np.ndarray | None = None) -> SingleTaskGP:
        X, Y = (self.X, self.Y) if rows is None else (self.X[rows], self.Y[rows])
        train_x = torch.as_tensor(self.space.to_unit(X), dtype=DTYPE)
        train_y = -torch.as_tensor(Y, dtype=DTYPE)
        yvar = None
        if self.params.noise_free:
            scale = train_y.var(dim=0, keepdim=True).clamp_min(1e-12) if len(train_y) > 1 else (
                torch.ones(1, train_y.shape[1], dtype=DTYPE))
            yvar = (NOISE_FREE_VAR * scale).expand_as(train_y)
        model = SingleTaskGP(train_x, train_y, train_Yvar=yvar)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=OptimizationWarning)
            warnings.simplefilter("ignore", category=BotorchWarning)
            fit_gpytorch_mll(mll)
        return model

    def _suggest(self, q: int) -> np.ndarray:
        model = self._model()
        train_y = -torch.as_tensor(self.Y, dtype=DTYPE)
        k = self.params.exploit_every
        if self.n_obj == 1 and q == 1 and k and self._asked % k == 0:
            cand = self._exploit()
            seen = self.space.to_unit(self.X)
            if np.min(np.abs(seen - self.space.to_unit(self.space.from_unit(cand))).max(
                    axis=1)) > 1e-9:
                return cand
        if self.n_obj == 1:
            best = train_y.max()
            acq: LogExpectedImprovement | qLogExpectedImprovement | (
                qLogNoisyExpectedHypervolumeImprovement)
            if q == 1:
                acq = LogExpectedImprovement(model, best_f=best)
            else:
                acq = qLogExpectedImprovement(model, best_f=best)
        else:
            acq = qLogNoisyExpectedHypervolumeImprovement(
                model, ref_point=self._ref_point_max(train_y).tolist(),
                X_baseline=torch.as_tensor(self.space.to_unit(self.X), dtype=DTYPE),
                prune_baseline=True,
            )
        return self._optimize(acq, q)

    def _optimize(self, acq: AcquisitionFunction, q: int,
                  bounds: torch.Tensor | None = None) -> np.ndarray:
        if bounds is None:
            bounds = torch.stack([torch.zeros(self.space.dim, dtype=DTYPE),
                                  torch.ones(self.space.dim, dtype=DTYPE)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=OptimizationWarning)
            warnings.simplefilter("ignore", category=BotorchWarning)
            warnings.simplefilter("ignore", category=RuntimeWarning)
            cand, _ = optimize_acqf(acq, bounds=bounds, q=q,
                                    num_restarts=self.params.num_restarts,
                                    raw_samples=self.params.raw_samples,
                                    options={"batch_limit": 8,
                                             "maxiter": self.params.acq_maxiter})
        return cand.detach().numpy()

    def _ref_point_max(self, train_y: torch.Tensor) -> torch.Tensor:
        if self.ref_point is not None:
            return -torch.as_tensor(self.ref_point, dtype=DTYPE)
        lo = train_y.min(dim=0).values
        hi = train_y.max(dim=0).values
        return lo - 0.1 * (hi - lo).clamp_min(1e-9)

    def best(self) -> tuple[np.ndarray, float]:
        """The best observed point and its value (single objective)."""
        if self.n_obj != 1:
            raise SearchSpaceError("best() is for one objective; use pareto()")
        if self.n_observed == 0:
            raise SearchSpaceError("nothing observed yet")
        i = int(np.argmin(self.Y[:, 0]))
        return self.X[i].copy(), float(self.Y[i, 0])

    def pareto(self) -> tuple[np.ndarray, np.ndarray]:
        """The non-dominated observed points and their objectives."""
        if self.n_observed == 0:
            return self.X.copy(), self.Y.copy()
        mask = is_non_dominated(-torch.as_tensor(self.Y, dtype=DTYPE)).numpy()
        return self.X[mask].copy(), self.Y[mask].copy()


def minimize(
    fn: Callable[[np.ndarray], np.ndarray],
    space: SearchSpace,
    n_iterations: int,
    *,
    batch_size: int = 1,
    n_obj: int = 1,
    seed: int = 0,
    params: BOParams | None = None,
    ref_point: Sequence[float] | None = None,
    on_iteration: Callable[[int, BayesOpt], None] | None = None,
) -> BayesOpt:
    """Run ``n_iterations`` ask / tell rounds of ``batch_size`` points each.

    ``fn`` maps a batch of points (q, dim) to objectives (q, n_obj); a batch can be evaluated
    in parallel inside ``fn``.
    """
    if not isinstance(n_iterations, int) or n_iterations < 1:
        raise SearchSpaceError(f"n_iterations must be a positive integer, got {n_iterations!r}")
    opt = BayesOpt(space, n_obj=n_obj, seed=seed, params=params, ref_point=ref_point)
    for it in range(n_iterations):
        x = opt.ask(batch_size)
        opt.tell(x, np.asarray(fn(x), dtype=float).reshape(x.shape[0], n_obj))
        if on_iteration is not None:
            on_iteration(it + 1, opt)
    return opt
