"""Per-request discrete-event mode of the serving path: the reference fast mode is checked against.

Fast mode treats every service instance as a flow-level M/M/c queue
(:mod:`sim.physics.serving`). This module simulates the same serving path one request at a
time with SimPy: each request is one process that walks its class's path, queues at the
chosen instance's :class:`simpy.Resource` (``capacity`` = the service's workers, FIFO) and
holds a worker for an exponential service time. It is far slower than fast mode and exists
to validate it, in tests and benchmarks; the twin never runs it in its training loop.

Random numbers are drawn in vectorised blocks (per 1-second arrival slot) from the one
:class:`numpy.random.Generator` handed in, so the same seed gives the same statistics and
the per-request work is only the SimPy events themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import simpy
from simpy.core import EmptySchedule

from sim.errors import ConfigError
from sim.state import mmc_servers
from sim.topology import Topology

__all__ = ["PerRequestServing", "ServingStats", "StationStats", "simulate_mmc"]

_SLOT_S = 1.0
"""Length of the slots over which the external arrival rate is held constant, s."""


@dataclass(frozen=True, slots=True)
class StationStats:
    """Measured statistics of one simulated M/M/c station, over the requests after warm-up.

    Attributes:
        mean_wait_s: mean time in queue before service starts, s.
        mean_response_s: mean time from arrival to departure, s.
        p99_response_s: 99th percentile of the response time, s.
        requests: requests measured.
        utilisation: realised offered load per server: service time demanded by the
            measured requests over ``servers`` times their arrival span.
    """

    mean_wait_s: float
    mean_response_s: float
    p99_response_s: float
    requests: int
    utilisation: float


@dataclass(frozen=True, slots=True, eq=False)
class ServingStats:
    """Measured statistics of the serving path, over requests that arrived after warm-up.

    Compared by identity: the array fields make field-wise ``==`` ambiguous.

    Attributes:
        requests: measured requests completed (every measured request completes).
        class_requests: measured requests completed, by request class name.
        class_latency_s: mean end-to-end latency by request class name (hops included), s;
            NaN for a class with no measured request.
        service_response_s: mean response time (queue + service) of one visit, by service
            name, s; NaN for a service with no measured visit.
        instance_response_s: mean response time of one visit, by instance, s; NaN where an
            instance had no measured visit.
        instance_arrival_rps: measured visits per second of the measurement window, by
            instance.
        sim_seconds: simulated time when the last request finished, s.
        events: SimPy events processed.
    """

    requests: int
    class_requests: dict[str, int]
    class_latency_s: dict[str, float]
    service_response_s: dict[str, float]
    instance_response_s: np.ndarray
    instance_arrival_rps: np.ndarray
    sim_seconds: float
    events: int


def _run_counting(env: simpy.Environment) -> int:
    """Run ``env`` until its schedule is empty, as ``env.run()`` does, and count the events."""
    step = env.step
    events = 0
    try:
        while True:
            step()
            events += 1
    except EmptySchedule:
        return events


def simulate_mmc(
    arrival_rps: float,
    service_rate_rps: float,
    servers: int,
    n_requests: int,
    rng: np.random.Generator,
    warmup_requests: int = 5_000,
) -> StationStats:
    """Simulate one M/M/c FCFS station request by request with SimPy.

    Poisson arrivals at ``arrival_rps`` join a :class:`simpy.Resource` with ``servers``
    workers; each is served for an exponential time of mean ``1 / service_rate_rps``. The
    station starts empty; the first ``warmup_requests`` arrivals are simulated but not
    measured, and the next ``n_requests`` are. Stable only for
    ``arrival_rps < servers * service_rate_rps``. All inter-arrival gaps are drawn first,
    then all service times, each as one ``rng.exponential`` block, so a run can be replayed
    exactly from the same draws.

    Args:
        arrival_rps: arrival rate ``lambda``, requests/s, > 0.
        service_rate_rps: service rate of one worker ``mu``, requests/s, > 0.
        servers: number of workers ``c``, >= 1.
        n_requests: requests to measure, >= 1.
        rng: generator for inter-arrival and service times.
        warmup_requests: requests simulated before measuring, >= 0.

    Returns:
        Statistics of the measured requests.

    Raises:
        ValueError: a rate, count or server number is out of range.
    """
    if not (math.isfinite(arrival_rps) and arrival_rps > 0):
        raise ValueError(f"arrival_rps must be a positive finite number, got {arrival_rps!r}")
    if not (math.isfinite(service_rate_rps) and service_rate_rps > 0):
        raise ValueError(
            f"service_rate_rps must be a positive finite number, got {service_rate_rps!r}"
        )
    if int(servers) != servers or servers < 1:
        raise ValueError(f"servers must be an integer >= 1, got {servers!r}")
    if int(n_requests) != n_requests or n_requests < 1:
        raise ValueError(f"n_requests must be an integer >= 1, got {n_requests!r}")
    if int(warmup_requests) != warmup_requests or warmup_requests < 0:
        raise ValueError(f"warmup_requests must be an integer >= 0, got {warmup_requests!r}")

    total = int(warmup_requests) + int(n_requests)
    gaps_s = rng.exponential(1.0 / arrival_rps, total).tolist()
    work = rng.exponential(1.0 / service_rate_rps, total)
    work_s = work.tolist()
    arrived_s = [0.0] * total
    started_s = [0.0] * total
    done_s = [0.0] * total

    env = simpy.Environment()
    station = simpy.Resource(env, capacity=int(servers))
    timeout = env.timeout

    def serve(i: int) -> Generator[simpy.Event, None, None]:
        arrived_s[i] = env.now
        req = station.request()
        yield req
        started_s[i] = env.now
        yield timeout(work_s[i])
        station.release(req)
        done_s[i] = env.now

    def arrive() -> Generator[simpy.Event, None, None]:
        for i, gap_s in enumerate(gaps_s):
            yield timeout(gap_s)
            env.process(serve(i))

    env.process(arrive())
    env.run()

    first = int(warmup_requests)
    arrived = np.asarray(arrived_s[first:])
    wait = np.asarray(started_s[first:]) - arrived
    response = np.asarray(done_s[first:]) - arrived
    span_s = arrived[-1] - arrived[0]
    utilisation = float(work[first:].sum() / (servers * span_s)) if span_s > 0 else math.nan
    return StationStats(
        mean_wait_s=float(wait.mean()),
        mean_response_s=float(response.mean()),
        p99_response_s=float(np.percentile(response, 99.0)),
        requests=int(n_requests),
        utilisation=utilisation,
    )


class PerRequestServing:
    """Per-request simulation of the whole serving path of a :class:`Topology`.

    Every service instance (``topology.initial_service``) is an M/M/c station: a FIFO
    :class:`simpy.Resource` with the service's ``workers`` (capped at its ``max_servers``),
    whose service time is exponential with mean ``svc_cpu_s / slowdown[instance]``. An
    arriving request draws its class by share and calls the services of its path in order;
    at each call it pays ``hop_latency_s`` of network delay, picks one of the service's
    instances uniformly at random (the load balancer), queues, and is served.

    Args:
        topology: static inventory; instance placement from ``initial_service``.
        rng: generator for arrivals, classes, load-balancing picks and service times.
        hop_latency_s: network delay added to each service call, s, >= 0.
        slowdown: per-instance speed factor (1 = nominal, 0.5 = twice as slow), > 0; all
            ones when omitted.
        class_paths: ordered service names of each request class's path, by class name
            (e.g. ``{rc.name: rc.path for rc in config.app.classes}``); when omitted, each
            order is rebuilt from ``path_matrix`` and ``call_edges``, which must then be
            unambiguous.

    Raises:
        ConfigError: ``hop_latency_s``, ``slowdown`` or ``class_paths`` is invalid, a path
            cannot be rebuilt from the topology, or a service on a path has no instance.
    """

    __slots__ = (
        "_class_len",
        "_class_paths",
        "_cum_share",
        "_hop_latency_s",
        "_inst_mean_s",
        "_inst_service",
        "_inst_table",
        "_replicas",
        "_rng",
        "_topology",
        "_workers",
    )

    def __init__(
        self,
        topology: Topology,
        rng: np.random.Generator,
        *,
        hop_latency_s: float = 0.0,
        slowdown: np.ndarray | None = None,
        class_paths: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not (math.isfinite(hop_latency_s) and hop_latency_s >= 0):
            raise ConfigError(
                f"hop_latency_s must be a non-negative finite number, got {hop_latency_s!r}"
            )
        inst_service = np.asarray(topology.initial_service, dtype=np.int64)
        n_inst = inst_service.size
        if slowdown is None:
            speed = np.ones(n_inst)
        else:
            speed = np.asarray(slowdown, dtype=np.float64)
            if speed.shape != (n_inst,):
                raise ConfigError(
                    f"slowdown must have one entry per instance, shape ({n_inst},), "
                    f"got {speed.shape}"
                )
            if not (np.all(np.isfinite(speed)) and np.all(speed > 0)):
                raise ConfigError("slowdown must be positive and finite for every instance")

        n_svc = topology.n_services
        replicas = np.bincount(inst_service, minlength=n_svc)
        table = np.zeros((n_svc, max(1, int(replicas.max(initial=0)))), dtype=np.int64)
        for s in range(n_svc):
            members = np.flatnonzero(inst_service == s)
            table[s, : members.size] = members

        path = np.asarray(topology.path_matrix)
        index = {svc: s for s, svc in enumerate(topology.service_names)}
        class_paths_list: list[list[int]] = []
        for k, name in enumerate(topology.class_names):
            if class_paths is None:
                seq = _class_path(topology, k)
            elif name not in class_paths:
                raise ConfigError(f"class_paths has no path for request class {name!r}")
            else:
                unknown = [svc for svc in class_paths[name] if svc not in index]
                if unknown:
                    raise ConfigError(f"class_paths[{name!r}] names unknown services {unknown}")
                seq = [index[svc] for svc in class_paths[name]]
            visits = np.bincount(np.asarray(seq, dtype=np.int64), minlength=n_svc)
            if not seq or not np.array_equal(visits, path[k]):
                raise ConfigError(
                    f"request class {name!r}: path {[topology.service_names[s] for s in seq]} "
                    "does not match the topology's path_matrix"
                )
            missing = [topology.service_names[s] for s in seq if replicas[s] == 0]
            if missing:
                raise ConfigError(
                    f"request class {name!r} calls services with no instance: {missing}"
                )
            class_paths_list.append(seq)
        longest = max(len(p) for p in class_paths_list)
        path_table = np.zeros((len(class_paths_list), longest), dtype=np.int64)
        for k, seq in enumerate(class_paths_list):
            path_table[k, : len(seq)] = seq

        share = np.asarray(topology.class_share, dtype=np.float64)
        cum_share = np.cumsum(share) / share.sum()
        cum_share[-1] = 1.0

        self._topology = topology
        self._rng = rng
        self._hop_latency_s = float(hop_latency_s)
        self._inst_service = inst_service
        self._inst_mean_s = np.asarray(topology.svc_cpu_s, dtype=np.float64)[inst_service] / speed
        self._workers = mmc_servers(topology.svc_workers, topology.svc_max_servers)[inst_service]
        self._replicas = replicas
        self._inst_table = table
        self._class_paths = path_table
        self._class_len = np.array([len(p) for p in class_paths_list], dtype=np.int64)
        self._cum_share = cum_share

    def run(
        self,
        rate_rps: Callable[[float, float], float] | float,
        duration_s: float,
        warmup_s: float = 0.0,
    ) -> ServingStats:
        """Simulate external arrivals over ``[0, duration_s)`` and every request to completion.

        The external rate is held constant over each 1-second slot ``[t, t + dt)`` at
        ``rate_rps(t, dt)`` (or at ``rate_rps`` itself when it is a number); arrivals within a
        slot are Poisson (a Poisson count, uniformly spread). Requests that arrive before
        ``warmup_s`` load the stations but are not measured. Each call continues this
        object's random stream, so two runs of one object differ.

        Args:
            rate_rps: external arrival rate, requests/s, as ``rate(t_s, dt_s)`` averaged over
                ``[t_s, t_s + dt_s)`` (e.g. :meth:`sim.workload.Workload.rate_rps`) or a
                constant.
            duration_s: length of the arrival period, s, > 0.
            warmup_s: start of the measurement window, s, in ``[0, duration_s)``.

        Returns:
            Statistics of the requests that arrived in ``[warmup_s, duration_s)``.

        Raises:
            ValueError: ``duration_s`` or ``warmup_s`` is out of range, or the rate is
                negative or not finite.
        """
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration_s must be a positive finite number, got {duration_s!r}")
        if not (math.isfinite(warmup_s) and 0 <= warmup_s < duration_s):
            raise ValueError(
                f"warmup_s must lie in [0, duration_s={duration_s!r}), got {warmup_s!r}"
            )
        rate_of: Callable[[float, float], float]
        if callable(rate_rps):
            rate_of = rate_rps
        else:
            constant_rps = float(rate_rps)
            rate_of = lambda _t_s, _dt_s: constant_rps  # noqa: E731

        topo = self._topology
        rng = self._rng
        n_inst = self._inst_service.size
        n_cls = self._class_len.size
        hop_s = self._hop_latency_s
        inst_mean_s = self._inst_mean_s
        inst_table = self._inst_table
        replicas = self._replicas
        path_table = self._class_paths
        class_len = self._class_len.tolist()
        cum_share = self._cum_share

        env = simpy.Environment()
        timeout = env.timeout
        process = env.process
        stations = [simpy.Resource(env, capacity=int(c)) for c in self._workers]
        resp_sum_s = [0.0] * n_inst
        visits = [0] * n_inst
        lat_sum_s = [0.0] * n_cls
        done = [0] * n_cls

        def serve(
            k: int, insts: list[int], work_s: list[float], measured: bool
        ) -> Generator[simpy.Event, None, None]:
            t0_s = env.now
            for inst, w_s in zip(insts, work_s, strict=True):
                if hop_s:
                    yield timeout(hop_s)
                t_in_s = env.now
                station = stations[inst]
                req = station.request()
                yield req
                yield timeout(w_s)
                station.release(req)
                if measured:
                    resp_sum_s[inst] += env.now - t_in_s
                    visits[inst] += 1
            if measured:
                lat_sum_s[k] += env.now - t0_s
                done[k] += 1

        def arrive() -> Generator[simpy.Event, None, None]:
            n_slots = math.ceil(duration_s / _SLOT_S)
            for slot in range(n_slots):
                t_s = slot * _SLOT_S
                dt_s = min(_SLOT_S, duration_s - t_s)
                lam = float(rate_of(t_s, dt_s))
                if not (math.isfinite(lam) and lam >= 0):
                    raise ValueError(f"rate_rps at t={t_s} s must be finite and >= 0, got {lam}")
                n = int(rng.poisson(lam * dt_s))
                if n == 0:
                    continue
                times_s = (t_s + dt_s * np.sort(rng.random(n))).tolist()
                cls = np.minimum(np.searchsorted(cum_share, rng.random(n), side="right"), n_cls - 1)
                svc = path_table[cls]
                pick = (rng.random(svc.shape) * replicas[svc]).astype(np.int64)
                inst = inst_table[svc, pick]
                work = rng.standard_exponential(svc.shape) * inst_mean_s[inst]
                inst_rows = inst.tolist()
                work_rows = work.tolist()
                for j, k in enumerate(cls.tolist()):
                    at_s = times_s[j]
                    yield timeout(max(0.0, at_s - env.now))
                    length = class_len[k]
                    process(
                        serve(k, inst_rows[j][:length], work_rows[j][:length], at_s >= warmup_s)
                    )

        process(arrive())
        events = _run_counting(env)

        window_s = duration_s - warmup_s
        resp = np.asarray(resp_sum_s)
        count = np.asarray(visits, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            inst_response_s = np.where(count > 0, resp / np.where(count > 0, count, 1.0), np.nan)
        svc_resp = np.bincount(self._inst_service, weights=resp, minlength=topo.n_services)
        svc_count = np.bincount(self._inst_service, weights=count, minlength=topo.n_services)
        service_response_s = {
            name: float(svc_resp[s] / svc_count[s]) if svc_count[s] > 0 else math.nan
            for s, name in enumerate(topo.service_names)
        }
        class_latency_s = {
            name: lat_sum_s[k] / done[k] if done[k] else math.nan
            for k, name in enumerate(topo.class_names)
        }
        return ServingStats(
            requests=int(sum(done)),
            class_requests={name: done[k] for k, name in enumerate(topo.class_names)},
            class_latency_s=class_latency_s,
            service_response_s=service_response_s,
            instance_response_s=inst_response_s,
            instance_arrival_rps=count / window_s,
            sim_seconds=float(env.now),
            events=events,
        )


def _class_path(topology: Topology, k: int) -> list[int]:
    """Service indices of request class ``k``'s path, in call order, rebuilt from the topology.

    :class:`Topology` keeps each path as a row of visit counts (``path_matrix``) plus the
    call edges of all classes together, so the order is the sequence of the class's services
    (with multiplicity) in which every consecutive pair is a call edge. It is found by a
    depth-first search over those sequences (paths are a handful of services long).

    Raises:
        ConfigError: no sequence, or more than one, fits; pass ``class_paths`` then.
    """
    name = topology.class_names[k]
    index = {svc: s for s, svc in enumerate(topology.service_names)}
    succ: dict[int, set[int]] = {}
    for a, b in topology.call_edges:
        succ.setdefault(index[a], set()).add(index[b])
    counts = [round(float(x)) for x in np.asarray(topology.path_matrix)[k]]
    length = sum(counts)
    found: list[list[int]] = []

    def extend(seq: list[int]) -> None:
        if len(found) > 1:
            return
        if len(seq) == length:
            found.append(list(seq))
            return
        options = range(len(counts)) if not seq else sorted(succ.get(seq[-1], ()))
        for s in options:
            if counts[s] > 0:
                counts[s] -= 1
                seq.append(s)
                extend(seq)
                seq.pop()
                counts[s] += 1

    extend([])
    if len(found) != 1:
        why = "no ordering" if not found else "more than one ordering"
        raise ConfigError(
            f"request class {name!r}: {why} of its services fits the topology's call edges; "
            "pass class_paths to PerRequestServing"
        )
    return found[0]
