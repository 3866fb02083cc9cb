"""Live chaos: faults made to happen to real processes, each logged at its true onset.

Kinds (the ``kind`` of the :class:`~sim.events.FaultRecord`):

* ``service_crash``: SIGKILL the replica;
* ``service_hang``: SIGSTOP the replica (it keeps its port and answers nothing);
* ``memory_leak``: the replica leaks ``leak_bytes_per_s`` until it exceeds its memory limit
  and exits as if OOM-killed;
* ``slow_response``: every request of the replica takes ``latency_s`` longer;
* ``error_responses``: the replica answers ``error_rate`` of its requests with 500;
* ``bad_config``: a configuration that fails validation is deployed to the service (every
  replica turns unready and answers 500 until it is rolled back); with canaries, to those
  replicas first, promoted to the rest after a bake time unless it is rolled back first.

The record is written just before the fault is made to happen, so MTTD and MTTR run from
the real onset. :class:`ChaosInjector` draws targets and kinds from one seeded
``numpy.random.Generator``.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
from collections.abc import Sequence

import numpy as np

from live.plant import LivePlant
from sim.config import canary_count
from sim.events import FaultRecord

FAULT_KINDS: tuple[str, ...] = (
    "service_crash", "service_hang", "memory_leak", "slow_response", "error_responses",
    "bad_config",
)
DEFAULT_LEAK_BYTES_PER_S = 160 * 2**20
DEFAULT_LATENCY_S = 1.5
DEFAULT_ERROR_RATE = 0.5
DEFAULT_BAKE_S = 60.0
"""How long a canaried deploy waits before the plant promotes it to every replica."""


def _knob(port: int, body: dict[str, float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    conn.request("POST", "/admin/fault", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"replica on port {port} refused fault knobs {body}: {resp.status}")


def inject(plant: LivePlant, kind: str, target: str, *, canaries: Sequence[int] = (),
           bake_s: float = DEFAULT_BAKE_S) -> FaultRecord:
    """Make one fault happen now on ``target`` (``inst-k``, or ``svc-<name>`` for bad_config).

    ``canaries``: for ``bad_config``, the replica slots the deploy reaches first (some, not
    all, of those in use); the plant promotes it to the rest ``bake_s`` later unless it is
    rolled back. Empty: every replica at once.
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {list(FAULT_KINDS)}")
    if canaries and kind != "bad_config":
        raise ValueError(f"canaries apply to bad_config only, not {kind!r}")
    if kind == "bad_config":
        svc = f"svc-{plant.spec.service}"
        if target != svc:
            raise ValueError(f"bad_config targets the service {svc!r}, got {target!r}")
        used = plant.used_slots()
        if canaries and not (set(canaries) <= set(used) and set(canaries) != set(used)):
            raise ValueError(f"canaries must be some, not all, of the replicas in use "
                             f"{list(used)}, got {list(canaries)}")
        hit = sorted(canaries) if canaries else used
        rec = plant.record_fault(kind, target, affected=tuple(f"inst-{k}" for k in hit),
                                 detail={"canaries": float(len(hit))} if canaries else {})
        config = {"version": 1000 + rec.fault_id, "valid": False}
        if canaries:
            plant.deploy_canary(config, hit, bake_s, fault_id=rec.fault_id)
        else:
            plant.write_config(config)
        return rec
    if not target.startswith("inst-") or not target[5:].isdigit():
        raise ValueError(f"{kind} targets a replica like 'inst-0', got {target!r}")
    slot = int(target[5:])
    pid = plant.pids().get(target)
    if pid is None:
        raise ValueError(f"{target} has no running replica")
    port = plant.replica_port(slot)
    detail: dict[str, float] = {}
    if kind == "memory_leak":
        detail["leak_bytes_per_s"] = float(DEFAULT_LEAK_BYTES_PER_S)
    elif kind == "slow_response":
        detail["latency_s"] = DEFAULT_LATENCY_S
    elif kind == "error_responses":
        detail["error_rate"] = DEFAULT_ERROR_RATE
    rec = plant.record_fault(kind, target, detail=detail)
    if kind == "service_crash":
        os.kill(pid, signal.SIGKILL)
    elif kind == "service_hang":
        os.kill(pid, signal.SIGSTOP)
    else:
        _knob(port, detail)
    return rec


class ChaosInjector:
    """Draws faults (kind by weight, target uniformly among running replicas), seeded.

    Args:
        plant: the live plant.
        kinds: fault kinds and their relative weights.
        seed: seed of the draws.
        canary_share: above 0, a bad deploy reaches that share of the replicas first
            (rounded up, at least one, never all), drawn with the same generator.
        bake_s: how long a canaried deploy waits before it is promoted.
    """

    def __init__(self, plant: LivePlant, kinds: dict[str, float], seed: int, *,
                 canary_share: float = 0.0, bake_s: float = DEFAULT_BAKE_S) -> None:
        bad = [k for k in kinds if k not in FAULT_KINDS]
        if bad or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {list(FAULT_KINDS)}, got {bad}")
        if not 0.0 <= canary_share < 1.0:
            raise ValueError(f"canary_share must lie in [0, 1), got {canary_share!r}")
        if not (math.isfinite(bake_s) and bake_s > 0):
            raise ValueError(f"bake_s must be a positive number of seconds, got {bake_s!r}")
        self.canary_share = canary_share
        self.bake_s = bake_s
        weights = np.array(list(kinds.values()), dtype=float)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"kind weights must be >= 0 with a positive sum, got {kinds}")
        self.plant = plant
        self.kinds: Sequence[str] = list(kinds)
        self.p = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def draw(self, healthy: Sequence[int]) -> tuple[str, str]:
        """The next (kind, target) among the ``healthy`` replica slots."""
        if not healthy:
            raise ValueError("no healthy replica to inject a fault into")
        kind = str(self.rng.choice(self.kinds, p=self.p))
        if kind == "bad_config":
            return kind, f"svc-{self.plant.spec.service}"
        return kind, f"inst-{int(self.rng.choice(np.asarray(healthy)))}"

    def inject_next(self, healthy: Sequence[int]) -> FaultRecord:
        """Draw and inject one fault."""
        kind, target = self.draw(healthy)
        used = self.plant.used_slots()
        pool = [k for k in healthy if k in used]
        if kind == "bad_config" and self.canary_share > 0 and len(used) >= 2 and pool:
            # The deploy system canaries on replicas that serve, as a rollout waits for them.
            n = min(len(pool), canary_count(self.canary_share, len(used)))
            canaries = [int(k) for k in self.rng.choice(np.asarray(pool), n, replace=False)]
            return inject(self.plant, kind, target, canaries=canaries, bake_s=self.bake_s)
        return inject(self.plant, kind, target)
