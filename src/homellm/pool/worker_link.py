"""The link between the main gateway and a worker: TLS pinned in both directions, to one local port.

One link for both kinds of worker: a pool member (its Ollama, llama-server or embedded engine) and a
split's worker (``homellm join --rpc``: llama.cpp's RPC server). On the worker, :func:`serve_link`
listens on one address and, for each connection,

1. drops it unless it comes from the paired main gateway's address (``allowed_peer``), before any TLS.
   On Linux a socket filter on the listening socket drops a stranger's SYN, so a third machine on the
   LAN sees no open port at all (its connection times out, as behind a firewall); elsewhere, or for
   IPv6, the connection is closed at once, before a handshake;
2. does TLS 1.3 presenting the worker's own certificate and requiring a client certificate, which must
   be exactly the main gateway's (pinned: OpenSSL verifies it against that one certificate, then its
   SHA-256 fingerprint is compared);
3. runs the ``greeter`` when one is given (the split's: same llama.cpp build, or no RPC at all; it may
   answer the connection itself, refuse it, or return a :class:`ByteFilter` for what follows);
4. connects to ``127.0.0.1:target_port`` (the model server or the RPC server, each bound to loopback)
   and copies bytes both ways (:func:`relay`) until either side closes, the filter cuts, or nothing
   moves for ``idle_timeout`` seconds. TCP keepalives and a user timeout end a link whose peer vanished
   without closing (power cut, cable pulled), so a dead peer cannot hold the other side.

Without a greeter it never reads what it carries, so any TCP protocol goes through. On the main
gateway, :func:`client_context` makes the TLS context that presents the main's link certificate and
trusts exactly the worker's; the pool's backend client (``serve/upstream.py``) takes it as its
``ssl_context``, and :func:`open_link` / :func:`serve_local_endpoint` carry a split's RPC.

Both certificates are exchanged inside the pairing's PAKE channel (``homellm pair --worker`` /
``homellm join``, see :mod:`homellm.pool.join`), so neither side ever trusts a certificate it saw
first on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
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
from homellm.serve.tls import TlsFiles, fingerprint_of_pem, format_fingerprint

log = logging.getLogger("homellm.link")
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 512
# what a stream reader buffers before it stops reading the socket: large, so that a link's TCP window can
# open to its bandwidth x delay (asyncio's 64 KiB default caps a 1 Gbit/s, 5 ms link at a fraction of it)
BUFFER = 8 * 1024 * 1024
READ_SIZE = 256 * 1024
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


def link_identity(folder: Path, name: str, client: bool) -> TlsFiles:
    """This machine's certificate for links, made once in ``folder`` (0700; the key 0600).

    The main gateway's is a client certificate (it connects to workers); a worker's a server one.
    """
    from homellm.serve.network import hostname
    from homellm.serve.tls import generate_self_signed

    cert, key = folder / "cert.pem", folder / "key.pem"
    generated = False
    if not (cert.exists() and key.exists()):
        generate_self_signed(cert, key, [f"{name} ({hostname()})"[:64], "localhost"], ["127.0.0.1"], client=client)
        generated = True
    return TlsFiles(cert, key, fingerprint_of_pem(cert.read_bytes()), generated)


def main_link_identity(home: Path) -> TlsFiles:
    """The certificate a main gateway presents to its workers (pool members and split workers alike)."""
    return link_identity(home / "tls" / "link", "homellm main gateway", client=True)


def worker_link_identity(home: Path) -> TlsFiles:
    """The certificate a worker's link presents to the main gateway."""
    return link_identity(home / "tls" / "worker", "homellm worker", client=False)


def _pinned(context: ssl.SSLContext, peer_cert_pem: str) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_verify_locations(cadata=peer_cert_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise HomeLLMError(_("the pinned certificate of the other machine is damaged ({error}); pair again").format(
            error=exc)) from None  # fmt: skip
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the peer's own leaf is the only trust anchor
    return context


def client_context(own: TlsFiles, peer_cert_pem: str) -> ssl.SSLContext:
    """The main gateway's side: present ``own`` (its link certificate), trust exactly the worker's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the pin, not a name, identifies the worker
    context.load_cert_chain(str(own.cert), str(own.key))
    return _pinned(context, peer_cert_pem)


def server_context(own: TlsFiles, peer_cert_pem: str) -> ssl.SSLContext:
    """The worker's side: present ``own``, admit only a client presenting exactly ``peer_cert_pem``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(own.cert), str(own.key))
    return _pinned(context, peer_cert_pem)


def peer_fingerprint(writer: asyncio.StreamWriter) -> str | None:
    """The SHA-256 fingerprint of the certificate the other end of a TLS stream presented."""
    tls = writer.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    return format_fingerprint(hashlib.sha256(der).hexdigest()) if der else None


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


def _address(ip: str) -> str:
    """One spelling per address (``::ffff:10.0.0.1`` is ``10.0.0.1``)."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


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


Greeter = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable["ByteFilter | None"]]
Connector = Callable[[], Awaitable[tuple[Streams, "ByteFilter | None", float | None]]]


@dataclass
class LinkStats:
    """Bytes and sessions of a local endpoint, for the banner and the tests."""

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
            data = await reader.read(READ_SIZE)
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


@dataclass
class LinkServer:
    """A running link: where it listens and what it has let through or refused."""

    server: asyncio.Server
    target_port: int
    peer_fingerprint: str
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=lambda: {"address": 0, "certificate": 0, "target": 0})
    open: int = 0
    filtered: bool = False  # a socket filter drops strangers' packets (Linux, IPv4)
    stats: LinkStats = field(default_factory=LinkStats)

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5)


async def serve_link(
    listen: tuple[str, int],
    target_port: int,
    own: TlsFiles,
    peer_cert_pem: str,
    *,
    allowed_peer: str | None = None,
    idle_timeout: float = 900.0,
    greeter: Greeter | None = None,
) -> LinkServer:
    """Start the worker's end of a link on ``listen`` (address, port; port 0 picks one), forwarding to
    ``127.0.0.1:target_port``; only ``allowed_peer`` (when given) presenting ``peer_cert_pem`` gets through.

    ``greeter`` runs on each admitted connection before any byte is forwarded: it may talk to the peer,
    raise :class:`LinkRefused` (the connection closes) or :class:`Answered`, or return a filter for the
    bytes that follow.
    """
    context = server_context(own, peer_cert_pem)
    peer_fp = fingerprint_of_pem(peer_cert_pem.encode())
    allowed = _address(allowed_peer) if allowed_peer else None
    link: LinkServer | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert link is not None
        peer = writer.get_extra_info("peername")
        if (allowed is not None and (not peer or _address(str(peer[0])) != allowed)) or link.open >= MAX_CONNECTIONS:
            link.refused["address"] += 1
            writer.transport.abort()  # before TLS: nothing is said to a stranger
            return
        link.open += 1
        try:
            await _serve_one(reader, writer, link, context, idle_timeout, greeter)
        finally:
            link.open -= 1

    sock, filtered = _listening_socket(listen, allowed)
    server = await asyncio.start_server(handle, sock=sock, limit=BUFFER)
    link = LinkServer(server, target_port, peer_fp, filtered=filtered)
    return link


def _listening_socket(listen: tuple[str, int], allowed: str | None) -> tuple[socket.socket, bool]:
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    filtered = False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if allowed is not None and family == socket.AF_INET and ":" not in allowed:
            filtered = _only_from(sock, allowed)
        sock.bind(listen)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, filtered


SO_ATTACH_FILTER = 26
SKF_NET_OFF = 0xFFF00000  # -0x100000 as unsigned: offsets from the IP header (a TCP socket's data is TCP)


def _only_from(sock: socket.socket, address: str) -> bool:
    """Linux: a classic BPF filter that drops every IPv4 packet not from ``address``, SYNs included, so
    the port does not even answer a stranger. True when attached (elsewhere: the handler drops them)."""
    import ctypes
    import struct
    import sys

    if sys.platform != "linux":
        return False
    source = int.from_bytes(socket.inet_aton(address), "big")
    program = [
        (0x20, 0, 0, SKF_NET_OFF + 12),  # ld [ip source address]
        (0x15, 0, 1, source),  # jeq #address, accept, drop
        (0x06, 0, 0, 0x40000),  # ret #262144: accept the packet
        (0x06, 0, 0, 0),  # ret #0: drop it
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program
    except OSError as exc:
        log.warning("link: no socket filter (%s); strangers' connections are closed instead", exc)
        return False
    return True


async def _serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    link: LinkServer,
    context: ssl.SSLContext,
    idle_timeout: float,
    greeter: Greeter | None,
) -> None:
    peer = writer.get_extra_info("peername")
    try:
        await writer.start_tls(context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        link.refused["certificate"] += 1
        log.warning("link: refused a connection without the main gateway's certificate (%s)", exc)
        writer.transport.abort()
        return
    if peer_fingerprint(writer) != link.peer_fingerprint:  # belt and braces: the trust store admits that one only
        link.refused["certificate"] += 1
        writer.transport.abort()
        return
    tune_socket(writer.get_extra_info("socket"))
    stats = link.stats
    stats.sessions += 1
    stats.open += 1
    why = "error"
    try:
        byte_filter = await asyncio.wait_for(greeter(reader, writer), HANDSHAKE_TIMEOUT) if greeter else None
        try:
            target = await asyncio.open_connection("127.0.0.1", link.target_port, limit=BUFFER)
        except OSError:
            link.refused["target"] += 1
            log.error("link from %s: nothing listens on 127.0.0.1:%s", peer, link.target_port)
            if byte_filter is not None:
                byte_filter.closed()
            return
        tune_socket(target[1].get_extra_info("socket"))
        link.accepted += 1
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


async def open_link(host: str, port: int, own: TlsFiles, peer_cert_pem: str, what: str) -> Streams:
    """The main gateway's side: a TLS connection to ``host:port`` presenting ``own`` and accepting only
    ``peer_cert_pem``. ``what`` names the other machine in error messages."""
    context = client_context(own, peer_cert_pem)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname="homellm-link", limit=BUFFER),
            HANDSHAKE_TIMEOUT,
        )
    except ssl.SSLCertVerificationError:
        raise LinkRefused(
            _("{what} at {host}:{port} presented a certificate other than the one pinned when it was paired; "
              "refusing to use it (pair it again if it was reinstalled)").format(what=what, host=host, port=port)
        ) from None  # fmt: skip
    except ssl.SSLError as exc:
        raise LinkRefused(_("{what} at {host}:{port} refused the TLS handshake ({error})").format(
            what=what, host=host, port=port, error=exc.reason or exc)) from None  # fmt: skip
    except ConnectionResetError:  # it accepted the connection, then cut it during the handshake: a refusal
        raise LinkRefused(
            _("{what} at {host}:{port} cut the TLS handshake: it does not admit this machine (is it paired with this "
              "gateway?)").format(what=what, host=host, port=port)
        ) from None  # fmt: skip
    except (TimeoutError, OSError) as exc:
        error = exc.strerror if isinstance(exc, OSError) and exc.strerror else _("no answer")
        raise HomeLLMError(
            _("cannot reach {what} at {host}:{port} ({error}); is `homellm join` running there?").format(
                what=what, host=host, port=port, error=error)
        ) from None  # fmt: skip
    if peer_fingerprint(writer) != fingerprint_of_pem(peer_cert_pem.encode()):
        await _close(writer)
        raise LinkRefused(_("{what} presented a certificate other than the pinned one; refusing").format(what=what))
    tune_socket(writer.get_extra_info("socket"))
    return reader, writer


@dataclass
class LocalEndpoint:
    """A main machine's loopback listener that carries each connection over a link."""

    server: asyncio.Server
    port: int
    stats: LinkStats


async def serve_local_endpoint(
    connect: Connector,
    idle_timeout: float,
    admit: Callable[[tuple[str, int]], bool] | None = None,
    before_close: Callable[[str], None] | None = None,
) -> LocalEndpoint:
    """A listener on ``127.0.0.1`` (any free port) that forwards each connection over a link ``connect`` opens.

    For a program that cannot speak the link's TLS itself (llama.cpp's RPC client). ``connect`` returns
    the link's streams, the filter for what crosses it and the keep-alive interval. ``admit`` can refuse
    a local peer (by its address) before anything is opened; ``before_close`` hears why each session
    ended before its sockets close (see :func:`relay`).
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
    return LocalEndpoint(server, int(server.sockets[0].getsockname()[1]), stats)
