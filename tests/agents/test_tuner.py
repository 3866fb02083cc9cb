"""The online rule-based tuner: bands, steps, cooldown and hard limits."""

from __future__ import annotations

import pytest

from agents.tuner import OnlineTuner, TunerError, TuningRule

RULE = TuningRule("replicas", "util", low=0.3, high=0.7, step=2, min_value=2, max_value=8)


def test_adjusts_out_of_band_then_waits_for_cooldown() -> None:
    """High utilisation adds a step; a second reading inside the cooldown changes nothing."""
    tuner = OnlineTuner([RULE], {"replicas": 4}, cooldown_s=300)
    first = tuner.step(0.0, {"util": 0.9})
    assert [(a.old, a.new) for a in first] == [(4, 6)]
    assert tuner.step(299.0, {"util": 0.9}) == []
    assert [(a.old, a.new) for a in tuner.step(300.0, {"util": 0.9})] == [(6, 8)]


def test_hard_limits_hold() -> None:
    """Values never leave [min_value, max_value], however long the pressure lasts."""
    tuner = OnlineTuner([RULE], {"replicas": 4}, cooldown_s=0)
    for t in range(20):
        tuner.step(float(t), {"util": 0.99})
    assert tuner.values["replicas"] == 8
    for t in range(20, 40):
        tuner.step(float(t), {"util": 0.01})
    assert tuner.values["replicas"] == 2
    assert all(2 <= a.new <= 8 for a in tuner.history)


def test_in_band_or_missing_metric_changes_nothing() -> None:
    """A reading inside the band, a missing metric or NaN leaves the parameter alone."""
    tuner = OnlineTuner([RULE], {"replicas": 4})
    assert tuner.step(0.0, {"util": 0.5}) == []
    assert tuner.step(1000.0, {}) == []
    assert tuner.step(2000.0, {"util": float("nan")}) == []
    assert tuner.values["replicas"] == 4


def test_direction_minus_one_lowers_on_high() -> None:
    """Direction -1 lowers the parameter when the metric is high."""
    rule = TuningRule("timeout", "errors", 0.01, 0.05, 0.5, 0.5, 5.0, direction=-1)
    tuner = OnlineTuner([rule], {"timeout": 2.0})
    assert tuner.step(0.0, {"errors": 0.2})[0].new == 1.5


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"low": 0.8}, "band"), ({"min_value": 9}, "limits"), ({"step": 0}, "step"),
     ({"direction": 2}, "direction")],
)
def test_bad_rule(kwargs: dict[str, object], words: str) -> None:
    """Inverted bands and limits, a zero step or a bad direction are refused."""
    base = dict(param="p", metric="m", low=0.3, high=0.7, step=1, min_value=1, max_value=5)
    with pytest.raises(TunerError, match=words):
        TuningRule(**{**base, **kwargs})  # type: ignore[arg-type]


def test_bad_tuner() -> None:
    """No rules, duplicate parameters, missing initial values, negative cooldown: errors."""
    with pytest.raises(TunerError, match="at least one"):
        OnlineTuner([], {})
    with pytest.raises(TunerError, match="two rules"):
        OnlineTuner([RULE, RULE], {"replicas": 4})
    with pytest.raises(TunerError, match="initial"):
        OnlineTuner([RULE], {})
    with pytest.raises(TunerError, match="cooldown"):
        OnlineTuner([RULE], {"replicas": 4}, cooldown_s=-1)
