"""Offered external request load for the twin: diurnal shape, noise, bursts, surges, replay.

The workload answers one question per tick: how many requests per second arrive at the
cluster, on average over the tick ``[t_s, t_s + dt_s)``. The rate is a product of factors::

    rate = base_rps_per_host * hosts * shape(t) * noise(t) * burst(t) * surge(t)

* ``shape`` is either the diurnal curve ``1 + A cos(2 pi (t / 3600 - peak_hour) / 24)``,
  averaged exactly over the tick, or a replayed real series (``WorkloadParams.trace``),
  normalised to mean 1, looped over its span and linearly interpolated at the tick midpoint.
* ``noise`` is ``exp(x - sigma^2 / 2)`` with ``x`` an Ornstein-Uhlenbeck process of stationary
  standard deviation ``noise_sigma`` and correlation time ``noise_tau_s``, advanced with its
  exact transition over the elapsed time, so its statistics do not depend on the tick size and
  its mean is 1 (exact OU update: D. T. Gillespie, "Exact numerical simulation of the
  Ornstein-Uhlenbeck process and its integral", Phys. Rev. E 54, 2084, 1996). It is off while
  a trace is replayed, because the trace brings its own noise.
* ``burst`` is ``burst_multiplier`` while a burst is on, else 1, averaged over the tick. Bursts
  start as a Poisson process and last ``burst_duration_s``; overlapping bursts merge.
* ``surge`` is the product of the scheduled surges (:meth:`Workload.surge`), each a
  piecewise-linear ramp up, hold and optional ramp down.

Noise and bursts draw from two child streams spawned from the one generator handed in, so the
burst schedule of a seed does not depend on the tick size.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
import os
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sim.errors import ConfigError

__all__ = ["TRACE_SCALES", "Workload", "WorkloadParams", "load_rate_series"]

TRACE_SCALES = ("mean", "absolute")
"""Allowed ``WorkloadParams.trace_scale`` values."""

_SECONDS_PER_DAY = 86_400.0
_NORMAL_BLOCK = 4096
_TIME_COLUMNS = ("timestamp", "time", "datetime", "date", "time_s", "t_s")
_VALUE_COLUMN = "value"
_REAL = (int, float, np.integer, np.floating)


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, _REAL):
        raise ConfigError(f"WorkloadParams.{name} must be a number, got {value!r}")
    number = float(value)
    if math.isnan(number):
        raise ConfigError(f"WorkloadParams.{name} must not be NaN")
    return number


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    """Parameters of the offered external request load.

    Attributes:
        base_rps_per_host: Mean offered load per host, requests/s, before bursts and surges.
        diurnal_amplitude: Relative amplitude A of the daily cosine, in [0, 1].
        peak_hour: Hour of day (sim time 0 is midnight) at which the daily cosine peaks.
        noise_sigma: Stationary standard deviation of the log-rate noise.
        noise_tau_s: Correlation time of the log-rate noise, seconds.
        burst_rate_per_h: Mean number of burst onsets per hour (Poisson); 0 disables bursts.
        burst_multiplier: Rate factor while a burst is on.
        burst_duration_s: Length of one burst, seconds.
        trace: Path of a CSV to replay instead of the diurnal shape and noise, or None. See
            :func:`load_rate_series` for the layouts understood.
        trace_time_column: Time column of the trace; None picks a column named like
            ``timestamp``.
        trace_value_column: Value column of the trace; None uses ``value`` when present and
            otherwise treats each row as one request arrival.
        trace_bin_s: Bin width used to turn request arrivals into a rate, seconds.
        trace_time_scale: Simulated seconds per trace second; above 1 stretches the trace.
        trace_offset_s: Trace time, in trace seconds from its first row, played at sim time 0.
        trace_scale: ``"mean"`` rescales the series so that its mean is
            ``base_rps_per_host * hosts``; ``"absolute"`` replays its values as the
            cluster-wide rate in requests/s.
    """

    base_rps_per_host: float = 25.0
    diurnal_amplitude: float = 0.4
    peak_hour: float = 14.0
    noise_sigma: float = 0.05
    noise_tau_s: float = 300.0
    burst_rate_per_h: float = 0.5
    burst_multiplier: float = 1.3
    burst_duration_s: float = 600.0
    trace: str | None = None
    trace_time_column: str | None = None
    trace_value_column: str | None = None
    trace_bin_s: float = 60.0
    trace_time_scale: float = 1.0
    trace_offset_s: float = 0.0
    trace_scale: str = "mean"

    def __post_init__(self) -> None:
        """Reject out-of-range values with a ConfigError naming the field.

        Raises:
            ConfigError: A field is out of range or of the wrong type.
        """
        finite_min = {
            "base_rps_per_host": 0.0,
            "noise_sigma": 0.0,
            "burst_rate_per_h": 0.0,
        }
        for name, low in finite_min.items():
            value = _check_number(name, getattr(self, name))
            if not low <= value < math.inf:
                raise ConfigError(f"WorkloadParams.{name} must be finite and >= {low}, got {value}")
        for name in (
            "noise_tau_s",
            "burst_multiplier",
            "burst_duration_s",
            "trace_bin_s",
            "trace_time_scale",
        ):
            value = _check_number(name, getattr(self, name))
            if not 0.0 < value < math.inf:
                raise ConfigError(f"WorkloadParams.{name} must be finite and > 0, got {value}")
        amplitude = _check_number("diurnal_amplitude", self.diurnal_amplitude)
        if not 0.0 <= amplitude <= 1.0:
            raise ConfigError(
                f"WorkloadParams.diurnal_amplitude must be in [0, 1], got {amplitude}"
            )
        peak = _check_number("peak_hour", self.peak_hour)
        if not 0.0 <= peak < 24.0:
            raise ConfigError(f"WorkloadParams.peak_hour must be in [0, 24), got {peak}")
        offset = _check_number("trace_offset_s", self.trace_offset_s)
        if not math.isfinite(offset):
            raise ConfigError(f"WorkloadParams.trace_offset_s must be finite, got {offset}")
        if self.trace_scale not in TRACE_SCALES:
            raise ConfigError(
                f"WorkloadParams.trace_scale must be one of {TRACE_SCALES}, "
                f"got {self.trace_scale!r}"
            )
        if self.trace is not None and (not isinstance(self.trace, str) or not self.trace):
            raise ConfigError(
                f"WorkloadParams.trace must be a non-empty path string or None, "
                f"got {self.trace!r}"
            )
        for name in ("trace_time_column", "trace_value_column"):
            column = getattr(self, name)
            if column is not None and (not isinstance(column, str) or not column):
                raise ConfigError(
                    f"WorkloadParams.{name} must be a non-empty string or None, got {column!r}"
                )


class Workload:
    """Stateful generator of the offered request rate, moving forward in simulated time.

    Calls to :meth:`rate_rps` must come with non-decreasing ``t_s``; a call repeated at the
    same ``t_s`` returns the same rate. Use :meth:`fork` to branch.

    Args:
        params: Workload parameters.
        hosts: Nominal number of hosts the offered load is sized for.
        rng: Generator from which the noise and burst streams are spawned.
        start_s: Simulated time at which the workload starts.

    Raises:
        ConfigError: ``hosts`` or ``start_s`` is invalid, or the trace cannot be loaded.
    """

    __slots__ = (
        "_burst_gain",
        "_burst_rng",
        "_burst_start_s",
        "_bursts",
        "_diurnal_gain",
        "_dt_s",
        "_elapsed_s",
        "_half_var",
        "_hosts",
        "_next_arrival_s",
        "_noise",
        "_noise_decay",
        "_noise_rng",
        "_noise_scale",
        "_omega",
        "_params",
        "_phase",
        "_rate_scale_rps",
        "_surge_start_s",
        "_surges",
        "_t_s",
        "_trace_grid",
        "_trace_n",
        "_trace_offset",
        "_trace_speed",
        "_x",
        "_z",
        "_z_index",
    )

    def __init__(
        self,
        params: WorkloadParams,
        hosts: int,
        rng: np.random.Generator,
        start_s: float = 0.0,
    ) -> None:
        if isinstance(hosts, bool) or not isinstance(hosts, int | np.integer) or hosts < 1:
            raise ConfigError(f"Workload hosts must be an integer >= 1, got {hosts!r}")
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(f"Workload rng must be a numpy.random.Generator, got {rng!r}")
        if (
            isinstance(start_s, bool)
            or not isinstance(start_s, _REAL)
            or not math.isfinite(start_s)
        ):
            raise ConfigError(f"Workload start_s must be a finite number, got {start_s!r}")
        self._params = params
        self._hosts = int(hosts)
        self._rate_scale_rps = params.base_rps_per_host * self._hosts
        self._t_s = float(start_s)
        self._dt_s = math.nan
        self._diurnal_gain = 0.0
        self._omega = 2.0 * math.pi / _SECONDS_PER_DAY
        self._phase = 2.0 * math.pi * params.peak_hour / 24.0

        self._trace_grid: list[float] = []
        self._trace_n = 0
        self._trace_speed = 0.0
        self._trace_offset = 0.0
        if params.trace is not None:
            self._load_trace(params, params.trace)

        noise_rng, burst_rng = rng.spawn(2)
        self._noise_rng = noise_rng
        self._burst_rng = burst_rng
        sigma = params.noise_sigma if params.trace is None else 0.0
        self._half_var = 0.5 * sigma * sigma
        self._elapsed_s = math.nan
        self._noise_decay = 1.0
        self._noise_scale = 0.0
        self._z: list[float] = []
        self._z_index = _NORMAL_BLOCK
        self._x = sigma * float(noise_rng.standard_normal()) if sigma > 0.0 else 0.0
        self._noise = math.exp(self._x - self._half_var)

        self._burst_gain = params.burst_multiplier - 1.0
        self._bursts: deque[tuple[float, float]] = deque()
        if params.burst_rate_per_h > 0.0:
            # Onsets from one duration before the start make the burst state stationary at start_s.
            self._next_arrival_s = (
                self._t_s - params.burst_duration_s + self._draw_gap_s()
            )
        else:
            self._next_arrival_s = math.inf
        self._burst_start_s = self._next_arrival_s

        self._surges: list[tuple[float, float, float, float, float]] = []
        self._surge_start_s = math.inf

    @property
    def params(self) -> WorkloadParams:
        """The parameters this workload was built with."""
        return self._params

    @property
    def hosts(self) -> int:
        """Nominal number of hosts the offered load is sized for."""
        return self._hosts

    @property
    def t_s(self) -> float:
        """Simulated time of the latest :meth:`rate_rps` call (or the start time)."""
        return self._t_s

    def rate_rps(self, t_s: float, dt_s: float) -> float:
        """Offered external request rate averaged over the tick ``[t_s, t_s + dt_s)``.

        The diurnal factor is its exact average over the tick,
        ``1 + A cos(omega (t_s + dt_s / 2) - phi) sin(omega dt_s / 2) / (omega dt_s / 2)``;
        the noise is the OU state at ``t_s``; bursts count by the fraction of the tick they
        cover; surges by their exact piecewise-linear average.

        Args:
            t_s: Start of the tick, simulated seconds; never earlier than the previous call.
            dt_s: Length of the tick, seconds, > 0.

        Returns:
            Cluster-wide offered rate, requests/s.

        Raises:
            ValueError: ``t_s`` is earlier than the previous call or not a number, or
                ``dt_s`` is not a positive finite number.
        """
        if dt_s != self._dt_s:
            self._set_dt(dt_s)
        if not t_s >= self._t_s:
            raise ValueError(
                f"rate_rps t_s={t_s!r} is earlier than the workload's time {self._t_s!r} "
                "(its start or the previous call); a workload only moves forward, fork() it "
                "to branch"
            )
        mid_s = t_s + 0.5 * dt_s
        if self._trace_n:
            u = (mid_s * self._trace_speed + self._trace_offset) % self._trace_n
            i = int(u)
            grid = self._trace_grid
            low = grid[i]
            rate = self._rate_scale_rps * (low + (u - i) * (grid[i + 1] - low))
        else:
            elapsed = t_s - self._t_s
            if elapsed > 0.0 and self._half_var > 0.0:
                if elapsed != self._elapsed_s:
                    self._set_elapsed(elapsed)
                i = self._z_index
                if i == _NORMAL_BLOCK:
                    self._z = self._noise_rng.standard_normal(_NORMAL_BLOCK).tolist()
                    i = 0
                self._x = self._x * self._noise_decay + self._noise_scale * self._z[i]
                self._z_index = i + 1
                self._noise = math.exp(self._x - self._half_var)
            rate = (
                self._rate_scale_rps
                * self._noise
                * (1.0 + self._diurnal_gain * math.cos(self._omega * mid_s - self._phase))
            )
        self._t_s = t_s
        end_s = t_s + dt_s
        if end_s > self._burst_start_s:
            rate *= self._burst_factor(t_s, end_s)
        if end_s > self._surge_start_s:
            rate *= self._surge_factor(t_s, end_s)
        return rate

    def surge(
        self,
        multiplier: float,
        start_s: float,
        ramp_s: float,
        hold_s: float,
        *,
        ramp_down_s: float = 0.0,
    ) -> None:
        """Schedule a load surge: a linear ramp to ``multiplier``, a hold, then back to 1.

        The factor is 1 before ``start_s``, rises linearly to ``multiplier`` over ``ramp_s``,
        stays there for ``hold_s`` (``math.inf`` makes it permanent load growth), then falls
        linearly back to 1 over ``ramp_down_s``. Overlapping surges multiply.

        Args:
            multiplier: Rate factor at the top of the surge, > 0.
            start_s: Simulated time at which the ramp begins.
            ramp_s: Duration of the ramp up, seconds, >= 0.
            hold_s: Duration at ``multiplier``, seconds, >= 0, possibly ``math.inf``.
            ramp_down_s: Duration of the ramp back to 1, seconds, >= 0.

        Raises:
            ConfigError: An argument is out of range.
        """
        for name, value, low, allow_inf in (
            ("multiplier", multiplier, 0.0, False),
            ("start_s", start_s, -math.inf, False),
            ("ramp_s", ramp_s, 0.0, False),
            ("hold_s", hold_s, 0.0, True),
            ("ramp_down_s", ramp_down_s, 0.0, False),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, _REAL)
                or math.isnan(value)
                or (math.isinf(value) and not allow_inf)
                or value < low
                or (name == "multiplier" and value <= 0.0)
            ):
                bound = "> 0" if name == "multiplier" else f">= {low}"
                raise ConfigError(f"surge {name} must be a finite number {bound}, got {value!r}")
        top_s = float(start_s) + float(ramp_s)
        fall_s = top_s + float(hold_s)
        end_s = fall_s + float(ramp_down_s)
        self._surges.append((float(start_s), top_s, fall_s, end_s, float(multiplier)))
        self._surges.sort()
        self._surge_start_s = self._surges[0][0]

    def fork(self, rng: np.random.Generator) -> Workload:
        """Independent copy that continues from the current state with a new RNG stream.

        The copy keeps the OU state, the surges and the bursts already drawn; every later draw
        (noise and burst onsets) comes from streams spawned from ``rng``. Running either copy
        leaves the other unchanged.

        Args:
            rng: Generator for the copy's future randomness.

        Returns:
            The forked workload.

        Raises:
            ConfigError: ``rng`` is not a numpy Generator.
        """
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(f"fork rng must be a numpy.random.Generator, got {rng!r}")
        child = object.__new__(Workload)
        for name in Workload.__slots__:
            setattr(child, name, getattr(self, name))
        child._noise_rng, child._burst_rng = rng.spawn(2)
        child._z = []
        child._z_index = _NORMAL_BLOCK
        child._bursts = deque(self._bursts)
        child._surges = list(self._surges)
        return child

    def _set_dt(self, dt_s: float) -> None:
        if not 0.0 < dt_s < math.inf:
            raise ValueError(f"rate_rps dt_s must be a finite number > 0, got {dt_s!r}")
        half = 0.5 * self._omega * dt_s
        amplitude = self._params.diurnal_amplitude
        self._diurnal_gain = amplitude * math.sin(half) / half
        self._dt_s = dt_s

    def _set_elapsed(self, elapsed_s: float) -> None:
        decay = math.exp(-elapsed_s / self._params.noise_tau_s)
        self._noise_decay = decay
        self._noise_scale = self._params.noise_sigma * math.sqrt(1.0 - decay * decay)
        self._elapsed_s = elapsed_s

    def _draw_gap_s(self) -> float:
        return float(self._burst_rng.exponential(3600.0 / self._params.burst_rate_per_h))

    def _burst_factor(self, t_s: float, end_s: float) -> float:
        bursts = self._bursts
        while bursts and bursts[0][1] <= t_s:
            bursts.popleft()
        duration_s = self._params.burst_duration_s
        while self._next_arrival_s < end_s:
            onset_s = self._next_arrival_s
            off_s = onset_s + duration_s
            self._next_arrival_s = onset_s + self._draw_gap_s()
            while self._next_arrival_s < off_s:
                off_s = self._next_arrival_s + duration_s
                self._next_arrival_s += self._draw_gap_s()
            if off_s > t_s:
                bursts.append((onset_s, off_s))
        covered_s = 0.0
        for onset_s, off_s in bursts:
            if onset_s >= end_s:
                break
            covered_s += min(off_s, end_s) - max(onset_s, t_s)
        self._burst_start_s = bursts[0][0] if bursts else self._next_arrival_s
        return 1.0 + self._burst_gain * covered_s / (end_s - t_s)

    def _surge_factor(self, t_s: float, end_s: float) -> float:
        factor = 1.0
        kept: list[tuple[float, float, float, float, float]] = []
        for surge in self._surges:
            start_s, top_s, fall_s, stop_s, multiplier = surge
            if stop_s <= t_s:
                continue
            if fall_s == math.inf and t_s >= top_s:
                self._rate_scale_rps *= multiplier
                factor *= multiplier
                continue
            kept.append(surge)
            if start_s < end_s:
                factor *= _ramp_average(t_s, end_s, start_s, top_s, fall_s, stop_s, multiplier)
        self._surges = kept
        self._surge_start_s = kept[0][0] if kept else math.inf
        return factor

    def _load_trace(self, params: WorkloadParams, trace: str) -> None:
        try:
            times_s, rate = load_rate_series(
                trace,
                time_column=params.trace_time_column,
                value_column=params.trace_value_column,
                bin_s=params.trace_bin_s,
            )
        except ConfigError as exc:
            raise ConfigError(f"WorkloadParams.trace: {exc}") from exc
        if len(times_s) > 1:
            steps_s = np.diff(times_s)
            step_s = float(np.median(steps_s[steps_s > 0.0]))
            n = round(float(times_s[-1] - times_s[0]) / step_s) + 1
            grid = np.interp(times_s[0] + step_s * np.arange(n), times_s, rate)
        else:
            step_s, n, grid = params.trace_bin_s, 1, rate
        mean = float(grid.mean())
        if not mean > 0.0:
            raise ConfigError(f"WorkloadParams.trace: the series in {trace!r} has mean 0")
        if params.trace_scale == "mean":
            grid = grid / mean
            self._rate_scale_rps = params.base_rps_per_host * self._hosts
        else:
            self._rate_scale_rps = 1.0
        # Two wrap-around points: the last segment joins the loop back to the first sample,
        # and the second guards a modulo that rounds up to exactly n.
        self._trace_grid = [*grid.tolist(), float(grid[0]), float(grid[1 % n])]
        self._trace_n = n
        self._trace_speed = 1.0 / (params.trace_time_scale * step_s)
        self._trace_offset = params.trace_offset_s / step_s


def _ramp_average(
    a_s: float,
    b_s: float,
    start_s: float,
    top_s: float,
    fall_s: float,
    stop_s: float,
    multiplier: float,
) -> float:
    """Exact mean over ``[a_s, b_s)`` of the piecewise-linear surge factor.

    Args:
        a_s: Start of the interval.
        b_s: End of the interval, > ``a_s``.
        start_s: Ramp-up start (factor 1).
        top_s: Ramp-up end (factor ``multiplier``).
        fall_s: Ramp-down start (factor ``multiplier``).
        stop_s: Ramp-down end (factor 1).
        multiplier: Factor at the top.

    Returns:
        The average factor over the interval.
    """
    gain = multiplier - 1.0

    def level(x_s: float) -> float:
        if x_s <= start_s or x_s >= stop_s:
            return 0.0
        if x_s < top_s:
            return (x_s - start_s) / (top_s - start_s)
        if x_s <= fall_s:
            return 1.0
        return (stop_s - x_s) / (stop_s - fall_s)

    knots = [a_s, *(k for k in (start_s, top_s, fall_s, stop_s) if a_s < k < b_s), b_s]
    area = 0.0
    # The factor is linear between knots, so each piece's mean is its midpoint value; this
    # also stays right at the jumps a zero-length ramp makes.
    for left_s, right_s in itertools.pairwise(knots):
        area += level(0.5 * (left_s + right_s)) * (right_s - left_s)
    return 1.0 + gain * area / (b_s - a_s)


def load_rate_series(
    path: str | os.PathLike[str],
    *,
    time_column: str | None = None,
    value_column: str | None = None,
    bin_s: float = 60.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Read a CSV as a rate series.

    Two layouts are understood, told apart by the header:

    * a value series, e.g. NAB (``timestamp,value``): one sample per row; the value column is
      returned as it is, a rate shape in whatever unit the file has;
    * a request-arrival trace, e.g. the Azure LLM inference trace (``TIMESTAMP,...`` with no
      value column): one request per row, counted into full bins of ``bin_s`` seconds (the
      last, partial bin is dropped) and returned as requests/s.

    A value series is chosen when ``value_column`` is given or a column named ``value`` exists.
    Time columns hold ISO-8601 timestamps (naive ones are read as UTC) or numbers of seconds.
    Column names match case-insensitively.

    Args:
        path: CSV file with a header row.
        time_column: Name of the time column; None picks the first of ``timestamp``, ``time``,
            ``datetime``, ``date``, ``time_s``, ``t_s``.
        value_column: Name of the value column; None uses ``value`` when present.
        bin_s: Bin width for arrival traces, seconds.

    Returns:
        ``(times_s, rate)``: sample times in seconds from the first timestamp (bin starts for
        arrival traces), sorted, and the values at those times.

    Raises:
        ConfigError: The file is missing, empty or unreadable, a column is missing, a timestamp
            or value cannot be parsed, a value is negative or not finite, or the series spans
            no time.
    """
    if isinstance(bin_s, bool) or not 0.0 < bin_s < math.inf:
        raise ConfigError(f"bin_s must be a finite number > 0, got {bin_s!r}")
    file_path = Path(path)
    try:
        stat = file_path.stat()
    except OSError as exc:
        raise ConfigError(f"trace file {str(file_path)!r} does not exist or is unreadable") from exc
    if not file_path.is_file():
        raise ConfigError(f"trace file {str(file_path)!r} is not a regular file")
    times_s, rate = _load_rate_series_cached(
        str(file_path.resolve()),
        stat.st_mtime_ns,
        stat.st_size,
        time_column,
        value_column,
        float(bin_s),
    )
    return times_s.copy(), rate.copy()


@functools.lru_cache(maxsize=16)
def _load_rate_series_cached(
    path: str,
    mtime_ns: int,
    size: int,
    time_column: str | None,
    value_column: str | None,
    bin_s: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    del mtime_ns, size
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"trace file {path!r} cannot be read as CSV: {exc}") from exc
    rows = [row for row in rows if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ConfigError(f"trace file {path!r} is empty (no header row)")
    header = [cell.strip() for cell in rows[0]]
    data = rows[1:]
    if not data:
        raise ConfigError(f"trace file {path!r} has a header but no data rows")
    lowered = [name.lower() for name in header]

    def find(name: str, role: str) -> int:
        try:
            return lowered.index(name.lower())
        except ValueError:
            raise ConfigError(
                f"trace file {path!r} has no {role} column {name!r}; columns are {header}"
            ) from None

    if time_column is not None:
        time_index = find(time_column, "time")
    else:
        candidates = [lowered.index(name) for name in _TIME_COLUMNS if name in lowered]
        if not candidates:
            raise ConfigError(
                f"trace file {path!r} has no time column (looked for {_TIME_COLUMNS}); "
                f"columns are {header}; pass time_column"
            )
        time_index = candidates[0]
    if value_column is not None:
        value_index: int | None = find(value_column, "value")
    elif _VALUE_COLUMN in lowered:
        value_index = lowered.index(_VALUE_COLUMN)
    else:
        value_index = None

    time_cells = [_cell(path, row, n, time_index) for n, row in enumerate(data, start=2)]
    times = _parse_times(path, header[time_index], time_cells)
    if value_index is None:
        times = np.sort(times)
        offsets_s = times - times[0]
        n_bins = int(offsets_s[-1] // bin_s)
        if n_bins < 1:
            raise ConfigError(
                f"trace file {path!r} spans {offsets_s[-1]:.3f} s, less than one bin of {bin_s} s"
            )
        in_range = offsets_s[offsets_s < n_bins * bin_s]
        counts = np.bincount((in_range // bin_s).astype(np.int64), minlength=n_bins)[:n_bins]
        return bin_s * np.arange(n_bins, dtype=np.float64), counts.astype(np.float64) / bin_s

    values = np.empty(len(data), dtype=np.float64)
    column = header[value_index]
    for n, row in enumerate(data, start=2):
        cell = _cell(path, row, n, value_index)
        try:
            values[n - 2] = float(cell)
        except ValueError:
            raise ConfigError(
                f"trace file {path!r} row {n}: cannot parse {column!r} value {cell!r}"
            ) from None
        if not 0.0 <= values[n - 2] < math.inf:
            raise ConfigError(
                f"trace file {path!r} row {n}: {column!r} value {cell!r} must be finite and >= 0"
            )
    order = np.argsort(times, kind="stable")
    times = times[order]
    if not times[-1] > times[0]:
        raise ConfigError(f"trace file {path!r} spans no time: it needs two distinct timestamps")
    return times - times[0], values[order]


def _cell(path: str, row: list[str], line: int, index: int) -> str:
    if index >= len(row):
        raise ConfigError(
            f"trace file {path!r} row {line} has {len(row)} fields, column {index + 1} is missing"
        )
    return row[index].strip()


def _parse_times(path: str, column: str, cells: list[str]) -> npt.NDArray[np.float64]:
    out = np.empty(len(cells), dtype=np.float64)
    try:
        float(cells[0])
        numeric = True
    except ValueError:
        numeric = False
    for n, cell in enumerate(cells):
        try:
            if numeric:
                value = float(cell)
            else:
                stamp = datetime.fromisoformat(cell)
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                value = stamp.timestamp()
        except ValueError:
            kind = "number of seconds" if numeric else "ISO-8601 timestamp"
            raise ConfigError(
                f"trace file {path!r} row {n + 2}: cannot parse {column!r} value {cell!r} "
                f"as a {kind}"
            ) from None
        if not math.isfinite(value):
            raise ConfigError(
                f"trace file {path!r} row {n + 2}: {column!r} value {cell!r} is not finite"
            )
        out[n] = value
    return out
