"""Start the gateway: pick the backend, enforce the network rules, set up TLS, run uvicorn."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homellm.errors import UsageError
from homellm.i18n import _
from homellm.serve.backends import Backend, detect_backend
from homellm.serve.network import is_loopback_bind
from homellm.serve.request import BODY_TIMED_OUT, CLIENT_GONE, REQUEST_TASK
from homellm.serve.router import Router
from homellm.serve.tls import TlsFiles, ensure_tls
from homellm.settings import Settings

log = logging.getLogger("homellm.gateway")
OLLAMA_DEFAULT = "http://127.0.0.1:11434"


@dataclass
class Plan:
    """Everything decided before the server starts, shown to the user."""

    settings: Settings
    backend: Backend | Router
    tls: TlsFiles | None
    warnings: list[str]

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


def make_backend(settings: Settings, models: list[Path] | None = None) -> Backend:
    """--backend URL, --model PATH / models folder (embedded engine), in that order."""
    if settings.backend:
        if settings.worker:
            raise UsageError(_("--with splits a model of the embedded engine: give --model, not --backend"))
        return asyncio.run(detect_backend(settings.backend, settings.idle_timeout_s))
    paths = models or ([settings.model] if settings.model else [])
    if not paths:
        raise UsageError(
            _(
                "choose a backend: --backend URL (Ollama, llama-server, vLLM, LM Studio), "
                "--model FILE.gguf or --models-dir DIR; or run `homellm up`"
            )
        )
    from homellm.serve.engine_backend import EngineBackend

    for p in paths:
        if not p.is_file():
            raise UsageError(_("no such file: {path}").format(path=p))
    return EngineBackend(
        paths, settings.home / "engine", settings.engine_ctx, settings.engine_port, settings.idle_timeout_s,
        settings.worker,
    )  # fmt: skip


def check_exposure_rules(settings: Settings, active_keys: int) -> list[str]:
    """Beyond loopback the gateway needs TLS and at least one key, unless --insecure (then it says so)."""
    warnings: list[str] = []
    if is_loopback_bind(settings.host):
        return warnings
    problems = []
    if not settings.tls_enabled:
        problems.append(_("TLS is off"))
    if active_keys == 0:
        problems.append(_("there is no API key (create one: homellm keys create NAME)"))
    if problems and not settings.insecure:
        raise UsageError(
            _("refusing to listen on {host}: {problems}; fix that, or pass --insecure if you really mean it").format(
                host=settings.host, problems="; ".join(problems)
            )
        )
    for p in problems:
        warnings.append(_("INSECURE: listening on {host} although {problem}").format(host=settings.host, problem=p))
    return warnings


def prepare(settings: Settings, backend: Backend | Router, active_keys: int) -> Plan:
    from homellm.serve.exposure import exposure_warning

    warnings = check_exposure_rules(settings, active_keys)
    tls = ensure_tls(settings.home, settings.tls_cert, settings.tls_key) if settings.tls_enabled else None
    for b in [m.backend for m in backend.members] if isinstance(backend, Router) else [backend]:
        if not b.managed:
            warning = exposure_warning(b.base_url, b.kind)
            if warning:
                warnings.append(warning)
    return Plan(settings, backend, tls, warnings)


class ConnectionCap:
    """At most ``limit`` open connections per client address (0: no cap)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        if self.limit and self.open.get(ip, 0) >= self.limit:
            return False
        self.open[ip] = self.open.get(ip, 0) + 1
        return True

    def release(self, ip: str) -> None:
        left = self.open.get(ip, 1) - 1
        if left > 0:
            self.open[ip] = left
        else:
            self.open.pop(ip, None)


def _refuse(transport: Any, status: bytes, message: bytes, content_type: bytes = b"application/json") -> None:
    transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nConnection: close\r\n"
                    b"Content-Length: " + str(len(message)).encode() + b"\r\n\r\n" + message)  # fmt: skip
    transport.close()


def _peer_ip(transport: Any) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else ""


def guarded_protocol(settings: Settings, cap: ConnectionCap | None) -> type:
    """uvicorn's HTTP protocol (httptools where installed, else h11) with guards of its own.

    * request headers must arrive within ``header_timeout_s`` (uvicorn's keep-alive timer is
      cancelled by any byte, so a client trickling headers, slowloris, would hold a connection forever);
    * a body must arrive within ``body_timeout_s`` of its headers (408, then the connection closes);
    * with ``cap``, one client address may hold at most ``max_connections_per_ip`` connections, so one
      host on the LAN cannot exhaust the gateway's file descriptors (over TLS, :func:`https_front` counts).
    """
    base: type
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - platforms without an httptools wheel
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    header_timeout, body_timeout = settings.header_timeout_s, settings.body_timeout_s

    class GuardedProtocol(base):  # type: ignore[misc]
        _timer: asyncio.TimerHandle | None = None
        _ip: str | None = None
        _phase = ""

        def _arm(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._phase = ""

        def _too_slow(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._phase == "body":
                if self.cycle is not None:  # the gateway records the 408 the client got, not a cancellation
                    self.cycle.scope[BODY_TIMED_OUT] = True
                _refuse(self.transport, b"408 Request Timeout", b'{"error":"the request body did not arrive in time"}')
            self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if cap is not None:
                ip = _peer_ip(transport)
                if not cap.admit(ip):
                    _refuse(
                        transport, b"503 Service Unavailable", b'{"error":"too many connections from your address"}'
                    )
                    return
                self._ip = ip
            self._arm("headers", header_timeout)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                return  # still waiting for a request's headers: the header timer runs
            if cycle.more_body:
                # a pipelined request waits behind an answer in progress: its body timer starts with it
                if self._phase != "body" and not getattr(self, "pipeline", None):
                    self._arm("body", body_timeout)
            elif self._phase:
                self._disarm()  # the whole request is in; the app runs

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:  # a pipelined request now runs
                if cycle.more_body:
                    self._arm("body", body_timeout)
                else:
                    self._disarm()
                return
            self._arm("headers", header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # the client left mid-request: cancel the gateway's work on it now (it closes the upstream
                # request, which stops the backend) instead of a watcher task per request
                task = cycle.scope.get(REQUEST_TASK)
                if task is not None and not task.done():
                    cycle.scope[CLIENT_GONE] = True
                    task.cancel()
            if self._ip is not None and cap is not None:
                cap.release(self._ip)
                self._ip = None
            super().connection_lost(exc)

    return GuardedProtocol


_HOST = re.compile(rb"\r\nhost:[ \t]*([A-Za-z0-9.\-\[\]:]{1,100})[ \t]*\r\n", re.IGNORECASE)


def https_front(settings: Settings, tls: TlsFiles, inner: type, cap: ConnectionCap) -> type:
    """The gateway's port with TLS: connections are counted per address, and the first bytes decide.

    A TLS handshake record (0x16) is handed, with the bytes already read, to TLS and then to the HTTP
    protocol; anything else (``http://`` to the HTTPS port) gets a one-line plaintext answer saying to use
    ``https://``, instead of a connection that just closes. The handshake has ``header_timeout_s``.
    """
    import ssl
    from asyncio import sslproto

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.cert), str(tls.key))
    port = settings.port

    class CountedTLS(sslproto.SSLProtocol):
        ip = ""

        def connection_lost(self, exc: BaseException | None) -> None:
            cap.release(self.ip)
            super().connection_lost(exc)

    class HTTPSFront(asyncio.Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._make: Callable[[], asyncio.Protocol] = lambda: inner(*args, **kwargs)
            self._transport: Any = None
            self._ip: str | None = None

        def connection_made(self, transport: Any) -> None:
            self._transport = transport
            ip = _peer_ip(transport)
            if not cap.admit(ip):
                transport.close()  # before TLS there is no way to answer a TLS client: the connection just ends
                return
            self._ip = ip

        def data_received(self, data: bytes) -> None:
            t, ip = self._transport, self._ip
            if ip is None or t.is_closing():
                return
            if data[:1] == b"\x16":  # a TLS handshake: TLS from here on, fed the bytes already read
                self._ip = None  # the TLS protocol releases the address from now on
                loop = asyncio.get_running_loop()
                timeout = int(settings.header_timeout_s)
                tls_proto = CountedTLS(loop, self._make(), context, None,  # type: ignore[arg-type]
                                       server_side=True, ssl_handshake_timeout=timeout)  # fmt: skip
                tls_proto.ip = ip
                t.set_protocol(tls_proto)
                tls_proto.connection_made(t)
                buf = tls_proto.get_buffer(len(data))
                buf[: len(data)] = data
                tls_proto.buffer_updated(len(data))
                return
            m = _HOST.search(data)
            host = m[1].decode() if m else f"HOST:{port}"
            if ":" not in host.rsplit("]", 1)[-1]:
                host = f"{host}:{port}"
            _refuse(t, b"400 Bad Request", f"This server speaks HTTPS: use https://{host}/\n".encode(),
                    b"text/plain; charset=utf-8")  # fmt: skip

        def connection_lost(self, exc: Exception | None) -> None:
            if self._ip is not None:  # closed before anything (or only plaintext) was read
                cap.release(self._ip)
                self._ip = None

    return HTTPSFront


def event_loop() -> str:
    """uvloop where it exists (not on Windows), else asyncio's own loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def uvicorn_options(settings: Settings, tls: TlsFiles | None) -> dict[str, Any]:
    """The uvicorn settings the gateway always runs with (tests use them too)."""
    cap = ConnectionCap(settings.max_connections_per_ip)
    if tls is not None:  # TLS is done by the front protocol, so that plain HTTP gets a useful answer
        http: type = https_front(settings, tls, guarded_protocol(settings, None), cap)
    else:
        http = guarded_protocol(settings, cap)
    return {
        "http": http,
        "loop": event_loop(),
        "timeout_keep_alive": int(settings.keep_alive_s),
        "h11_max_incomplete_event_size": 64 * 1024,
        "server_header": False,
        "date_header": False,
        "proxy_headers": False,  # never trust X-Forwarded-For: the IP allowlist uses the real peer
        "access_log": False,
        "limit_concurrency": settings.max_connections,
        # on Ctrl-C / SIGTERM, give requests in flight a few seconds, not forever (idle keep-alive
        # connections from clients would otherwise hold the shutdown open)
        "timeout_graceful_shutdown": 5,
    }


class _ExpectedCutoffs(logging.Filter):
    """A stream the gateway ended on purpose (the client stopped reading) is not an error to log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def run(plan: Plan, app: Any, on_ready: Callable[[], None] | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM; ``on_ready`` runs once the backend answers and the port listens."""
    import uvicorn

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit and on_ready is not None:
                on_ready()

    logging.getLogger("uvicorn.error").addFilter(_ExpectedCutoffs())
    s = plan.settings
    config = uvicorn.Config(
        app, host=s.host, port=s.port, lifespan="on", log_level="warning", **uvicorn_options(s, plan.tls)
    )
    ReadyServer(config).run()
