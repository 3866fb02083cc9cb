"""Strict JSON for what the entry points print and write: no NaN or infinity.

Python's ``json`` writes a float NaN as the bare token ``NaN``, which is not JSON: a reader
of a command's last line (``jq``, JavaScript, most JSON libraries) would refuse the whole
line. Undefined figures (a precision with no alarms, a mean over no faults) become ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None, tuples and arrays as lists."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(value)``; raises rather than write a NaN."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
