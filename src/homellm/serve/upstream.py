"""HTTP/1.1 to a backend: a lean keep-alive connection pool on asyncio protocols and httptools.

Measured on a 2-core machine with wrk, a Go backend and uvicorn in front, a bare proxy did 4,500
requests/s through aiohttp's ClientSession and 15,000 through this pool: the gateway's hot path is
one request line and a few headers out, and llhttp's parser (httptools, which uvicorn already uses)
on the way back. It does exactly what the gateway needs and no more:

* keep-alive reuse (idle connections are dropped after :data:`IDLE_REUSE` seconds, and a request on a
  reused connection that closes before any answer byte is retried once on a fresh one);
* answers read whole, or streamed as they arrive with back-pressure (reading pauses while the gateway's
  client is slower than the backend);
* a connect timeout, and an idle timeout between two reads (the backend "went silent");
* closing an unfinished answer closes its connection, which is what stops a backend's generation;
* plain TCP or TLS (a pinned context, for backends on other machines).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

IDLE_REUSE = 2.0  # uvicorn-based backends (llama-cpp-python) close idle keep-alive connections after 5 s
HIGH_WATER = 16  # chunks buffered before reading from the backend pauses
MAX_HEADER_BYTES = 64 * 1024


class UpstreamClosed(ConnectionError):
    """The backend closed the connection before the answer was complete."""


class UpstreamAborted(ConnectionError):
    """The gateway gave up on the backend (it stopped answering): fail now, and never retry it here."""


class AnswerTooLarge(Exception):
    """The backend's answer was larger than the gateway reads whole (a pool member may be hostile)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class ConnectFailed(OSError):
    """The backend could not be reached (refused, unresolvable, or no answer within the connect timeout)."""


class _Connection(asyncio.Protocol):
    """One connection; carries one request at a time."""

    def __init__(self, pool: Upstream) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._header_name = b""
        self._header_bytes = 0

    # ---- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.pool.reads += 1  # signs of life, for the pool's health checks (serve/router.py)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # pragma: no cover - backends never upgrade
            self._fail(UpstreamClosed("the backend tried to switch protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"the backend sent malformed HTTP ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._all.discard(self)
        self._fail(UpstreamClosed("the backend closed the connection"))

    def pause_writing(self) -> None:  # request bodies are small: nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # ---- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("headers too large")
        if self.response is not None:
            self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        r = self.response
        if r is not None:
            r.status = self.parser.get_status_code()
            r.keep_alive = self.parser.should_keep_alive()
            if not r.headers_ready.done():
                r.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        r = self.response
        if r is not None:
            r._push(body)

    def on_message_complete(self) -> None:
        r = self.response
        if r is not None:
            r._finish()

    # ---- state -------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        r = self.response
        if r is not None and not r.complete:
            r._error(exc)

    def send(self, request: bytes, response: UpstreamResponse) -> None:
        assert self.transport is not None
        self.response = response
        self._header_bytes = 0
        self.parser = httptools.HttpResponseParser(self)
        self.transport.write(request)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class UpstreamResponse:
    """A backend's answer: status and headers first; the body whole (:meth:`read`) or as it comes (:meth:`chunks`)."""

    def __init__(self, conn: _Connection, idle_timeout: float) -> None:
        self._conn = conn
        self.idle_timeout = idle_timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.complete = False
        self.headers_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._exc: Exception | None = None
        self._paused = False
        self._released = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    # fed by the connection

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _push(self, data: bytes) -> None:
        self._chunks.append(data)
        if len(self._chunks) >= HIGH_WATER and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _error(self, exc: Exception) -> None:
        self._exc = exc
        if not self.headers_ready.done():
            self.headers_ready.set_exception(exc)
        self._wake()

    # read by the gateway

    async def _next(self) -> bytes | None:
        """Everything that arrived since the last call (one piece of bytes), None at the end."""
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                if self._paused and self._conn.transport is not None:
                    self._paused = False
                    self._conn.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self._exc is not None:
                raise self._exc
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(self.idle_timeout, self._silent, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    @staticmethod
    def _silent(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded from chunked transfer encoding); raises on a broken answer."""
        while (data := await self._next()) is not None:
            yield data

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; :class:`AnswerTooLarge` (and the connection closed) beyond ``limit`` bytes."""
        parts = []
        size = 0
        while (data := await self._next()) is not None:
            size += len(data)
            if limit is not None and size > limit:
                self.close()
                raise AnswerTooLarge(limit)
            parts.append(data)
        self.release()
        return b"".join(parts)

    def release(self) -> None:
        """Done with this answer: a complete one returns its connection to the pool, any other closes it."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        conn.response = None
        if self.complete and self.keep_alive and not conn.closed:
            conn.pool._give_back(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Abandon the answer: an unfinished one closes the connection (which stops the backend)."""
        if not self.complete:
            self._conn.close()
        self.release()


class Upstream:
    """Connections to one backend (``http://`` or ``https://`` base URL)."""

    def __init__(
        self, base_url: str, connect_timeout: float, idle_timeout: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl_context if parts.scheme == "https" else None
        if parts.scheme == "https" and self.ssl is None:
            self.ssl = ssl.create_default_context()
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = f"{host}:{self.port}".encode()
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self.reads = 0  # data arrivals from the backend so far

    def _give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _reusable(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_REUSE:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )  # fmt: skip
        except TimeoutError:
            raise ConnectFailed(f"no answer from {self.host}:{self.port} within {self.connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(str(exc)) from exc
        self._all.add(conn)
        return conn

    def _request_bytes(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> bytes:
        lines = [method.encode(), b" ", path.encode("latin-1"), b" HTTP/1.1\r\nHost: ", self.host_header, b"\r\n"]
        for k, v in (headers or {}).items():
            lines += [k.encode("latin-1"), b": ", v.encode("latin-1"), b"\r\n"]
        lines += [b"Content-Length: ", str(len(body or b"")).encode(), b"\r\n\r\n"]
        if body:
            lines.append(body)
        return b"".join(lines)

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """Send a request; returns once the answer's status and headers are in."""
        raw = self._request_bytes(method, path, body, headers)
        for attempt in (0, 1):
            conn = self._reusable() if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            response = UpstreamResponse(conn, self.idle_timeout)
            conn.send(raw, response)
            timer = asyncio.get_running_loop().call_later(self.idle_timeout, UpstreamResponse._silent,
                                                          response.headers_ready)  # fmt: skip
            try:
                await response.headers_ready
            except UpstreamClosed:
                conn.close()
                if reused and not response.headers:  # a kept-alive connection the backend had closed: retry once
                    continue
                raise
            except BaseException:
                conn.close()  # cancelled or silent: this connection is in an unknown state
                raise
            finally:
                timer.cancel()
            if method == "HEAD":  # no body follows, whatever Content-Length says
                response.complete = True
                response.keep_alive = False
            return response
        raise UpstreamClosed("the backend closed the connection")  # pragma: no cover - the loop returns or raises

    async def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    def abort(self, reason: str) -> int:
        """Fail every answer in progress with :class:`UpstreamAborted` and close every connection (the
        backend is gone or hung); returns how many answers were cut."""
        cut = 0
        for conn in list(self._all):
            r = conn.response
            if r is not None and not r.complete:
                r._error(UpstreamAborted(reason))
                cut += 1
            conn.close()
        self._all.clear()
        self._idle.clear()
        return cut
