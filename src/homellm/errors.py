"""The one exception tree of homellm.

Every error a user can cause or meet is a :class:`HomeLLMError`. The CLI turns it
into one line on stderr and a non-zero exit; later the gateway renders it in each
API's own error shape. Third-party errors are translated where they are raised
(``raise GGUFError(...) from exc``), never leaked.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from homellm.i18n import _

__all__ = [
    "CatalogError",
    "EngineError",
    "GGUFError",
    "GatewayError",
    "HomeLLMError",
    "NotFoundError",
    "UsageError",
]


class HomeLLMError(Exception):
    """Base of every error homellm reports to a user."""

    exit_code = 1


class UsageError(HomeLLMError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2


class NotFoundError(UsageError):
    """A name (model, quant, GPU, ...) is not known; the message suggests the nearest ones."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = suggest(name, known)
        names = ", ".join(repr(s) for s in self.suggestions)
        hint = _("; did you mean {names}?").format(names=names) if self.suggestions else ""
        # kind is already translated by the caller: NotFoundError(_("model"), ...)
        super().__init__(_("unknown {kind} {name!r}{hint}").format(kind=kind, name=name, hint=hint))


class GGUFError(UsageError):
    """A .gguf file is missing, unreadable or not a GGUF model."""


class CatalogError(HomeLLMError):
    """The shipped catalog data failed validation (a bug in homellm, not in the user's input)."""


class EngineError(HomeLLMError):
    """llama.cpp (the embedded engine) failed."""


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def suggest(name: str, known: Iterable[str], limit: int = 3) -> list[str]:
    """The known names closest to ``name``: substring matches first, then by edit distance."""
    lowered = name.lower()
    scored = []
    for candidate in known:
        c = candidate.lower()
        contains = bool(lowered) and (lowered in c or c in lowered)
        ratio = difflib.SequenceMatcher(None, lowered, c).ratio()
        if contains or ratio >= 0.5:
            scored.append((not contains, _edit_distance(lowered, c), -ratio, candidate))
    return [s[-1] for s in sorted(scored)[:limit]]


class GatewayError(HomeLLMError):
    """A request the gateway refuses or cannot complete; rendered in the front's own error shape."""

    def __init__(self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or {
            400: "invalid_request", 401: "invalid_api_key", 403: "forbidden", 404: "not_found",
            405: "method_not_allowed", 413: "request_too_large", 429: "rate_limited", 501: "not_implemented",
            502: "backend_error", 503: "backend_unavailable", 504: "backend_timeout",
        }.get(status, "error")  # fmt: skip
        self.headers = headers or {}
