"""One request's facts (:class:`Ctx`), the small ASGI replies the gateway sends, and errors in each
front's own shape. Every stage imports this module; it imports no stage."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError

if TYPE_CHECKING:
    from homellm.serve.policy import Front, Route
    from homellm.serve.router import Lease
    from homellm.store.keys import ApiKey

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Reply = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_MODEL_NAME = 256  # longer names are refused, never logged
MAX_TOKENS = 10**12  # a token count beyond this is no count (SQLite's integers end at 2**63)
# set in a request's scope by the gateway (the task serving it) and by the server's protocol (why it ended)
REQUEST_TASK = "homellm.task"
CLIENT_GONE = "homellm.client_gone"
BODY_TIMED_OUT = "homellm.body_timed_out"


@dataclass(slots=True)
class Stats:
    """What the gateway learned about one answer, for the usage log and metrics."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cancelled: bool = False
    error: str | None = None  # why an answer ended early (backend died, went silent, client stopped reading)
    error_status: int | None = None
    queue_ms: float | None = None
    queue_position: int | None = None
    backend: str | None = None  # the pool member that answered (None with a single backend)

    def settle(self) -> None:
        """The token counts as the usage log and the quotas take them: a backend reports them, and a pool
        member may lie, so anything but a whole number from 0 to :data:`MAX_TOKENS` counts as unknown."""
        self.prompt_tokens = token_count(self.prompt_tokens)
        self.completion_tokens = token_count(self.completion_tokens)

    def mark_first(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.started) * 1000

    def fail(self, status: int, message: str) -> None:
        self.error_status, self.error = status, message


def token_count(value: object) -> int | None:
    """A backend's token count, or None when it is not one (a string, a bool, negative, absurdly large)."""
    return value if type(value) is int and 0 <= value <= MAX_TOKENS else None


@dataclass(slots=True)
class Ctx:
    """One request's facts, collected on the way through."""

    front: Front
    method: str
    path: str
    client_ip: str
    headers: dict[str, str]
    route: Route | None = None
    label: str = "unmatched"  # the route's name in metrics and the usage log: from the route table only
    key: ApiKey | None = None
    model: str | None = None
    prompt: str | None = None
    body: dict[str, Any] | None = None
    raw: bytes = b""
    status: int = 200
    slot: bool = False
    cors: dict[str, str] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    started: float = field(default_factory=time.perf_counter)
    response_started: bool = False
    lease: Lease | None = None  # a pool backend's slot, held until the answer ends
    quota: bool = False  # counted as running against its key's daily quota


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name (latin-1, as HTTP/1.1 defines; the last of repeated ones)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``Origin`` names this gateway as the browser reached it (a page the gateway served itself;
    the scheme needs no check, since the port speaks only one)."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and bool(rest) and rest.rstrip("/") == host_header.strip().lower()


JSON_TYPE = b"application/json"


class BytesReply:
    """A complete answer in one body: the gateway's small, fast response."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, body: bytes, status: int = 200, content_type: bytes = JSON_TYPE, headers: dict[str, str] | None = None
    ) -> None:
        self.body = body
        self.status = status
        self.headers: list[tuple[bytes, bytes]] = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ]
        if headers:
            self.headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    def add_headers(self, headers: dict[str, str]) -> None:
        self.headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else self.body})


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> BytesReply:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return BytesReply(body, status, JSON_TYPE, headers)


def text_reply(text: str, status: int = 200, headers: dict[str, str] | None = None) -> BytesReply:
    return BytesReply(text.encode(), status, b"text/plain; charset=utf-8", headers)


def error_data(front: Front, exc: GatewayError) -> dict[str, Any]:
    """``{"error": "..."}`` for Ollama, ``{"error": {"message", "type", "code"}}`` for OpenAI."""
    if front == "openai":
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        return {"error": {"message": str(exc), "type": kind, "code": exc.code}}
    return {"error": str(exc)}


def error_reply(front: Front, exc: GatewayError, cors: dict[str, str] | None = None) -> BytesReply:
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="homellm"')
    headers.update(cors or {})
    return json_reply(error_data(front, exc), exc.status, headers)
