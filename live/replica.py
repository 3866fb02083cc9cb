"""The fleet's service: a small threaded HTTP server with fault knobs.

Run as ``python -m live.replica --port P --config FILE --mem-limit-bytes N``; it binds
127.0.0.1 only. Routes:

* ``GET /`` and ``GET /work``: the request the load balancer spreads (a little CPU work);
* ``GET /healthz``: liveness and readiness (503 while the configuration is bad);
* ``GET /stats``: counters for telemetry (requests, errors, recent latencies, RSS);
* ``POST /admin/fault``: set fault knobs from a JSON body: ``latency_s`` (added to every
  request), ``error_rate`` (share of requests answered 500), ``leak_bytes_per_s`` (memory
  leaked per second until the process exceeds its limit and exits like an OOM kill).

The configuration is a JSON file ``{"version": int, "valid": bool}`` that the deploy system
(the plant) writes for each replica, to all at once or to canaries first; it is reread when
its modification time changes, so a deploy and its rollback reach a replica within one
request. Crashes and hangs are injected from outside
(SIGKILL, SIGSTOP).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LATENCY_WINDOW = 512
"""Recent request latencies kept for the p99 in ``/stats``."""
OOM_EXIT_CODE = 137
"""Exit status of a replica that exceeded its memory limit (as after the OOM killer)."""


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class ReplicaState:
    """Counters and knobs of one replica, shared by its request threads."""

    def __init__(self, config_path: str, mem_limit_bytes: int, seed: int) -> None:
        self.lock = threading.Lock()
        self.config_path = config_path
        self.mem_limit_bytes = mem_limit_bytes
        self.requests = 0
        self.errors = 0
        self.latencies_s: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.latency_s = 0.0
        self.error_rate = 0.0
        self.leak_bytes_per_s = 0.0
        self.leaked: list[bytearray] = []
        self.rng = random.Random(seed)
        self.config_mtime_ns = -1
        self.config: dict[str, Any] = {"version": 0, "valid": True}
        self.started_s = time.time()

    def current_config(self) -> dict[str, Any]:
        """The configuration file's content, reread when it changed."""
        try:
            mtime = os.stat(self.config_path).st_mtime_ns
        except OSError:
            return {"version": -1, "valid": False}
        if mtime != self.config_mtime_ns:
            try:
                with open(self.config_path, encoding="utf-8") as fh:
                    cfg = json.load(fh)
            except (OSError, ValueError):
                cfg = {"version": -1, "valid": False}
            with self.lock:
                self.config, self.config_mtime_ns = cfg, mtime
        return self.config


def _leak_loop(state: ReplicaState) -> None:
    tick_s = 0.05
    last = time.monotonic()
    while True:
        time.sleep(tick_s)
        now = time.monotonic()
        elapsed_s, last = now - last, now
        rate = state.leak_bytes_per_s
        if rate <= 0:
            continue
        chunk = bytearray(int(rate * elapsed_s))
        for k in range(0, len(chunk), 4096):
            chunk[k] = 1
        state.leaked.append(chunk)
        if _rss_bytes() > state.mem_limit_bytes:
            os._exit(OOM_EXIT_CODE)


def make_handler(state: ReplicaState) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``state``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 65536

        def log_message(self, format: str, *args: Any) -> None:
            """Silence per-request logging."""

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            """Serve work, health and stats."""
            path = self.path.split("?", 1)[0]
            cfg = state.current_config()
            if path == "/healthz":
                ok = bool(cfg.get("valid", False))
                self._send(200 if ok else 503, {"ok": ok, "version": cfg.get("version")})
                return
            if path == "/stats":
                with state.lock:
                    lat = sorted(state.latencies_s)
                    body = {
                        "requests": state.requests, "errors": state.errors,
                        "mean_latency_s": sum(lat) / len(lat) if lat else 0.0,
                        "p99_latency_s": lat[int(0.99 * (len(lat) - 1))] if lat else 0.0,
                        "rss_bytes": _rss_bytes(), "mem_limit_bytes": state.mem_limit_bytes,
                        "config_version": cfg.get("version"),
                        "config_valid": bool(cfg.get("valid", False)),
                        "pid": os.getpid(),
                    }
                self._send(200, body)
                return
            if path not in ("/", "/work"):
                self._send(404, {"error": f"no route {path}"})
                return
            t0 = time.perf_counter()
            if state.latency_s > 0:
                time.sleep(state.latency_s)
            acc = 0
            for k in range(2000):
                acc += k * k
            with state.lock:
                bad = not cfg.get("valid", False) or state.rng.random() < state.error_rate
                state.requests += 1
                state.errors += int(bad)
                state.latencies_s.append(time.perf_counter() - t0)
            if bad:
                self._send(500, {"error": "injected or configuration error"})
            else:
                self._send(200, {"ok": True, "v": cfg.get("version"), "acc": acc % 97})

        def do_POST(self) -> None:
            """Set fault knobs."""
            if self.path != "/admin/fault":
                self._send(404, {"error": f"no route {self.path}"})
                return
            length = int(self.headers.get("Content-Length", "0") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                knobs = {k: float(body[k]) for k in ("latency_s", "error_rate",
                                                      "leak_bytes_per_s") if k in body}
            except (ValueError, TypeError) as exc:
                self._send(400, {"error": f"bad fault body: {exc}"})
                return
            bad = [k for k in body if k not in ("latency_s", "error_rate", "leak_bytes_per_s")]
            if bad or any(v < 0 for v in knobs.values()):
                self._send(400, {"error": f"unknown or negative knobs: {bad or knobs}"})
                return
            for k, v in knobs.items():
                setattr(state, k, v)
            self._send(200, {"ok": True, **knobs})

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Health checkers hang up after the status line; a reset peer is not an error."""


def main(argv: list[str] | None = None) -> None:
    """Serve until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--config", required=True, help="service configuration JSON file")
    ap.add_argument("--mem-limit-bytes", type=int, default=256 * 2**20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-delay-s", type=float, default=0.0,
                    help="sleep before binding, as a slow-booting service would")
    args = ap.parse_args(argv)
    if args.startup_delay_s > 0:
        time.sleep(args.startup_delay_s)
    state = ReplicaState(args.config, args.mem_limit_bytes, args.seed)
    threading.Thread(target=_leak_loop, args=(state,), daemon=True).start()
    server = _Server(("127.0.0.1", args.port), make_handler(state))
    server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
