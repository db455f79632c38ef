"""``homellm join --rpc``: this machine lends its device to the main gateway it joined, never to anyone else.

llama.cpp's RPC server runs in a child process bound to ``127.0.0.1`` only. The one way in is the
worker link of :mod:`homellm.pool.worker_link`, as pairing (``homellm join MAIN --code CODE --rpc``)
agreed it: on the address that faces the main gateway, admitting only that gateway's address and its
pinned certificate (TLS in both directions), greeting it (same llama.cpp build or no RPC at all), then
guarding every RPC byte (:class:`~homellm.split.rpc_wire.WorkerGuard`: known commands, bounded sizes,
``--max-memory``). A link on which nothing moves for ``--idle-timeout`` is closed, which also frees what
the main machine allocated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from homellm.errors import EngineError, UsageError
from homellm.hardware.types import GIB
from homellm.i18n import _
from homellm.split.handshake import OfferedDevice, WorkerFacts, worker_greeter
from homellm.split.rpc_wire import WorkerGuard

if TYPE_CHECKING:
    from homellm.pool.join import WorkerConfig
    from homellm.pool.worker_link import LinkServer
    from homellm.serve.tls import TlsFiles

log = logging.getLogger("homellm.worker")

DEFAULT_IDLE_TIMEOUT_S = 60.0
RAM_RESERVE = 2 * GIB  # what a CPU worker keeps for its OS and programs (the advisor's OS reserve)
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``8GiB``, ``8G``, ``512MiB``, ``8`` (GiB) -> bytes."""
    m = _SIZE.match(text)
    if not m or float(m[1]) <= 0:
        raise UsageError(_("{text!r} is not a memory size like 8GiB or 512MiB").format(text=text))
    scale = {"": GIB, "K": 1024, "M": 1024**2, "G": GIB, "T": 1024 * GIB}[m[2].upper()]
    return int(float(m[1]) * scale)


@dataclass(frozen=True)
class RpcOptions:
    """What ``homellm join --rpc`` lends, beyond what pairing agreed."""

    max_memory: int | None = None  # None: what the device has free
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    threads: int | None = None  # None: the embedded engine's decode threads


@dataclass
class RunningWorker:
    """What the banner shows."""

    facts: WorkerFacts
    config: WorkerConfig
    identity: TlsFiles
    link: LinkServer
    rpc_port: int


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def offered(devices: list[dict[str, object]], max_memory: int | None) -> list[OfferedDevice]:
    """Each device's share of ``--max-memory`` (in proportion to its free memory), at most what it has free."""
    import psutil

    from homellm.engine.rpc import DeviceInfo

    infos = [DeviceInfo(**d) for d in devices]  # type: ignore[arg-type]
    free = []
    for info in infos:
        if info.kind == "cpu":  # ggml reports all of RAM as free: use what the OS says is available
            free.append(max(int(psutil.virtual_memory().available) - RAM_RESERVE, 0))
        else:
            free.append(info.free_bytes)
    total = sum(free) or 1
    cap = max_memory if max_memory is not None else total
    return [OfferedDevice(info, min(f, int(cap * f / total))) for info, f in zip(infos, free, strict=True)]


class RpcProcess:
    """llama.cpp's RPC server on ``127.0.0.1:port`` in a child that dies with us."""

    def __init__(self, port: int, threads: int, log_path: Path) -> None:
        self.port = port
        self.threads = threads
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    async def start(self) -> dict[str, object]:
        """Start it; its first line says the build and devices. Returns that, once the port accepts."""
        log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "homellm.engine.rpc", f"127.0.0.1:{self.port}", str(self.threads)],
            stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        log_file.close()
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 120)
        try:
            facts: dict[str, object] = json.loads(line)
        except ValueError:
            facts = {}
        if "devices" not in facts:
            raise EngineError(_("llama.cpp's RPC server did not start; see {log}").format(log=self.log_path))
        # the rest of its output (the server's own log) goes to the log file
        threading_copy(self.process.stdout, self.log_path)
        for _attempt in range(600):
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()  # the server sees a client that never said HELLO, and waits for the next
                return facts
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise EngineError(_("llama.cpp's RPC server did not listen on 127.0.0.1:{port}; see {log}").format(
            port=self.port, log=self.log_path))  # fmt: skip

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def threading_copy(stream: IO[bytes], path: Path) -> None:
    """Copy what is left of a child's stdout to ``path`` in a daemon thread."""
    import shutil
    import threading

    def copy() -> None:
        with path.open("ab") as out, contextlib.suppress(OSError, ValueError):
            shutil.copyfileobj(stream, out)

    threading.Thread(target=copy, daemon=True).start()


async def serve_rpc_worker(
    config: WorkerConfig, own: TlsFiles, home: Path, options: RpcOptions, on_ready: Callable[[RunningWorker], None]
) -> None:
    """Run until cancelled: the RPC child (restarted if it dies) behind the guarded link."""
    from homellm.engine.rpc import BuildId, require_rpc
    from homellm.engine.speed_probe import engine_threads
    from homellm.engine.supervisor import free_port
    from homellm.hardware.calibration import load_calibration
    from homellm.hardware.cpu import detect_cpu
    from homellm.pool.worker_link import serve_link
    from homellm.serve.network import hostname

    require_rpc()
    threads = options.threads or engine_threads()[0]
    (home / "link").mkdir(parents=True, exist_ok=True)
    rpc = RpcProcess(free_port(), threads, home / "link" / "rpc-server.log")
    started = await rpc.start()
    cpu = detect_cpu()
    devices = offered(started["devices"], options.max_memory)  # type: ignore[arg-type]
    facts = WorkerFacts(
        name=hostname(), build=BuildId.from_json(started["build"]), devices=tuple(devices),
        max_memory=sum(d.offered_bytes for d in devices), idle_timeout_s=options.idle_timeout_s, cpu=cpu,
        cpu_calibration=load_calibration(home, cpu), threads=threads,
    )  # fmt: skip
    greeter = worker_greeter(facts, lambda: WorkerGuard(facts.max_memory), busy=lambda: bool(WorkerGuard.active))
    try:
        link = await serve_link((config.listen, config.port), rpc.port, own, config.client_cert_pem,
                                allowed_peer=config.main_address, idle_timeout=options.idle_timeout_s,
                                greeter=greeter)  # fmt: skip
    except OSError as exc:
        rpc.stop()
        raise UsageError(_("cannot listen on {host}:{port} ({error}); choose another port with --port").format(
            host=config.listen, port=config.port, error=exc.strerror or exc)) from None  # fmt: skip
    on_ready(RunningWorker(facts, config, own, link, rpc.port))
    try:
        while True:
            await asyncio.sleep(0.5)
            if rpc.process is not None and rpc.process.poll() is not None:
                log.warning("llama.cpp's RPC server exited with code %s; restarting it", rpc.process.returncode)
                rpc.restarts += 1
                await rpc.start()
    finally:
        await link.close()
        rpc.stop()
