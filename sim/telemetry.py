"""Telemetry: per-host and per-instance metric vectors in a bounded ring buffer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HOST_FEATURES: tuple[str, ...] = (
    "cpu_util", "mem_alloc", "power_w", "temp_c", "fan_rpm", "disk_util", "disk_latency_s",
    "disk_wear", "net_util", "link_loss", "throttle", "up",
)
"""Columns of the host metric vector, in order (SI units; utilisations are fractions)."""

INSTANCE_FEATURES: tuple[str, ...] = (
    "cpu_util", "mem_util", "rps", "latency_s", "p99_latency_s", "error_rate", "queue_len",
    "net_bps", "disk_latency_s", "temp_c", "up", "ready", "vm_up",
)
"""Columns of the instance metric vector, in order (SI units; utilisations are fractions)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What a controller sees: the latest sample plus probe state, placement and topology.

    Never ground truth: no fault identities or root causes. ``inst_config_version`` is the
    configuration each slot runs, as the deploy system reports it (None where the plant does
    not know it).
    """

    t_s: float
    host: np.ndarray
    inst: np.ndarray
    inst_used: np.ndarray
    inst_service: np.ndarray
    inst_host: np.ndarray
    inst_live: np.ndarray
    inst_ready: np.ndarray
    service_names: tuple[str, ...]
    host_rack: np.ndarray
    call_edges: tuple[tuple[str, str], ...]
    inst_config_version: np.ndarray | None = None


class TelemetryBuffer:
    """Ring buffer of the last ``size`` samples (float32) of host and instance metrics.

    Stored feature-major, so writing one metric for every host is one contiguous copy;
    the accessors return the usual (entity, feature) layout.
    """

    def __init__(self, size: int, n_hosts: int, n_inst: int, f_host: int, f_inst: int) -> None:
        self.size = size
        self.times_s = np.full(size, np.nan)
        self.host = np.zeros((size, f_host, n_hosts), dtype=np.float32)
        self.inst = np.zeros((size, f_inst, n_inst), dtype=np.float32)
        self.count = 0

    def push(
        self, t_s: float, host_rows: Sequence[np.ndarray], inst_rows: Sequence[np.ndarray]
    ) -> None:
        """Store one sample; the oldest is overwritten when the buffer is full."""
        pos = self.count % self.size
        self.times_s[pos] = t_s
        self.host[pos] = host_rows
        self.inst[pos] = inst_rows
        self.count += 1

    def next_slot(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Claim the slot of a sample at ``t_s`` and return it to be written in place.

        Returns:
            Views (host features, hosts) and (instance features, slots) of the slot, which
            the caller fills completely before the buffer is read again.
        """
        pos = self.count % self.size
        self.times_s[pos] = t_s
        self.count += 1
        return self.host[pos], self.inst[pos]

    @property
    def last_t_s(self) -> float:
        """Time of the latest sample (NaN before the first)."""
        return float(self.times_s[(self.count - 1) % self.size]) if self.count else float("nan")

    def last_host(self, *, copy: bool = True) -> np.ndarray:
        """Latest host sample, shape (hosts, features); without ``copy`` a view of the buffer."""
        view = self.host[(self.count - 1) % self.size].T
        return view.copy() if copy else view

    def last_inst(self, *, copy: bool = True) -> np.ndarray:
        """Latest instance sample, shape (slots, features); without ``copy`` a view of it."""
        view = self.inst[(self.count - 1) % self.size].T
        return view.copy() if copy else view

    def window(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``min(n, stored)`` samples, oldest first: times, host, instance.

        Shapes: (n,), (n, hosts, host features), (n, instance slots, instance features).
        """
        n = min(n, self.count, self.size)
        idx = (np.arange(self.count - n, self.count)) % self.size
        return (
            self.times_s[idx],
            self.host[idx].transpose(0, 2, 1),
            self.inst[idx].transpose(0, 2, 1),
        )

    def copy(self) -> TelemetryBuffer:
        """Independent copy."""
        new = TelemetryBuffer.__new__(TelemetryBuffer)
        new.size = self.size
        new.times_s = self.times_s.copy()
        new.host = self.host.copy()
        new.inst = self.inst.copy()
        new.count = self.count
        return new
