"""Online rule-based tuner: bounded adjustments, a cooldown per parameter, hard limits.

Each :class:`TuningRule` watches one metric and moves one parameter by a fixed step when the
metric leaves its band (``direction`` +1: raise the parameter when the metric is high, as
replicas for utilisation; -1: lower it). A parameter never leaves ``[min_value, max_value]``
and changes at most once per ``cooldown_s`` of plant time, so the tuner cannot oscillate
faster than its plant settles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_COOLDOWN_S = 300.0
"""Five simulated minutes."""


class TunerError(ValueError):
    """A rule set or a reading that cannot be used."""


@dataclass(frozen=True, slots=True)
class TuningRule:
    """Move ``param`` by ``step`` when ``metric`` leaves ``[low, high]``."""

    param: str
    metric: str
    low: float
    high: float
    step: float
    min_value: float
    max_value: float
    direction: int = 1

    def __post_init__(self) -> None:
        for name in ("low", "high", "step", "min_value", "max_value"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise TunerError(f"rule {self.param!r}: {name} must be a finite number")
        if self.low >= self.high:
            raise TunerError(
                f"rule {self.param!r}: band inverted or empty (low {self.low} >= high {self.high})"
            )
        if self.min_value > self.max_value:
            raise TunerError(
                f"rule {self.param!r}: limits inverted (min {self.min_value} > max "
                f"{self.max_value})"
            )
        if self.step <= 0:
            raise TunerError(f"rule {self.param!r}: step must be positive, got {self.step}")
        if self.direction not in (1, -1):
            raise TunerError(f"rule {self.param!r}: direction must be +1 or -1")


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One change the tuner made."""

    t_s: float
    param: str
    old: float
    new: float
    metric: str
    reading: float


class OnlineTuner:
    """Apply :class:`TuningRule` s to readings; remembers values and last change times.

    Args:
        rules: at most one rule per parameter.
        initial: starting value of every ruled parameter (clipped into its limits).
        cooldown_s: minimum plant time between two changes of one parameter.

    Raises:
        TunerError: no rules, two rules for one parameter, a missing initial value, or a
            negative cooldown.
    """

    def __init__(self, rules: Sequence[TuningRule], initial: Mapping[str, float],
                 cooldown_s: float = DEFAULT_COOLDOWN_S) -> None:
        if not rules:
            raise TunerError("the tuner needs at least one rule")
        params = [r.param for r in rules]
        if len(set(params)) != len(params):
            raise TunerError(f"two rules for one parameter in {params}")
        missing = [p for p in params if p not in initial]
        if missing:
            raise TunerError(f"no initial value for {missing}")
        if not isinstance(cooldown_s, int | float) or not cooldown_s >= 0:
            raise TunerError(f"cooldown_s must be a non-negative number, got {cooldown_s!r}")
        self.rules = tuple(rules)
        self.cooldown_s = float(cooldown_s)
        self.values = {r.param: min(max(float(initial[r.param]), r.min_value), r.max_value)
                       for r in rules}
        self._last_change_s: dict[str, float] = {}
        self.history: list[Adjustment] = []

    def sync(self, param: str, value: float) -> None:
        """Set ``param`` to the value the plant actually has, clipped into its hard limits."""
        rule = next((r for r in self.rules if r.param == param), None)
        if rule is None:
            raise TunerError(f"no rule for {param!r}")
        self.values[param] = min(max(float(value), rule.min_value), rule.max_value)

    def step(self, now_s: float, metrics: Mapping[str, float]) -> list[Adjustment]:
        """Adjust every parameter whose metric is out of band and whose cooldown has passed.

        A metric missing from ``metrics`` or not finite leaves its parameter alone.
        """
        made: list[Adjustment] = []
        for rule in self.rules:
            reading = metrics.get(rule.metric)
            if reading is None or not math.isfinite(reading):
                continue
            last = self._last_change_s.get(rule.param)
            if last is not None and now_s - last < self.cooldown_s:
                continue
            if reading > rule.high:
                sign = rule.direction
            elif reading < rule.low:
                sign = -rule.direction
            else:
                continue
            old = self.values[rule.param]
            new = min(max(old + sign * rule.step, rule.min_value), rule.max_value)
            if new == old:
                continue
            self.values[rule.param] = new
            self._last_change_s[rule.param] = now_s
            adj = Adjustment(now_s, rule.param, old, new, rule.metric, float(reading))
            self.history.append(adj)
            made.append(adj)
        return made
