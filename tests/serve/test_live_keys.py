"""Keys changed while the gateway runs, from another process (``homellm keys``), as an admin does it:
a revoked key is refused within a second, a new key works at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.cli.test_cli import homellm
from tests.conftest import Fake, run_gateway

from homellm.serve.backends import OllamaBackend
from homellm.store import open_database
from homellm.store.keys import KeyStore

CHAT = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "stream": False}
REVOKED_WITHIN = 1.0  # seconds: the KeyCache checks SQLite's data_version at most every 0.25 s


@pytest.fixture
def served(tmp_path: Path, ollama_fake: Fake) -> Iterator[str]:
    with run_gateway(tmp_path, OllamaBackend(ollama_fake.url)) as (url, _):
        yield url


def status(url: str, key: str) -> int:
    return httpx.post(url + "/api/chat", json=CHAT, headers={"Authorization": f"Bearer {key}"}).status_code


def test_a_key_revoked_in_another_process_is_refused_within_a_second(served: str, tmp_path: Path) -> None:
    _, phone = KeyStore(open_database(tmp_path)).create("phone")
    _, laptop = KeyStore(open_database(tmp_path)).create("laptop")
    assert status(served, phone) == 200  # the gateway has it in memory now
    revoke = homellm("keys", "revoke", "phone", home=tmp_path)
    assert revoke.returncode == 0, revoke.stderr
    committed = time.monotonic()  # the revoking process has exited: its transaction is in the database
    late_accepts = []
    while True:
        sent = time.monotonic() - committed
        code = status(served, phone)
        if code == 401:
            break
        assert code == 200
        if sent > REVOKED_WITHIN:  # judged by when the request was sent, so a slow machine cannot fail it
            late_accepts.append(round(sent, 2))
        assert sent < 60, "the revoked key is still accepted"
    assert late_accepts == [], f"the revoked key was accepted {late_accepts} s after the revocation"
    assert status(served, laptop) == 200  # the other keys are untouched
    r = httpx.post(served + "/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {phone}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_a_key_created_in_another_process_works_at_once(served: str, tmp_path: Path) -> None:
    KeyStore(open_database(tmp_path)).create("first")
    made = homellm("keys", "create", "tablet", "--models", "fake:small", "--json", home=tmp_path)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    assert status(served, key) == 200  # the first request, no waiting: an unknown key makes the cache look again
    r = httpx.post(
        served + "/api/chat", json={**CHAT, "model": "fake:large"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 403  # with the scope it was created with
