"""The real gateway over TLS on loopback, and a relay: what an attacker on the Wi-Fi would run.

The relay is a TLS server with its own self-signed certificate. For every connection it opens a TLS
connection to the real gateway and copies the decrypted bytes both ways, recording them: exactly the
interception that answering mDNS first, or being given as the URL, makes possible.
"""

from __future__ import annotations

import contextlib
import socket
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
    with serve_in_thread(gateway, port=settings.port, **uvicorn_options(settings, tls)) as url:
        yield Served(url, home, tls, gateway)


@dataclass
class Relay:
    """A TLS man-in-the-middle with its own certificate, forwarding to ``upstream``."""

    upstream: tuple[str, int]
    tls: TlsFiles
    port: int = 0
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    sockets: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _pump(self, src: ssl.SSLSocket, dst: ssl.SSLSocket, record: bytearray) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                record += chunk
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _serve_one(self, client: ssl.SSLSocket) -> None:
        out = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        out.check_hostname, out.verify_mode = False, ssl.CERT_NONE
        with client, out.wrap_socket(socket.create_connection(self.upstream)) as server:
            self.sockets += [client, server]
            back = threading.Thread(target=self._pump, args=(server, client, self.to_client), daemon=True)
            back.start()
            self._pump(client, server, self.to_server)
            back.join(10)

    @contextlib.contextmanager
    def running(self) -> Iterator[Relay]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls.cert, self.tls.key)
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    raw, _ = listener.accept()
                    conn = ctx.wrap_socket(raw, server_side=True)
                except OSError:
                    continue
                threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
            listener.close()
            thread.join(5)
            for sock in self.sockets:  # so the gateway is not left waiting on idle relayed connections
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(tmp_path: Path, served: Served) -> Iterator[Relay]:
    host, port = served.url.removeprefix("https://").rsplit(":", 1)
    with Relay((host, int(port)), ensure_tls(tmp_path / "attacker", None, None)).running() as r:
        yield r
