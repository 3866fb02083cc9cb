"""The event log: typed, append-only records that are the ground truth for every KPI.

Each record is a frozen dataclass with a sequence number and a simulated time. The log exports
as JSON Lines; its ``digest`` (sha256 of that export) identifies a run byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """Base record: ``seq`` orders records, ``t_s`` is simulated time in seconds."""

    seq: int
    t_s: float

    @property
    def type(self) -> str:
        """Record type name used in exports."""
        return _TYPE_NAMES[type(self)]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with a ``type`` field, ready for JSON."""
        d = asdict(self)
        d["type"] = self.type
        return d


@dataclass(frozen=True, slots=True)
class FaultRecord(Event):
    """A fault injected: ground truth of what broke, where, when, and why."""

    fault_id: int
    kind: str
    target: str
    root_cause: str
    warning_signs: bool
    detail: dict[str, float] = field(default_factory=dict)
    affected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StateChange(Event):
    """A component changed state (instance down, host throttled, disk degraded, ...)."""

    target: str
    state: str
    fault_id: int | None
    cause: str


@dataclass(frozen=True, slots=True)
class FaultCleared(Event):
    """A fault's effect ended: by a healing action, by repair, or by itself."""

    fault_id: int
    by: str


@dataclass(frozen=True, slots=True)
class ActionRecord(Event):
    """An action's lifecycle: ``phase`` is requested, rejected, started, succeeded or failed."""

    action_id: int
    kind: str
    target: str
    phase: str
    reason: str
    cost_usd: float


@dataclass(frozen=True, slots=True)
class AlertRecord(Event):
    """An alert raised by a detector, with the evidence that triggered it."""

    alert_id: int
    source: str
    target: str
    severity: str
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IncidentRecord(Event):
    """An incident's lifecycle: ``phase`` is opened, mitigating, resolved or escalated.

    ``root_cause`` is the top-ranked candidate (``component:fault_class``) when known, and
    ``candidates`` the ranked list with confidences.
    """

    incident_id: int
    phase: str
    priority: str
    root_cause: str
    alert_ids: tuple[int, ...] = ()
    candidates: tuple[tuple[str, float], ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class DecisionRecord(Event):
    """A control decision: what the policy chose, the safety verdict, and whether it ran.

    ``verdict`` is allowed, blocked, needs_approval, dry_run, rejected (the plant refused
    it) or shared (the same action on the same target, run for another incident, serves
    this one: ``action_id`` names it); ``executed`` is True only when this decision
    submitted the action to the plant.
    """

    incident_id: int
    action: str
    target: str
    verdict: str
    reason: str
    executed: bool
    action_id: int = -1


@dataclass(frozen=True, slots=True)
class ApprovalRecord(Event):
    """A human approval: ``phase`` is requested, approved, denied or timed_out."""

    incident_id: int
    action: str
    target: str
    phase: str
    operator: str = "simulated"


@dataclass(frozen=True, slots=True)
class SloWindow(Event):
    """Requests offered and served within SLO over one window ending at ``t_s``."""

    window_s: float
    requests: float
    good: float
    class_good_share: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class PredictionRecord(Event):
    """A failure prediction about a component, or the later outcome of one.

    ``phase`` is ``predicted`` (``probability`` of ``fault_class`` failing ``target`` within
    ``horizon_s``) or ``outcome`` (``outcome`` is ``failed`` with ``lead_s`` from the
    prediction to the failure, or ``no_failure`` when the horizon passed without one).
    """

    target: str
    host: str
    phase: str
    probability: float
    fault_class: str
    horizon_s: float
    outcome: str = ""
    lead_s: float = float("nan")


@dataclass(frozen=True, slots=True)
class ControlRecord(Event):
    """An operator's command to the control plane: ``emergency_stop`` or ``resume``.

    The log keeps it, so a controller started again on the same log comes back stopped if
    it was stopped (:func:`control.safety.restore_gate`).
    """

    command: str
    reason: str = ""


_TYPE_NAMES: dict[type, str] = {
    FaultRecord: "fault",
    StateChange: "state",
    FaultCleared: "fault_cleared",
    ActionRecord: "action",
    AlertRecord: "alert",
    IncidentRecord: "incident",
    DecisionRecord: "decision",
    ApprovalRecord: "approval",
    SloWindow: "slo",
    PredictionRecord: "prediction",
    ControlRecord: "control",
}


_CLASS_OF: dict[str, type[Event]] = {name: cls for cls, name in _TYPE_NAMES.items()}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild a typed record from :meth:`Event.to_dict` output (a JSON Lines row).

    Raises:
        ValueError: an unknown record type, or fields the type does not have or lacks.
    """
    body = dict(d)
    kind = body.pop("type", None)
    cls = _CLASS_OF.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}; known: {sorted(_CLASS_OF)}")
    spec = fields(cls)
    extra = set(body) - {f.name for f in spec}
    if extra:
        raise ValueError(f"{kind} record has unknown fields {sorted(extra)}")
    missing = {f.name for f in spec
               if f.default is MISSING and f.default_factory is MISSING} - set(body)
    if missing:
        raise ValueError(f"{kind} record lacks fields {sorted(missing)}")
    return cls(**{k: _tuples(v) for k, v in body.items()})


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


class EventLog:
    """Append-only log of records; ``append`` assigns the sequence number."""

    def __init__(self, records: Sequence[Event] = ()) -> None:
        self._records: list[Event] = list(records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._records)

    def __getitem__(self, index: int) -> Event:
        return self._records[index]

    @property
    def next_seq(self) -> int:
        """Sequence number the next record will get."""
        return len(self._records)

    def add(self, record: Event) -> Event:
        """Append a record whose ``seq`` equals :attr:`next_seq`."""
        if record.seq != len(self._records):
            raise ValueError(f"record seq {record.seq} != next seq {len(self._records)}")
        self._records.append(record)
        return record

    def since(self, seq: int = 0) -> list[Event]:
        """Records with sequence number >= ``seq``."""
        return self._records[seq:]

    def of_type(self, kind: type[Event]) -> list[Event]:
        """Records of one type."""
        return [r for r in self._records if isinstance(r, kind)]

    def copy(self) -> EventLog:
        """Independent copy (records are immutable, so a shallow copy suffices)."""
        return EventLog(self._records)

    def lines(self) -> Iterator[str]:
        """JSON Lines, floats rounded to 9 significant digits so the text is stable."""
        for r in self._records:
            yield json.dumps(_canonical(r.to_dict()), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """sha256 of the JSON Lines export."""
        h = hashlib.sha256()
        for line in self.lines():
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()

    def write_jsonl(self, path: str | Path) -> Path:
        """Write the JSON Lines export to ``path``."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as fh:
            for line in self.lines():
                fh.write(line + "\n")
        return out

    @classmethod
    def read_jsonl(cls, path: str | Path) -> EventLog:
        """The log :meth:`write_jsonl` wrote (floats as rounded there).

        Raises:
            ValueError: a line that is not a JSON object of a known record type, named with
                its line number; records out of sequence order.
        """
        log = cls()
        with Path(path).open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                    log.add(event_from_dict(row))
                except (ValueError, TypeError) as err:
                    raise ValueError(f"{path}:{n}: {err}") from None
        return log

    def counts(self) -> dict[str, int]:
        """Number of records per type name."""
        out: dict[str, int] = {}
        for r in self._records:
            out[r.type] = out.get(r.type, 0) + 1
        return out
