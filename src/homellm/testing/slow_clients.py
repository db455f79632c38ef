"""Slow and stalled connections (slowloris) for the gateway's connection guards.

* ``headers``: a request line and part of the headers, then nothing (or one more byte at a time);
* ``body``: complete headers of an unauthenticated ``POST /homellm/pair`` announcing a body (within the
  4 KiB that route takes: a larger one is refused at once) that never finishes;
* ``handshake``: a TCP connection to a TLS port that never starts the TLS handshake.

Each connection can come from its own loopback address (127.0.0.2, 127.0.0.3, ...: Linux routes
all of 127/8 to the loopback interface), as clients on a LAN would, since the gateway caps
connections per client address.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

MODES = ("headers", "body", "handshake")


def loopback_addresses(first: int, count: int) -> list[str]:
    """``127.0.0.<first>`` and the ``count - 1`` addresses after it."""
    return [f"127.0.0.{n}" for n in range(first, first + count)]


@dataclass
class SlowConnections:
    """Open connections, each a raw socket (TLS-wrapped where the handshake was done)."""

    socks: list[socket.socket] = field(default_factory=list)
    answers: dict[int, bytes] = field(default_factory=dict)  # index -> what the server sent before closing

    def close(self) -> None:
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()

    def trickle(self, data: bytes = b"X") -> None:
        """One more byte on every connection the server has not closed (defeats idle timers)."""
        for i, s in enumerate(self.socks):
            if i not in self.answers:
                with contextlib.suppress(OSError):
                    s.send(data)

    def wait_closed(self, count: int, timeout: float) -> int:
        """Read what the server says until ``count`` connections were closed by it (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        try:
            for i, s in enumerate(self.socks):
                if i not in self.answers:
                    sel.register(s, selectors.EVENT_READ, i)
            buffers: dict[int, bytearray] = {}
            while len(self.answers) < count and time.monotonic() < deadline:
                for key, _events in sel.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
                    i = key.data
                    s = self.socks[i]
                    closed = _drain(s, buffers.setdefault(i, bytearray()))
                    if closed:
                        self.answers[i] = bytes(buffers.pop(i))
                        sel.unregister(s)
        finally:
            sel.close()
        return len(self.answers)

    def still_open(self) -> int:
        """Connections the server has neither answered nor closed (checked without waiting)."""
        n = 0
        for i, s in enumerate(self.socks):
            if i in self.answers:
                continue
            got = bytearray()
            if _drain(s, got) or got:  # closed, or answered: not a hanging connection any more
                self.answers[i] = bytes(got)
            else:
                n += 1
        return n


def _drain(sock: socket.socket, into: bytearray) -> bool:
    """Read all that is there without blocking; True once the server closed the connection.

    A TLS socket may hold decrypted data (and the close) in its own buffer, where ``select`` does
    not see it, so reading goes on until the socket would block.
    """
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            into += data
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.setblocking(True)


def _first_bytes(mode: str, host_header: str) -> bytes:
    if mode == "headers":
        return f"POST /api/chat HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: applic".encode()
    return (
        f"POST /homellm/pair HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
        'Content-Length: 4000\r\n\r\n{"code": "'
    ).encode()


def open_slow(
    port: int,
    count: int,
    mode: str,
    sources: Sequence[str] = ("127.0.0.1",),
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> SlowConnections:
    """``count`` stalled connections of ``mode``, spread round-robin over the ``sources`` addresses.

    A connection the server refuses at once still counts (it shows up in :meth:`SlowConnections.wait_closed`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    conns = SlowConnections()
    for i in range(count):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.bind((sources[i % len(sources)], 0))
        raw.settimeout(10)
        raw.connect((host, port))
        sock: socket.socket = raw
        if tls is not None and mode != "handshake":
            try:
                sock = tls.wrap_socket(raw, server_hostname=host)
            except (ssl.SSLError, OSError):  # refused during the handshake: closed at once
                conns.socks.append(raw)
                conns.answers[i] = b""
                continue
        if mode != "handshake":
            with contextlib.suppress(OSError):
                sock.sendall(_first_bytes(mode, f"{host}:{port}"))
        conns.socks.append(sock)
    return conns


@contextlib.contextmanager
def slow_connections(
    port: int,
    count: int,
    mode: str,
    sources: Sequence[str] = ("127.0.0.1",),
    tls: ssl.SSLContext | None = None,
) -> Iterator[SlowConnections]:
    conns = open_slow(port, count, mode, sources, tls)
    try:
        yield conns
    finally:
        conns.close()
