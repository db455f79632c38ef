"""Start the gateway: pick the backend, enforce the network rules, set up TLS, run uvicorn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homellm.errors import UsageError
from homellm.serve.backends import Backend, detect_backend
from homellm.serve.network import is_loopback_bind
from homellm.serve.tls import TlsFiles, ensure_tls
from homellm.settings import Settings

log = logging.getLogger("homellm.gateway")
OLLAMA_DEFAULT = "http://127.0.0.1:11434"


@dataclass
class Plan:
    """Everything decided before the server starts, shown to the user."""

    settings: Settings
    backend: Backend
    tls: TlsFiles | None
    warnings: list[str]

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


def make_backend(settings: Settings, models: list[Path] | None = None) -> Backend:
    """--backend URL, --model PATH / models folder (embedded engine), in that order."""
    if settings.backend:
        return asyncio.run(detect_backend(settings.backend, settings.idle_timeout_s))
    paths = models or ([settings.model] if settings.model else [])
    if not paths:
        raise UsageError(
            "choose a backend: --backend URL (Ollama, llama-server, vLLM, LM Studio), "
            "--model FILE.gguf or --models-dir DIR; or run `homellm up`"
        )
    from homellm.serve.engine_backend import EngineBackend

    for p in paths:
        if not p.is_file():
            raise UsageError(f"no such file: {p}")
    return EngineBackend(
        paths, settings.home / "engine", settings.engine_ctx, settings.engine_port, settings.idle_timeout_s
    )


def check_exposure_rules(settings: Settings, active_keys: int) -> list[str]:
    """Beyond loopback the gateway needs TLS and at least one key, unless --insecure (then it says so)."""
    warnings: list[str] = []
    if is_loopback_bind(settings.host):
        return warnings
    problems = []
    if not settings.tls_enabled:
        problems.append("TLS is off")
    if active_keys == 0:
        problems.append("there is no API key (create one: homellm keys create NAME)")
    if problems and not settings.insecure:
        raise UsageError(
            f"refusing to listen on {settings.host}: {' and '.join(problems)}; "
            "fix that, or pass --insecure if you really mean it"
        )
    for p in problems:
        warnings.append(f"INSECURE: listening on {settings.host} although {p}")
    return warnings


def prepare(settings: Settings, backend: Backend, active_keys: int) -> Plan:
    from homellm.serve.exposure import exposure_warning

    warnings = check_exposure_rules(settings, active_keys)
    tls = ensure_tls(settings.home, settings.tls_cert, settings.tls_key) if settings.tls_enabled else None
    if not backend.managed:
        warning = exposure_warning(backend.base_url, backend.kind)
        if warning:
            warnings.append(warning)
    return Plan(settings, backend, tls, warnings)


def guarded_protocol(settings: Settings) -> type:
    """uvicorn's HTTP protocol (httptools where installed, else h11) with three guards of its own.

    * request headers must arrive within ``header_timeout_s`` (uvicorn's keep-alive timer is
      cancelled by any byte, so a client trickling headers, slowloris, would hold a connection forever);
    * a body must arrive within ``body_timeout_s`` of its headers (408, then the connection closes);
    * one client address may hold at most ``max_connections_per_ip`` connections, so one host on the
      LAN cannot exhaust the gateway's file descriptors.
    """
    base: type
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # pragma: no cover - platforms without an httptools wheel
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    header_timeout, body_timeout = settings.header_timeout_s, settings.body_timeout_s
    cap = settings.max_connections_per_ip
    per_ip: dict[str, int] = {}

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
                msg = b'{"error":"the request body did not arrive in time"}'
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg
                )
            self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if peer else ""
            if cap and per_ip.get(ip, 0) >= cap:
                msg = b'{"error":"too many connections from your address"}'
                transport.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg
                )
                transport.close()
                return
            self._ip = ip
            per_ip[ip] = per_ip.get(ip, 0) + 1
            self._arm("headers", header_timeout)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                return  # still waiting for a request's headers: the header timer runs
            if cycle.more_body:
                if self._phase != "body":
                    self._arm("body", body_timeout)
            elif self._phase:
                self._disarm()  # the whole request is in; the app runs

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm("headers", header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._ip is not None:
                left = per_ip.get(self._ip, 1) - 1
                if left > 0:
                    per_ip[self._ip] = left
                else:
                    per_ip.pop(self._ip, None)
                self._ip = None
            super().connection_lost(exc)

    return GuardedProtocol


def event_loop() -> str:
    """uvloop where it exists (not on Windows), else asyncio's own loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def uvicorn_options(settings: Settings, tls: TlsFiles | None) -> dict[str, Any]:
    """The uvicorn settings the gateway always runs with (tests use them too)."""
    return {
        "http": guarded_protocol(settings),
        "loop": event_loop(),
        "ssl_certfile": str(tls.cert) if tls else None,
        "ssl_keyfile": str(tls.key) if tls else None,
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
