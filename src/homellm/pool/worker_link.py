"""The link between the main gateway and a worker: TLS pinned in both directions, to one local port.

On the worker, :func:`serve_link` listens on one address and, for each connection,

1. drops it unless it comes from the paired main gateway's address (``allowed_peer``), before any TLS.
   On Linux a socket filter on the listening socket drops a stranger's SYN, so a third machine on the
   LAN sees no open port at all (its connection times out, as behind a firewall); elsewhere, or for
   IPv6, the connection is closed at once, before a handshake;
2. does TLS presenting the worker's own certificate and requiring a client certificate, which must be
   exactly the main gateway's (pinned: OpenSSL verifies it against that one certificate, then its
   SHA-256 fingerprint is compared);
3. connects to ``127.0.0.1:target_port`` (the worker's Ollama, llama-server, embedded engine or, for
   ``homellm join --rpc``, llama.cpp's rpc-server, each bound to loopback) and copies bytes both ways
   until either side closes or nothing moves for ``idle_timeout`` seconds.

It never reads what it carries, so any TCP protocol goes through. On the main gateway,
:func:`client_context` makes the TLS context that presents the main's link certificate and trusts
exactly the worker's; the pool's backend client (``serve/upstream.py``) takes it as its ``ssl_context``.

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
from dataclasses import dataclass, field
from pathlib import Path

from homellm.serve.tls import TlsFiles, fingerprint_of_pem, format_fingerprint

log = logging.getLogger("homellm.link")
READ_SIZE = 256 * 1024
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS = 512


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


def _pinned(context: ssl.SSLContext, peer_cert_pem: str) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=peer_cert_pem)
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


def _address(ip: str) -> str:
    """One spelling per address (``::ffff:10.0.0.1`` is ``10.0.0.1``)."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


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

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await self.server.wait_closed()


async def serve_link(
    listen: tuple[str, int],
    target_port: int,
    own: TlsFiles,
    peer_cert_pem: str,
    *,
    allowed_peer: str | None = None,
    idle_timeout: float = 900.0,
) -> LinkServer:
    """Start the worker's end of a link on ``listen`` (address, port; port 0 picks one), forwarding to
    ``127.0.0.1:target_port``; only ``allowed_peer`` (when given) presenting ``peer_cert_pem`` gets through."""
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
            await _serve_one(reader, writer, link, context, peer_fp, idle_timeout)
        finally:
            link.open -= 1

    sock, filtered = _listening_socket(listen, allowed)
    server = await asyncio.start_server(handle, sock=sock, limit=READ_SIZE)
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
    peer_fp: str,
    idle_timeout: float,
) -> None:
    try:
        await writer.start_tls(context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        link.refused["certificate"] += 1
        log.warning("link: refused a connection without the main gateway's certificate (%s)", exc)
        writer.transport.abort()
        return
    tls = writer.get_extra_info("ssl_object")
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    if der is None or format_fingerprint(hashlib.sha256(der).hexdigest()) != peer_fp:
        link.refused["certificate"] += 1
        writer.transport.abort()
        return
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", link.target_port, limit=READ_SIZE)
    except OSError:
        link.refused["target"] += 1
        writer.close()
        return
    link.accepted += 1
    await _pipe_both(reader, writer, up_reader, up_writer, idle_timeout)


async def _pipe_both(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
    idle_timeout: float,
) -> None:
    """Copy both ways until one side ends or nothing moves either way for ``idle_timeout`` seconds."""
    last = [time.monotonic()]

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            data = await src.read(READ_SIZE)
            if not data:
                return
            last[0] = time.monotonic()
            dst.write(data)
            await dst.drain()

    async def watchdog() -> None:
        while True:
            left = last[0] + idle_timeout - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)

    tasks = [asyncio.ensure_future(t) for t in (copy(a_reader, b_writer), copy(b_reader, a_writer), watchdog())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        for w in (a_writer, b_writer):
            with contextlib.suppress(Exception):
                w.close()
