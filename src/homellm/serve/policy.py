"""The gateway's route table. Anything not listed here is refused (default-deny), never proxied."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Front = Literal["ollama", "openai"]


@dataclass(frozen=True)
class Route:
    op: str
    front: Front
    label: str  # the name metrics and the usage log use: always from this table, never from the request
    admin: bool = False
    model_fields: tuple[str, ...] = ()  # JSON fields naming models, each checked against the key's allowlist
    public: bool = False
    inference: bool = False  # counts against the key's concurrent-request limit
    json_body: bool = False  # the body is a JSON object the gateway reads, checks and re-encodes


def _r(op: str, front: Front, label: str, **kw: object) -> Route:
    return Route(op, front, label, **kw)  # type: ignore[arg-type]


_INFER = {"inference": True, "json_body": True}
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/"): _r("root", "ollama", "/", public=True),
    ("HEAD", "/"): _r("root", "ollama", "/", public=True),
    ("GET", "/api/version"): _r("version", "ollama", "/api/version"),
    ("GET", "/api/tags"): _r("tags", "ollama", "/api/tags"),
    ("GET", "/api/ps"): _r("ps", "ollama", "/api/ps"),
    ("POST", "/api/show"): _r("show", "ollama", "/api/show", model_fields=("model", "name"), json_body=True),
    ("POST", "/api/chat"): _r("chat", "ollama", "/api/chat", model_fields=("model",), **_INFER),
    ("POST", "/api/generate"): _r("generate", "ollama", "/api/generate", model_fields=("model",), **_INFER),
    ("POST", "/api/embed"): _r("embed", "ollama", "/api/embed", model_fields=("model",), **_INFER),
    ("POST", "/api/embeddings"): _r("embeddings", "ollama", "/api/embeddings", model_fields=("model",), **_INFER),
    # model management: the endpoints behind Ollama's CVEs, admin keys only, and within their allowlist
    ("POST", "/api/pull"): _r(
        "manage", "ollama", "/api/pull", admin=True, model_fields=("model", "name"), json_body=True
    ),
    ("POST", "/api/push"): _r(
        "manage", "ollama", "/api/push", admin=True, model_fields=("model", "name"), json_body=True
    ),
    ("POST", "/api/create"): _r(
        "manage", "ollama", "/api/create", admin=True, model_fields=("model", "name", "from"), json_body=True
    ),
    ("POST", "/api/copy"): _r(
        "manage", "ollama", "/api/copy", admin=True, model_fields=("source", "destination"), json_body=True
    ),
    ("DELETE", "/api/delete"): _r(
        "manage", "ollama", "/api/delete", admin=True, model_fields=("model", "name"), json_body=True
    ),
    ("GET", "/v1/models"): _r("models", "openai", "/v1/models"),
    ("POST", "/v1/chat/completions"): _r(
        "openai_chat", "openai", "/v1/chat/completions", model_fields=("model",), **_INFER
    ),
    ("POST", "/v1/completions"): _r(
        "openai_completion", "openai", "/v1/completions", model_fields=("model",), **_INFER
    ),
    ("POST", "/v1/embeddings"): _r("openai_embeddings", "openai", "/v1/embeddings", model_fields=("model",), **_INFER),
    ("GET", "/metrics"): _r("metrics", "ollama", "/metrics", admin=True),
    # homellm's own: pairing trades a one-time code for a device key in two rounds (SPAKE2, then the
    # certificate confirmation; no key needed, attempts are capped); health tells `homellm ping`
    # whether the backend answers
    ("POST", "/homellm/pair"): _r("pair", "ollama", "/homellm/pair", public=True),
    ("POST", "/homellm/pair/confirm"): _r("pair", "ollama", "/homellm/pair/confirm", public=True),
    ("GET", "/homellm/health"): _r("health", "ollama", "/homellm/health"),
}
BLOB = Route("blob", "ollama", "/api/blobs", admin=True)
V1_MODEL = Route("model", "openai", "/v1/models/{model}")
_BLOB_PATH = re.compile(r"/api/blobs/sha256[:-][0-9a-f]{64}")
_V1_MODEL = re.compile(r"/v1/models/(?P<model>[^/]{1,256})")
_KNOWN_PATHS = frozenset(p for (_, p) in ROUTES)

# Labels for the requests that match no route: a fixed set, so that unknown paths cannot grow metrics.
UNMATCHED = "unmatched"


def front_of(path: str) -> Front:
    return "openai" if path.startswith("/v1/") or path == "/v1" else "ollama"


def match(method: str, path: str) -> tuple[Route | None, str | None, bool]:
    """(route, model named by the path, whether the path exists with another method)."""
    route = ROUTES.get((method, path))
    if route:
        return route, None, False
    if path.startswith("/api/blobs/"):
        if method in ("HEAD", "POST") and _BLOB_PATH.fullmatch(path):
            return BLOB, None, False
        return None, None, False  # a malformed digest never reaches the backend (path traversal)
    m = _V1_MODEL.fullmatch(path)
    if m and method == "GET":
        return V1_MODEL, m["model"], False
    return None, None, path in _KNOWN_PATHS
