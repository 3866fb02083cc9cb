"""Fixtures for the live tests: free loopback ports and a small fleet torn down for sure."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from live.plant import FleetSpec, LivePlant
from live.procs import alive, kill


def _ephemeral_low() -> int:
    """Lowest port the kernel hands out for outgoing connections (32768 if unknown)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_block(n: int) -> int:
    """First port of ``n`` consecutive free loopback ports.

    Drawn below the kernel's ephemeral range: a port found free there can be taken by any
    outgoing connection (another test's HTTP client) before the server under test binds it.
    """
    rng = random.Random()
    high = max(_ephemeral_low(), 20000 + 1000) - n
    for _ in range(200):
        base = rng.randrange(20000, high)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free loopback ports")


def make_fleet(tmp_path: Path, replicas: int, *, actuate: bool, **kw: object) -> LivePlant:
    spec = FleetSpec(replicas=replicas, max_replicas=replicas + 1,
                     lb_port=port_block(replicas + 2), **kw)  # type: ignore[arg-type]
    plant = LivePlant(spec, tmp_path / "fleet", actuate=actuate)
    plant.start()
    return plant


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[object]:
    """Builds fleets; every process they started is gone after the test."""
    made: list[LivePlant] = []

    def build(replicas: int = 2, *, actuate: bool = True, **kw: object) -> LivePlant:
        plant = make_fleet(tmp_path / str(len(made)), replicas, actuate=actuate, **kw)
        made.append(plant)
        return plant

    yield build
    for plant in made:
        pids = list(plant.pids().values())
        try:
            plant.close()
        finally:
            for pid in pids:
                kill(pid)
        assert not any(alive(p) for p in pids), "a fleet process outlived its test"
