"""Pure, vectorised physics laws of the digital twin, in SI units.

Every law is a function of arrays (or scalars) broadcast together, with a keyword-only
``xp`` array namespace (``numpy`` by default; ``jax.numpy`` works too). No law draws random
numbers, reads a clock or does I/O; each law is implemented once, here.

Modules:
    power: server electrical power as a function of CPU utilisation.
    thermal: lumped RC die temperature, fan degradation, throttling and thermal shutdown.
    compute: CPU demand, proportional-share contention and host utilisation.
    memory: constant-rate memory leaks and working-set size.
    network: link utilisation, queueing latency and packet loss.
    storage: disk utilisation, queueing latency, wear and wear-out hazard.
    serving: Erlang B/C, M/M/c latency and quantiles, exact fluid queue integration.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, TypeAlias

import numpy as np

Array: TypeAlias = Any
"""A numpy or ``jax.numpy`` array, or a scalar; ``Any`` because the caller picks ``xp``."""


def clip(x: Array, low: Array, high: Array, *, xp: ModuleType = np) -> Array:
    """``min(max(x, low), high)``; two ufuncs, several times cheaper than ``numpy.clip``."""
    return xp.minimum(xp.maximum(x, low), high)
