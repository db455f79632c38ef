"""Start the gateway: pick the backend, enforce the network rules, set up TLS, run uvicorn."""

from __future__ import annotations

import asyncio
import logging
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
        raise UsageError("choose a backend: --backend URL (Ollama, llama-server, vLLM, LM Studio), "
                         "--model FILE.gguf or --models-dir DIR; or run `homellm up`")  # fmt: skip
    from homellm.serve.engine_backend import EngineBackend

    for p in paths:
        if not p.is_file():
            raise UsageError(f"no such file: {p}")
    return EngineBackend(paths, settings.home / "engine", settings.engine_ctx, settings.engine_port,
                         settings.idle_timeout_s)  # fmt: skip


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
        raise UsageError(f"refusing to listen on {settings.host}: {' and '.join(problems)}; "
                         "fix that, or pass --insecure if you really mean it")  # fmt: skip
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


def header_timeout_protocol(timeout: float) -> type:
    """uvicorn's h11 protocol, closing connections whose request headers take longer than ``timeout``.

    uvicorn's keep-alive timer is cancelled by any byte received, so a client trickling headers
    (slowloris) would hold a connection forever.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the request line and headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_options(settings: Settings, tls: TlsFiles | None) -> dict[str, Any]:
    """The uvicorn settings the gateway always runs with (tests use them too)."""
    return {
        "http": header_timeout_protocol(settings.header_timeout_s),
        "ssl_certfile": str(tls.cert) if tls else None,
        "ssl_keyfile": str(tls.key) if tls else None,
        "timeout_keep_alive": int(settings.keep_alive_s),
        "h11_max_incomplete_event_size": 64 * 1024,
        "server_header": False,
        "proxy_headers": False,  # never trust X-Forwarded-For: the IP allowlist uses the real peer
        "access_log": False,
        # on Ctrl-C / SIGTERM, give requests in flight a few seconds, not forever (idle keep-alive
        # connections from clients would otherwise hold the shutdown open)
        "timeout_graceful_shutdown": 5,
    }


def run(plan: Plan, app: Any) -> None:
    import uvicorn

    s = plan.settings
    config = uvicorn.Config(
        app, host=s.host, port=s.port, lifespan="on", log_level="warning", **uvicorn_options(s, plan.tls)
    )
    uvicorn.Server(config).run()
