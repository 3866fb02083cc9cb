"""Failure-prediction data sets built by running the twin, and their on-disk format.

A *fleet* is one twin run (fast mode) with failures that give warning signs (memory leaks,
disk wear, fan degradation) and failures that do not (host hardware failures, VM failures,
process crashes), and a maintenance crew that repairs what broke after ``repair_delay_s``.
Every ``step_s`` the builder records ten features per host, averaged over the step:

==================  ==================================================  ========
feature             meaning                                             unit
==================  ==================================================  ========
cpu_util            host CPU utilisation                                fraction
max_inst_mem_util   highest memory use among the host's live instances  fraction
power_w             host power draw                                     W
temp_c              host temperature                                    deg C
fan_rpm             fan speed                                           rpm
disk_util           disk utilisation                                    fraction
disk_latency_s      disk service latency                                s
disk_wear           disk wear                                           fraction
net_util            NIC utilisation                                     fraction
throttle            thermal throttling factor (1 = none)                fraction
==================  ==================================================  ========

Failure times are ground truth from the event log: the OOM kill of a leaking instance, the
disk failure, the stall of a failing fan (or the first step it makes the host throttle or shut
down, if earlier), and the onset of a failure without warning. Labels are derived at window
time (:func:`make_windows`), so the horizon is a parameter, not baked into the data.

On disk (:func:`save` / :func:`load`): ``<folder>/failure_data.npz`` holds ``features``
(float32, ``fleets x hosts x steps x 10``), ``up`` (bool, host up at each step), ``times_s``
(float64, end of each step), and the failure table as parallel arrays ``fail_fleet``,
``fail_host``, ``fail_t_s``, ``fail_onset_s``, ``fail_repaired_s`` (float64, when the
fault was cleared; inf if never), ``fail_kind`` (str) and ``fail_warning`` (bool);
``<folder>/failure_data.json`` holds the format tag, the feature names, the fleet spec, the
seeds and counts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from control.prediction import PREDICTION_FEATURES, host_feature_rows
from sim.actions import Action
from sim.config import FaultRates
from sim.events import FaultCleared, FaultRecord, StateChange
from sim.scenarios import make_config
from sim.telemetry import HOST_FEATURES
from sim.twin import Twin

FEATURES: tuple[str, ...] = PREDICTION_FEATURES
WARNING_KINDS = ("memory_leak", "disk_degradation", "fan_failure")
SILENT_KINDS = ("host_failure", "vm_failure", "service_crash")
_H_UP = HOST_FEATURES.index("up")
FAN_STALLED = 0.1
"""Fan health (airflow share) at which a failing fan counts as failed (the twin's fault
degrades it from 1 to 0.1 over ``hours_to_stall``)."""


class FailureDataError(ValueError):
    """A bad fleet spec or a data folder that cannot be read."""


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """One fleet run: size, length, resolution, fault rates and the maintenance crew.

    Rates are per simulated day per 100 hosts. ``warning_scale`` stretches the time the
    warning faults take to fail (see :class:`sim.config.FaultRates`).
    """

    hosts: int = 40
    days: float = 12.0
    tick_s: float = 60.0
    step_s: float = 3600.0
    warning_scale: float = 6.0
    warning_rate_per_day: float = 1.0
    silent_rate_per_day: float = 0.5
    repair_delay_s: float = 2 * 3600.0

    def __post_init__(self) -> None:
        if self.hosts < 2:
            raise FailureDataError(f"hosts must be >= 2, got {self.hosts}")
        for name in ("days", "tick_s", "step_s", "warning_scale", "repair_delay_s"):
            if not getattr(self, name) > 0:
                raise FailureDataError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.step_s < self.tick_s:
            raise FailureDataError("step_s must be at least tick_s")
        for name in ("warning_rate_per_day", "silent_rate_per_day"):
            if getattr(self, name) < 0:
                raise FailureDataError(f"{name} must be >= 0")

    @property
    def n_steps(self) -> int:
        """Feature rows per host."""
        return int(self.days * 86400.0 // self.step_s)


@dataclass(frozen=True, slots=True)
class Failures:
    """The failure table, as parallel arrays."""

    fleet: npt.NDArray[np.int64]
    host: npt.NDArray[np.int64]
    t_s: npt.NDArray[np.float64]
    onset_s: npt.NDArray[np.float64]
    kind: npt.NDArray[np.str_]
    warning: npt.NDArray[np.bool_]
    repaired_s: npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FailureDataset:
    """Per-host feature series of several fleets, and their failures."""

    features: npt.NDArray[np.float32]
    up: npt.NDArray[np.bool_]
    times_s: npt.NDArray[np.float64]
    failures: Failures
    spec: FleetSpec
    seeds: tuple[int, ...]


def _config(spec: FleetSpec) -> Any:
    rates = tuple(
        sorted(
            [(k, spec.warning_rate_per_day) for k in WARNING_KINDS]
            + [(k, spec.silent_rate_per_day) for k in SILENT_KINDS]
        )
    )
    faults = FaultRates(rates_per_day_per_100_hosts=rates, warning_scale=spec.warning_scale)
    return make_config(
        "calm",
        spec.hosts,
        customize=lambda c: dataclasses.replace(c, faults=faults),
        tick_s=spec.tick_s,
        telemetry_interval_s=spec.tick_s,
        telemetry_buffer=max(1, int(spec.step_s // spec.tick_s)),
    )


def _host_features(twin: Twin, n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    _, host, inst = twin.telemetry.window(n)
    st = twin.state
    rows = host_feature_rows(host, inst, st.inst_used, st.inst_host)
    return rows, host[-1, :, _H_UP] > 0.5


def _maintain(
    twin: Twin,
    now_s: float,
    down_since: dict[str, float],
    throttled: npt.NDArray[np.bool_],
    delay_s: float,
) -> None:
    """The maintenance crew: repair hosts, fans and instances broken for ``delay_s``."""
    st = twin.state
    broken: dict[str, str] = {}
    for h in np.flatnonzero(~st.host_up):
        broken[f"host-{h}"] = "repair_host"
    for h in np.flatnonzero(
        st.host_up & (st.fan_decay_per_s > 0) & (throttled | (st.fan_health <= FAN_STALLED))
    ):
        broken[f"host-{h}"] = "replace_fan"
    for i in np.flatnonzero(st.inst_used & ~st.inst_up & st.host_up[st.inst_host]):
        broken[f"inst-{i}"] = "restart_instance"
    for name in list(down_since):
        if name not in broken:
            del down_since[name]
    busy = {p.target.name for p in twin.pending.values()}
    for name, kind in broken.items():
        since = down_since.setdefault(name, now_s)
        if now_s - since >= delay_s and name not in busy:
            twin.apply(Action(kind, name))


def simulate_fleet(
    spec: FleetSpec, seed: int, fleet: int = 0, progress: Callable[[float], None] | None = None
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.float64], Failures]:
    """Run one fleet; returns features (hosts, steps, 10), up (hosts, steps), times, failures."""
    twin = Twin(_config(spec), seed=seed)
    n_per_step = max(1, int(spec.step_s // spec.tick_s))
    steps = spec.n_steps
    feats = np.zeros((spec.hosts, steps, len(FEATURES)), dtype=np.float32)
    up = np.zeros((spec.hosts, steps), dtype=bool)
    times = np.zeros(steps)
    down_since: dict[str, float] = {}
    for k in range(steps):
        twin.advance(spec.step_s)
        times[k] = twin.now_s
        f, u = _host_features(twin, n_per_step)
        feats[:, k], up[:, k] = f, u
        throttled = f[:, FEATURES.index("throttle")] < 0.999
        _maintain(twin, twin.now_s, down_since, throttled, spec.repair_delay_s)
        if progress is not None:
            progress(spec.step_s)
    return feats, up, times, _failures(twin, fleet, times, feats, up)


def _failures(
    twin: Twin,
    fleet: int,
    times: npt.NDArray[np.float64],
    feats: npt.NDArray[np.float32],
    up: npt.NDArray[np.bool_],
) -> Failures:
    records = twin.events(0)
    faults = {r.fault_id: r for r in records if isinstance(r, FaultRecord)}
    ends: dict[int, float] = {}
    cleared = {r.fault_id: r.t_s for r in records if isinstance(r, FaultCleared)}
    for r in records:
        if (
            isinstance(r, StateChange)
            and r.fault_id is not None
            and r.fault_id in faults
            and r.state in ("down", "disk_failed")
        ):
            ends.setdefault(r.fault_id, r.t_s)
    rows: list[tuple[int, float, float, str, bool, float]] = []
    throttle = feats[:, :, FEATURES.index("throttle")]
    for fid, rec in faults.items():
        if rec.kind not in WARNING_KINDS + SILENT_KINDS:
            continue
        prefix, _, ident = rec.target.rpartition("-")
        host = int(twin.state.inst_host[int(ident)]) if prefix == "inst" else int(ident)
        if rec.kind == "fan_failure":
            bad = np.flatnonzero((times > rec.t_s) & ((throttle[host] < 0.999) | ~up[host]))
            t_fail = float(times[bad[0]]) if bad.size else np.inf
            stall_s = rec.t_s + rec.detail.get("hours_to_stall", np.inf) * 3600.0
            t_fail = min(t_fail, ends.get(fid, np.inf), stall_s)
            if t_fail > times[-1]:
                continue
        elif rec.kind in ("memory_leak", "disk_degradation"):
            t_fail = ends.get(fid, np.inf)
        else:
            t_fail = rec.t_s
        if np.isfinite(t_fail):
            warn = rec.kind in WARNING_KINDS and bool(rec.warning_signs)
            repaired = max(cleared.get(fid, np.inf), float(t_fail))
            rows.append((host, float(t_fail), float(rec.t_s), rec.kind, warn, repaired))
    rows.sort(key=lambda r: (r[1], r[0]))
    return Failures(
        fleet=np.full(len(rows), fleet, dtype=np.int64),
        host=np.array([r[0] for r in rows], dtype=np.int64),
        t_s=np.array([r[1] for r in rows], dtype=np.float64),
        onset_s=np.array([r[2] for r in rows], dtype=np.float64),
        kind=np.array([r[3] for r in rows], dtype=np.str_),
        warning=np.array([r[4] for r in rows], dtype=bool),
        repaired_s=np.array([r[5] for r in rows], dtype=np.float64),
    )


def build_dataset(
    spec: FleetSpec, seeds: tuple[int, ...], progress: Callable[[float], None] | None = None
) -> FailureDataset:
    """Run one fleet per seed (each seed its own twin) and stack them."""
    if not seeds:
        raise FailureDataError("at least one fleet seed is needed")
    parts = [simulate_fleet(spec, s, fleet=i, progress=progress) for i, s in enumerate(seeds)]
    fails = [p[3] for p in parts]
    return FailureDataset(
        features=np.stack([p[0] for p in parts]),
        up=np.stack([p[1] for p in parts]),
        times_s=parts[0][2],
        failures=Failures(
            fleet=np.concatenate([f.fleet for f in fails]),
            host=np.concatenate([f.host for f in fails]),
            t_s=np.concatenate([f.t_s for f in fails]),
            onset_s=np.concatenate([f.onset_s for f in fails]),
            kind=np.concatenate([f.kind for f in fails]),
            warning=np.concatenate([f.warning for f in fails]),
            repaired_s=np.concatenate([f.repaired_s for f in fails]),
        ),
        spec=spec,
        seeds=tuple(seeds),
    )


def save(ds: FailureDataset, folder: Path) -> None:
    """Write ``failure_data.npz`` and ``failure_data.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    f = ds.failures
    np.savez_compressed(
        folder / "failure_data.npz",
        features=ds.features,
        up=ds.up,
        times_s=ds.times_s,
        fail_fleet=f.fleet,
        fail_host=f.host,
        fail_t_s=f.t_s,
        fail_onset_s=f.onset_s,
        fail_kind=f.kind,
        fail_warning=f.warning,
        fail_repaired_s=f.repaired_s,
    )
    meta = {
        "format": "novacron-failure-data/2",
        "features": list(FEATURES),
        "spec": dataclasses.asdict(ds.spec),
        "seeds": list(ds.seeds),
        "shape": list(ds.features.shape),
        "failures": int(f.t_s.size),
        "failures_with_warning": int(f.warning.sum()),
    }
    (folder / "failure_data.json").write_text(json.dumps(meta, indent=2) + "\n")


def load(folder: Path) -> FailureDataset:
    """Read a data set written by :func:`save`, checking its format and shapes."""
    meta_path, npz_path = folder / "failure_data.json", folder / "failure_data.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        raise FailureDataError(f"{folder}: failure_data.json and failure_data.npz expected")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != "novacron-failure-data/2":
        raise FailureDataError(f"{meta_path}: unknown format {meta.get('format')!r}")
    if meta.get("features") != list(FEATURES):
        raise FailureDataError(f"{meta_path}: feature list differs from this version's")
    with np.load(npz_path) as z:
        ds = FailureDataset(
            features=z["features"],
            up=z["up"],
            times_s=z["times_s"],
            failures=Failures(
                fleet=z["fail_fleet"],
                host=z["fail_host"],
                t_s=z["fail_t_s"],
                onset_s=z["fail_onset_s"],
                kind=z["fail_kind"],
                warning=z["fail_warning"],
                repaired_s=z["fail_repaired_s"],
            ),
            spec=FleetSpec(**meta["spec"]),
            seeds=tuple(meta["seeds"]),
        )
    if list(ds.features.shape) != meta["shape"]:
        raise FailureDataError(f"{npz_path}: shape {ds.features.shape} != {meta['shape']}")
    return ds


@dataclass(frozen=True, slots=True)
class Windows:
    """Window index and labels.

    Window ``i`` is ``features[fleet[i], host[i], end[i] - L + 1 : end[i] + 1]``.

    ``label`` is 1 when the host fails within the horizon after the window's end;
    ``warning`` tells whether that next failure gives warning signs; ``time_to_failure_s`` is
    the time to the host's next failure (inf when none is recorded) and ``next_failure`` its
    row in ``failures`` (-1 when none). ``horizon_in_data`` tells whether the whole horizon
    after the window's end lies within the data set: a window in the data's last horizon is
    kept only when a failure follows it (its label is known), so that stretch holds
    positives alone, and a figure that counts negatives must leave it out
    (:func:`agents.failure_eval.split_windows` does, for validation and test).
    """

    fleet: npt.NDArray[np.int64]
    host: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    label: npt.NDArray[np.bool_]
    warning: npt.NDArray[np.bool_]
    time_to_failure_s: npt.NDArray[np.float64]
    next_failure: npt.NDArray[np.int64]
    horizon_in_data: npt.NDArray[np.bool_]


def make_windows(ds: FailureDataset, seq_len: int, horizon_s: float) -> Windows:
    """Every window of ``seq_len`` steps ending while its host is up and not failed, labelled.

    Windows ending between a failure and its repair are left out: the host is broken then,
    there is nothing left to predict. So are windows that end less than ``horizon_s`` before
    the data set does with no failure recorded after them: whether the host failed within the
    horizon is not in the data (right-censored), so they have no label. Those in that last
    stretch with a failure after them are kept, for training, and marked
    (``horizon_in_data`` False): among them there are no negatives to rank them against.
    """
    if seq_len < 1 or seq_len > ds.times_s.size:
        raise FailureDataError(f"seq_len must be in [1, {ds.times_s.size}], got {seq_len}")
    if horizon_s <= 0:
        raise FailureDataError(f"horizon_s must be > 0, got {horizon_s}")
    n_fleets, n_hosts, n_steps, _ = ds.features.shape
    fl, ho, en, lab, warn, ttf, nf, seen = [], [], [], [], [], [], [], []
    f = ds.failures
    t_last = float(ds.times_s[-1])
    for a in range(n_fleets):
        for h in range(n_hosts):
            sel = (f.fleet == a) & (f.host == h)
            t_fail = f.t_s[sel]
            w_fail = f.warning[sel]
            ends = np.arange(seq_len - 1, n_steps)
            ends = ends[ds.up[a, h, ends]]
            t_end = ds.times_s[ends]
            broken = np.zeros(ends.size, dtype=bool)
            for t0, t1 in zip(t_fail, f.repaired_s[sel], strict=True):
                broken |= (t_end >= t0) & (t_end < t1)
            ends, t_end = ends[~broken], t_end[~broken]
            nxt = np.searchsorted(t_fail, t_end, side="right")
            has = nxt < t_fail.size
            dt = np.full(ends.size, np.inf)
            dt[has] = t_fail[nxt[has]] - t_end[has]
            w = np.zeros(ends.size, dtype=bool)
            w[has] = w_fail[nxt[has]]
            row = np.full(ends.size, -1, dtype=np.int64)
            row[has] = np.flatnonzero(sel)[nxt[has]]
            in_data = t_end + horizon_s <= t_last
            known = (dt <= horizon_s) | in_data
            ends, t_end, dt, w, row = ends[known], t_end[known], dt[known], w[known], row[known]
            fl.append(np.full(ends.size, a))
            ho.append(np.full(ends.size, h))
            en.append(ends)
            lab.append(dt <= horizon_s)
            warn.append(w)
            ttf.append(dt)
            nf.append(row)
            seen.append(in_data[known])
    return Windows(
        fleet=np.concatenate(fl).astype(np.int64),
        host=np.concatenate(ho).astype(np.int64),
        end=np.concatenate(en).astype(np.int64),
        label=np.concatenate(lab),
        warning=np.concatenate(warn),
        time_to_failure_s=np.concatenate(ttf),
        next_failure=np.concatenate(nf).astype(np.int64),
        horizon_in_data=np.concatenate(seen),
    )


def gather(
    ds: FailureDataset, w: Windows, idx: npt.NDArray[np.int64], seq_len: int
) -> npt.NDArray[np.float32]:
    """The feature windows ``(len(idx), seq_len, features)`` of the selected windows."""
    offsets = np.arange(-seq_len + 1, 1)
    steps = w.end[idx][:, None] + offsets[None, :]
    return ds.features[w.fleet[idx][:, None], w.host[idx][:, None], steps]
