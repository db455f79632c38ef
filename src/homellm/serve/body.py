"""Reading a request body the way the backend will, so that what is checked is what runs.

Ollama decodes with Go's ``encoding/json`` into structs. That decoder matches an object key to a
struct field exactly first, else case-insensitively (ASCII case plus Unicode simple folding: ``K``
and the Kelvin sign, ``s`` and the long s), and when two keys land on one field the last one wins.
A gateway that reads ``body["model"]`` in Python and forwards the raw bytes can therefore be told
``{"model": "allowed", "Model": "forbidden"}`` and check one model while Ollama runs the other.

So the gateway parses once, refuses anything two parsers could read differently, and forwards a
canonical re-encoding of exactly the object it checked, never the client's bytes:

* two keys of one object that are equal under Go's folding (at the top level and in each message,
  which Ollama decodes into structs) -> refused; exact duplicates -> refused at any depth;
* a key that folds to a field the gateway reads but is not spelled exactly (``Model``, ``mOdEl``,
  ``Mod\\u0065l`` after unescaping) -> refused;
* a byte-order mark, ``NaN``/``Infinity``, numbers beyond IEEE doubles, integers beyond int64, lone
  surrogates, invalid UTF-8, data after the object, nesting deeper than :data:`MAX_DEPTH` -> refused;
* very large bodies are parsed off the event loop, and the number of JSON containers is capped, so
  one hostile body cannot stall other requests.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from functools import cache
from typing import Any

from homellm.errors import GatewayError
from homellm.i18n import _

MAX_DEPTH = 64
MAX_CONTAINERS = 200_000
INT64 = 2**63
THREAD_ABOVE = 256 * 1024  # bodies larger than this are parsed in a worker thread

# Top-level fields of the request types that the gateway or a backend reads, per Ollama's api
# package and its OpenAI layer: a key folding to one of them must be spelled exactly.
KNOWN_FIELDS = frozenset(
    {
        # Ollama
        "model", "name", "messages", "prompt", "suffix", "system", "template", "context", "stream", "raw",
        "format", "images", "options", "keep_alive", "tools", "think", "truncate", "input", "shift",
        "dimensions", "logprobs", "top_logprobs", "insecure", "source", "destination", "from", "files",
        "adapters", "license", "parameters", "quantize", "verbose",
        # OpenAI
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "n", "user",
        "presence_penalty", "frequency_penalty", "stream_options", "response_format", "tool_choice",
        "parallel_tool_calls", "logit_bias", "reasoning_effort", "reasoning", "encoding_format", "echo",
        "best_of", "metadata", "store", "service_tier", "modalities",
        # llama.cpp / llama-cpp-python / vLLM extras
        "top_k", "min_p", "repeat_penalty", "grammar", "json_schema", "mirostat_mode", "mirostat_tau",
        "mirostat_eta", "typical_p", "tfs_z", "logits_processor",
    }
)  # fmt: skip
MESSAGE_FIELDS = frozenset({"role", "content", "images", "tool_calls", "tool_name", "tool_call_id", "thinking", "name"})
_NUMBER = re.compile(rb"-?\d")


def go_fold(key: str) -> str:
    """The name Go's ``encoding/json`` compares struct fields by (``foldName``)."""
    if key.isascii():
        return key.upper()
    return "".join(c.upper() if c.isascii() else _fold_rune(c) for c in key)


@cache
def _fold_rune(c: str) -> str:
    """The smallest rune of ``c``'s simple case-folding orbit (Go's ``foldRune``).

    Built from Python's single-character case mappings. Where those join more runes than Go's
    ``unicode.SimpleFold`` does (the dotless i), the gateway refuses a little more than it must,
    never less.
    """
    orbit = {c}
    frontier = [c]
    while frontier:
        x = frontier.pop()
        for y in (x.lower(), x.upper(), x.casefold()):
            if len(y) == 1 and y not in orbit:
                orbit.add(y)
                frontier.append(y)
    low = min(orbit)
    return low.upper() if low.isascii() else low


@cache
def _folded(fields: frozenset[str]) -> dict[str, str]:
    return {go_fold(f): f for f in fields}


class _Reader:
    """Hooks for :func:`json.loads` that enforce the rules above while the body is decoded."""

    def __init__(self) -> None:
        self.containers = 0

    def pairs(self, items: list[tuple[str, Any]]) -> dict[str, Any]:
        self._count()
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise GatewayError(400, _("the JSON object has the key {key!r} twice").format(key=k))
            out[k] = v
        return out

    def _count(self) -> None:
        self.containers += 1
        if self.containers > MAX_CONTAINERS:
            raise GatewayError(413, _("the request has more than {n} JSON objects and arrays").format(n=MAX_CONTAINERS))

    @staticmethod
    def constant(name: str) -> Any:
        raise GatewayError(400, _("{name} is not valid JSON").format(name=name))


def check_keys(obj: dict[str, Any], known: Iterable[str] = KNOWN_FIELDS) -> None:
    """Refuse keys that Go would fold together or onto a known field spelled otherwise."""
    folded = _folded(frozenset(known))
    seen: dict[str, str] = {}
    for key in obj:
        f = go_fold(key)
        other = seen.get(f)
        if other is not None:
            raise GatewayError(
                400, _("the keys {a!r} and {b!r} name the same field for the backend; send one").format(a=other, b=key)
            )
        seen[f] = key
        exact = folded.get(f)
        if exact is not None and exact != key:
            raise GatewayError(400, _("write the field {key!r} as {exact!r}").format(key=key, exact=exact))


def _check_depth_and_strings(value: Any) -> None:
    """Depth, lone surrogates and number ranges, in one walk without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_DEPTH:
                raise GatewayError(400, _("the JSON is nested deeper than {n} levels").format(n=MAX_DEPTH))
            for k, item in v.items():
                _check_string(k)
                stack.append((item, depth + 1))
        elif isinstance(v, list):
            if depth > MAX_DEPTH:
                raise GatewayError(400, _("the JSON is nested deeper than {n} levels").format(n=MAX_DEPTH))
            stack.extend((item, depth + 1) for item in v)
        elif isinstance(v, str):
            _check_string(v)
        elif isinstance(v, float):
            if math.isinf(v):  # 1e400: Go refuses it, and it cannot be re-encoded as JSON
                raise GatewayError(400, _("a number in the request is too large"))
        elif isinstance(v, int) and not isinstance(v, bool) and not -INT64 <= v < INT64:
            raise GatewayError(400, _("the number {n}... does not fit a 64-bit integer").format(n=str(v)[:20]))


def _check_string(s: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise GatewayError(400, _("the JSON has a lone UTF-16 surrogate (\\ud800-\\udfff)")) from None


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, read by the rules above; GatewayError(400/413) otherwise."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise GatewayError(400, _("the request body starts with a byte-order mark; send plain UTF-8 JSON"))
    stripped = raw.strip(b" \t\r\n")
    if not stripped:
        raise GatewayError(400, _("the request body is empty; send a JSON object"))
    if not stripped.startswith(b"{"):
        raise GatewayError(400, _("the request body must be a JSON object"))
    reader = _Reader()
    try:
        text = stripped.decode("utf-8")
        body = json.loads(text, object_pairs_hook=reader.pairs, parse_constant=reader.constant)
    except UnicodeDecodeError:
        raise GatewayError(400, _("the request body is not valid UTF-8")) from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            raise GatewayError(400, _("the request body has data after the JSON object")) from None
        raise GatewayError(
            400, _("the request body is not valid JSON ({msg} at char {pos})").format(msg=exc.msg, pos=exc.pos)
        ) from None
    except RecursionError:
        raise GatewayError(400, _("the JSON is nested deeper than {n} levels").format(n=MAX_DEPTH)) from None
    if not isinstance(body, dict):
        raise GatewayError(400, _("the request body must be a JSON object"))
    check_keys(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict):
                check_keys(m, MESSAGE_FIELDS)
    if _needs_walk(stripped):
        _check_depth_and_strings(body)
    return body


_NEEDS_WALK = re.compile(rb"\d{19}|[eE][+]?\d{3}|\\u[dD][89a-fA-F]")  # long numbers, huge exponents, surrogates


def _needs_walk(raw: bytes) -> bool:
    """Whether the body could hold what only a walk finds: deep nesting, a surrogate escape, a number
    beyond int64 or a double. Most bodies cannot, and a byte scan in C says so."""
    return raw.count(b"{") + raw.count(b"[") > MAX_DEPTH or _NEEDS_WALK.search(raw) is not None


async def read_object(raw: bytes) -> dict[str, Any]:
    """:func:`parse_object`, in a worker thread for large bodies so other requests keep moving."""
    if len(raw) <= THREAD_ABOVE:
        return parse_object(raw)
    import asyncio

    return await asyncio.to_thread(parse_object, raw)


def encode(obj: Any) -> bytes:
    """The canonical form forwarded to a backend: compact UTF-8 JSON of exactly the parsed object."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


async def encode_async(obj: Any, size_hint: int) -> bytes:
    """:func:`encode`, in a worker thread when the body was large."""
    if size_hint <= THREAD_ABOVE:
        return encode(obj)
    import asyncio

    return await asyncio.to_thread(encode, obj)
