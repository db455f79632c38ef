"""Hostile HTTP requests for fuzzing the gateway (hypothesis strategies, raw sockets).

Requests are written byte by byte to a socket, so paths reach the gateway exactly as generated
(an HTTP client would normalize ``..`` away). Every route of both APIs is covered (the route table
in :mod:`homellm.serve.policy`), with a valid key, bodies built from each route's own fields with
hostile values, raw bodies that two JSON parsers could read differently, and odd headers.

The rule checked by :func:`verdict`: no 5xx except 502/504 (a failed backend) and 501 (model
management on a backend that has none), and no traceback text in any answer.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from homellm.serve.fields import OLLAMA_OPTIONS, ROUTE_FIELDS
from homellm.serve.policy import ROUTES

ALLOWED_5XX = {502, 504}
TRACEBACK_MARKS = (b"Traceback", b'File "', b"Exception in ASGI", b"site-packages", b"\n    raise ")

PATHS = [
    *sorted({path for _method, path in ROUTES}),
    "/api/blobs/sha256:" + "0" * 64,
    "/v1/models/fake:small",
    "/v1/models/nope",
]
METHODS = ["GET", "POST", "DELETE", "HEAD", "PUT", "PATCH", "OPTIONS", "TRACE"]
PATH_TRICKS = [
    "/..",
    "/../..",
    "/%2e%2e",
    "/%2E%2E/%2e%2e",
    "/./",
    "//",
    "/;a=b",
    "%00",
    "%",
    "%zz",
    "?",
    "?model=x",
    "#frag",
    "/../../etc/passwd",
    "/%2F..%2Fapi%2Ftags",
    "\\..\\",
    "/\u00e9",
    "/%C0%AE%C0%AE",
    "/" + "a" * 3000,
]
HOSTILE_STRINGS = [
    "",
    " ",
    "fake:small",
    "fake:large",
    "FAKE:SMALL",
    "fake:small:latest",
    "nope",
    "x" * 300,
    "../../etc/passwd",
    "fake:small\u0000",
    "\u202efake",
    "\ud800",
    "\U0001f600" * 10,
    "{{.System}}",
    "${jndi:x}",
    "'; DROP TABLE keys;--",
    "<script>",
    "\r\nX-Injected: 1",
    "%s%s%n",
    "\\u0000",
    "null",
    "true",
    "1e999",
    "NaN",
]
FIELD_VARIANTS = [
    "Model",
    "MODEL",
    "mOdEl",
    "model ",
    "\u212aeep_alive",
    "\u017ftream",
    "Stream",
    "Messages",
    "Options",
]


def _names() -> list[str]:
    names: set[str] = set(OLLAMA_OPTIONS)
    for fields in ROUTE_FIELDS.values():
        names.update(fields)
    return sorted(names)


FIELD_NAMES = _names()
COUNT_FIELDS = ("num_predict", "max_tokens", "max_completion_tokens")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(HOSTILE_STRINGS),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES + FIELD_VARIANTS), st.text(max_size=10))
values: st.SearchStrategy[Any] = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12
)
# token counts stay small or out of bounds: the scripted backend really streams what it is asked for
counts = st.one_of(st.integers(-3, 30), st.integers(min_value=(1 << 20) + 1, max_value=2**64), values)
models = st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=20), values)
messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]) | values,
            "content": st.text(max_size=40) | values,
            "images": values,
            "tool_calls": values,
            "Role": values,
            "thinking": values,
        },
    )
    | values,
    max_size=4,
)
options = st.dictionaries(
    st.sampled_from([*sorted(OLLAMA_OPTIONS), "Num_Predict", "evil"]),
    st.one_of(values, st.integers(-3, 30)),
    max_size=5,
)


def _field_value(name: str) -> st.SearchStrategy[Any]:
    if name in COUNT_FIELDS:
        return counts
    return {
        "model": models,
        "name": models,
        "messages": messages,
        "options": options,
        "stream": st.booleans() | values,
    }.get(name, values)


def route_bodies(route_op: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects made of the route's own fields (each maybe missing), plus a few strangers."""
    fields = sorted(ROUTE_FIELDS.get(route_op, {"model": None, "name": None, "source": None, "destination": None}))
    optional = {name: _field_value(name) for name in fields}
    return st.fixed_dictionaries({}, optional=optional) | st.dictionaries(keys, values, max_size=6)


RAW_BODIES = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'"x"',
    b"\xef\xbb\xbf{}",
    b'{"model": NaN}',
    b'{"model": Infinity}',
    b'{"model":"fake:small","model":"fake:large"}',
    b'{"model":"fake:small","Model":"fake:large"}',
    b'{"model":"fake:small","mod\\u0065l":"x"}',
    b'{"model":"\\ud800"}',
    b'{"model":"fake:small"} x',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 100 + b"1" + b"}" * 100,
    b'{"n": 1' + b"0" * 400 + b"}",
    b"\xff\xfe\x00",
    b'{"model":"fake:small","messages":[{"role":"user","content":"x","Content":"y"}]}',
]


def _tame(obj: dict[str, Any]) -> dict[str, Any]:
    """Token counts the gateway would pass (up to 2**20) become 5: the scripted backend really
    generates what it is asked for, and a million tokens would only measure it."""

    def small(v: Any) -> Any:
        return 5 if isinstance(v, int) and not isinstance(v, bool) and 30 < v <= 1 << 20 else v

    out = {k: small(v) if k in COUNT_FIELDS else v for k, v in obj.items()}
    if isinstance(out.get("options"), dict):
        out["options"] = {k: small(v) if k in COUNT_FIELDS else v for k, v in out["options"].items()}
    return out


_HI = [{"role": "user", "content": "hi"}]
VALID_BODIES: dict[str, dict[str, Any]] = {
    "chat": {"model": "fake:small", "messages": _HI, "options": {"num_predict": 3}},
    "generate": {"model": "fake:small", "prompt": "hi", "options": {"num_predict": 3}},
    "embed": {"model": "fake:small", "input": "hi"},
    "embeddings": {"model": "fake:small", "prompt": "hi"},
    "show": {"model": "fake:small"},
    "openai_chat": {"model": "fake:small", "messages": _HI, "max_tokens": 3},
    "openai_completion": {"model": "fake:small", "prompt": "hi", "max_tokens": 3},
    "openai_embeddings": {"model": "fake:small", "input": "hi"},
    "pair": {"code": "ABCD-EFGH", "device": "fuzz"},
}


@st.composite
def near_valid_bodies(draw: st.DrawFn, route_op: str) -> dict[str, Any]:
    """A body the gateway accepts, with zero to two of its fields (or a stranger) made hostile, so
    that requests get past the screening and reach the backend too."""
    body = dict(VALID_BODIES.get(route_op, {"model": "fake:small"}))
    if route_op in ("chat", "generate", "openai_chat", "openai_completion"):
        body["stream"] = draw(st.booleans())
    fields = sorted(ROUTE_FIELDS.get(route_op, {}))
    for _ in range(draw(st.integers(0, 2))):
        own_field: bool = bool(fields) and draw(st.booleans())
        name = draw(st.sampled_from(fields)) if own_field else draw(keys)
        body[name] = draw(_field_value(name))
    return body


@st.composite
def bodies(draw: st.DrawFn, route_op: str) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.sampled_from(RAW_BODIES))
    if choice == 1:
        return draw(st.binary(max_size=200))
    obj = _tame(draw(near_valid_bodies(route_op) if choice < 6 else route_bodies(route_op)))
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", errors="surrogatepass")


HEADER_NAMES = [
    "Content-Type",
    "X-Api-Key",
    "Origin",
    "Accept-Language",
    "Cookie",
    "X-Csrf-Token",
    "Authorization",
    "Transfer-Encoding",
    "Expect",
    "Connection",
    "X-Forwarded-For",
    "Host",
    "Content-Encoding",
    "Range",
    "Upgrade",
    "Accept",
    "User-Agent",
    "Content-Length",
]
HEADER_VALUES = [
    "application/json",
    "text/plain",
    "chunked",
    "gzip",
    "100-continue",
    "websocket",
    "close",
    "keep-alive",
    "Bearer",
    "Bearer hlm_invalid",
    "Basic Og==",
    "Basic " + "A" * 5000,
    "http://evil.example",
    "null",
    "-1",
    "1, 2",
    "127.0.0.1",
    "evil.example",
    "localhost:1",
    "[::1]",
    "bytes=0-1",
    "x" * 9000,
]
header_values = st.one_of(
    st.sampled_from(HEADER_VALUES),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")),
)
header_lists = st.lists(
    st.tuples(st.sampled_from(HEADER_NAMES) | st.text("abcxyz-", min_size=1, max_size=8), header_values), max_size=4
)
headers: st.SearchStrategy[list[tuple[str, str]]] = st.one_of(st.just([]), header_lists)


# inference routes three times: they have the most fields and the only paths to the backend's streams
WEIGHTED_ROUTES = sorted(ROUTES.items()) + 2 * sorted(item for item in ROUTES.items() if item[1].inference)


@dataclass(frozen=True)
class HostileRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def render(self, host: str, key: str) -> bytes:
        """The request as bytes: Host and the key first, then the hostile headers, then a framed body."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {key}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [f"Content-Length: {len(self.body)}", "Connection: close"]
        head = "\r\n".join(lines).encode("latin-1", errors="replace") + b"\r\n\r\n"
        return head + self.body


@st.composite
def requests(draw: st.DrawFn) -> HostileRequest:
    """A request to a route of either API: usually its own method and path, sometimes a trick."""
    (method, path), route = draw(st.sampled_from(WEIGHTED_ROUTES))
    if draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(METHODS))
    if draw(st.integers(0, 5)) == 0:
        path = draw(st.sampled_from(PATHS))
    if draw(st.integers(0, 4)) == 0:
        path = path + draw(st.sampled_from(PATH_TRICKS))
    body = draw(bodies(route.op)) if method in ("POST", "DELETE", "PUT", "PATCH") else b""
    return HostileRequest(method, path, draw(headers), body)


@dataclass
class Answer:
    statuses: list[int]  # every status line in the answer (a lying body length can make two)
    raw: bytes


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def send(host: str, port: int, data: bytes, timeout: float = 30) -> Answer:
    """Write ``data`` on a new connection and read until the server closes it."""
    chunks = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before it has read everything
            sock.sendall(data)
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    statuses = [int(m.group(1)) for line in raw.split(b"\r\n") if (m := STATUS_LINE.match(line + b" "))]
    return Answer(statuses, raw)


def verdict(request: HostileRequest, answer: Answer, backend_kind: str) -> str | None:
    """None when the answer is acceptable; else what is wrong with it."""
    if not answer.statuses:
        return f"no HTTP answer: {answer.raw[:200]!r}"
    for status in answer.statuses:
        management = backend_kind != "ollama" and status == 501
        if status >= 500 and status not in ALLOWED_5XX and not management:
            return f"status {status}: {answer.raw[:300]!r}"
    for mark in TRACEBACK_MARKS:
        if mark in answer.raw:
            return f"traceback text ({mark!r}) in the answer: {answer.raw[:300]!r}"
    return None
