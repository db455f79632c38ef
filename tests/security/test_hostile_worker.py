"""A joined worker that turns hostile: what it sends back must not harm the main gateway or its clients.

The hostile member is a small ASGI imitation of Ollama (served by uvicorn on loopback) that answers the
gateway's health checks like Ollama and then lies in the ways a compromised machine could: HTML where JSON
belongs, token counts that are negative or not numbers, a model list larger than any real one. It sits in a
pool next to the scripted Ollama (``ollama_fake``), as a machine that joined would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import Fake, run_gateway

from homellm.serve.app import Gateway
from homellm.serve.backends import OllamaBackend
from homellm.serve.router import Member, Router
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.fake_backend import serve_in_thread

MODEL = "evil:1b"


@dataclass
class Hostile:
    """What the hostile member answers: the body and type of ``/api/version``, the counts in its last
    chat line, and how many bytes of model list it sends."""

    version_type: bytes = b"text/html; charset=utf-8"
    version_body: bytes = b"<html><script>fetch('/app/api/me')</script></html>"
    counts: dict[str, Any] = field(default_factory=lambda: {"prompt_eval_count": 3, "eval_count": 4})
    tags_bytes: int = 0
    names: list[str] = field(default_factory=lambda: [MODEL])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        while (await receive()).get("more_body"):
            pass
        if path == "/api/version":
            await self._send(send, self.version_body, self.version_type)
        elif path == "/api/tags":
            models = [{"name": n, "model": n, "size": 1, "details": {}} for n in self.names]
            body = json.dumps({"models": models}).encode()
            if self.tags_bytes:  # a model list far beyond any real one, sent in pieces
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": b'{"models": [', "more_body": True})
                entry = json.dumps({"name": "x" * 1000, "size": 1}).encode() + b","
                piece = entry * (1024 * 1024 // len(entry))
                for _ in range(self.tags_bytes // len(piece)):
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                await send({"type": "http.response.body", "body": body[len(b'{"models": [') :]})
                return
            await self._send(send, body)
        elif path == "/api/ps":
            await self._send(send, json.dumps({"models": [{"name": MODEL, "model": MODEL}]}).encode())
        elif path == "/api/chat":
            line = {"model": MODEL, "message": {"role": "assistant", "content": "ok"}, "done": True, **self.counts}
            await self._send(send, json.dumps(line).encode() + b"\n", b"application/x-ndjson")
        else:
            await self._send(send, b'{"error": "no"}', status=404)

    @staticmethod
    async def _send(send: Any, body: bytes, ctype: bytes = b"application/json", status: int = 200) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Pool:
    url: str
    home: Path
    hostile: Hostile
    gateway: Gateway
    key: str  # may use every model, has a token quota


@pytest.fixture
def pool(tmp_path: Path, ollama_fake: Fake) -> Iterator[Pool]:
    home = tmp_path / "main"
    key = KeyStore(open_database(home)).create("carol", None, tokens_per_day=100)[1]
    hostile = Hostile()
    with serve_in_thread(hostile) as evil_url:
        router = Router([Member("evil", OllamaBackend(evil_url), priority=1, joined=True),
                         Member("main", OllamaBackend(ollama_fake.url))])  # fmt: skip
        with run_gateway(home, router) as (url, gw):
            yield Pool(url, home, hostile, gw, key)


def _chat(pool: Pool) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    return httpx.post(pool.url + "/api/chat", json=body, headers={"Authorization": f"Bearer {pool.key}"}, timeout=30)


def test_a_member_cannot_answer_a_browser_with_html_from_the_gateways_origin(pool: Pool) -> None:
    """A page from the gateway's origin would run with the signed-in browser's cookie: the gateway
    never passes a member's HTML (or any type but JSON) through as its own."""
    r = httpx.get(pool.url + "/api/version", headers={"Authorization": f"Bearer {pool.key}"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    assert r.headers["x-content-type-options"] == "nosniff"


def _usage_rows(home: Path) -> list[Any]:
    db = open_database(home)
    return db.execute("SELECT prompt_tokens, completion_tokens, status FROM usage WHERE route = '/api/chat'").fetchall()


def _wait_rows(home: Path, n: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while len(rows := _usage_rows(home)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


@pytest.mark.parametrize("counts", [
    {"prompt_eval_count": -1_000_000, "eval_count": -1_000_000},
    {"prompt_eval_count": "many", "eval_count": [1]},
    {"prompt_eval_count": 10**30, "eval_count": True},
])  # fmt: skip
def test_a_members_token_counts_cannot_undo_a_quota_or_lose_the_usage_row(pool: Pool, counts: dict[str, Any]) -> None:
    """Counts that are not whole numbers in range are not counts: every request keeps its usage row, and a
    negative count does not buy a key more of its daily quota."""
    pool.hostile.counts = counts
    for _ in range(3):
        assert _chat(pool).status_code == 200
    rows = _wait_rows(pool.home, 3)
    assert len(rows) == 3, rows
    for prompt, completion, _status in rows:
        for value in (prompt, completion):
            assert value is None or (type(value) is int and 0 <= value <= 10**12), rows
    pool.hostile.counts = {"prompt_eval_count": 60, "eval_count": 60}  # crosses the quota of 100 tokens
    assert _chat(pool).status_code == 200
    assert _chat(pool).status_code == 429


def test_a_members_model_list_is_read_within_bounds(pool: Pool) -> None:
    """A model list of 64 MiB (64,000 names of 1,000 characters) is not read whole: the member is down
    with the reason, and none of the names reaches a client."""
    pool.hostile.tags_bytes = 64 * 1024 * 1024
    evil = next(m for m in pool.gateway.router.members if m.name == "evil")
    deadline = time.monotonic() + 30
    while evil.up and time.monotonic() < deadline:  # the next health check reads the list
        time.sleep(0.05)
    assert not evil.up and "larger than 8 MiB" in evil.detail, evil.detail
    tags = httpx.get(pool.url + "/api/tags", headers={"Authorization": f"Bearer {pool.key}"}, timeout=30).json()
    assert tags["models"] and all(len(m["name"]) <= 256 for m in tags["models"])


def test_a_members_model_names_are_names_a_client_could_send(pool: Pool) -> None:
    """Names that are not printable, or longer than a request may name, are left out of the pool's list."""
    from homellm.serve.backends import MAX_MODELS

    pool.hostile.names = ["ok:1b", "\x1b]0;pwned\x07", "y" * 300, "", *[f"m{i}" for i in range(MAX_MODELS + 10)]]
    evil = next(m for m in pool.gateway.router.members if m.name == "evil")
    deadline = time.monotonic() + 30
    while "ok:1b" not in evil.names and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ok:1b" in evil.names
    assert all(n.isprintable() and 0 < len(n) <= 256 for n in evil.names)
    assert len(evil.entries) <= MAX_MODELS
