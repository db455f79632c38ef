"""The real gateway over TLS on loopback, and a relay: what an attacker on the Wi-Fi would run.

The relay is a TLS server with its own self-signed certificate. For every connection it opens a TLS
connection to the real gateway and copies the decrypted bytes both ways, recording them: exactly the
interception that answering mDNS first, or being given as the URL, makes possible.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from homellm.serve.app import Gateway
from homellm.serve.backends import OllamaBackend
from homellm.serve.server import uvicorn_options
from homellm.serve.tls import TlsFiles, ensure_tls
from homellm.settings import Settings
from homellm.testing.fake_backend import Recorder, Script, free_port, make_app, serve_in_thread


@dataclass
class Served:
    url: str
    home: Path
    tls: TlsFiles
    gateway: Gateway


@pytest.fixture(scope="module")
def backend_url() -> Iterator[str]:
    """A scripted Ollama (pairing never reaches the backend; the gateway only needs one to start)."""
    with serve_in_thread(make_app("ollama", Script(), Recorder())) as url:
        yield url


@pytest.fixture
def served(tmp_path: Path, backend_url: str) -> Iterator[Served]:
    """A fresh gateway over TLS (its own home, database and certificate) on a free loopback port."""
    home = tmp_path / "server"
    tls = ensure_tls(home, None, None)
    settings = Settings(home=home, port=free_port())
    gateway = Gateway(settings, OllamaBackend(backend_url), tls.fingerprint)
    with serve_in_thread(gateway, port=settings.port, scheme="https", **uvicorn_options(settings, tls)) as url:
        yield Served(url, home, tls, gateway)


@dataclass
class Relay:
    """A TLS man-in-the-middle with its own certificate, forwarding to ``upstream`` and recording the
    decrypted bytes both ways. It runs on its own asyncio loop in a thread: one TLS socket must not be
    read and written by two threads at once (OpenSSL's objects are not thread-safe that way)."""

    upstream: tuple[str, int]
    tls: TlsFiles
    port: int = 0
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _serve_one(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        out = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        out.check_hostname, out.verify_mode = False, ssl.CERT_NONE
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.upstream, ssl=out)
        except OSError:
            c_writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bytearray) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while chunk := await src.read(65536):
                    record += chunk
                    dst.write(chunk)
                    await dst.drain()
            with contextlib.suppress(OSError, ConnectionError, RuntimeError):
                dst.close()

        await asyncio.gather(pump(c_reader, s_writer, self.to_server), pump(s_reader, c_writer, self.to_client))

    @contextlib.contextmanager
    def running(self) -> Iterator[Relay]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls.cert, self.tls.key)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        holder: dict[str, asyncio.Server] = {}

        async def start() -> None:
            server = await asyncio.start_server(self._serve_one, "127.0.0.1", 0, ssl=ctx)
            holder["server"] = server
            self.port = server.sockets[0].getsockname()[1]
            started.set()

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        started.wait(10)
        try:
            yield self
        finally:

            async def stop() -> None:
                holder["server"].close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


@pytest.fixture
def relay(tmp_path: Path, served: Served) -> Iterator[Relay]:
    host, port = served.url.removeprefix("https://").rsplit(":", 1)
    with Relay((host, int(port)), ensure_tls(tmp_path / "attacker", None, None)).running() as r:
        yield r
