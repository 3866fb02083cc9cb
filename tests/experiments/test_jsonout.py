"""Strict JSON from the entry points: undefined figures come out as null, never NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.jsonout import dumps, json_safe


def test_nan_and_infinities_become_null_and_containers_lists() -> None:
    value = {"precision": math.nan, "gain": (1.0, -math.inf), "a": np.array([0.5, np.nan]), 2: 3}
    text = dumps(value)
    assert json.loads(text) == {"precision": None, "gain": [1.0, None], "a": [0.5, None], "2": 3}
    assert "NaN" not in text and "Infinity" not in text
    assert json_safe([math.inf]) == [None]


def test_what_json_safe_cannot_map_is_refused_rather_than_written() -> None:
    with pytest.raises(TypeError):
        dumps({"x": object()})
