"""A pinned, mutual-TLS TCP link between two homellm machines that forwards bytes to one loopback port.

The listening side (a worker) admits exactly one peer certificate, the one pairing pinned, and forwards
each admitted connection to a fixed port on its own loopback, so the service behind it never listens on
the network. The connecting side (the main gateway) presents its own certificate and trusts exactly the
worker's. No CA and no host names: both pins come from pairing, and each is checked twice (as the only
trust anchor, then by fingerprint).

Generic on purpose: the pool's worker link has the same shape. What a connection says before any
forwarded byte (a greeting) and what may flow (a byte filter) are hooks; :mod:`homellm.split.rpc_link`
fills them for llama.cpp's RPC. An idle timeout ends a link on which nothing has moved for that long,
and TCP keepalives plus a user timeout end one whose peer vanished without closing (power cut, cable
pulled), so a dead peer cannot hold the other side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from homellm.errors import HomeLLMError
from homellm.i18n import _

log = logging.getLogger("homellm.link")

HANDSHAKE_TIMEOUT_S = 10.0
CHUNK = 256 * 1024
# what a stream reader buffers before it stops reading the socket: large, so that a link's TCP window can
# open to its bandwidth x delay (asyncio's 64 KiB default caps a 1 Gbit/s, 5 ms link at a fraction of it)
BUFFER = 8 * 1024 * 1024
KEEPALIVE_IDLE_S = 5  # TCP keepalive: first probe after this much silence ...
KEEPALIVE_INTERVAL_S = 2  # ... then one every 2 s ...
KEEPALIVE_PROBES = 3  # ... and the connection is dead after 3 unanswered
USER_TIMEOUT_MS = 15_000  # data unacknowledged for this long ends the connection

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class LinkRefused(HomeLLMError):
    """The other machine refused this link, or is not the machine that was paired."""

    exit_code = 3


class Answered(Exception):
    """A greeting served the connection itself (a probe, say): nothing is forwarded."""


@dataclass(frozen=True)
class LinkIdentity:
    """This machine's link certificate and key (one certificate for both roles)."""

    cert: Path
    key: Path
    fingerprint: str

    def cert_pem(self) -> str:
        return self.cert.read_text(encoding="ascii")


def ensure_link_identity(home: Path) -> LinkIdentity:
    """``HOME/link/cert.pem`` and ``key.pem``, made once.

    Not the gateway's certificate: that one is a TLS server's only (OpenSSL refuses it from a client as
    "unsuitable certificate purpose"), while a link certificate identifies a client and a server.
    """
    from homellm.serve.network import hostname
    from homellm.serve.tls import fingerprint_of_pem, generate_self_signed

    folder = home / "link"
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not (cert.exists() and key.exists()):
        generate_self_signed(cert, key, [f"homellm-link.{hostname()}"], [], client_auth=True)
    return LinkIdentity(cert, key, fingerprint_of_pem(cert.read_bytes()))


def _context(server: bool, identity: LinkIdentity, peer_pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(identity.cert, identity.key)
    try:
        ctx.load_verify_locations(cadata=peer_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise HomeLLMError(_("the pinned certificate of the other machine is damaged ({error}); pair again").format(
            error=exc)) from None  # fmt: skip
    ctx.verify_mode = ssl.CERT_REQUIRED  # the server side: no client certificate, no handshake
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the pinned leaf is the only trust anchor
    if not server:
        ctx.check_hostname = False  # the pin, not a name, says who the worker is
    return ctx


def server_context(identity: LinkIdentity, peer_pem: str) -> ssl.SSLContext:
    """The listening side's TLS: present ``identity``, admit only a client presenting ``peer_pem``."""
    return _context(True, identity, peer_pem)


def client_context(identity: LinkIdentity, peer_pem: str) -> ssl.SSLContext:
    """The connecting side's TLS: present ``identity``, trust only a server presenting ``peer_pem``."""
    return _context(False, identity, peer_pem)


def peer_fingerprint(writer: asyncio.StreamWriter) -> str | None:
    from homellm.serve.tls import fingerprint_of_pem

    obj = writer.get_extra_info("ssl_object")
    der = obj.getpeercert(binary_form=True) if obj is not None else None
    return fingerprint_of_pem(ssl.DER_cert_to_PEM_cert(der).encode()) if der else None


def tune_socket(sock: socket.socket | None) -> None:
    """No Nagle delay (small RPC messages are latency-bound); find a silent dead peer in seconds."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                            ("TCP_KEEPCNT", KEEPALIVE_PROBES), ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS)):  # fmt: skip
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


class ByteFilter(Protocol):
    """What may cross a link, seen by the side that installs it. It may raise :class:`LinkRefused` to cut."""

    def outbound(self, data: bytes) -> tuple[bytes, bytes]:
        """Bytes from the opener toward the target: (what to forward, what to answer the opener at once)."""

    def inbound(self, data: bytes) -> bytes:
        """Bytes from the target back to the opener: what to forward."""

    def idle(self) -> bytes:
        """Nothing has moved for a while: bytes to send the target to keep the link alive, or nothing."""

    def closed(self) -> None:
        """The session is over (both sides are being closed)."""


@dataclass
class LinkStats:
    """Bytes and sessions of a listener or endpoint, for the banner and the tests."""

    sessions: int = 0
    open: int = 0
    outbound_bytes: int = 0
    inbound_bytes: int = 0
    ended: dict[str, int] = field(default_factory=dict)  # why sessions ended -> how many

    def end(self, why: str) -> None:
        self.open -= 1
        self.ended[why] = self.ended.get(why, 0) + 1


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def relay(
    opener: Streams,
    target: Streams,
    idle_timeout: float,
    byte_filter: ByteFilter | None = None,
    keepalive_s: float | None = None,
    stats: LinkStats | None = None,
    before_close: Callable[[str], None] | None = None,
) -> str:
    """Copy bytes both ways until a side closes, the filter cuts, or nothing moved for ``idle_timeout``.

    Closes both sides and returns why it ended: ``closed`` (the opener closed), ``ended`` (the target
    closed), ``idle``, ``refused`` or ``error``; ``before_close`` hears it first. With ``keepalive_s``, the
    filter's :meth:`ByteFilter.idle` is asked for a keep-alive after that much silence.
    """
    stats = stats or LinkStats()
    last = time.monotonic()
    (o_reader, o_writer), (t_reader, t_writer) = opener, target

    async def pump(reader: asyncio.StreamReader, outbound: bool) -> None:
        nonlocal last
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            last = time.monotonic()
            if outbound:
                stats.outbound_bytes += len(data)
                forward, answer = byte_filter.outbound(data) if byte_filter else (data, b"")
                if answer:
                    o_writer.write(answer)
                if forward:
                    t_writer.write(forward)
                await t_writer.drain()
                await o_writer.drain()
            else:
                stats.inbound_bytes += len(data)
                forward = byte_filter.inbound(data) if byte_filter else data
                if forward:
                    o_writer.write(forward)
                    await o_writer.drain()

    async def watch() -> str:
        nudged = last
        tick = min(1.0, idle_timeout / 4, keepalive_s or 1.0)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - last >= idle_timeout:
                return "idle"
            if keepalive_s and byte_filter and now - max(last, nudged) >= keepalive_s:
                nudged = now
                ping = byte_filter.idle()
                if ping:
                    t_writer.write(ping)

    tasks = {
        asyncio.create_task(pump(o_reader, True)): "closed",
        asyncio.create_task(pump(t_reader, False)): "ended",
        asyncio.create_task(watch()): "idle",
    }
    why = "closed"
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if isinstance(exc, LinkRefused):
                why = "refused"
                log.warning("link cut: %s", exc)
            elif isinstance(exc, (OSError, ssl.SSLError, asyncio.IncompleteReadError)):
                why = "error"
            elif exc is not None:
                why = "error"
                log.error("link relay failed: %r", exc)
            else:
                why = tasks[task]
    finally:
        for task in tasks:
            task.cancel()
        if before_close is not None:
            before_close(why)
        if byte_filter is not None:
            byte_filter.closed()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(_close(o_writer), _close(t_writer))
    return why


Greeter = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable["ByteFilter | None"]]
Connector = Callable[[], Awaitable[tuple[Streams, "ByteFilter | None", float | None]]]


@dataclass
class LinkServer:
    """A running listener: the TLS link of a worker, or a main machine's loopback endpoint."""

    server: asyncio.Server
    host: str
    port: int
    stats: LinkStats

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)


async def serve_link(
    host: str,
    port: int,
    target_port: int,
    identity: LinkIdentity,
    peer_pem: str,
    idle_timeout: float,
    greeter: Greeter | None = None,
) -> LinkServer:
    """Listen on ``host:port`` with TLS; forward each connection from the pinned peer to ``127.0.0.1:target_port``.

    ``greeter`` runs on each admitted connection before any byte is forwarded: it may talk to the peer,
    raise :class:`LinkRefused` (the connection closes) or return a filter for the bytes that follow.
    """
    from homellm.serve.tls import fingerprint_of_pem

    pinned = fingerprint_of_pem(peer_pem.encode())
    ctx = server_context(identity, peer_pem)
    stats = LinkStats()

    async def admitted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if peer_fingerprint(writer) != pinned:  # belt and braces: the trust store admits only that one already
            log.warning("link from %s refused: not the paired certificate", peer)
            await _close(writer)
            return
        tune_socket(writer.get_extra_info("socket"))
        stats.sessions += 1
        stats.open += 1
        why = "error"
        try:
            byte_filter = await asyncio.wait_for(greeter(reader, writer), HANDSHAKE_TIMEOUT_S) if greeter else None
            try:
                target = await asyncio.open_connection("127.0.0.1", target_port, limit=BUFFER)
            except OSError:
                log.error("link from %s: nothing listens on 127.0.0.1:%s", peer, target_port)
                if byte_filter is not None:
                    byte_filter.closed()
                raise
            tune_socket(target[1].get_extra_info("socket"))
            why = await relay((reader, writer), target, idle_timeout, byte_filter, stats=stats)
        except Answered:
            why = "answered"
        except LinkRefused as exc:
            why = "refused"
            log.warning("link from %s refused: %s", peer, exc)
        except (TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            why = "error"
            log.info("link from %s ended before forwarding: %r", peer, exc)
        finally:
            stats.end(why)
            await _close(writer)
        log.info("link from %s ended: %s", peer, why)

    server = await asyncio.start_server(
        admitted, host, port, ssl=ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S, limit=BUFFER
    )
    bound = server.sockets[0].getsockname()
    return LinkServer(server, host, int(bound[1]), stats)


async def open_link(host: str, port: int, identity: LinkIdentity, peer_pem: str, what: str) -> Streams:
    """A TLS connection to ``host:port`` that presents ``identity`` and accepts only ``peer_pem``.

    ``what`` names the other machine in error messages.
    """
    from homellm.serve.tls import fingerprint_of_pem

    ctx = client_context(identity, peer_pem)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname="homellm-link", limit=BUFFER),
            HANDSHAKE_TIMEOUT_S,
        )
    except ssl.SSLCertVerificationError:
        raise LinkRefused(
            _("{what} at {host}:{port} presented a certificate other than the one pinned when it was paired; "
              "refusing to use it (pair it again if it was reinstalled)").format(what=what, host=host, port=port)
        ) from None  # fmt: skip
    except ssl.SSLError as exc:
        raise LinkRefused(_("{what} at {host}:{port} refused the TLS handshake ({error})").format(
            what=what, host=host, port=port, error=exc.reason or exc)) from None  # fmt: skip
    except (TimeoutError, OSError) as exc:
        error = exc.strerror if isinstance(exc, OSError) and exc.strerror else _("no answer")
        raise HomeLLMError(
            _("cannot reach {what} at {host}:{port} ({error}); is `homellm join --rpc` running there?").format(
                what=what, host=host, port=port, error=error)
        ) from None  # fmt: skip
    if peer_fingerprint(writer) != fingerprint_of_pem(peer_pem.encode()):
        await _close(writer)
        raise LinkRefused(_("{what} presented a certificate other than the pinned one; refusing").format(what=what))
    tune_socket(writer.get_extra_info("socket"))
    return reader, writer


async def serve_local_endpoint(
    connect: Connector,
    idle_timeout: float,
    admit: Callable[[tuple[str, int]], bool] | None = None,
    before_close: Callable[[str], None] | None = None,
) -> LinkServer:
    """A listener on ``127.0.0.1`` (any free port) that forwards each connection over a link ``connect`` opens.

    ``connect`` returns the link's streams, the filter for what crosses it and the keep-alive interval.
    ``admit`` can refuse a local peer (by its address) before anything is opened; ``before_close`` hears
    why each session ended before its sockets close (see :func:`relay`).
    """
    stats = LinkStats()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if admit is not None and not admit(peer):
            log.warning("local link endpoint: refused %s (not the engine)", peer)
            await _close(writer)
            return
        tune_socket(writer.get_extra_info("socket"))
        stats.sessions += 1
        stats.open += 1
        why = "error"
        try:
            remote, byte_filter, keepalive = await connect()
            why = await relay((reader, writer), remote, idle_timeout, byte_filter, keepalive, stats, before_close)
        except HomeLLMError as exc:
            log.error("local link endpoint: %s", exc)
            if before_close is not None:
                before_close("refused")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            log.error("local link endpoint: %r", exc)
            if before_close is not None:
                before_close("error")
        finally:
            stats.end(why)
            await _close(writer)

    server = await asyncio.start_server(accepted, "127.0.0.1", 0, limit=BUFFER)
    return LinkServer(server, "127.0.0.1", int(server.sockets[0].getsockname()[1]), stats)
