"""What the gateway benchmarks share: the Go synthetic backend (built at run time, cached under
benchmarks/results/), nginx as a plain reverse proxy, and wrk runs with a JSON summary.

The processes themselves (``homellm serve``, the scripted Python backend) come from
:mod:`homellm.testing.processes`, which the tests use too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homellm.testing.fake_backend import free_port
from homellm.testing.processes import Process, accepts, wait_for

HERE = Path(__file__).parent
RESULTS = HERE / "results"
GO_SOURCE = HERE / "synthetic_backend"
WRK_SCRIPT = HERE / "wrk_post.lua"


def need(tool: str, hint: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise SystemExit(f"{tool} is not installed: {hint}")
    return exe


def pin(cpu: int | None) -> None:
    """Run this process on one core (the load generators share it with the backend)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# ---- the Go synthetic backend ---------------------------------------------------------------


def synthetic_backend_binary() -> Path:
    """``benchmarks/synthetic_backend`` built with the Go toolchain into a temporary folder, then
    cached under benchmarks/results/ by the hash of its source."""
    go = need("go", "apt-get install golang-go")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(GO_SOURCE.glob("*")) if p.is_file()))
    cached = RESULTS / f"synthetic_backend-{digest.hexdigest()[:12]}"
    if cached.exists():
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synthetic_backend"
        env = dict(os.environ, CGO_ENABLED="0", GOPROXY="off", GOFLAGS="-mod=mod")
        env.setdefault("GOCACHE", str(Path(tmp) / "gocache"))
        subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_SOURCE, env=env, check=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out, cached)
    return cached


class SyntheticBackend(Process):
    """The Go backend on a loopback port, on one core (GOMAXPROCS=1)."""

    def __init__(self, log: Path, cpu: int | None = None, port: int = 0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, GOMAXPROCS="1")
        super().__init__([str(synthetic_backend_binary()), "-addr", f"127.0.0.1:{self.port}"], log, env, cpu)
        self.wait_ready()

    def wait_ready(self) -> None:
        wait_for(lambda: accepts("127.0.0.1", self.port), 30, "the synthetic backend", self)

    def restart(self) -> None:
        super().restart()
        self.wait_ready()

    def control(self, **settings: int) -> dict[str, Any]:
        """Read (no arguments) or set ``delay_us`` / ``gather``; resets ``max_active``."""
        data = json.dumps(settings).encode() if settings else None
        req = urllib.request.Request(self.url + "/control", data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result


# ---- nginx ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (nginx's worker, say) so far."""
    import psutil

    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


@contextmanager
def nginx(backend_port: int, cpu: int | None = None) -> Iterator[tuple[str, int]]:
    """nginx with one worker as a plain reverse proxy (upstream keep-alive, no buffering of streams);
    yields its URL and the master's pid."""
    exe = need("nginx", "apt-get install nginx")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};
  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_buffering off; }}
  }}
}}""")
        with Process([exe, "-c", str(conf), "-p", tmp], Path(tmp) / "nginx.out", cpu=cpu) as proc:
            wait_for(lambda: accepts("127.0.0.1", port), 30, "nginx", proc)
            yield f"http://127.0.0.1:{port}", proc.pid


# ---- wrk --------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    completed: int  # responses wrk read
    written: int  # requests wrk wrote (each reaches the server; some are cut off at the end)
    seconds: float
    errors: dict[str, int]  # connect, read, write, status (HTTP >= 400), timeout
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.completed / self.seconds

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def wrk(
    url: str,
    connections: int,
    seconds: float,
    path: str,
    body: bytes,
    key: str | None = None,
    cpu: int | None = None,
) -> WrkResult:
    """``wrk -t1 -cN -dS`` POSTing ``body`` to ``path`` (with ``key`` as a Bearer token)."""
    exe = need("wrk", "apt-get install wrk")
    host = url.split("://", 1)[1]
    with tempfile.NamedTemporaryFile("wb", suffix=".json") as f:
        f.write(body)
        f.flush()
        cmd = [
            exe,
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            url,
            "--",
            f.name,
            path,
            host,
            key or "",
        ]
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, preexec_fn=(lambda: pin(cpu)) if cpu is not None else None
        ).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    s = json.loads(line.removeprefix("WRK_JSON "))
    return WrkResult(
        completed=s["requests"],
        # wrk calls request() once more on its first thread before the run, to check the script
        # (script_verify_request): that request is never written
        written=s["sent"] - 1,
        seconds=s["duration_us"] / 1e6,
        errors={k: s[k] for k in ("connect", "read", "write", "status", "timeout")},
        p50_ms=s["p50_us"] / 1000,
        p90_ms=s["p90_us"] / 1000,
        p99_ms=s["p99_us"] / 1000,
        p999_ms=s["p999_us"] / 1000,
        max_ms=s["max_us"] / 1000,
    )
