"""Durable state: records survive a round trip through SQLite; idempotency keys are unique."""

from __future__ import annotations

from pathlib import Path

from live.store import ActionRow, DurableEventLog, Store, event_from_dict
from sim.events import (
    ActionRecord,
    AlertRecord,
    ApprovalRecord,
    DecisionRecord,
    FaultCleared,
    FaultRecord,
    IncidentRecord,
    SloWindow,
    StateChange,
)

RECORDS = [
    FaultRecord(0, 1.0, 0, "service_crash", "inst-0", "inst-0:service_crash", False,
                {"x": 1.0}, ("inst-1",)),
    StateChange(1, 1.1, "inst-0", "down", None, "process exited"),
    AlertRecord(2, 1.2, 0, "probe", "inst-0", "critical", {"live": 0.0}),
    IncidentRecord(3, 1.2, 0, "opened", "P2", "inst-0:service_crash", (0,),
                   (("inst-0:service_crash", 0.9), ("inst-0:vm_failure", 0.1)), "note"),
    DecisionRecord(4, 1.2, 0, "restart_instance", "inst-0", "allowed", "runbook", True, 3),
    ActionRecord(5, 1.2, 3, "restart_instance", "inst-0", "started", "", 0.2),
    ApprovalRecord(6, 1.3, 0, "reboot_host", "host-0", "requested"),
    FaultCleared(7, 1.5, 0, "restart_instance"),
    SloWindow(8, 2.0, 1.0, 100.0, 99.0, (0.99,)),
]


def test_every_record_type_round_trips(tmp_path: Path) -> None:
    """Each event type written to the store reads back equal, in order."""
    store = Store(tmp_path / "s.db")
    log = DurableEventLog(store)
    for r in RECORDS:
        log.add(r)
    store.close()
    again = DurableEventLog(Store(tmp_path / "s.db"))
    assert list(again) == RECORDS
    assert again.next_seq == len(RECORDS)
    assert again.digest() == log.digest()


def test_wal_mode(tmp_path: Path) -> None:
    """The database runs in write-ahead-log mode."""
    store = Store(tmp_path / "s.db")
    assert store._exec("PRAGMA journal_mode")[0][0] == "wal"


def test_idempotency_key_is_unique(tmp_path: Path) -> None:
    """A second action under the same key is refused by the journal."""
    store = Store(tmp_path / "s.db")
    row = ActionRow(0, "k", "restart_instance", "inst-0", "started", "", 1.0, None, {})
    assert store.insert_action(row)
    assert not store.insert_action(ActionRow(1, "k", "restart_instance", "inst-0", "started",
                                             "", 2.0, None, {}))
    assert [a.action_id for a in store.actions()] == [0]
    store.update_action(0, phase="succeeded", done_s=3.0, progress={"new_pid": 5})
    got = store.action_by_key("k")
    assert got is not None and got.phase == "succeeded" and got.progress == {"new_pid": 5}


def test_unknown_type_is_a_clear_error() -> None:
    """A record of an unknown type names the problem."""
    try:
        event_from_dict({"type": "bogus", "seq": 0, "t_s": 0.0})
    except ValueError as exc:
        assert "bogus" in str(exc)
    else:
        raise AssertionError("no error for an unknown record type")
