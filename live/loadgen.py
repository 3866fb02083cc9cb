"""A bounded load generator against the load balancer: loopback only, bounded in count and time.

``python -m live.loadgen --url http://127.0.0.1:18100/ --rate 100 --duration-s 60`` sends
GET requests at a fixed rate from a few keep-alive connections and prints one JSON object:
requests sent, succeeded (HTTP 200), failed (other status, or no answer within the timeout),
the success share and latency percentiles.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

MAX_REQUESTS = 1_000_000
MAX_DURATION_S = 3600.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What the load generator measured."""

    sent: int
    ok: int
    failed: int
    duration_s: float
    latency_p50_s: float
    latency_p99_s: float

    @property
    def success(self) -> float:
        """Share of requests answered 200 (NaN when none were sent)."""
        return self.ok / self.sent if self.sent else float("nan")

    def to_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return {"sent": self.sent, "ok": self.ok, "failed": self.failed,
                "success": self.success, "duration_s": self.duration_s,
                "latency_p50_s": self.latency_p50_s, "latency_p99_s": self.latency_p99_s}


def run_load(url: str, rate_per_s: float, duration_s: float, *, connections: int = 4,
             timeout_s: float = 5.0, stop: threading.Event | None = None) -> LoadResult:
    """Send ``rate_per_s`` requests per second to ``url`` for ``duration_s`` (or until ``stop``).

    Raises:
        ValueError: a non-loopback URL, or a rate or duration out of bounds.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise ValueError(f"load is only sent to http://127.0.0.1 (loopback), got {url!r}")
    if not (rate_per_s > 0 and 0 < duration_s <= MAX_DURATION_S):
        raise ValueError(f"rate must be > 0 and duration in (0, {MAX_DURATION_S}] s")
    if rate_per_s * duration_s > MAX_REQUESTS:
        raise ValueError(f"at most {MAX_REQUESTS} requests per run")
    if not 1 <= connections <= 64:
        raise ValueError(f"connections must lie in 1..64, got {connections}")
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    stop = stop or threading.Event()
    lock = threading.Lock()
    ok = failed = 0
    lat: list[float] = []
    period_s = connections / rate_per_s
    t_start = time.monotonic()

    def worker(k: int) -> None:
        nonlocal ok, failed
        conn: http.client.HTTPConnection | None = None
        next_t = t_start + k * period_s / connections
        while not stop.is_set():
            now = time.monotonic()
            if now - t_start >= duration_s:
                break
            if next_t > now:
                time.sleep(next_t - now)
            next_t += period_s
            t0 = time.perf_counter()
            good = False
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                good = resp.status == 200
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            dt = time.perf_counter() - t0
            with lock:
                ok += int(good)
                failed += int(not good)
                lat.append(dt)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True)
               for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arr = np.array(lat) if lat else np.array([np.nan])
    return LoadResult(ok + failed, ok, failed, time.monotonic() - t_start,
                      float(np.percentile(arr, 50)), float(np.percentile(arr, 99)))


def main(argv: list[str] | None = None) -> None:
    """Command line: run the load and print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second")
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=4)
    args = ap.parse_args(argv)
    try:
        res = run_load(args.url, args.rate, args.duration_s, connections=args.connections)
    except ValueError as exc:
        ap.error(str(exc))
    print(json.dumps(res.to_dict()))


if __name__ == "__main__":
    main()
