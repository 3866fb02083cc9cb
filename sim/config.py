"""Validated configuration of the twin: inventory, application, workload, faults, run.

Every section is a frozen, slotted dataclass that validates itself on construction and raises
:class:`sim.errors.ConfigError` naming the offending field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.errors import ConfigError
from sim.workload import WorkloadParams

GIB = 1024**3


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{owner}.{name} must be a positive number, got {value!r}")


def _non_negative(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{owner}.{name} must be a non-negative number, got {value!r}")


def _fraction(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{owner}.{name} must lie in [0, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One server model: capacity, power and thermal parameters.

    Power defaults are a two-socket 2U server of the SPECpower era (idle ~35% of peak). The
    default power model is linear: on the published SPECpower_ssj2008 curve the project tests
    against it is within 2.1% at all 11 load levels, while Fan et al.'s curve with r = 1.4
    misses by 5.6% (``power_model="fan"`` selects it). Thermal defaults give a steady rise of
    about 36 K at full load and a time constant R*C of about 27 minutes.
    """

    cores: int = 32
    mem_bytes: int = 256 * GIB
    disk_iops: float = 8000.0
    disk_service_s: float = 1.0e-4
    disk_endurance_writes: float = 2.0e11
    nic_bps: float = 25.0e9
    idle_w: float = 160.0
    busy_w: float = 450.0
    power_model: str = "linear"
    fan_exponent: float = 1.4
    thermal_r_k_per_w: float = 0.08
    thermal_c_j_per_k: float = 20000.0
    throttle_c: float = 80.0
    shutdown_c: float = 95.0
    throttle_min_factor: float = 0.5
    fan_rpm: float = 12000.0

    def __post_init__(self) -> None:
        _positive(
            "host",
            cores=self.cores,
            mem_bytes=self.mem_bytes,
            disk_iops=self.disk_iops,
            disk_service_s=self.disk_service_s,
            disk_endurance_writes=self.disk_endurance_writes,
            nic_bps=self.nic_bps,
            busy_w=self.busy_w,
            thermal_r_k_per_w=self.thermal_r_k_per_w,
            thermal_c_j_per_k=self.thermal_c_j_per_k,
            fan_exponent=self.fan_exponent,
            fan_rpm=self.fan_rpm,
        )
        _non_negative("host", idle_w=self.idle_w)
        _fraction("host", throttle_min_factor=self.throttle_min_factor)
        if self.idle_w >= self.busy_w:
            raise ConfigError(
                f"host.idle_w ({self.idle_w}) must be below host.busy_w ({self.busy_w})"
            )
        if self.power_model not in ("fan", "linear"):
            raise ConfigError(
                f"host.power_model must be 'fan' or 'linear', got {self.power_model!r}"
            )
        if self.throttle_c >= self.shutdown_c:
            raise ConfigError(
                f"host.throttle_c ({self.throttle_c}) must be below host.shutdown_c "
                f"({self.shutdown_c})"
            )


@dataclass(frozen=True, slots=True)
class TopologySpec:
    """Racks, switches and links of a two-tier leaf-spine fabric."""

    hosts: int = 100
    hosts_per_rack: int = 20
    spines: int = 2
    uplink_bps: float = 100.0e9
    hop_latency_s: float = 5.0e-5
    packet_bits: float = 12000.0
    inlet_temp_c: float = 22.0
    inlet_spread_c: float = 3.0
    background_util: float = 0.15
    host: HostSpec = field(default_factory=HostSpec)

    def __post_init__(self) -> None:
        if not isinstance(self.hosts, int) or self.hosts <= 0:
            raise ConfigError(f"topology.hosts must be a positive integer, got {self.hosts!r}")
        if not isinstance(self.hosts_per_rack, int) or self.hosts_per_rack <= 0:
            raise ConfigError(
                f"topology.hosts_per_rack must be a positive integer, got {self.hosts_per_rack!r}"
            )
        if not isinstance(self.spines, int) or self.spines <= 0:
            raise ConfigError(f"topology.spines must be a positive integer, got {self.spines!r}")
        _positive(
            "topology",
            uplink_bps=self.uplink_bps,
            hop_latency_s=self.hop_latency_s,
            packet_bits=self.packet_bits,
        )
        _non_negative("topology", inlet_spread_c=self.inlet_spread_c)
        _fraction("topology", background_util=self.background_util)

    @property
    def racks(self) -> int:
        """Number of racks (the last one may be partly filled)."""
        return -(-self.hosts // self.hosts_per_rack)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One microservice: its per-request cost and the shape of its instances.

    ``workers`` is each instance's vCPUs, and the number of servers c of its M/M/c queue
    unless ``max_servers`` (> 0) caps that below them: an instance whose worker threads are
    held through its downstream calls, or whose requests wait for a connection of a small
    pool, serves fewer requests at once than it has vCPUs (``sim.architecture`` derives
    the cap from thread and pool sizes); 0 is no cap. ``replicas`` of 0 sizes the service
    automatically for ``AppSpec.target_peak_util``.
    """

    name: str
    cpu_s_per_req: float
    workers: int = 4
    mem_base_bytes: int = 2 * GIB
    mem_limit_bytes: int = 8 * GIB
    mem_per_req_bytes: int = 4 * 1024**2
    disk_iops_per_req: float = 0.05
    write_share: float = 0.3
    bytes_per_req: float = 20_000.0
    timeout_s: float = 2.0
    replicas: int = 0
    min_replicas: int = 2
    max_servers: int = 0

    def __post_init__(self) -> None:
        owner = f"service[{self.name!r}]"
        if not self.name or not self.name.isidentifier():
            raise ConfigError(f"service name must be a non-empty identifier, got {self.name!r}")
        _positive(
            owner,
            cpu_s_per_req=self.cpu_s_per_req,
            mem_limit_bytes=self.mem_limit_bytes,
            bytes_per_req=self.bytes_per_req,
            timeout_s=self.timeout_s,
        )
        _non_negative(
            owner,
            mem_base_bytes=self.mem_base_bytes,
            mem_per_req_bytes=self.mem_per_req_bytes,
            disk_iops_per_req=self.disk_iops_per_req,
        )
        _fraction(owner, write_share=self.write_share)
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 64:
            raise ConfigError(
                f"{owner}.workers must be an integer in [1, 64], got {self.workers!r}"
            )
        if not isinstance(self.replicas, int) or self.replicas < 0:
            raise ConfigError(
                f"{owner}.replicas must be a non-negative integer, got {self.replicas!r}"
            )
        if not isinstance(self.max_servers, int) or self.max_servers < 0:
            raise ConfigError(
                f"{owner}.max_servers must be a non-negative integer (0: no cap), "
                f"got {self.max_servers!r}"
            )
        if not isinstance(self.min_replicas, int) or self.min_replicas < 1:
            raise ConfigError(f"{owner}.min_replicas must be >= 1, got {self.min_replicas!r}")
        if self.mem_base_bytes >= self.mem_limit_bytes:
            raise ConfigError(f"{owner}.mem_base_bytes must be below mem_limit_bytes")


@dataclass(frozen=True, slots=True)
class RequestClass:
    """A kind of user request: the services it calls in sequence and its latency SLO."""

    name: str
    share: float
    path: tuple[str, ...]
    slo_latency_s: float

    def __post_init__(self) -> None:
        owner = f"request_class[{self.name!r}]"
        _positive(owner, share=self.share, slo_latency_s=self.slo_latency_s)
        if not self.path:
            raise ConfigError(f"{owner}.path must name at least one service")


def _default_services() -> tuple[ServiceSpec, ...]:
    return (
        ServiceSpec("gateway", cpu_s_per_req=0.004, workers=4, mem_limit_bytes=4 * GIB,
                    mem_base_bytes=1 * GIB),
        ServiceSpec("frontend", cpu_s_per_req=0.030, workers=4),
        ServiceSpec("api", cpu_s_per_req=0.045, workers=8, mem_limit_bytes=16 * GIB),
        ServiceSpec("auth", cpu_s_per_req=0.020, workers=4),
        ServiceSpec("cache", cpu_s_per_req=0.002, workers=4, mem_limit_bytes=32 * GIB,
                    mem_base_bytes=8 * GIB, disk_iops_per_req=0.0),
        ServiceSpec("database", cpu_s_per_req=0.040, workers=8, mem_limit_bytes=64 * GIB,
                    mem_base_bytes=16 * GIB, disk_iops_per_req=2.0, write_share=0.3),
    )


def _default_classes() -> tuple[RequestClass, ...]:
    return (
        RequestClass("browse", 0.55, ("gateway", "frontend", "api", "cache"), 0.5),
        RequestClass("search", 0.20, ("gateway", "frontend", "api", "database"), 0.8),
        RequestClass("login", 0.10, ("gateway", "auth", "database"), 0.6),
        RequestClass("checkout", 0.15, ("gateway", "frontend", "api", "auth", "database"), 1.2),
    )


@dataclass(frozen=True, slots=True)
class AppSpec:
    """The application: services, request classes (paths through the call graph), sizing."""

    services: tuple[ServiceSpec, ...] = field(default_factory=_default_services)
    classes: tuple[RequestClass, ...] = field(default_factory=_default_classes)
    target_peak_util: float = 0.6

    def __post_init__(self) -> None:
        if not self.services:
            raise ConfigError("app.services must define at least one service")
        names = [s.name for s in self.services]
        if len(set(names)) != len(names):
            raise ConfigError(f"app.services has duplicate names: {names}")
        if not self.classes:
            raise ConfigError("app.classes must define at least one request class")
        for rc in self.classes:
            unknown = [p for p in rc.path if p not in names]
            if unknown:
                raise ConfigError(
                    f"request_class[{rc.name!r}].path names unknown services {unknown}; "
                    f"known: {names}"
                )
        total = sum(rc.share for rc in self.classes)
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(f"app.classes shares must sum to 1, got {total:.6f}")
        if not 0.05 <= self.target_peak_util < 1.0:
            raise ConfigError(
                f"app.target_peak_util must lie in [0.05, 1), got {self.target_peak_util!r}"
            )

    def service_index(self, name: str) -> int:
        """Index of a service by name."""
        for i, s in enumerate(self.services):
            if s.name == name:
                return i
        raise ConfigError(f"unknown service {name!r}; known: {[s.name for s in self.services]}")


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """Liveness / readiness probes: interval, timeout, and consecutive results to flip state.

    Defaults follow HAProxy's health checks (``fall 3``, ``rise 2``).
    """

    interval_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 2

    def __post_init__(self) -> None:
        _positive("probes", interval_s=self.interval_s, timeout_s=self.timeout_s)
        for name in ("failure_threshold", "success_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"probes.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Poisson arrival rates, per simulated day per 100 hosts, by fault kind.

    Host hardware failures are not here: they follow Weibull lifetimes set by
    ``annual_failure_rate`` and ``weibull_shape``.
    """

    rates_per_day_per_100_hosts: tuple[tuple[str, float], ...] = ()
    annual_failure_rate: float = 0.0
    weibull_shape: float = 1.0
    hardware_lifetimes: bool = False
    surge_warning_share: float = 0.5
    warning_scale: float = 1.0
    """Multiplies how long the faults that warn take to fail (leak, disk, fan, surge ramp)."""

    def __post_init__(self) -> None:
        from sim.faults import FaultKind

        _fraction("faults", surge_warning_share=self.surge_warning_share)
        _positive("faults", warning_scale=self.warning_scale)

        known = {k.value for k in FaultKind}
        for kind, rate in self.rates_per_day_per_100_hosts:
            if kind not in known:
                raise ConfigError(f"faults: unknown fault kind {kind!r}; known: {sorted(known)}")
            _non_negative(f"faults.rate[{kind}]", rate=rate)
        if not 0.0 <= self.annual_failure_rate < 1.0:
            raise ConfigError(
                f"faults.annual_failure_rate must lie in [0, 1), got {self.annual_failure_rate!r}"
            )
        _positive("faults", weibull_shape=self.weibull_shape)


def canary_count(share: float, replicas: int) -> int:
    """Replicas a deploy reaches first: ceil(share x replicas), at least one, never all.

    ``replicas`` itself when ``share`` is 0 or there are fewer than two replicas (no stage).
    """
    if share <= 0.0 or replicas < 2:
        return replicas
    return min(replicas - 1, max(1, math.ceil(share * replicas)))


@dataclass(frozen=True, slots=True)
class DeploySpec:
    """How a configuration deploy reaches a service's replicas.

    With ``canary_share`` 0 a deploy lands on every replica at once. Above 0 it lands first
    on that share of the replicas (at least one, never all while there are two or more),
    and the deploy system promotes it to the rest ``canary_bake_s`` later unless it was
    rolled back meanwhile: the bake is the time the control plane has to catch a bad
    configuration on the canaries alone.
    """

    canary_share: float = 0.0
    canary_bake_s: float = 600.0

    def __post_init__(self) -> None:
        _fraction("deploys", canary_share=self.canary_share)
        _positive("deploys", canary_bake_s=self.canary_bake_s)
        if self.canary_share >= 1.0:
            raise ConfigError(
                "deploys.canary_share must be below 1 (a canary on every replica is no "
                f"canary), got {self.canary_share!r}"
            )

    @property
    def staged(self) -> bool:
        """Whether deploys go through a canary stage."""
        return self.canary_share > 0.0


@dataclass(frozen=True, slots=True)
class ScriptedFault:
    """A fault injected at a fixed time; ``target`` of -1 lets the twin choose one."""

    at_s: float
    kind: str
    target: int = -1

    def __post_init__(self) -> None:
        from sim.faults import FaultKind

        _non_negative("scripted_fault", at_s=self.at_s)
        if self.kind not in {k.value for k in FaultKind}:
            raise ConfigError(f"scripted_fault: unknown fault kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class TwinConfig:
    """Everything needed to build a twin."""

    topology: TopologySpec = field(default_factory=TopologySpec)
    app: AppSpec = field(default_factory=AppSpec)
    workload: WorkloadParams = field(default_factory=WorkloadParams)
    probes: ProbeSpec = field(default_factory=ProbeSpec)
    faults: FaultRates = field(default_factory=FaultRates)
    deploys: DeploySpec = field(default_factory=DeploySpec)
    scripted: tuple[ScriptedFault, ...] = ()
    tick_s: float = 10.0
    telemetry_interval_s: float = 10.0
    telemetry_buffer: int = 360
    slo_window_s: float = 60.0

    def __post_init__(self) -> None:
        _positive(
            "twin",
            tick_s=self.tick_s,
            telemetry_interval_s=self.telemetry_interval_s,
            slo_window_s=self.slo_window_s,
        )
        if not isinstance(self.telemetry_buffer, int) or self.telemetry_buffer < 1:
            raise ConfigError(
                f"twin.telemetry_buffer must be a positive integer, got {self.telemetry_buffer!r}"
            )
        if self.telemetry_interval_s < self.tick_s:
            raise ConfigError(
                f"twin.telemetry_interval_s ({self.telemetry_interval_s}) must be at least "
                f"twin.tick_s ({self.tick_s})"
            )
