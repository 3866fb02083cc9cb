"""HAProxy in front of the fleet: configuration, start, runtime API, statistics.

The backend declares one server per replica slot up front (unused slots in maintenance), so
scaling, taking a replica out of rotation and putting it back are runtime-API commands over
the admin socket, never reloads. Requests survive a replica dying or hanging: health checks
every ``check_interval_s``, L7 retries on connection failures, timeouts and 5xx, each retry
redispatched to another server. Load shedding is a deny rule whose share lives in a map
file that the runtime API changes.

HAProxy comes from Debian's ``haproxy`` package (the Makefile's ``live-deps`` step installs it
when missing); HAProxy was chosen over nginx because its runtime API changes server state,
addresses and maps without a reload, and its retries can redispatch on 5xx and timeouts.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BACKEND = "be_app"
FRONTEND = "fe_app"


class LoadBalancerError(RuntimeError):
    """HAProxy is missing, failed to start, or refused a runtime command."""


@dataclass(frozen=True, slots=True)
class LbSpec:
    """Where HAProxy listens and how it checks and retries.

    Attributes:
        port: loopback port of the frontend.
        slots: replica slots declared in the backend.
        check_interval_s: health-check interval.
        server_timeout_s: how long a replica may take to answer before the request is
            retried on another one.
        retries: retries per request.
    """

    port: int
    slots: int
    check_interval_s: float = 0.1
    server_timeout_s: float = 0.4
    retries: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"lb port must lie in 1..65535, got {self.port}")
        if self.slots < 1:
            raise ValueError(f"lb slots must be >= 1, got {self.slots}")
        if self.check_interval_s <= 0 or self.server_timeout_s <= 0:
            raise ValueError("lb check_interval_s and server_timeout_s must be positive")


def haproxy_binary() -> str:
    """Path of the haproxy executable; a clear error when it is not installed."""
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists(
        "/usr/sbin/haproxy") else None)
    if path is None:
        raise LoadBalancerError(
            "haproxy is not installed; run `make live-deps` (apt-get install haproxy)"
        )
    return path


def server_name(slot: int) -> str:
    """Backend server name of a replica slot."""
    return f"r{slot}"


def render_config(spec: LbSpec, workdir: Path, ports: dict[int, int]) -> str:
    """HAProxy configuration; ``ports`` maps the slots in use to their replica ports."""
    ms = lambda s: f"{max(1, round(s * 1000))}ms"  # noqa: E731
    lines = [
        "global",
        f"    stats socket {workdir / 'haproxy.sock'} mode 600 level admin",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 100ms",
        "    timeout client 10s",
        f"    timeout server {ms(spec.server_timeout_s)}",
        "    timeout queue 2s",
        f"    retries {spec.retries}",
        "    option redispatch 1",
        "    retry-on all-retryable-errors",
        f"frontend {FRONTEND}",
        f"    bind 127.0.0.1:{spec.port}",
        f"    http-request set-var(txn.shed) int(0),map_int_int({workdir / 'shed.map'},0)",
        "    http-request deny deny_status 503 if { rand(100),sub(txn.shed) lt 0 }",
        f"    default_backend {BACKEND}",
        f"backend {BACKEND}",
        "    balance roundrobin",
        "    option httpchk GET /healthz",
        f"    default-server inter {ms(spec.check_interval_s)} fastinter "
        f"{ms(spec.check_interval_s)} downinter {ms(spec.check_interval_s)} fall 2 rise 1",
    ]
    for slot in range(spec.slots):
        port = ports.get(slot)
        if port is None:
            lines.append(f"    server {server_name(slot)} 127.0.0.1:9 check disabled")
        else:
            lines.append(f"    server {server_name(slot)} 127.0.0.1:{port} check")
    return "\n".join(lines) + "\n"


class HAProxy:
    """One HAProxy process for the fleet, driven through its admin socket."""

    def __init__(self, spec: LbSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = Path(workdir)
        self.socket_path = self.workdir / "haproxy.sock"
        self.pid: int | None = None

    def start(self, ports: dict[int, int]) -> int:
        """Write the configuration and start HAProxy; returns its pid."""
        binary = haproxy_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "shed.map").write_text("0 0\n", encoding="ascii")
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(render_config(self.spec, self.workdir, ports), encoding="ascii")
        check = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True,
                               text=True, check=False)
        if check.returncode != 0:
            raise LoadBalancerError(f"haproxy rejected its configuration: {check.stderr}")
        self.socket_path.unlink(missing_ok=True)
        pid_file = self.workdir / "haproxy.pid"
        pid_file.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [binary, "-f", str(cfg), "-p", str(pid_file), "-D"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        _, err = proc.communicate(timeout=10)
        if proc.returncode != 0:
            raise LoadBalancerError(f"haproxy failed to start: {err.decode(errors='replace')}")
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if self.socket_path.exists() and pid_file.exists():
                text = pid_file.read_text().strip()
                if text:
                    self.pid = int(text.split()[0])
                    return self.pid
            time.sleep(0.02)
        raise LoadBalancerError("haproxy did not open its admin socket within 5 s")

    def adopt(self, pid: int) -> bool:
        """Take over a running HAProxy (after a controller restart); False if it is gone."""
        if not self.socket_path.exists():
            return False
        try:
            self.command("show info")
        except (OSError, LoadBalancerError):
            return False
        self.pid = pid
        return True

    def command(self, cmd: str) -> str:
        """Send one runtime-API command and return the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(self.socket_path))
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        out = b"".join(chunks).decode(errors="replace")
        low = out.lower()
        if "unknown command" in low or "no such" in low or "require" in low:
            raise LoadBalancerError(f"haproxy refused {cmd!r}: {out.strip()}")
        return out

    def set_server(self, slot: int, port: int | None, state: str) -> None:
        """Point a slot at ``port`` (when given) and set it ``ready``, ``drain`` or ``maint``."""
        name = f"{BACKEND}/{server_name(slot)}"
        if port is not None:
            self.command(f"set server {name} addr 127.0.0.1 port {port}")
        self.command(f"set server {name} state {state}")

    def mark_up(self, slot: int) -> None:
        """Tell HAProxy a slot's health check passed (a restarted replica is ready)."""
        self.command(f"set server {BACKEND}/{server_name(slot)} health up")

    def set_shed_percent(self, percent: int) -> None:
        """Deny ``percent`` % of incoming requests with 503 (0 stops shedding)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"shed percent must lie in 0..100, got {percent}")
        self.command(f"set map {self.workdir / 'shed.map'} 0 {percent}")

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` as a dict keyed by server name (``FRONTEND``, ``BACKEND``, ``r<k>``)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        out: dict[str, dict[str, str]] = {}
        for row in rows:
            if row.get("pxname") == FRONTEND and row.get("svname") == "FRONTEND":
                out[FRONTEND] = row
            elif row.get("pxname") == BACKEND:
                out[row.get("svname", "")] = row
        return out

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, then SIGKILL) if it runs."""
        if self.pid is None:
            return
        from live.procs import terminate

        terminate(self.pid)
        self.pid = None
