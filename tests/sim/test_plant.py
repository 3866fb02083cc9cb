"""The twin as a Plant: observation shapes, event-log reads, JSONL export and digest."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from sim.actions import Action, ActionResult
from sim.config import ScriptedFault
from sim.events import (
    ActionRecord,
    AlertRecord,
    Event,
    EventLog,
    FaultCleared,
    FaultRecord,
    SloWindow,
    StateChange,
)
from sim.plant import Plant
from sim.scenarios import SCENARIOS, make_config
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation
from sim.twin import Twin

HOSTS = 30
TYPE_NAMES = {
    FaultRecord: "fault", StateChange: "state", FaultCleared: "fault_cleared",
    ActionRecord: "action", AlertRecord: "alert", SloWindow: "slo",
}


def _busy_twin(seed: int = 1) -> Twin:
    """A twin whose log holds faults, state changes, clearances, actions and SLO windows."""
    twin = Twin(make_config("mixed", 100, customize=_scripted), seed=seed)
    twin.advance(1800.0)
    assert twin.apply(Action("shed_load")).accepted
    assert not twin.apply(Action("repair_switch", "tor-0")).accepted
    twin.advance(4 * 3600.0)
    return twin


def _scripted(config: object) -> object:
    return dataclasses.replace(
        config,  # type: ignore[type-var]
        scripted=(ScriptedFault(600.0, "service_crash", 4),
                  ScriptedFault(700.0, "noisy_neighbour", 3)),
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_twin_satisfies_the_plant_protocol(name: str) -> None:
    """A twin of every scenario is a Plant (runtime-checkable protocol)."""
    twin = Twin(make_config(name, HOSTS), seed=0)
    assert isinstance(twin, Plant)
    assert twin.now_s == 0.0
    twin.advance(120.0)
    assert twin.now_s == 120.0


def test_apply_returns_an_action_result() -> None:
    """Apply answers with an ActionResult for accepted and rejected requests alike."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    ok = twin.apply(Action("noop"))
    bad = twin.apply(Action("noop", "host-0"))
    assert isinstance(ok, ActionResult)
    assert isinstance(bad, ActionResult)
    assert ok.accepted
    assert not bad.accepted


def test_observe_shapes_match_the_feature_lists() -> None:
    """Observations have one row per host / instance slot and one column per feature.

    Per-slot arrays have the same length as the instance rows.
    """
    twin = Twin(make_config("calm", HOSTS), seed=0)
    twin.advance(600.0)
    obs = twin.observe()
    assert isinstance(obs, Observation)
    slots = twin.state.capacity
    assert obs.host.shape == (HOSTS, len(HOST_FEATURES))
    assert obs.inst.shape == (slots, len(INSTANCE_FEATURES))
    for arr in (obs.inst_used, obs.inst_service, obs.inst_host, obs.inst_live, obs.inst_ready):
        assert arr.shape == (slots,)
    assert obs.service_names == twin.topo.service_names
    assert np.isfinite(obs.host).all()
    assert np.isfinite(obs.inst).all()
    assert obs.t_s <= twin.now_s


def test_observe_reports_the_latest_telemetry_sample() -> None:
    """observe() is the latest telemetry row: hosts up, used instances up and ready."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    twin.advance(600.0)
    obs = twin.observe()
    times, host, inst = twin.telemetry.window(1)
    assert obs.t_s == times[-1]
    assert np.array_equal(obs.host, host[-1])
    assert np.array_equal(obs.inst, inst[-1])
    assert (obs.host[:, HOST_FEATURES.index("up")] == 1.0).all()
    used = obs.inst_used
    assert (obs.inst[used, INSTANCE_FEATURES.index("up")] == 1.0).all()
    assert (obs.inst[used, INSTANCE_FEATURES.index("ready")] == 1.0).all()
    assert (obs.inst[~used, INSTANCE_FEATURES.index("rps")] == 0.0).all()


def test_observations_are_copies() -> None:
    """Writing into an observation does not change the twin."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    twin.advance(600.0)
    obs = twin.observe()
    obs.host[:] = -1.0
    obs.inst_used[:] = False
    assert (twin.observe().host != -1.0).any()
    assert twin.state.inst_used.any()


def test_an_observation_without_copy_holds_the_same_values_as_views() -> None:
    """observe(copy=False): equal to observe(), but views that follow the twin."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    twin.advance(600.0)
    copied, viewed = twin.observe(), twin.observe(copy=False)
    for field in dataclasses.fields(Observation):
        a, b = getattr(copied, field.name), getattr(viewed, field.name)
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b, field.name
    assert np.shares_memory(viewed.inst, twin.telemetry.inst)
    assert np.shares_memory(viewed.inst_ready, twin.state.inst_ready)
    assert not np.shares_memory(copied.inst, twin.telemetry.inst)


def test_events_since_returns_the_records_from_that_sequence_number() -> None:
    """events(since) returns records with seq >= since, in order; seq equals the position."""
    twin = _busy_twin()
    everything = twin.events()
    assert len(everything) == len(twin.log) > 100
    assert [r.seq for r in everything] == list(range(len(everything)))
    assert twin.events(0) == everything
    for since in (1, 17, len(everything) - 1):
        assert twin.events(since) == everything[since:]
        assert twin.events(since)[0].seq == since
    assert twin.events(len(everything)) == []
    assert twin.events(len(everything) + 50) == []


def test_events_can_be_read_incrementally() -> None:
    """Reading events(since=last seen) after each advance yields every record exactly once."""
    twin = Twin(make_config("service_crash", HOSTS), seed=3)
    seen: list[Event] = []
    for _ in range(12):
        twin.advance(600.0)
        new = twin.events(len(seen))
        seen.extend(new)
    assert seen == twin.events()


def test_log_holds_every_record_type_of_a_busy_run() -> None:
    """A busy run logs every record type; type names come from the typed record classes.

    Faults, state changes, clearances, actions (started, succeeded, rejected) and SLO windows.
    """
    twin = _busy_twin()
    counts = twin.log.counts()
    for name in ("fault", "state", "fault_cleared", "action", "slo"):
        assert counts.get(name, 0) > 0, name
    assert {r.type for r in twin.events()} <= set(TYPE_NAMES.values())
    phases = {r.phase for r in twin.events() if isinstance(r, ActionRecord)}
    assert {"started", "succeeded", "rejected"} <= phases


def test_jsonl_export_round_trips(tmp_path: Path) -> None:
    """Each exported line is a JSON object with a type and the record's fields and values."""
    twin = _busy_twin()
    path = twin.log.write_jsonl(tmp_path / "sub" / "events.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = twin.events()
    assert len(lines) == len(records)
    seen_types = set()
    for line, record in zip(lines, records, strict=True):
        obj = json.loads(line)
        assert obj["type"] == TYPE_NAMES[type(record)]
        seen_types.add(obj["type"])
        names = {f.name for f in dataclasses.fields(record)}
        assert set(obj) == names | {"type"}
        assert obj["seq"] == record.seq
        assert obj["t_s"] == pytest.approx(record.t_s, rel=1e-8)
        for name in names - {"seq", "t_s"}:
            value = getattr(record, name)
            if isinstance(value, float):
                assert obj[name] == pytest.approx(value, rel=1e-8), name
            elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
                assert obj[name] == list(value), name
            elif isinstance(value, tuple):
                assert obj[name] == pytest.approx(list(value), rel=1e-8), name
            elif isinstance(value, dict):
                assert obj[name] == pytest.approx(value, rel=1e-8), name
            else:
                assert obj[name] == value, name
    assert {"fault", "state", "fault_cleared", "action", "slo"} <= seen_types


def test_digest_is_the_sha256_of_the_export_and_stable(tmp_path: Path) -> None:
    """The digest is the sha256 of the JSONL export and is stable.

    Reading it changes nothing, the same seed reproduces it, and any new record changes it.
    """
    twin = _busy_twin()
    digest = twin.log.digest()
    assert twin.log.digest() == digest
    assert twin.summary()["digest"] == digest
    path = twin.log.write_jsonl(tmp_path / "events.jsonl")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert _busy_twin().log.digest() == digest
    twin.advance(60.0)
    assert twin.log.digest() != digest


def test_read_jsonl_rebuilds_the_log_and_names_a_bad_line(tmp_path: Path) -> None:
    """A written log reads back to the same records (same digest); a bad line is named."""
    twin = _busy_twin()
    path = twin.log.write_jsonl(tmp_path / "events.jsonl")
    back = EventLog.read_jsonl(path)
    assert len(back) == len(twin.log)
    assert [type(r) for r in back] == [type(r) for r in twin.log]
    assert back.digest() == twin.log.digest()
    lines = path.read_text(encoding="utf-8").splitlines()
    for bad, message in ((lines[0][:-1], "Expecting"), ('{"type": "nope", "seq": 1}', "nope"),
                         ("[1, 2]", "not a JSON object")):
        broken = tmp_path / "broken.jsonl"
        broken.write_text("\n".join([lines[0], bad, *lines[2:]]) + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=f"broken.jsonl:2: .*{message}"):
            EventLog.read_jsonl(broken)


def test_event_log_assigns_sequence_numbers_strictly() -> None:
    """EventLog.add refuses a record whose seq is not the next one; a copy is independent."""
    log = EventLog()
    log.add(FaultCleared(0, 1.0, 0, "test"))
    with pytest.raises(ValueError, match="seq"):
        log.add(FaultCleared(5, 2.0, 1, "test"))
    copy = log.copy()
    copy.add(FaultCleared(1, 2.0, 1, "test"))
    assert len(log) == 1
    assert len(copy) == 2


@pytest.mark.parametrize("dt_s", [-1.0, math.nan, math.inf])
def test_advance_rejects_bad_durations(dt_s: float) -> None:
    """Advancing refuses negative, NaN and infinite durations and leaves the clock alone."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    twin.advance(60.0)
    with pytest.raises(ValueError, match="dt_s"):
        twin.advance(dt_s)
    assert twin.now_s == 60.0


def test_advance_by_zero_does_nothing() -> None:
    """advance(0) keeps the clock and the log as they are."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    twin.advance(65.0)
    digest = twin.log.digest()
    twin.advance(0.0)
    assert twin.now_s == 65.0
    assert twin.log.digest() == digest


def test_scripted_faults_fire_at_their_time_on_their_target() -> None:
    """Scripted faults are recorded at their at_s on the given target."""
    twin = _busy_twin()
    faults = [r for r in twin.events() if isinstance(r, FaultRecord)]
    scripted = [(r.t_s, r.kind, r.target) for r in faults if r.t_s in (600.0, 700.0)]
    assert scripted == [(600.0, "service_crash", "inst-4"), (700.0, "noisy_neighbour", "host-3")]


def test_event_log_is_in_time_order() -> None:
    """Records are written in time order: t_s never decreases along seq.

    This holds even when a fault strikes between two physics ticks.
    """
    config = make_config("calm", HOSTS, scripted=(ScriptedFault(655.0, "vm_failure", 3),))
    twin = Twin(config, seed=0)
    twin.advance(3600.0)
    times = [r.t_s for r in twin.events()]
    assert all(b >= a for a, b in itertools.pairwise(times))


def test_no_record_is_dated_after_the_current_time() -> None:
    """After advance, every record in the log happened at or before now_s."""
    twin = Twin(make_config("calm", HOSTS), seed=0)
    for step_s in (655.0, 7.0, 1234.5):
        twin.advance(step_s)
        assert max(r.t_s for r in twin.events()) <= twin.now_s
