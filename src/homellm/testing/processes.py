"""Real processes on loopback for fault and load tests: a scripted backend and ``homellm serve``.

Each is a child process with a log file, stopped politely (SIGTERM) or killed (SIGKILL) by its own
pid, so a test can kill a backend mid-stream or a gateway under load and start it again on the
same port. Readiness is a TCP connect: uvicorn listens only after its startup (and the gateway's
backend) is ready, and a bare connect leaves no row in the usage log.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from homellm.testing.fake_backend import free_port


class ProcessFailed(RuntimeError):
    """A child process exited or did not become ready; the message ends with its log."""


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: Process | None = None) -> None:
    """Poll ``check`` until it is true; fail with the child's log if it died or time ran out."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and not proc.alive():
            raise ProcessFailed(f"{what}: the process exited with {proc.popen.returncode}\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            tail = f"\n{proc.log_tail()}" if proc is not None else ""
            raise ProcessFailed(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(0.02)


def accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Process:
    """A child process writing to ``log``; ``cpu`` pins it to one core where the OS allows."""

    def __init__(
        self, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None, cpu: int | None = None
    ) -> None:
        self.cmd = list(cmd)
        self.log = log
        self.env = env
        self.cpu = cpu
        self.popen = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            popen = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(popen.pid, {self.cpu})
        return popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, flush or say goodbye."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.popen = self._spawn()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ScriptedBackend(Process):
    """:mod:`homellm.testing.scripted_backend` (Ollama's API or OpenAI's) on a loopback port; ``models``
    and ``loaded`` script what it serves and what its ``/api/ps`` lists (the pool's tests)."""

    def __init__(
        self, log: Path, kind: str = "ollama", delay: float = 0.0, port: int = 0, models: Sequence[str] = (),
        loaded: Sequence[str] | None = None, tokens: int = 5,
    ) -> None:  # fmt: skip
        self.kind = kind
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "homellm.testing.scripted_backend",
            "--kind",
            kind,
            "--port",
            str(self.port),
            "--delay",
            str(delay),
            "--tokens",
            str(tokens),
            *(["--models", ",".join(models)] if models else []),
            *(["--loaded", ",".join(loaded)] if loaded is not None else []),
        ]
        super().__init__(cmd, log)
        self.wait_ready()

    def script(self, since: int = 0, **changes: Any) -> dict[str, Any]:
        """Change the running server's script (``status=503``, ``loaded=[...]``, ``paused``...); returns
        what it has seen: ``{"arrivals": [{"path", "model", "tag"}, ...] (from the ``since``-th on),
        "count": n, "completed": n}``."""
        import json
        import urllib.request

        data = json.dumps(changes).encode() if changes else None
        req = urllib.request.Request(f"{self.url}/__script__?since={since}", data=data,
                                     method="POST" if changes else "GET")  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            seen: dict[str, Any] = json.loads(resp.read())
            return seen

    def arrivals(self, since: int = 0) -> list[dict[str, str]]:
        """The generations it was asked for, in order (from the ``since``-th on)."""
        found: list[dict[str, str]] = self.script(since)["arrivals"]
        return found

    def count(self) -> int:
        """How many generations it was asked for so far."""
        return int(self.script(2**31)["count"])

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: accepts("127.0.0.1", self.port), timeout, f"the {self.kind} backend", self)

    def restart(self) -> None:
        super().restart()
        self.wait_ready()


def homellm_command() -> list[str]:
    return [sys.executable, "-m", "homellm"]


@dataclass(frozen=True)
class Descriptors:
    own: int  # open descriptors but the pooled connections to the backend
    upstream: int  # connections to the backend
    rss: int  # resident memory, bytes


class GatewayProcess(Process):
    """``homellm serve`` on a loopback port, in front of ``--backend URL`` (one, or several: a pool),
    ``--model FILE``, both (the engine joins the pool), or neither (the config file's ``[[backends]]``).

    ``settings`` become ``HOMELLM_*`` variables (``{"log_prompts": True}`` -> ``HOMELLM_LOG_PROMPTS=1``).
    """

    def __init__(
        self,
        home: Path,
        backend: str | Sequence[str] | None = None,
        model: Path | None = None,
        tls: bool = False,
        port: int = 0,
        cpu: int | None = None,
        ready_timeout: float = 60,
        **settings: Any,
    ) -> None:
        self.home = home
        self.port = port or free_port()
        self.tls = tls
        self.ready_timeout = ready_timeout
        env = dict(os.environ, HOMELLM_HOME=str(home))
        for name, value in settings.items():
            env[f"HOMELLM_{name.upper()}"] = str(int(value)) if isinstance(value, bool) else str(value)
        urls = [backend] if isinstance(backend, str) else list(backend or [])
        source = [arg for url in urls for arg in ("--backend", url)] + (["--model", str(model)] if model else [])
        cmd = [*homellm_command(), "serve", *source, "--port", str(self.port), "--tls" if tls else "--no-tls"]
        super().__init__(cmd, home / "serve.log", env, cpu)
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def cert(self) -> Path:
        return self.home / "tls" / "cert.pem"

    def wait_ready(self) -> None:
        wait_for(lambda: accepts("127.0.0.1", self.port), self.ready_timeout, "the gateway", self)

    def restart(self) -> None:
        super().restart()
        self.wait_ready()

    def start_again(self) -> None:
        """Start anew after :meth:`kill` (same home, same port)."""
        self.popen = self._spawn()
        self.wait_ready()

    def descriptors(self, backend_port: int) -> Descriptors:
        """Open descriptors, with the pooled connections to the backend counted apart."""
        import psutil

        proc = psutil.Process(self.pid)
        upstream = sum(1 for c in proc.net_connections("tcp") if c.raddr and c.raddr.port == backend_port)
        return Descriptors(proc.num_fds() - upstream, upstream, proc.memory_info().rss)

    def client_connections(self) -> int:
        """Client connections the gateway still has open (any state but listening)."""
        import psutil

        conns = psutil.Process(self.pid).net_connections("tcp")
        return sum(1 for c in conns if c.laddr and c.laddr.port == self.port and c.status != psutil.CONN_LISTEN)

    def wait_settled(self, timeout: float = 60) -> None:
        """Until every client connection is closed on the gateway's side too."""
        wait_for(lambda: self.client_connections() == 0, timeout, "the clients' connections to close", self)

    def database(self) -> sqlite3.Connection:
        """A read connection to the gateway's database (its own; close it when done)."""
        db = sqlite3.connect(self.home / "homellm.db", timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def usage(self, where: str = "1", params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        db = self.database()
        try:
            return db.execute(f"SELECT * FROM usage WHERE {where} ORDER BY id", params).fetchall()
        finally:
            db.close()

    def wait_usage(
        self, where: str, params: Sequence[Any] = (), count: int = 1, timeout: float = 30
    ) -> list[sqlite3.Row]:
        """The usage rows matching ``where``, once there are at least ``count`` (the writer batches)."""
        rows: list[sqlite3.Row] = []

        def enough() -> bool:
            nonlocal rows
            rows = self.usage(where, params)
            return len(rows) >= count

        wait_for(enough, timeout, f"{count} usage row(s) where {where}")
        return rows
