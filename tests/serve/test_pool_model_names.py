"""A key's allowlist holds in a pool whatever spelling of a model it sends.

Ollama reads ``small`` and ``small:latest`` as one model, and the router folds them the same way. An
OpenAI-compatible server does not: llama-cpp-python's (the embedded engine, a worker's engine) answers a
name it does not know with its *default* model. The scripted OpenAI server imitates exactly that (it runs
its first model for an unknown name; it records the name each request asked for), so a pool that sent
``small:latest`` there, for a key allowed ``small`` only, would have answered with a model the key may not use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import Fake, run_gateway

from homellm.serve.backends import OllamaBackend, OpenAIBackend
from homellm.serve.router import Member, Router
from homellm.store import open_database
from homellm.store.keys import KeyStore


@pytest.fixture
def pool(tmp_path: Path, openai_fake: Fake, ollama_fake: Fake) -> Iterator[tuple[str, str]]:
    home = tmp_path / "main"
    openai_fake.script.models = ["secret:70b", "small"]  # its default model is the first
    key = KeyStore(open_database(home)).create("kid", ["small"])[1]
    router = Router(
        [Member("engine", OpenAIBackend(openai_fake.url)), Member("ollama", OllamaBackend(ollama_fake.url))]
    )
    with run_gateway(home, router) as (url, _gw):
        yield url, key


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_latest_tag_does_not_reach_an_openai_member_as_an_unknown_name(
    pool: tuple[str, str], openai_fake: Fake, path: str
) -> None:
    url, key = pool
    body = {"model": "small:latest", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    r = httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    # the names the OpenAI member was asked for: one it does not list would run its default model
    arrived = [a["model"] for a in openai_fake.rec.arrivals]
    assert all(name in ("secret:70b", "small") for name in arrived), (r.status_code, arrived)
    assert r.status_code in (200, 404), r.text
    if r.status_code == 200:
        assert arrived == ["small"]
