"""The evolution service of the HTTP control plane in twin mode.

``POST /autonomous/evolve`` starts one :class:`control.optimise.SelfOptimiser` cycle in a
background thread and answers at once with its handle; ``GET /autonomous/evolution/status``
reports the running or last cycle. One cycle runs at a time.

Parameters (all optional; any other key, or a bad value, is refused with a message naming
the key):

* ``kind``: ``evolve`` (the GA over the architecture, default) or ``optimise`` (Bayesian
  optimisation over the configuration);
* ``seed``: integer >= 0 (default 0); the search is deterministic given the seed;
* evolve: ``population`` (GA population, default 8) and ``generations`` (default 3);
* optimise: ``iterations`` (BO evaluations, default 10).

The search scores candidates on fresh deployments, so it needs no lock. Forking the running
twin, applying the accepted changes and logging the decision happen under the runtime's
lock, and every change passes the runtime's safety gate like a manual ``/autonomous/heal``
(a dry-run server or an emergency stop leaves the twin as it was; the refusal is reported).
There is no twin of a live fleet to search, so live mode has no evolution service.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from agents.bayesopt import BOParams
from agents.evolution import GAParams
from control.optimise import CycleParams, CycleReport, SelfOptimiser
from live.api import EvolutionBusy
from live.runtime import Runtime
from sim.actions import Action
from sim.architecture import EvalSpec
from sim.twin import Twin

KINDS = ("evolve", "optimise")


@dataclass(frozen=True, slots=True)
class Limits:
    """Defaults and maxima of the request parameters."""

    population: int = 8
    generations: int = 3
    iterations: int = 10
    max_population: int = 32
    max_generations: int = 10
    max_iterations: int = 50

    def __post_init__(self) -> None:
        for name in ("population", "generations", "iterations"):
            default, top = getattr(self, name), getattr(self, f"max_{name}")
            low = 2 if name == "population" else 1
            if not low <= default <= top:
                raise ValueError(f"limits: {name} default {default} must lie in [{low}, {top}]")


def _json_number(value: float) -> float | None:
    """``value``, or None where it is not finite (JSON has no infinities)."""
    return float(value) if math.isfinite(value) else None


def _int_param(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{key} must lie in [{low}, {high}], got {value}")
    return value


class TwinEvolution:
    """Runs evolve / optimise cycles against the twin a :class:`Runtime` drives.

    Args:
        runtime: the runtime; its plant must be a :class:`sim.twin.Twin`.
        spec: how the search scores an architecture (default: ``EvalSpec`` at the twin's
            size, a quarter-hour window, one replicate).
        params: fork-validation settings of the cycles.
        limits: defaults and maxima of the request parameters.
        bo: settings of the Bayesian optimiser of ``optimise`` cycles.
    """

    def __init__(
        self,
        runtime: Runtime,
        spec: EvalSpec | None = None,
        params: CycleParams | None = None,
        limits: Limits | None = None,
        bo: BOParams | None = None,
    ) -> None:
        twin = runtime.plant
        if not isinstance(twin, Twin):
            raise ValueError(f"the evolution service needs a twin plant, got {type(twin).__name__}")
        self.runtime = runtime
        self.limits = limits or Limits()
        self.bo = bo or BOParams(n_initial=4, num_restarts=2, raw_samples=64, acq_maxiter=50)
        with runtime.lock:
            self.optimiser = SelfOptimiser(
                twin,
                spec or EvalSpec(hosts=twin.topo.n_hosts, hours=0.25, replicates=1),
                params=params,
            )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cycle = 0
        self._state = "idle"
        self._kind = ""
        self._params: dict[str, Any] = {}
        self._started: float | None = None
        self._finished: float | None = None
        self._report: CycleReport | None = None
        self._error = ""

    def parse(self, request: dict[str, Any]) -> dict[str, Any]:
        """Validated parameters of a request, defaults filled in.

        Raises:
            ValueError: an unknown key or a bad value; the message names it.
        """
        if not isinstance(request, dict):
            raise ValueError(f"parameters must be an object, got {type(request).__name__}")
        kind = request.get("kind", "evolve")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        lim = self.limits
        allowed = {"kind", "seed"} | (
            {"population", "generations"} if kind == "evolve" else {"iterations"}
        )
        unknown = sorted(set(request) - allowed)
        if unknown:
            raise ValueError(
                f"unknown parameter {unknown[0]!r} for kind {kind!r}; known: {sorted(allowed)}"
            )
        out: dict[str, Any] = {"kind": kind, "seed": _int_param(request, "seed", 0, 0, 2**31 - 1)}
        if kind == "evolve":
            out["population"] = _int_param(
                request, "population", lim.population, 2, lim.max_population
            )
            out["generations"] = _int_param(
                request, "generations", lim.generations, 1, lim.max_generations
            )
        else:
            out["iterations"] = _int_param(
                request, "iterations", lim.iterations, 1, lim.max_iterations
            )
        return out

    def evolve(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start one cycle in the background; returns its handle at once.

        Raises:
            ValueError: bad parameters.
            EvolutionBusy: a cycle is running.
        """
        params = self.parse(request)
        with self._lock:
            if self._state == "running":
                raise EvolutionBusy(
                    f"evolution cycle {self._cycle} ({self._kind}) is still "
                    "running; poll /autonomous/evolution/status"
                )
            self._cycle += 1
            self._state, self._kind, self._params = "running", params["kind"], params
            self._started, self._finished = time.time(), None
            self._report, self._error = None, ""
            cycle = self._cycle
            self._thread = threading.Thread(
                target=self._run, args=(params,), daemon=True, name=f"evolution-{cycle}"
            )
            self._thread.start()
        return {"cycle": cycle, "kind": params["kind"], "state": "running", "params": params}

    def _apply(self, action: Action) -> tuple[bool, str]:
        out = self.runtime.heal(action, None, origin="evolve")
        return bool(out["executed"]), f"{out['verdict']}: {out['reason']}"

    def _run(self, params: dict[str, Any]) -> None:
        opt, lock = self.optimiser, self.runtime.lock
        try:
            if params["kind"] == "evolve":
                pop = params["population"]
                ga = GAParams(
                    pop_size=pop,
                    max_generations=params["generations"],
                    tournament_size=min(3, pop),
                    final_draws=1,
                )
                report = opt.evolve(ga, seed=params["seed"], lock=lock, apply=self._apply)
            else:
                report = opt.optimise(
                    iterations=params["iterations"],
                    seed=params["seed"],
                    bo=self.bo,
                    lock=lock,
                    apply=self._apply,
                )
        except Exception as exc:  # a failed cycle is reported, never raised into the API
            with self._lock:
                self._state, self._finished = "failed", time.time()
                self._error = f"{type(exc).__name__}: {exc}"
            return
        with self._lock:
            self._state, self._finished, self._report = "done", time.time(), report

    def status(self) -> dict[str, Any]:
        """State (idle, running, done, failed), the cycle's parameters and times, its report.

        Times are Unix epoch seconds; a non-finite fitness or improvement is reported as
        null (an incumbent of fitness 0 gives an infinite improvement).
        """
        with self._lock:
            out: dict[str, Any] = {
                "state": self._state,
                "cycle": self._cycle or None,
                "kind": self._kind or None,
                "params": dict(self._params),
                "started_at": self._started,
                "finished_at": self._finished,
                "error": self._error or None,
                "report": None,
            }
            if self._report is not None:
                rep = asdict(self._report)
                out["report"] = {
                    k: rep[k]
                    for k in (
                        "applied",
                        "incumbent_fitness",
                        "candidate_fitness",
                        "improvement",
                        "actions",
                        "refused",
                        "needs_redeploy",
                        "search_evaluations",
                        "decision_seq",
                        "proposal",
                    )
                }
                for k in ("incumbent_fitness", "candidate_fitness", "improvement"):
                    out["report"][k] = _json_number(rep[k])
            return out

    def wait(self, timeout_s: float) -> bool:
        """Block until the current cycle ends; whether it did within ``timeout_s``."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()
