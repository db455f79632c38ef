"""Backends behind one interface: Ollama (native API), any OpenAI-compatible server, the embedded engine.

A backend says which API it speaks natively (``kind``) and where; the gateway forwards or
translates. Adding vLLM or a second PC means adding an adapter here, not editing the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from homellm.errors import GatewayError

ApiKind = Literal["ollama", "openai"]


@dataclass
class ModelEntry:
    name: str
    size: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class Backend:
    kind: ApiKind = "openai"
    label = "OpenAI-compatible server"
    managed = False  # True when homellm runs the backend itself (on a private loopback port)

    def __init__(self, base_url: str, idle_timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        # no overall timeout: long generations run as long as tokens keep coming;
        # the read timeout is the idle timeout between two chunks
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(connect=5.0, read=idle_timeout, write=30.0, pool=None),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )

    async def start(self) -> None:
        """Called once when the gateway starts."""

    async def close(self) -> None:
        await self.client.aclose()

    def ready(self) -> None:
        """Raise GatewayError(503) while the backend cannot take requests."""

    async def models(self) -> list[ModelEntry]:
        """The models the backend serves."""
        if self.kind == "ollama":
            data = await self.get_json("/api/tags")
            return [ModelEntry(m.get("name", ""), int(m.get("size", 0)), m.get("details") or {})
                    for m in data.get("models", [])]  # fmt: skip
        data = await self.get_json("/v1/models")
        return [ModelEntry(m.get("id", "")) for m in data.get("data", [])]

    async def get_json(self, path: str) -> dict[str, Any]:
        self.ready()
        try:
            resp = await self.client.get(path)
        except httpx.HTTPError as exc:
            raise backend_failure(exc, self) from exc
        if resp.status_code >= 400:
            raise GatewayError(502, f"{self.label} answered {resp.status_code} to {path}")
        try:
            data = resp.json()
        except ValueError:
            raise GatewayError(502, f"{self.label} sent invalid JSON for {path}") from None
        return data if isinstance(data, dict) else {}

    def describe(self) -> str:
        return f"{self.label} at {self.base_url}"


class OllamaBackend(Backend):
    kind: ApiKind = "ollama"
    label = "Ollama"


class OpenAIBackend(Backend):
    kind: ApiKind = "openai"
    label = "OpenAI-compatible server"


def backend_failure(exc: Exception, backend: Backend) -> GatewayError:
    """Map a transport error to the right status: down 502, silent too long 504."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return GatewayError(504, f"{backend.label} went silent for longer than the idle timeout")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return GatewayError(502, f"{backend.label} at {backend.base_url} is not reachable; is it running?")
    return GatewayError(502, f"{backend.label} connection failed: {type(exc).__name__}")


async def detect_backend(url: str, idle_timeout: float) -> Backend:
    """Ollama if ``/api/version`` answers like Ollama, else an OpenAI-compatible server."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    async with httpx.AsyncClient(base_url=url, timeout=3.0) as probe:
        try:
            resp = await probe.get("/api/version")
            if resp.status_code == 200 and "version" in resp.json():
                return OllamaBackend(url, idle_timeout)
        except (httpx.HTTPError, ValueError):
            pass
    return OpenAIBackend(url, idle_timeout)
