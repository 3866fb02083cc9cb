"""Durable state of the live controller: SQLite in WAL mode.

Tables: ``events`` (every event-log record, as JSON, by sequence number), ``actions`` (one row
per executed action, with its idempotency key, phase and the progress of its steps),
``slots`` (the fleet: each replica slot's port, pid and incarnation), ``postmortems`` and
``meta``. Each write is its own transaction, so a controller killed with SIGKILL loses nothing
it had written (WAL with ``synchronous=NORMAL`` is durable against a process crash; a power
cut may lose the last transactions).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.events import Event, EventLog, event_from_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, t_s REAL NOT NULL,
    type TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (action_id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL, target TEXT NOT NULL, phase TEXT NOT NULL, reason TEXT NOT NULL,
    started_s REAL NOT NULL, done_s REAL, progress TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS slots (slot INTEGER PRIMARY KEY, port INTEGER NOT NULL,
    pid INTEGER, incarnation INTEGER NOT NULL, used INTEGER NOT NULL,
    in_rotation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS postmortems (incident_id INTEGER PRIMARY KEY, t_s REAL NOT NULL,
    text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One row of the action journal."""

    action_id: int
    key: str
    kind: str
    target: str
    phase: str
    reason: str
    started_s: float
    done_s: float | None
    progress: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One replica slot as last written."""

    slot: int
    port: int
    pid: int | None
    incarnation: int
    used: bool
    in_rotation: bool


class Store:
    """The SQLite database; safe to share between the controller's threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # events
    def append_event(self, record: Event) -> None:
        """Persist one record."""
        body = json.dumps(record.to_dict(), separators=(",", ":"))
        self._exec("INSERT INTO events (seq, t_s, type, body) VALUES (?, ?, ?, ?)",
                   (record.seq, record.t_s, record.type, body))

    def events(self) -> list[Event]:
        """Every stored record, by sequence number."""
        rows = self._exec("SELECT body FROM events ORDER BY seq")
        return [event_from_dict(json.loads(b)) for (b,) in rows]

    # meta
    def get_meta(self, key: str) -> str | None:
        """A stored setting, or None."""
        rows = self._exec("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        self._exec("INSERT INTO meta (key, value) VALUES (?, ?) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # actions
    def insert_action(self, row: ActionRow) -> bool:
        """Journal a new action; False when its idempotency key is already there."""
        try:
            self._exec(
                "INSERT INTO actions (action_id, key, kind, target, phase, reason, started_s, "
                "done_s, progress) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row.action_id, row.key, row.kind, row.target, row.phase, row.reason,
                 row.started_s, row.done_s, json.dumps(row.progress)),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def update_action(self, action_id: int, *, phase: str | None = None,
                      reason: str | None = None, done_s: float | None = None,
                      progress: dict[str, Any] | None = None) -> None:
        """Change an action's phase, reason, completion time or progress."""
        sets, args = [], []
        for col, val in (("phase", phase), ("reason", reason), ("done_s", done_s)):
            if val is not None:
                sets.append(f"{col} = ?")
                args.append(val)
        if progress is not None:
            sets.append("progress = ?")
            args.append(json.dumps(progress))
        if sets:
            self._exec(f"UPDATE actions SET {', '.join(sets)} WHERE action_id = ?",
                       (*args, action_id))

    def _action(self, row: tuple[Any, ...]) -> ActionRow:
        return ActionRow(int(row[0]), row[1], row[2], row[3], row[4], row[5], float(row[6]),
                         None if row[7] is None else float(row[7]), json.loads(row[8]))

    def action_by_key(self, key: str) -> ActionRow | None:
        """The action journaled under ``key``, if any."""
        rows = self._exec("SELECT * FROM actions WHERE key = ?", (key,))
        return self._action(rows[0]) if rows else None

    def actions(self) -> list[ActionRow]:
        """Every journaled action, by id."""
        return [self._action(r) for r in self._exec("SELECT * FROM actions ORDER BY action_id")]

    def finished_on(self, target: str) -> int:
        """How many journaled actions on ``target`` have finished (succeeded or failed)."""
        rows = self._exec("SELECT COUNT(*) FROM actions WHERE target = ? AND phase IN "
                          "('succeeded', 'failed')", (target,))
        return int(rows[0][0])

    def next_action_id(self) -> int:
        """One more than the largest journaled action id (0 when empty)."""
        rows = self._exec("SELECT MAX(action_id) FROM actions")
        return 0 if rows[0][0] is None else int(rows[0][0]) + 1

    # slots
    def put_slot(self, row: SlotRow) -> None:
        """Write a slot's state."""
        self._exec(
            "INSERT INTO slots (slot, port, pid, incarnation, used, in_rotation) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(slot) DO UPDATE SET port = excluded.port, "
            "pid = excluded.pid, incarnation = excluded.incarnation, used = excluded.used, "
            "in_rotation = excluded.in_rotation",
            (row.slot, row.port, row.pid, row.incarnation, int(row.used), int(row.in_rotation)),
        )

    def slots(self) -> list[SlotRow]:
        """Every slot, by index."""
        return [SlotRow(int(r[0]), int(r[1]), None if r[2] is None else int(r[2]), int(r[3]),
                        bool(r[4]), bool(r[5]))
                for r in self._exec("SELECT * FROM slots ORDER BY slot")]

    # postmortems
    def put_postmortem(self, incident_id: int, t_s: float, text: str) -> None:
        """Store (or replace) an incident's post-mortem."""
        self._exec("INSERT INTO postmortems (incident_id, t_s, text) VALUES (?, ?, ?) "
                   "ON CONFLICT(incident_id) DO UPDATE SET t_s = excluded.t_s, "
                   "text = excluded.text", (incident_id, t_s, text))

    def postmortem(self, incident_id: int) -> str | None:
        """A stored post-mortem, or None."""
        rows = self._exec("SELECT text FROM postmortems WHERE incident_id = ?", (incident_id,))
        return str(rows[0][0]) if rows else None


class DurableEventLog(EventLog):
    """An :class:`~sim.events.EventLog` whose every record is also written to a :class:`Store`.

    Opening it on an existing database loads the records written before, so sequence numbers
    continue where the previous controller stopped.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store.events())
        self.store = store
        self._lock = threading.Lock()

    def add(self, record: Event) -> Event:
        """Append and persist a record."""
        with self._lock:
            super().add(record)
            self.store.append_event(record)
        return record

    def __iter__(self) -> Iterator[Event]:
        return iter(list(super().__iter__()))
