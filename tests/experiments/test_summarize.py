"""Aggregation over seeds and the JSON it prints."""

from __future__ import annotations

import json
import math

from experiments.summarize import RunKpis, json_safe, report, summarize


def _run(scenario: str, seed: int, availability: float, mttd_s: float) -> RunKpis:
    params = {"scenario.name": scenario, "agent.name": "rules", "seed": str(seed)}
    return RunKpis(params, {"availability": availability, "mttd_s": mttd_s})


def test_groups_by_scenario_and_agent_with_mean_and_ci() -> None:
    """Runs of one scenario and agent form one group: its size, mean and a CI around it."""
    runs = [_run("a", 0, 0.99, 10.0), _run("b", 0, 0.5, math.nan), _run("a", 1, 0.97, 20.0),
            _run("a", 2, 0.98, 30.0)]
    groups = summarize(runs, ("scenario.name", "agent.name"))
    assert [(g["scenario.name"], g["runs"]) for g in groups] == [("a", 3.0), ("b", 1.0)]
    a = groups[0]
    assert math.isclose(a["availability"], 0.98)
    low, high = a["availability_ci95"]
    assert low < 0.98 < high
    assert math.isclose(a["mttd_s"], 20.0)
    assert math.isnan(groups[1]["mttd_s"])


def test_report_ends_with_json_and_nan_as_null() -> None:
    """The last line is valid JSON (NaN written as null) naming the grouping keys."""
    text = report("test", [_run("b", 0, 0.5, math.nan)], ("scenario.name",))
    line = json.loads(text.strip().splitlines()[-1])
    assert line["by"] == ["scenario.name"]
    assert line["groups"][0]["mttd_s"] is None
    assert line["groups"][0]["mttd_s_ci95"] == [None, None]
    assert json_safe({"x": (1.0, math.inf)}) == {"x": [1.0, None]}
