"""Backends behind one interface: Ollama (native API), any OpenAI-compatible server, the embedded engine.

A backend says which API it speaks natively (``kind``) and where; the gateway forwards or
translates. Adding vLLM or a second PC means adding an adapter here, not editing the gateway.
Requests go out through one lean keep-alive pool per backend (serve/upstream.py; measured: an httpx
pool cost the gateway 90% of its throughput at 32 concurrent requests, aiohttp's ClientSession 70%).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from homellm.errors import GatewayError
from homellm.i18n import N_, _

if TYPE_CHECKING:
    import ssl

    from homellm.serve.upstream import Upstream, UpstreamResponse

ApiKind = Literal["ollama", "openai"]
JSON_HEADERS = {"Content-Type": "application/json"}
# what the gateway reads whole from a backend: a pool member that sent more would fill this machine's memory
MAX_ANSWER_BYTES = 256 * 1024 * 1024  # a non-streamed answer (embeddings of many inputs are the largest)
MAX_LISTING_BYTES = 8 * 1024 * 1024  # a model list or health answer: thousands of models
MAX_MODELS = 4096  # models taken from one backend's list


class BackendDown(GatewayError):
    """The backend could not be reached, hung up, went silent or said it cannot serve now (502/503/504):
    in a pool, another backend may answer instead (if nothing has reached the client yet)."""


@dataclass
class ModelEntry:
    name: str
    size: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    modified_at: str = ""


class Backend:
    kind: ApiKind = "openai"
    label = N_("OpenAI-compatible server")
    managed = False  # True when homellm runs the backend itself (on a private loopback port)
    stops_on_disconnect = True  # closing a non-streamed request stops its generation (Ollama, llama-server, vLLM)
    answers_while_busy = True  # a health check is answered during generations (llama-cpp-python's is not)

    def __init__(self, base_url: str, idle_timeout: float = 300.0, connect_timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.ssl_context: ssl.SSLContext | None = None  # for https:// backends (a pinned context for a pool member)
        self._upstream: Upstream | None = None

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            from homellm.serve.upstream import Upstream

            self._upstream = Upstream(self.base_url, self.connect_timeout, self.idle_timeout, self.ssl_context)
        return self._upstream

    async def start(self) -> None:
        """Called once when the gateway starts."""

    async def close(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()

    def ready(self) -> None:
        """Raise GatewayError(503) while the backend cannot take requests."""

    async def open(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> UpstreamResponse:
        """Send a request; the answer's headers are in, its body is still to be read (or streamed)."""
        self.ready()
        try:
            return await self.upstream.request(method, path, body, headers)
        except (OSError, TimeoutError) as exc:
            raise await self.failure(exc) from exc

    async def read(self, resp: UpstreamResponse, limit: int = MAX_ANSWER_BYTES) -> bytes:
        """The whole body of an answer, at most ``limit`` bytes (502 beyond); transport errors become 502/504."""
        from homellm.serve.upstream import AnswerTooLarge

        try:
            return await resp.read(limit)
        except AnswerTooLarge as exc:
            raise GatewayError(502, _("{backend} sent an answer larger than {n} MiB").format(
                backend=_(self.label), n=exc.limit // (1024 * 1024))) from None  # fmt: skip
        except (OSError, TimeoutError) as exc:
            raise await self.failure(exc) from exc
        finally:
            resp.close()

    async def get_json(self, path: str) -> dict[str, Any]:
        resp = await self.open("GET", path)
        content = await self.read(resp, MAX_LISTING_BYTES)
        if resp.status >= 400:
            raise GatewayError(
                502,
                _("{backend} answered {status} to {path}").format(backend=self.label, status=resp.status, path=path),
            )
        try:
            data = json.loads(content)
        except ValueError:
            raise GatewayError(
                502, _("{backend} sent invalid JSON for {path}").format(backend=self.label, path=path)
            ) from None
        return data if isinstance(data, dict) else {}

    async def models(self) -> list[ModelEntry]:
        """The models the backend serves: at most :data:`MAX_MODELS`, each named as a client could name it
        (a printable name of at most 256 characters; others are left out, whatever sent them)."""
        if self.kind == "ollama":
            data = await self.get_json("/api/tags")
            listed = data.get("models")
            return [
                ModelEntry(
                    m["name"],
                    m["size"] if type(m.get("size")) is int else 0,
                    m["details"] if isinstance(m.get("details"), dict) else {},
                    str(m.get("digest", ""))[:100],
                    str(m.get("modified_at", ""))[:100],
                )
                for m in (listed if isinstance(listed, list) else [])[:MAX_MODELS]
                if isinstance(m, dict) and _model_name(m.get("name"))
            ]
        data = await self.get_json("/v1/models")
        listed = data.get("data")
        return [
            ModelEntry(m["id"])
            for m in (listed if isinstance(listed, list) else [])[:MAX_MODELS]
            if isinstance(m, dict) and _model_name(m.get("id"))
        ]

    async def loaded(self) -> list[dict[str, Any]]:
        """The models loaded in memory now, in Ollama's ``/api/ps`` shape."""
        if self.kind == "ollama":
            data = await self.get_json("/api/ps")
            listed = data.get("models")
            return [m for m in (listed if isinstance(listed, list) else [])[:MAX_MODELS] if isinstance(m, dict)]
        return []

    async def probe(self) -> tuple[list[ModelEntry], list[dict[str, Any]]]:
        """A health check: (the models it serves, those loaded now in ``/api/ps`` shape); raises when it
        does not answer. An OpenAI-compatible server serves what it lists, so all of it counts as loaded."""
        self.ready()
        entries = await self.models()
        if self.kind == "ollama":
            return entries, await self.loaded()
        return entries, [{"name": e.name, "model": e.name, "size": e.size, "details": e.details} for e in entries]

    @property
    def reads(self) -> int:
        """Data arrivals from the backend so far (signs of life while it is too busy to answer a check)."""
        return self._upstream.reads if self._upstream is not None else 0

    def abort(self, reason: str) -> int:
        """Cut every request in progress on this backend now (it is gone or hung): they fail at once, and
        the pool retries those that have sent nothing to their client yet. Returns how many were cut."""
        return self._upstream.abort(reason) if self._upstream is not None else 0

    def describe(self) -> str:
        return _("{backend} at {url}").format(backend=_(self.label), url=self.base_url)

    async def failure(self, exc: BaseException) -> GatewayError:
        """Map a transport error to the right status: down 502, silent too long 504."""
        from homellm.serve.upstream import ConnectFailed

        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, ConnectFailed):
            return BackendDown(502, _("{backend} at {url} is not reachable; is it running?").format(
                backend=_(self.label), url=self.base_url))  # fmt: skip
        if isinstance(exc, TimeoutError):
            return BackendDown(504, _("{backend} went silent for longer than the idle timeout ({s:.0f} s)").format(
                backend=_(self.label), s=self.idle_timeout))  # fmt: skip
        return BackendDown(502, _("{backend} closed the connection before the answer was complete").format(
            backend=_(self.label)))  # fmt: skip


def _model_name(value: object) -> bool:
    from homellm.serve.request import MAX_MODEL_NAME

    return isinstance(value, str) and 0 < len(value) <= MAX_MODEL_NAME and value.isprintable() and bool(value.strip())


class OllamaBackend(Backend):
    kind: ApiKind = "ollama"
    label = N_("Ollama")


class OpenAIBackend(Backend):
    kind: ApiKind = "openai"
    label = N_("OpenAI-compatible server")


async def detect_backend(url: str, idle_timeout: float) -> Backend:
    """Ollama if ``/api/version`` answers like Ollama, else an OpenAI-compatible server."""
    import aiohttp

    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as probe,
            probe.get(url + "/api/version") as resp,
        ):
            if resp.status == 200 and "version" in await resp.json(content_type=None):
                return OllamaBackend(url, idle_timeout)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        pass
    return OpenAIBackend(url, idle_timeout)
