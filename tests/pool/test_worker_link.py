"""The worker link on loopback with real sockets and real TLS: it forwards only for the paired main
gateway's address and certificate, pins the worker's certificate on the main's side, and ends idle
tunnels. (The same link carries issue 14's llama.cpp RPC: it never reads what it carries.)"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from homellm.pool.worker_link import LinkServer, client_context, link_identity, serve_link
from homellm.serve.tls import TlsFiles


@pytest.fixture
def identities(tmp_path: Path) -> dict[str, TlsFiles]:
    return {
        "main": link_identity(tmp_path / "main", "homellm main gateway", client=True),
        "worker": link_identity(tmp_path / "worker", "homellm worker", client=False),
        "stranger": link_identity(tmp_path / "stranger", "homellm main gateway", client=True),
        "impostor": link_identity(tmp_path / "impostor", "homellm worker", client=False),
    }


async def _echo_server() -> tuple[asyncio.Server, int]:
    """The local model server stand-in: echoes what it reads, upper-cased (any TCP protocol would do)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _link(ids: dict[str, TlsFiles], **kw: object) -> AsyncIterator[tuple[LinkServer, int]]:
    echo, port = await _echo_server()
    link = await serve_link(("127.0.0.1", 0), port, ids["worker"], ids["main"].cert.read_text(), **kw)  # type: ignore[arg-type]
    try:
        yield link, port
    finally:
        await link.close()
        echo.close()


async def _ask(port: int, context: ssl.SSLContext | None, data: bytes = b"hello", source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, local_addr=(source, 0),
                                                   server_hostname="127.0.0.1" if context else None)  # fmt: skip
    writer.write(data)
    await writer.drain()
    answer = await reader.read(65536)
    writer.close()
    return answer


def test_the_main_gateway_gets_through(identities: dict[str, TlsFiles]) -> None:
    async def run() -> None:
        async for link, _ in _link(identities):
            main = client_context(identities["main"], identities["worker"].cert.read_text())
            assert await _ask(link.port, main) == b"HELLO"
            big = bytes(range(256)) * 4096  # 1 MiB both ways, in order
            reader, writer = await asyncio.open_connection("127.0.0.1", link.port, ssl=main)
            writer.write(big)
            await writer.drain()
            got = b""
            while len(got) < len(big):
                got += await reader.read(1 << 20)
            writer.close()
            assert got == big.upper()
            assert link.accepted == 2 and link.refused == {"address": 0, "certificate": 0, "target": 0}

    asyncio.run(run())


def test_no_certificate_or_another_one_is_refused(identities: dict[str, TlsFiles]) -> None:
    async def run() -> None:
        async for link, _ in _link(identities):
            worker_pem = identities["worker"].cert.read_text()
            bare = ssl.create_default_context(cadata=worker_pem)
            bare.check_hostname = False
            bare.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                answer = await _ask(link.port, bare)
                assert answer == b""  # TLS 1.3: the refusal may only show on the first read
                raise ConnectionError("closed")
            stranger = client_context(identities["stranger"], worker_pem)
            with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
                answer = await _ask(link.port, stranger)
                assert answer == b""
                raise ConnectionError("closed")
            with pytest.raises((ssl.SSLError, ConnectionError)):  # plain TCP: no TLS, nothing forwarded
                answer = await _ask(link.port, None)
                assert answer == b""
                raise ConnectionError("closed")
            await asyncio.sleep(0)
            assert link.accepted == 0 and link.refused["certificate"] == 3

    asyncio.run(run())


def test_the_main_pins_the_workers_certificate(identities: dict[str, TlsFiles]) -> None:
    """A link presenting another certificate (an impostor on the worker's address) is refused by the main."""

    async def run() -> None:
        echo, port = await _echo_server()
        impostor = await serve_link(("127.0.0.1", 0), port, identities["impostor"], identities["main"].cert.read_text())
        try:
            main = client_context(identities["main"], identities["worker"].cert.read_text())
            with pytest.raises(ssl.SSLCertVerificationError):
                await _ask(impostor.port, main)
            assert impostor.accepted == 0
        finally:
            await impostor.close()
            echo.close()

    asyncio.run(run())


def test_only_the_main_gateways_address_is_admitted(identities: dict[str, TlsFiles]) -> None:
    async def run() -> None:
        async for link, _ in _link(identities, allowed_peer="127.0.0.2"):
            main = client_context(identities["main"], identities["worker"].cert.read_text())
            # from another address, even with the right certificate: on Linux the socket filter drops the
            # SYN (the port does not answer at all); elsewhere the connection closes before any TLS byte
            if link.filtered:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(_ask(link.port, main, source="127.0.0.1"), 2)
                assert link.refused["address"] == 0
            else:
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    await _ask(link.port, main, source="127.0.0.1")
                assert link.refused["address"] == 1
            assert link.accepted == 0
            assert await _ask(link.port, main, source="127.0.0.2") == b"HELLO"
            assert link.accepted == 1

    asyncio.run(run())


def test_an_idle_tunnel_is_closed(identities: dict[str, TlsFiles]) -> None:
    async def run() -> None:
        async for link, _ in _link(identities, idle_timeout=0.2):
            main = client_context(identities["main"], identities["worker"].cert.read_text())
            reader, writer = await asyncio.open_connection("127.0.0.1", link.port, ssl=main)
            writer.write(b"x")
            assert await reader.read(10) == b"X"
            assert await reader.read(10) == b""  # nothing moved: the link ended the tunnel
            writer.close()

    asyncio.run(run())


def test_a_target_that_is_not_running(identities: dict[str, TlsFiles], tmp_path: Path) -> None:
    async def run() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        link = await serve_link(("127.0.0.1", 0), dead, identities["worker"], identities["main"].cert.read_text())
        try:
            main = client_context(identities["main"], identities["worker"].cert.read_text())
            assert await _ask(link.port, main) == b""
            assert link.refused["target"] == 1
        finally:
            await link.close()

    asyncio.run(run())
