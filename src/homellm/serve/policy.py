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
    admin: bool = False
    model_field: str | None = None  # the JSON field that names a model; checked against the key's allowlist
    public: bool = False
    inference: bool = False  # counts against the key's concurrent-request limit


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/"): Route("root", "ollama", public=True),
    ("HEAD", "/"): Route("root", "ollama", public=True),
    ("GET", "/api/version"): Route("version", "ollama"),
    ("GET", "/api/tags"): Route("tags", "ollama"),
    ("GET", "/api/ps"): Route("ps", "ollama"),
    ("POST", "/api/show"): Route("show", "ollama", model_field="model"),
    ("POST", "/api/chat"): Route("chat", "ollama", model_field="model", inference=True),
    ("POST", "/api/generate"): Route("generate", "ollama", model_field="model", inference=True),
    ("POST", "/api/embed"): Route("embed", "ollama", model_field="model", inference=True),
    ("POST", "/api/embeddings"): Route("embeddings", "ollama", model_field="model", inference=True),
    # model management: the endpoints behind Ollama's CVEs, admin keys only
    ("POST", "/api/pull"): Route("manage", "ollama", admin=True),
    ("POST", "/api/push"): Route("manage", "ollama", admin=True),
    ("POST", "/api/create"): Route("manage", "ollama", admin=True),
    ("POST", "/api/copy"): Route("manage", "ollama", admin=True),
    ("DELETE", "/api/delete"): Route("manage", "ollama", admin=True),
    ("GET", "/v1/models"): Route("models", "openai"),
    ("POST", "/v1/chat/completions"): Route("openai", "openai", model_field="model", inference=True),
    ("POST", "/v1/completions"): Route("openai", "openai", model_field="model", inference=True),
    ("POST", "/v1/embeddings"): Route("openai_embeddings", "openai", model_field="model", inference=True),
    ("GET", "/metrics"): Route("metrics", "ollama", admin=True),
    # homellm's own: pairing trades a one-time code for a device key in two rounds (SPAKE2, then the
    # certificate confirmation; no key needed, attempts are capped); health tells `homellm ping`
    # whether the backend answers
    ("POST", "/homellm/pair"): Route("pair", "ollama", public=True),
    ("POST", "/homellm/pair/confirm"): Route("pair", "ollama", public=True),
    ("GET", "/homellm/health"): Route("health", "ollama"),
}
BLOB = Route("manage", "ollama", admin=True)
_BLOB_PATH = re.compile(r"^/api/blobs/sha256[:-][0-9a-f]{64}$")
_V1_MODEL = re.compile(r"^/v1/models/(?P<model>[^/]{1,200})$")


def front_of(path: str) -> Front:
    return "openai" if path.startswith("/v1/") or path == "/v1" else "ollama"


def match(method: str, path: str) -> tuple[Route | None, str | None, bool]:
    """(route, model named by the path, whether the path exists with another method)."""
    route = ROUTES.get((method, path))
    if route:
        return route, None, False
    if path.startswith("/api/blobs/"):
        if method in ("HEAD", "POST") and _BLOB_PATH.match(path):
            return BLOB, None, False
        return None, None, False  # a malformed digest never reaches the backend (path traversal)
    m = _V1_MODEL.match(path)
    if m and method == "GET":
        return Route("model", "openai"), m["model"], False
    known_path = any(p == path for (_, p) in ROUTES)
    return None, None, known_path
