"""Plant-agnostic observation encoding and action decoding for healing policies.

Everything here reads only a :class:`sim.telemetry.Observation` (what the twin and every live
plant return from ``observe()``) and a :class:`Layout` built from one, so a policy trained on
the twin runs unchanged on a live plant. No Gymnasium, no twin internals: numpy, and the
compiled loops of :mod:`envs.kernels` for the encoder's arithmetic.

Observation vector (float32, raw units, clipped to the bounds in :data:`Layout.bounds`):
``SERVICE_FEATURES`` for each service in layout order, then ``CLUSTER_FEATURES``. Policies
scale it to [0, 1] with those bounds themselves (the DQN does so inside its network).

Action table: index 0 is the no-op; then for each service the ``SERVICE_ACTIONS`` in order;
then ``CLUSTER_ACTIONS``. An entry names an action kind and a *selector*: the rule that turns
the observation into a concrete target (``svc-api``, the worst instance of a service, the
hottest host, ...), so the table stays small however large the cluster is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from envs import kernels as _kernels
from sim.actions import Action
from sim.telemetry import HOST_FEATURES, INSTANCE_FEATURES, Observation

SLO_LATENCY_S = 2.0
"""Upper bound of the latency features: the client timeout of the default services."""

SERVICE_FEATURES: tuple[tuple[str, str, float, float], ...] = (
    ("ready_share", "fraction", 0.0, 1.0),
    ("live_share", "fraction", 0.0, 1.0),
    ("vm_up_share", "fraction", 0.0, 1.0),
    ("replicas_ratio", "replicas / initial replicas", 0.0, 4.0),
    ("cpu_util_mean", "fraction", 0.0, 1.0),
    ("cpu_util_max", "fraction", 0.0, 1.0),
    ("mem_util_mean", "fraction of limit", 0.0, 1.5),
    ("mem_util_max", "fraction of limit", 0.0, 1.5),
    ("latency_s", "s, request-weighted mean", 0.0, SLO_LATENCY_S),
    ("error_rate", "fraction, request-weighted", 0.0, 1.0),
    ("error_rate_max", "fraction", 0.0, 1.0),
    ("queue_log1p", "ln(1 + requests queued per instance)", 0.0, 12.0),
    ("advisory", "1 if an unpatched CVE advisory is public", 0.0, 1.0),
)
"""Per-service features: (name, unit, low, high)."""

CLUSTER_FEATURES: tuple[tuple[str, str, float, float], ...] = (
    ("host_up_share", "fraction", 0.0, 1.0),
    ("host_cpu_util_mean", "fraction", 0.0, 1.0),
    ("host_cpu_util_max", "fraction", 0.0, 1.0),
    ("host_temp_max_c", "degC", 0.0, 120.0),
    ("host_throttle_min", "capacity factor", 0.0, 1.0),
    ("fan_health_min", "fraction of nominal rpm", 0.0, 1.0),
    ("disk_latency_max_s", "s", 0.0, 0.1),
    ("disk_wear_max", "fraction of endurance", 0.0, 1.0),
    ("link_loss_max", "fraction", 0.0, 1.0),
    ("unhealthy_share", "fraction of instances on up hosts not running or not ready", 0.0, 1.0),
    ("rps_per_host", "req/s per host", 0.0, 200.0),
    ("shed_fraction", "fraction of requests rate-limited at the gateway", 0.0, 1.0),
    ("day_sin", "sin(2 pi t / 1 day)", -1.0, 1.0),
    ("day_cos", "cos(2 pi t / 1 day)", -1.0, 1.0),
)
"""Cluster-wide features: (name, unit, low, high)."""

SERVICE_ACTIONS: tuple[tuple[str, str], ...] = (
    ("restart_instance", "worst_instance"),
    ("cold_migrate", "stranded_instance"),
    ("add_memory", "fullest_instance"),
    ("scale_out", "service"),
    ("scale_in", "service"),
    ("config_rollback", "service"),
    ("rolling_patch", "service"),
    ("clear_cache", "service"),
)
"""(kind, selector) of the actions repeated for each service."""

CLUSTER_ACTIONS: tuple[tuple[str, str], ...] = (
    ("evict_noisy_neighbour", "busiest_host"),
    ("replace_fan", "hottest_host"),
    ("repair_host", "down_host"),
    ("repair_switch", "cut_off_rack"),
    ("repair_link", "lossiest_link"),
    ("shed_load", "cluster"),
    ("stop_shedding", "cluster"),
)
"""(kind, selector) of the cluster-wide actions."""

_H = {name: i for i, name in enumerate(HOST_FEATURES)}
_I = {name: i for i, name in enumerate(INSTANCE_FEATURES)}
_DAY_S = 86400.0
_NOMINAL_FAN_RPM = 12000.0


@dataclass(frozen=True, slots=True)
class ActionEntry:
    """One row of the action table: a kind, a selector and the service it is about (-1: none)."""

    kind: str
    selector: str
    service: int

    @property
    def label(self) -> str:
        """Readable name, e.g. ``restart_instance(worst_instance of api)``."""
        return (
            f"{self.kind}({self.selector})"
            if self.service < 0
            else (f"{self.kind}({self.selector} of #{self.service})")
        )


@dataclass(frozen=True, slots=True)
class Layout:
    """Shape of the encoding for one cluster: services, sizes, initial replicas.

    Build it with :func:`layout_from` from a plant's first observation; it is what an exported
    policy's metadata stores, and a plant whose service set differs is refused.
    """

    service_names: tuple[str, ...]
    n_hosts: int
    initial_replicas: tuple[int, ...]
    actions: tuple[ActionEntry, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the observation vector's entries, in order."""
        per = [f"{s}.{f[0]}" for s in self.service_names for f in SERVICE_FEATURES]
        return (*per, *(f[0] for f in CLUSTER_FEATURES))

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound of every feature (float32)."""
        return _bounds(len(self.service_names))

    @property
    def obs_dim(self) -> int:
        """Length of the observation vector."""
        return len(self.service_names) * len(SERVICE_FEATURES) + len(CLUSTER_FEATURES)

    @property
    def n_actions(self) -> int:
        """Size of the discrete action space (the no-op included)."""
        return len(self.actions)

    def action_labels(self) -> tuple[str, ...]:
        """Readable name of every action index."""
        out = []
        for a in self.actions:
            if a.service >= 0:
                out.append(f"{a.kind}({a.selector} of svc-{self.service_names[a.service]})")
            else:
                out.append(f"{a.kind}({a.selector})")
        return tuple(out)

    def to_dict(self) -> dict[str, object]:
        """Plain-data form (for export metadata)."""
        return {
            "service_names": list(self.service_names),
            "n_hosts": self.n_hosts,
            "initial_replicas": list(self.initial_replicas),
            "actions": [[a.kind, a.selector, a.service] for a in self.actions],
            "feature_names": list(self.feature_names),
            "low": [float(x) for x in self.bounds[0]],
            "high": [float(x) for x in self.bounds[1]],
        }

    @staticmethod
    def from_dict(data: dict[str, object]) -> Layout:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field is missing or malformed.
        """
        try:
            names = tuple(str(s) for s in data["service_names"])  # type: ignore[attr-defined]
            n_hosts = int(data["n_hosts"])  # type: ignore[call-overload]
            reps = tuple(int(r) for r in data["initial_replicas"])  # type: ignore[attr-defined]
            actions = tuple(
                ActionEntry(str(k), str(s), int(v))
                for k, s, v in data["actions"]  # type: ignore[attr-defined]
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed layout: {err!r}") from None
        layout = Layout(names, n_hosts, reps, actions)
        if layout.actions != action_table(len(names)):
            raise ValueError("layout's action table does not match this version's action table")
        return layout


def action_table(n_services: int) -> tuple[ActionEntry, ...]:
    """The action table for ``n_services`` services (index 0 is the no-op)."""
    rows = [ActionEntry("noop", "cluster", -1)]
    rows += [ActionEntry(k, sel, s) for s in range(n_services) for k, sel in SERVICE_ACTIONS]
    rows += [ActionEntry(k, sel, -1) for k, sel in CLUSTER_ACTIONS]
    return tuple(rows)


def layout_from(obs: Observation) -> Layout:
    """The layout of the plant that produced ``obs`` (its first observation, normally)."""
    n_s = len(obs.service_names)
    reps = np.bincount(obs.inst_service[obs.inst_used], minlength=n_s)
    return Layout(
        tuple(obs.service_names),
        int(obs.host.shape[0]),
        tuple(int(max(r, 1)) for r in reps),
        action_table(n_s),
    )


def check_compatible(obs: Observation, layout: Layout) -> None:
    """Refuse an observation from a plant whose services differ from the layout's.

    Raises:
        ValueError: the service names differ, or the metric vectors have other widths.
    """
    if tuple(obs.service_names) != layout.service_names:
        raise ValueError(
            f"observation has services {list(obs.service_names)}, the layout "
            f"{list(layout.service_names)}"
        )
    if obs.host.shape[1:] != (len(HOST_FEATURES),) or obs.inst.shape[1:] != (
        len(INSTANCE_FEATURES),
    ):
        raise ValueError(
            f"observation metric widths {obs.host.shape[1:]} / {obs.inst.shape[1:]} differ from "
            f"({len(HOST_FEATURES)},) / ({len(INSTANCE_FEATURES)},)"
        )


@functools.lru_cache(maxsize=16)
def _bounds(n_services: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [*SERVICE_FEATURES * n_services, *CLUSTER_FEATURES]
    low = np.array([r[2] for r in rows], dtype=np.float32)
    high = np.array([r[3] for r in rows], dtype=np.float32)
    low.flags.writeable = False
    high.flags.writeable = False
    return low, high


@functools.lru_cache(maxsize=16)
def _per_layout(n_services: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only arrays that depend on the number of services alone.

    The action indices aimed at an instance of each service (services, 3), and
    :func:`_bounds` as one (2, features) float32 array.
    """
    rows = (1 + np.arange(n_services) * len(SERVICE_ACTIONS))[:, None] + np.arange(3)
    both = np.stack(_bounds(n_services))
    for a in (rows, both):
        a.flags.writeable = False
    return rows, both


# Column groups of the per-service aggregates: means (in the order of the service features
# they fill), request-weighted means and maxima; and where each lands in a service's row.
_SUM_COLS = np.array([_I["ready"], _I["up"], _I["vm_up"], _I["cpu_util"], _I["mem_util"],
                      _I["queue_len"]])
_SUM_TO = np.array([0, 1, 2, 4, 6, 11])
_MAX_COLS = np.array([_I["cpu_util"], _I["mem_util"], _I["error_rate"]])
_MAX_TO = np.array([5, 7, 10])
_MAXI_MEM, _MAXI_ERR = 1, 2  # columns of the per-service maxima (_MAX_COLS)
_W_COLS = np.array([_I["latency_s"], _I["error_rate"]])
_W_TO = np.array([8, 9])
_HMAX_COLS = np.array([_H["cpu_util"], _H["temp_c"], _H["disk_latency_s"], _H["disk_wear"],
                       _H["link_loss"]])
_HMAX_TO = np.array([2, 3, 6, 7, 8])
_HMIN_COLS = np.array([_H["throttle"], _H["fan_rpm"]])
_HMIN_TO = np.array([4, 5])
_HMIN_SCALE = np.array([1.0, _NOMINAL_FAN_RPM], dtype=np.float32)
_HMAX_LINK = 4
_H_UP, _H_CPU = _H["up"], _H["cpu_util"]
_I_UP, _I_READY, _I_VM_UP, _I_RPS = _I["up"], _I["ready"], _I["vm_up"], _I["rps"]
_I_ERR, _I_MEM = _I["error_rate"], _I["mem_util"]


def _kernel_plan() -> np.ndarray:
    """The column and position plan of :mod:`envs.kernels` (read-only int64)."""
    k = _kernels
    sf = {f[0]: i for i, f in enumerate(SERVICE_FEATURES)}
    cf = {f[0]: i for i, f in enumerate(CLUSTER_FEATURES)}
    plan = np.zeros(k.PLAN_SIZE, dtype=np.int64)
    for at, values, end in (
        (k.P_SUM_COLS, _SUM_COLS, k.P_SUM_TO), (k.P_SUM_TO, _SUM_TO, k.P_W_COLS),
        (k.P_W_COLS, _W_COLS, k.P_W_TO), (k.P_W_TO, _W_TO, k.P_MAX_COLS),
        (k.P_MAX_COLS, _MAX_COLS, k.P_MAX_TO), (k.P_MAX_TO, _MAX_TO, k.P_HMAX_COLS),
        (k.P_HMAX_COLS, _HMAX_COLS, k.P_HMAX_TO), (k.P_HMAX_TO, _HMAX_TO, k.P_HMIN_COLS),
        (k.P_HMIN_COLS, _HMIN_COLS, k.P_HMIN_TO), (k.P_HMIN_TO, _HMIN_TO, k.P_I_RPS),
    ):
        if len(values) != end - at:  # the kernels' loops are sized by the plan's groups
            raise RuntimeError(f"plan group at {at} has {len(values)} columns, not {end - at}")
        plan[at:end] = values
    for at, value in (
        (k.P_I_RPS, _I_RPS), (k.P_I_UP, _I_UP), (k.P_I_READY, _I_READY),
        (k.P_I_VM_UP, _I_VM_UP), (k.P_I_ERR, _I_ERR), (k.P_I_MEM, _I_MEM), (k.P_H_UP, _H_UP),
        (k.P_H_CPU, _H_CPU), (k.P_HMAX_LINK, _HMAX_LINK), (k.P_MAXI_MEM, _MAXI_MEM),
        (k.P_MAXI_ERR, _MAXI_ERR), (k.P_RATIO_TO, sf["replicas_ratio"]),
        (k.P_ADVISORY_TO, sf["advisory"]), (k.P_C_UP, cf["host_up_share"]),
        (k.P_C_CPU, cf["host_cpu_util_mean"]), (k.P_C_DARK, cf["unhealthy_share"]),
        (k.P_C_RPS, cf["rps_per_host"]), (k.P_C_SHED, cf["shed_fraction"]),
        (k.P_C_SIN, cf["day_sin"]), (k.P_C_COS, cf["day_cos"]),
        (k.P_N_PER, len(SERVICE_FEATURES)), (k.P_N_CLUSTER, len(CLUSTER_FEATURES)),
        (k.P_N_ACTIONS, len(SERVICE_ACTIONS)),
    ):
        plan[at] = value
    plan.flags.writeable = False
    return plan


_PLAN = _kernel_plan()
_F32 = np.dtype(np.float32)
_I64 = np.dtype(np.int64)
_BOOL = np.dtype(bool)


class EncodeCache:
    """What :func:`encode_and_mask` derives from placement alone, kept between calls.

    Placement (which slots are used, by which service, on which host) changes only when an
    action or a fault moves instances, so one plant's consecutive observations share it. A
    cache serves one stream of observations of one layout (an env keeps its own), one call at
    a time (it holds the kernels' scratch arrays); it compares the placement arrays byte for
    byte and rebuilds on any difference, so it never changes a result, only the time taken.
    """

    __slots__ = ("compiled", "count", "f32", "i64", "idx", "instance_rows", "inv", "key",
                 "layout", "log1p_out", "m", "mask", "n_feat", "n_used", "no_advisory", "order",
                 "present", "queue", "ratio", "segs", "shapes", "slots", "sorted_host",
                 "sorted_rows", "span", "starts", "sum_operand", "sums", "w", "w_operand",
                 "weighted")

    def __init__(self) -> None:
        self.key: tuple[bytes, bytes, bytes] | None = None
        self.layout: Layout | None = None
        self.shapes: tuple[object, ...] | None = None
        self.compiled = False
        self.slots: np.ndarray | None = None

    def refresh(self, obs: Observation, layout: Layout) -> None:
        """Rebuild for ``obs``'s placement if it differs from the cached one."""
        key = (obs.inst_used.tobytes(), obs.inst_service.tobytes(), obs.inst_host.tobytes())
        if key == self.key and layout is self.layout:
            return
        n_s = len(layout.service_names)
        used, service, hosts = obs.inst_used, obs.inst_service, obs.inst_host
        initial = np.asarray(layout.initial_replicas, dtype=np.float32)
        self.instance_rows, bounds = _per_layout(n_s)
        self.no_advisory = np.zeros(n_s, dtype=np.float32)  # writeable, as a per-call array
        self.n_feat = bounds.shape[1]
        self.slots = None  # stays None where the kernels are not used (see prepare)
        if (
            n_s > 0 and used.dtype == _BOOL and service.dtype == _I64 and hosts.dtype == _I64
            and used.ndim == service.ndim == hosts.ndim == 1
            and used.shape == service.shape == hosts.shape and initial.shape == (n_s,)
            and layout.n_actions == 1 + n_s * len(SERVICE_ACTIONS) + len(CLUSTER_ACTIONS)
        ):
            self._placement_kernel(used, service, hosts, initial, layout.n_actions, bounds)
        if self.slots is None:  # the numpy form, for placements the kernel does not take
            idx = np.flatnonzero(used)
            member = service[idx][None, :] == np.arange(n_s)[:, None]
            m = member.astype(np.float32)
            count = m.sum(axis=1)
            self.idx = idx
            # Used slots grouped by service (stable), for maxima, counts and any-tests over
            # segments, none of which depends on the order of its terms.
            svc = service[idx]
            self.order = np.argsort(svc, kind="stable")
            self.sorted_rows = idx[self.order]
            self.sorted_host = hosts[self.sorted_rows]
            self.present = np.flatnonzero(count > 0)
            self.starts = np.searchsorted(svc[self.order], self.present)
            self.m = m
            self.count = count
            self.inv = (1.0 / np.maximum(count, 1.0))[:, None]
            self.ratio = count / initial
            # The mask as far as placement fixes it: scale-in only above two replicas,
            # nothing aimed at an instance of a service without any (the rest is filled in
            # per call).
            mask = np.ones(layout.n_actions, dtype=bool)
            first = 1 + np.arange(n_s) * len(SERVICE_ACTIONS)
            mask[first + 4] = count > 2
            mask[self.instance_rows] = False
            self.mask = mask
        idx = self.idx
        self.n_used = idx.size
        # The used slots as one run of rows (the usual placement), or None.
        contiguous = idx.size and int(idx[-1]) - int(idx[0]) + 1 == idx.size
        self.span = slice(int(idx[0]), int(idx[-1]) + 1) if contiguous else None
        self.shapes = None  # which metric tables the kernels take depends on the placement
        self.layout = layout
        self.key = key

    def _placement_kernel(
        self,
        used: np.ndarray,
        service: np.ndarray,
        hosts: np.ndarray,
        initial: np.ndarray,
        n_actions: int,
        bounds: np.ndarray,
    ) -> None:
        """:meth:`refresh` by :func:`envs.kernels.placement`, with views of its workspaces."""
        k = _kernels
        self.f32, self.i64, self.idx, self.order, self.mask = k.placement(
            used, service, hosts, initial, n_actions, _PLAN, bounds, _HMIN_SCALE
        )
        if not self.f32.size:  # a used slot of no service: refresh does it in numpy
            return
        n_s, n = initial.shape[0], self.idx.size
        at_m, at_w, at_ops, _, at_svc, _, _, _ = k.workspace_layout(n_s, n, self.n_feat)
        self.m = self.f32[at_m : at_m + n_s * n].reshape(n_s, n)
        self.w = self.f32[at_w : at_w + n_s * n].reshape(n_s, n)
        operands = self.f32[at_ops : at_ops + 8 * n].reshape(8, n)
        # The matrix products' right-hand operands, with the numpy form's shapes and strides.
        self.sum_operand, self.w_operand = operands[:6].T, operands[6:].T
        per_service = self.f32[at_svc : at_svc + k.S_ROWS * n_s].reshape(k.S_ROWS, n_s)
        self.count = per_service[k.S_COUNT]
        self.inv = per_service[k.S_INV, :, None]
        self.ratio = per_service[k.S_RATIO]
        self.queue = per_service[k.S_QUEUE]
        self.slots = self.i64[k.W_SLOTS : k.W_SLOTS + 3 * n].reshape(3, n)
        at_runs = k.W_SLOTS + 3 * n
        self.segs = self.i64[at_runs : at_runs + 3 * int(self.i64[k.W_N_RUNS])].reshape(-1, 3)
        self.sorted_rows, self.sorted_host = self.slots[1], self.slots[2]
        self.present, self.starts = self.segs[:, 0], self.segs[:, 1]
        # The matrix products' results (as numpy's, C-ordered); log1p writes a column.
        self.sums = np.empty((n_s, 6), dtype=np.float32)
        self.log1p_out = self.sums[:, 5]
        self.weighted = np.empty((n_s, 2), dtype=np.float32)

    def prepare(self, obs: Observation, layout: Layout) -> bool:
        """:meth:`refresh` for ``obs``; then whether the kernels take it (else numpy runs).

        They take the metric tables the twin and the live plants produce: float32 ndarrays of
        the telemetry widths, a boolean liveness vector, and placement arrays (boolean, int64)
        whose used slots index them (an observation outside that gets the numpy form's
        result, or its error).
        """
        self.refresh(obs, layout)
        inst, host, live = obs.inst, obs.host, obs.inst_live
        shapes = (inst.dtype, inst.shape, host.dtype, host.shape, live.dtype, live.shape,
                  type(inst), type(host), type(live))
        if shapes != self.shapes:
            self.shapes = shapes
            rows = self.slots[1] if self.slots is not None else None
            placed = self.slots[2] if self.slots is not None else None
            self.compiled = bool(
                rows is not None and placed is not None
                and type(inst) is np.ndarray and type(host) is np.ndarray
                and type(live) is np.ndarray and inst.dtype == _F32 and host.dtype == _F32
                and live.dtype == _BOOL and inst.ndim == 2
                and inst.shape[1] == len(INSTANCE_FEATURES) and host.ndim == 2
                and host.shape[1] == len(HOST_FEATURES) and host.shape[0] > 0 and live.ndim == 1
                and (rows.size == 0 or (
                    int(rows.max()) < min(inst.shape[0], live.shape[0])
                    and int(placed.min()) >= 0 and int(placed.max()) < host.shape[0]
                ))
            )
        return self.compiled


def encode(
    obs: Observation, layout: Layout, advisories: Collection[str] = (), shed_fraction: float = 0.0
) -> np.ndarray:
    """The observation vector of ``obs`` (float32, clipped to the layout's bounds).

    Args:
        obs: What the plant observes.
        layout: Encoding layout (from :func:`layout_from`).
        advisories: Names of services (``api``) with a public, unpatched CVE advisory.
        shed_fraction: Share of requests the gateway rate-limits (the controller knows what
            it asked for: ``shed_load`` adds 0.2, ``stop_shedding`` resets it).
    """
    return encode_and_mask(obs, layout, advisories, shed_fraction)[0]


def encode_and_mask(
    obs: Observation,
    layout: Layout,
    advisories: Collection[str] = (),
    shed_fraction: float = 0.0,
    cache: EncodeCache | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode` and :func:`action_mask` of one observation, sharing their aggregates.

    ``cache`` (an :class:`EncodeCache` kept by the caller for one plant) saves re-deriving
    the placement between observations; the result is the same with or without it.
    """
    c = cache if cache is not None else EncodeCache()
    if not c.prepare(obs, layout):
        return _encode_and_mask_numpy(obs, layout, advisories, shed_fraction, c)
    t_s = obs.t_s
    day = 2.0 * np.pi * (t_s if math.isfinite(t_s) else 0.0) / _DAY_S
    out = np.empty(c.n_feat, _F32)
    mask = c.mask.copy()
    tie = _kernels.aggregate(
        obs.inst, obs.host, obs.inst_live, c.f32, c.i64,
        np.array([name in advisories for name in layout.service_names], dtype=np.float32)
        if advisories else c.no_advisory,
        out, mask, float(shed_fraction), np.sin(day), np.cos(day),
        SYMPTOM_THRESHOLDS["memory"], SYMPTOM_THRESHOLDS["errors"],
    )
    # The matrix products and log1p as the numpy form computes them (the same operands, with
    # its shapes and strides); the rest in the kernels.
    np.matmul(c.m, c.sum_operand, c.sums)
    _kernels.scale_means(c.sums, c.f32, c.n_used)
    np.log1p(c.queue, c.log1p_out)
    if tie:  # a host extremum that both signed zeros reach: numpy's reduction picks one
        cluster = out[len(layout.service_names) * len(SERVICE_FEATURES) :]
        cluster[_HMAX_TO] = obs.host[:, _HMAX_COLS].max(axis=0)
        cluster[_HMIN_TO] = obs.host[:, _HMIN_COLS].min(axis=0) / _HMIN_SCALE
    _kernels.finish(out, c.sums, np.matmul(c.w, c.w_operand, c.weighted), c.f32, c.i64)
    return out, mask


def _encode_and_mask_numpy(
    obs: Observation,
    layout: Layout,
    advisories: Collection[str],
    shed_fraction: float,
    c: EncodeCache,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`encode_and_mask` in numpy: the form the kernels reproduce bit for bit.

    It runs for observations the kernels do not take (:meth:`EncodeCache.prepare`).
    """
    n_s = len(layout.service_names)
    n_per = len(SERVICE_FEATURES)
    out = np.empty(n_s * n_per + len(CLUSTER_FEATURES), dtype=np.float32)
    per = out[: n_s * n_per].reshape(n_s, n_per)
    cluster = out[n_s * n_per :]

    # Per service: means, request-weighted means and maxima over its used slots.
    if obs.inst.flags.c_contiguous:
        inst = obs.inst.take(c.idx, axis=0)
    elif c.span is not None:  # a view of a feature-major buffer: lay the rows out
        inst = np.ascontiguousarray(obs.inst[c.span])
    else:  # the same, gathering the used slots first
        inst = np.ascontiguousarray(obs.inst.T[:, c.idx].T)
    m = c.m
    sums = (m @ inst[:, _SUM_COLS]) * c.inv
    np.log1p(np.maximum(sums[:, 5], 0.0), out=sums[:, 5])
    per[:, _SUM_TO] = sums
    rps = inst[:, _I_RPS]
    w = m * rps[None, :]
    per[:, _W_TO] = (w @ inst[:, _W_COLS]) / np.maximum(w.sum(axis=1), 1e-9)[:, None]
    # Maxima over each service's segment, floored at 0 as over a zero-filled table (exact:
    # a maximum does not depend on order).
    grouped = inst.take(c.order, axis=0)
    maxes = np.zeros((n_s, len(_MAX_COLS)), dtype=np.float32)
    if c.present.size:
        seg = np.maximum.reduceat(grouped[:, _MAX_COLS], c.starts, axis=0)
        maxes[c.present] = np.maximum(seg, 0.0)
    per[:, _MAX_TO] = maxes
    per[:, 3] = c.ratio
    per[:, 12] = [name in advisories for name in layout.service_names] if advisories else 0.0

    # Cluster-wide.
    host = obs.host
    n_h = max(host.shape[0], 1)
    hmax = host[:, _HMAX_COLS].max(axis=0)
    host_up = host[:, _H_UP] > 0.5
    # Per used slot, grouped by service: only counted and any-tested below.
    up_host_inst = host_up.take(c.sorted_host)
    live = grouped[:, _I_UP] > 0.5
    dark = up_host_inst & ~(live & (grouped[:, _I_READY] > 0.5))
    day = 2.0 * np.pi * (obs.t_s if math.isfinite(obs.t_s) else 0.0) / _DAY_S
    n_up = int(np.count_nonzero(host_up))
    cluster[_HMAX_TO] = hmax
    cluster[_HMIN_TO] = host[:, _HMIN_COLS].min(axis=0) / _HMIN_SCALE
    # One scalar store each: cheaper than building a small array from mixed scalars.
    cluster[0] = n_up / n_h
    cluster[1] = host[:, _H_CPU].sum() / n_h
    cluster[9] = int(np.count_nonzero(dark)) / max(c.n_used, 1)
    cluster[10] = rps.sum() / n_h
    cluster[11] = shed_fraction
    cluster[12] = np.sin(day)
    cluster[13] = np.cos(day)
    low, high = _bounds(n_s)
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=float(high.max()), neginf=0.0)
    # np.clip for finite values (bound first, so a -0.0 comes out as np.clip gives it), at a
    # third of its call cost.
    np.minimum(high, np.maximum(low, out, out=out), out=out)

    # Action mask: an instance to restart, migrate or grow per service (any instance in the
    # service's segment with the property); then the cluster-wide entries.
    mask = c.mask.copy()
    stranded = (grouped[:, _I_VM_UP] < 0.5) | ~up_host_inst
    if c.present.size:
        # Restart targets (as _restart_worthy, on up hosts): ``dark`` holds the down and
        # unready ones; erroring or full ones can exist only where a service's maximum (over
        # all its slots, a superset) reaches the threshold, so a healthy cluster skips that
        # test.
        restart = dark
        if maxes[:, _MAXI_MEM].max() >= SYMPTOM_THRESHOLDS["memory"] or (
            maxes[:, _MAXI_ERR].max() >= SYMPTOM_THRESHOLDS["errors"]
        ):
            restart = dark | (up_host_inst & _erroring_or_full(grouped))
        flags = np.array([restart, stranded, live]).T
        mask[c.instance_rows[c.present]] = np.logical_or.reduceat(flags, c.starts, axis=0)
    row = 1 + n_s * len(SERVICE_ACTIONS)
    mask[row] = mask[row + 1] = n_up > 0
    mask[row + 2] = n_up < host.shape[0]
    mask[row + 3] = (up_host_inst & live & ~obs.inst_live.take(c.sorted_rows)).any()
    mask[row + 4] = hmax[_HMAX_LINK] > 0
    mask[row + 5] = shed_fraction < 0.6 - 1e-9
    mask[row + 6] = shed_fraction > 0.0
    return out, mask


def _erroring_or_full(inst: np.ndarray) -> np.ndarray:
    """Rows of an instance table that are erroring or full.

    Erroring: error rate above ``errors``; full: memory above ``memory`` of its limit (a leak).
    """
    return (inst[:, _I_ERR] > SYMPTOM_THRESHOLDS["errors"]) | (
        inst[:, _I_MEM] > SYMPTOM_THRESHOLDS["memory"]
    )


def _restart_worthy(inst: np.ndarray) -> np.ndarray:
    """Rows of an instance table that a restart may help.

    Down, not ready, or :func:`_erroring_or_full`.
    """
    return ~((inst[:, _I_UP] > 0.5) & (inst[:, _I_READY] > 0.5)) | _erroring_or_full(inst)


def _worst_instance(obs: Observation, service: int) -> int:
    """The instance of ``service`` most in need of a restart; -1 if none.

    Among its instances on up hosts that a restart may help (:func:`_restart_worthy`; a
    healthy replica is never a target): down first, then not ready, then the highest memory
    use.
    """
    cand = obs.inst_used & (obs.inst_service == service)
    cand &= obs.host[obs.inst_host, _H["up"]] > 0.5
    cand &= _restart_worthy(obs.inst)
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return -1
    inst = obs.inst[idx]
    score = (
        2.0 * (inst[:, _I["up"]] < 0.5)
        + 1.0 * (inst[:, _I["ready"]] < 0.5)
        + np.minimum(inst[:, _I["mem_util"]], 0.99)
    )
    return int(idx[np.argmax(score)])


def _stranded_instance(obs: Observation, service: int) -> int:
    """An instance of ``service`` whose VM or host is down; -1 if none."""
    cand = obs.inst_used & (obs.inst_service == service)
    cand &= (obs.inst[:, _I["vm_up"]] < 0.5) | (obs.host[obs.inst_host, _H["up"]] < 0.5)
    idx = np.flatnonzero(cand)
    return int(idx[0]) if idx.size else -1


def _fullest_instance(obs: Observation, service: int) -> int:
    """The running instance of ``service`` with the highest memory use; -1 if none."""
    cand = obs.inst_used & (obs.inst_service == service) & (obs.inst[:, _I["up"]] > 0.5)
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return -1
    return int(idx[np.argmax(obs.inst[idx, _I["mem_util"]])])


def _host_by(obs: Observation, column: str) -> int:
    up = obs.host[:, _H["up"]] > 0.5
    if not up.any():
        return -1
    values = np.where(up, obs.host[:, _H[column]], -np.inf)
    return int(np.argmax(values))


def _cut_off_rack(obs: Observation) -> int:
    """The rack with the most instances that are not live although their host is up."""
    up_host = obs.host[obs.inst_host, _H["up"]] > 0.5
    dark = obs.inst_used & up_host & (obs.inst[:, _I["up"]] > 0.5) & ~obs.inst_live
    if not dark.any():
        return -1
    counts = np.bincount(obs.host_rack[obs.inst_host[dark]])
    return int(np.argmax(counts))


def decode(index: int, layout: Layout, obs: Observation | None = None) -> Action | None:
    """The action at ``index`` of the layout's table, aimed with ``obs``; None is the no-op.

    Entries whose target depends on the observation (an instance or a host) need ``obs``.
    An entry whose selector finds no target (no host is down for ``repair_host``) is None.

    Raises:
        IndexError: ``index`` is not an integer in ``[0, layout.n_actions)``.
        ValueError: the entry needs ``obs`` and none was given.
    """
    if isinstance(index, bool) or not isinstance(index, int | np.integer):
        raise IndexError(f"action index must be an integer, got {index!r}")
    if not 0 <= int(index) < layout.n_actions:
        raise IndexError(f"action index {index} is outside [0, {layout.n_actions})")
    entry = layout.actions[int(index)]
    sel = entry.selector
    if entry.kind == "noop":
        return None
    if sel == "cluster":
        return Action(entry.kind, "cluster")
    if sel == "service":
        return Action(entry.kind, f"svc-{layout.service_names[entry.service]}")
    if obs is None:
        raise ValueError(f"action {entry.label} picks its target from an observation; pass obs")
    if sel == "worst_instance":
        target = _worst_instance(obs, entry.service)
        prefix = "inst"
    elif sel == "stranded_instance":
        target, prefix = _stranded_instance(obs, entry.service), "inst"
    elif sel == "fullest_instance":
        target, prefix = _fullest_instance(obs, entry.service), "inst"
    elif sel == "busiest_host":
        target, prefix = _host_by(obs, "cpu_util"), "host"
    elif sel == "hottest_host":
        target, prefix = _host_by(obs, "temp_c"), "host"
    elif sel == "down_host":
        down = np.flatnonzero(obs.host[:, _H["up"]] < 0.5)
        target, prefix = (int(down[0]) if down.size else -1), "host"
    elif sel == "cut_off_rack":
        target, prefix = _cut_off_rack(obs), "tor"
    elif sel == "lossiest_link":
        loss = obs.host[:, _H["link_loss"]]
        target = int(np.argmax(loss)) if loss.max(initial=0.0) > 0 else -1
        prefix = "link-host"
    else:
        raise ValueError(f"unknown selector {sel!r}")
    return None if target < 0 else Action(entry.kind, f"{prefix}-{target}")


def action_mask(obs: Observation, layout: Layout, shed_fraction: float = 0.0) -> np.ndarray:
    """Which actions have a target now (bool, one per index), from ``obs`` alone.

    An entry is masked out when its selector finds no target (no down host for
    ``repair_host``, no cut-off rack for ``repair_switch``, no replica of the service that a
    restart may help for ``restart_instance``), when ``scale_in`` would go below
    two replicas, ``shed_load`` at the 60% maximum, or ``stop_shedding`` while
    ``shed_fraction`` is 0. Whether an unmasked action is
    admissible now is for the safety gate and the plant, which refuse it with a reason. The
    no-op is always allowed.
    """
    return encode_and_mask(obs, layout, (), shed_fraction)[1]


SYMPTOM_THRESHOLDS: dict[str, float] = {
    "short": 0.999,
    "memory": 0.5,
    "errors": 0.02,
    "cpu": 0.6,
    "latency_s": 0.5,
    "queue": 3.0,
    "host_cpu": 0.8,
    "fan": 0.9,
    "sensor_temp_c": 1.0,
}
"""Thresholds of :func:`symptom_rules`: a share below ``short`` is short of full; memory above
``memory`` of the limit (twice the default services' base use) suggests a leak; an error rate
above ``errors`` is abnormal; ``cpu``, ``latency_s`` and ``queue`` (``queue_log1p``) mark a
loaded service, ``host_cpu`` a loaded host; fans below ``fan`` of nominal rpm are failing;
a maximum temperature at or below ``sensor_temp_c`` means the plant reports no sensors."""

_SERVICE_SYMPTOMS: dict[
    str, tuple[tuple[tuple[str, str, str], ...], tuple[tuple[str, str, str], ...]]
] = {
    # kind: (symptoms, any of which makes it admissible; requirements, all of them needed)
    # a replica that stopped answering is restarted once its probes have failed (not ready):
    # before that the gate counts it as serving capacity and refuses to take it out
    "restart_instance": (
        (("ready_share", "<", "short"), ("error_rate_max", ">", "errors")),
        (),
    ),
    "cold_migrate": ((("vm_up_share", "<", "short"), ("@host_up_share", "<", "short")), ()),
    "add_memory": ((("mem_util_max", ">", "memory"),), ()),
    "scale_out": (
        (
            ("cpu_util_mean", ">", "cpu"),
            ("latency_s", ">", "latency_s"),
            ("queue_log1p", ">", "queue"),
        ),
        (("replicas_ratio", "<", "@max_ratio"),),
    ),
    "scale_in": ((("replicas_ratio", ">", "@above_initial"),), ()),
    "config_rollback": ((("error_rate", ">", "errors"),), ()),
    "rolling_patch": ((("advisory", ">", "@half"),), ()),
    "clear_cache": ((("mem_util_max", ">", "memory"),), ()),
}
_SENSORS = (("host_temp_max_c", ">", "sensor_temp_c"),)
"""Requirement of the hardware actions: the plant reports host sensors (a live fleet of
processes reports none, and has no hosts, racks or links to repair)."""

_CLUSTER_SYMPTOMS: dict[
    str, tuple[tuple[tuple[str, str, str], ...], tuple[tuple[str, str, str], ...]]
] = {
    # "*name" is the per-service feature ``name`` of any service
    "evict_noisy_neighbour": ((("host_cpu_util_max", ">", "host_cpu"),), _SENSORS),
    "replace_fan": (
        (("fan_health_min", "<", "fan"), ("host_throttle_min", "<", "short")),
        _SENSORS,
    ),
    "repair_host": ((("host_up_share", "<", "short"),), _SENSORS),
    "repair_switch": ((("unhealthy_share", ">", "@zero"),), _SENSORS),
    "repair_link": ((("link_loss_max", ">", "@zero"),), _SENSORS),
    "shed_load": (
        (("*latency_s", ">", "latency_s"), ("*queue_log1p", ">", "queue")),
        (("shed_fraction", "<", "@shed_max"),),
    ),
    "stop_shedding": ((("shed_fraction", ">", "@zero"),), ()),
}
_FIXED = {
    "@max_ratio": 3.99,
    "@above_initial": 1.001,
    "@half": 0.5,
    "@zero": 0.0,
    "@shed_max": 0.599,
}


@dataclass(frozen=True, slots=True)
class SymptomRules:
    """Which actions are admissible, as conditions on the observation vector.

    Condition ``k`` is ``x[feature[k]] > threshold[k]`` where ``greater[k]``, else
    ``x[feature[k]] < threshold[k]``. Action ``a`` is admissible when every condition ``k``
    with ``requires[k, a]`` holds and, if it has any symptom (``has_symptom[a]``), at least
    one condition with ``symptom[k, a]`` holds. The no-op has neither, so it is always
    admissible. Evaluated by :func:`admissible_mask` here and by the DQN's network (so the
    exported ONNX graph applies the same mask).
    """

    feature: np.ndarray
    greater: np.ndarray
    threshold: np.ndarray
    symptom: np.ndarray
    requires: np.ndarray
    has_symptom: np.ndarray

    sign: np.ndarray = field(init=False, repr=False)
    signed_threshold: np.ndarray = field(init=False, repr=False)
    free: np.ndarray = field(init=False, repr=False)
    """Actions that need no symptom (``~has_symptom``)."""
    incidence: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] = field(
        init=False, repr=False
    )
    """``(symptom_ptr, symptom_idx, requires_ptr, requires_idx)``: the nonzeros of
    ``symptom`` and ``requires`` per action (compressed sparse rows of their transposes)."""

    def __post_init__(self) -> None:
        # Condition k holds iff x * sign[k] > signed_threshold[k]: exact, since multiplying
        # by -1 only flips the sign bit. One comparison instead of two and a select.
        sign = np.where(self.greater, 1.0, -1.0).astype(np.float32)
        object.__setattr__(self, "sign", sign)
        object.__setattr__(self, "signed_threshold", (self.threshold * sign).astype(np.float32))
        object.__setattr__(self, "free", ~np.asarray(self.has_symptom, dtype=bool))
        # Per action, the conditions that are its symptoms and its requirements (CSR).
        incidence: list[np.ndarray] = []
        for matrix in (self.symptom, self.requires):
            rows, cols = np.nonzero(np.asarray(matrix).T > 0.5)
            ptr = np.searchsorted(rows, np.arange(matrix.shape[1] + 1)).astype(np.int64)
            incidence += [ptr, cols.astype(np.int64)]
        object.__setattr__(self, "incidence", (*incidence,))


def n_services_of(obs_dim: int) -> int:
    """Number of services of an observation vector of length ``obs_dim``.

    Raises:
        ValueError: ``obs_dim`` is not ``13 * services + 14`` for some ``services >= 1``.
    """
    n_s, rest = divmod(int(obs_dim) - len(CLUSTER_FEATURES), len(SERVICE_FEATURES))
    if n_s < 1 or rest:
        raise ValueError(
            f"an observation of {obs_dim} features is not {len(SERVICE_FEATURES)} per service "
            f"plus {len(CLUSTER_FEATURES)} cluster features"
        )
    return n_s


@functools.lru_cache(maxsize=16)
def symptom_rules(n_services: int) -> SymptomRules:
    """The admissibility rules of the action table for ``n_services`` services.

    An action is admissible when the observation shows a symptom it addresses (a replica
    not ready or erroring for a restart, memory above half its limit for
    ``add_memory`` / ``clear_cache``, load for ``scale_out``, replicas above the initial
    count for ``scale_in``, a public advisory for ``rolling_patch``, a host down for
    ``repair_host``, queues or latency in some service for ``shed_load`` ...;
    :data:`SYMPTOM_THRESHOLDS`). Service actions also need the service to have instances;
    hardware actions (noisy neighbour, fan, host, switch, link) need the plant to report
    host sensors. A healthy cluster admits only the no-op.
    """
    per_n, cl = len(SERVICE_FEATURES), n_services * len(SERVICE_FEATURES)
    s_idx = {f[0]: i for i, f in enumerate(SERVICE_FEATURES)}
    c_idx = {f[0]: cl + i for i, f in enumerate(CLUSTER_FEATURES)}
    table = action_table(n_services)
    conds: dict[tuple[int, bool, float], int] = {}
    sym: list[tuple[int, int]] = []
    req: list[tuple[int, int]] = []

    def cond(feature: int, op: str, level: str) -> int:
        thr = _FIXED[level] if level.startswith("@") else SYMPTOM_THRESHOLDS[level]
        return conds.setdefault((feature, op == ">", float(thr)), len(conds))

    def where(name: str, base: int) -> int:
        """Index of a feature: ``@name`` cluster-wide, ``k:name`` of service k, else of ``base``."""
        if ":" in name:
            svc, feat = name.split(":")
            return int(svc) * per_n + s_idx[feat]
        if name.startswith("@") or base < 0:
            return c_idx[name.removeprefix("@")]
        return base + s_idx[name]

    for a, entry in enumerate(table):
        if entry.kind == "noop":
            continue
        base = entry.service * per_n if entry.service >= 0 else -1
        if entry.service >= 0:
            symptoms, requires = _SERVICE_SYMPTOMS[entry.kind]
            requires = (*requires, ("replicas_ratio", ">", "@zero"))
        else:
            symptoms, requires = _CLUSTER_SYMPTOMS[entry.kind]
            symptoms = tuple(
                (f"{s}:{f[1:]}", op, lv) if f.startswith("*") else (f, op, lv)
                for f, op, lv in symptoms
                for s in (range(n_services) if f.startswith("*") else (0,))
            )
        sym += [(cond(where(f, base), op, lv), a) for f, op, lv in symptoms]
        req += [(cond(where(f, base), op, lv), a) for f, op, lv in requires]
    keys = list(conds)
    symptom = np.zeros((len(keys), len(table)), dtype=np.float32)
    requires_m = np.zeros_like(symptom)
    for k, a in sym:
        symptom[k, a] = 1.0
    for k, a in req:
        requires_m[k, a] = 1.0
    return SymptomRules(
        feature=np.array([k[0] for k in keys], dtype=np.int64),
        greater=np.array([k[1] for k in keys], dtype=bool),
        threshold=np.array([k[2] for k in keys], dtype=np.float32),
        symptom=symptom,
        requires=requires_m,
        has_symptom=np.asarray(symptom.any(axis=0), dtype=bool),
    )


def admissible_mask(observations: np.ndarray, rules: SymptomRules) -> np.ndarray:
    """Admissible actions (bool, ``(..., actions)``) of encoded observations under ``rules``.

    Condition ``k`` holds where ``x * sign > signed_threshold``; an action is admissible when
    one of its symptoms holds (or it has none) and none of its requirements is unmet, i.e.
    ``(held @ symptom > 0.5 | ~has_symptom) & ~(~held @ requires > 0.5)``, evaluated by the
    compiled :func:`envs.kernels.admissible` (exact: the products are of 0/1 matrices).
    """
    x = np.asarray(observations, dtype=np.float32)
    batch = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
    sym_ptr, sym_idx, req_ptr, req_idx = rules.incidence
    out = _kernels.admissible(batch, rules.feature, rules.sign, rules.signed_threshold,
                              sym_ptr, sym_idx, req_ptr, req_idx, rules.free)
    return out.reshape((*x.shape[:-1], out.shape[-1]))


def describe(layout: Layout) -> str:
    """The observation and action tables as Markdown (names, units, bounds)."""
    lines = ["| feature | unit | low | high |", "|---|---|---:|---:|"]
    lines += [f"| `<service>.{n}` | {u} | {lo:g} | {hi:g} |" for n, u, lo, hi in SERVICE_FEATURES]
    lines += [f"| `{n}` | {u} | {lo:g} | {hi:g} |" for n, u, lo, hi in CLUSTER_FEATURES]
    lines += ["", "| index | action |", "|---:|---|"]
    lines += [f"| {i} | {lab} |" for i, lab in enumerate(layout.action_labels())]
    return "\n".join(lines)
