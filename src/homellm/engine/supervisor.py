"""Run llama-cpp-python's OpenAI-compatible server on loopback and keep it alive.

The engine runs as a child process (``python -m llama_cpp.server``): a crash in llama.cpp
cannot take the gateway down, and the supervisor restarts it with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from homellm.i18n import _

log = logging.getLogger("homellm.engine")


@dataclass(frozen=True)
class EngineModel:
    alias: str
    path: Path
    n_ctx: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...] | None = None  # per offload device, llama.cpp's order (a worker's first)
    # embeddings cost a split model a second round trip per token (llama.cpp fetches them beside the logits)
    embedding: bool = True


class EngineUnavailable(Exception):
    """The engine cannot run now (its worker is gone and the model does not fit here alone); says why."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the engine gets SIGTERM when the gateway process dies, even by SIGKILL."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EngineSupervisor:
    BACKOFF_START = 1.0
    BACKOFF_MAX = 30.0
    STABLE_AFTER = 60.0  # a run this long resets the backoff

    def __init__(self, models: list[EngineModel], workdir: Path, port: int = 0) -> None:
        self.models = models
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.restarts = 0
        self.last_exit: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.unavailable: str | None = None  # why no engine runs now (EngineUnavailable), shown in 503s

    async def prepare(self) -> None:
        """Before each start: decide what to run (a split engine checks its worker here)."""

    def command(self, config: Path) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config)]

    def crash_message(self) -> str:
        from homellm.i18n import _

        return _("the engine is restarting after a crash; retry in a few seconds")

    def lost_worker(self) -> bool:
        """Whether the engine is going down because its worker's link ended (a split engine only)."""
        return False

    def describe_split(self) -> str | None:
        """How the model is split over machines, for the banner (None: it runs here only)."""
        return None

    def backoff_after(self, exit_code: int | None, backoff: float) -> float:
        """Seconds to wait before restarting an engine that exited with ``exit_code``."""
        return backoff

    def _config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "host": "127.0.0.1",
            "port": self.port,
            # llama-cpp-python's server would otherwise abort a running generation whenever another
            # request arrives; requests queue instead (one generation at a time per engine)
            "interrupt_requests": False,
            "models": [
                {
                    "model": str(m.path),
                    "model_alias": m.alias,
                    "n_ctx": m.n_ctx,
                    "n_gpu_layers": m.n_gpu_layers,
                    "embedding": m.embedding,
                    "verbose": False,
                }
                | ({"tensor_split": list(m.tensor_split)} if m.tensor_split else {})
                for m in self.models
            ],
        }
        path = self.workdir / "engine.json"
        path.write_text(json.dumps(cfg, indent=2))
        return path

    def _spawn(self) -> None:
        config = self._config()
        logfile = (self.workdir / "engine.log").open("ab")
        self.process = subprocess.Popen(
            self.command(config),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        logfile.close()

    async def _healthy(self, client: httpx.AsyncClient) -> bool:
        try:
            return (await client.get("/v1/models")).status_code == 200
        except httpx.HTTPError:
            return False

    async def start(self, timeout: float = 120.0) -> None:
        """Start the engine and wait until it answers."""
        try:
            await self.prepare()
        except EngineUnavailable as exc:
            from homellm.errors import EngineError

            raise EngineError(str(exc)) from None
        self._spawn()
        await self._wait_ready(timeout)
        self._task = asyncio.create_task(self._supervise())

    async def _wait_ready(self, timeout: float) -> None:
        from homellm.errors import EngineError

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    self.last_exit = self.process.returncode
                    raise EngineError(
                        _("the engine exited with code {last_exit}; see {log}").format(
                            last_exit=self.last_exit, log=self.workdir / "engine.log"
                        )
                    )
                if await self._healthy(client):
                    self.ready = True
                    return
                await asyncio.sleep(0.2)
        raise EngineError(
            _("the engine did not answer within {timeout:.0f}s; see {log}").format(
                timeout=timeout, log=self.workdir / "engine.log"
            )
        )

    async def _supervise(self) -> None:
        backoff = self.BACKOFF_START
        while not self._stopping:
            started = time.monotonic()
            assert self.process is not None
            while self.process.poll() is None and not self._stopping:
                await asyncio.sleep(0.5)
            if self._stopping:
                return
            self.ready = False
            self.last_exit = self.process.returncode
            if time.monotonic() - started > self.STABLE_AFTER:
                backoff = self.BACKOFF_START
            delay = self.backoff_after(self.last_exit, backoff)
            log.warning("engine exited with code %s; restarting in %.0fs", self.last_exit, delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self.BACKOFF_MAX)
            while not self._stopping:
                try:
                    await self.prepare()
                    self.unavailable = None
                    break
                except EngineUnavailable as exc:
                    self.unavailable = str(exc)
                    await asyncio.sleep(self.BACKOFF_START * 2)
            if self._stopping:
                return
            self.restarts += 1
            self._spawn()
            with contextlib.suppress(Exception):
                await self._wait_ready(120.0)

    async def stop(self) -> None:
        self._stopping = True
        self.ready = False
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(self.process.wait), 10)
            except TimeoutError:
                self.process.kill()
