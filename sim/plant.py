"""The Plant seam: the one protocol the twin and every live adapter implement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sim.actions import Action, ActionResult
from sim.events import Event, EventLog
from sim.telemetry import Observation


@runtime_checkable
class Plant(Protocol):
    """Observe telemetry, apply an action, advance time, read events."""

    @property
    def now_s(self) -> float:
        """Current time of the plant, seconds."""
        ...

    @property
    def log(self) -> EventLog:
        """The plant's event log; controllers append their alerts, incidents and decisions."""
        ...

    def observe(self) -> Observation:
        """Latest telemetry and probe state."""
        ...

    def apply(self, action: Action) -> ActionResult:
        """Submit an action; invalid ones come back rejected with a reason."""
        ...

    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass (simulated, or waited for on a live plant)."""
        ...

    def events(self, since: int = 0) -> Sequence[Event]:
        """Event records with sequence number >= ``since``."""
        ...
