"""Daily quotas per key, enforced from the usage log: in-thread gateways over loopback with real SQLite,
a restarted gateway that still counts, the UTC day turning on a stepped clock, and ``homellm usage``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from tests.conftest import Fake, homellm_exe, run_gateway

from homellm.serve.backends import OllamaBackend
from homellm.serve.quota import DAY, Quotas
from homellm.serve.request import Ctx, Stats
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.store.usage import UsageRecord, UsageWriter
from homellm.testing.processes import wait_for

CHAT = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def quota_home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_requests_per_day_then_429_with_the_reset_time_even_after_a_restart(
    quota_home: Path, ollama_fake: Fake
) -> None:
    store = KeyStore(open_database(quota_home))
    limited = store.create("kid", requests_per_day=3)[1]
    free = store.create("parent")[1]
    with run_gateway(quota_home, OllamaBackend(ollama_fake.url), requests_per_minute=0) as (url, _):
        for _ in range(3):
            assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(limited)).status_code == 200
        over = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(limited))
        assert over.status_code == 429
        assert over.json()["error"].startswith("key 'kid' has used its 3 requests for today; the quota resets at "
                                               "00:00 UTC, in ")  # fmt: skip
        assert 1 <= int(over.headers["retry-after"]) <= DAY + 1
        # the OpenAI front says it in its own shape; other keys and listings are not limited
        over_v1 = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(limited))
        assert over_v1.status_code == 429 and "3 requests for today" in over_v1.json()["error"]["message"]
        assert httpx.get(url + "/api/tags", headers=bearer(limited)).status_code == 200
        assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(free)).status_code == 200
    assert len([r for r in ollama_fake.rec.requests if r.path == "/api/chat"]) == 4  # refused ones never went
    # a new gateway process reads today's use from the usage log
    with run_gateway(quota_home, OllamaBackend(ollama_fake.url), requests_per_minute=0) as (url, _):
        assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(limited)).status_code == 429
        store.set_limits("kid", None, 5, None)  # raised by the admin: applies within the key cache's interval
        wait_for(lambda: httpx.post(url + "/api/chat", json=CHAT, headers=bearer(limited)).status_code == 200, 30,
                 "the raised quota to apply")  # fmt: skip


def test_tokens_per_day(quota_home: Path, ollama_fake: Fake) -> None:
    """Each answer of the scripted Ollama is 7 prompt + 5 completion tokens: the second crosses 20, the
    third is refused."""
    secret = KeyStore(open_database(quota_home)).create("tok", tokens_per_day=20)[1]
    with run_gateway(quota_home, OllamaBackend(ollama_fake.url), requests_per_minute=0) as (url, _):
        assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(secret)).status_code == 200
        streamed = {**CHAT, "stream": True}
        with httpx.stream("POST", url + "/api/chat", json=streamed, headers=bearer(secret)) as r:
            assert r.status_code == 200 and json.loads(list(r.iter_lines())[-1])["done"]
        over = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(secret))
        assert over.status_code == 429 and "has used its 20 tokens for today" in over.json()["error"]


def test_the_day_turns_at_midnight_utc(quota_home: Path) -> None:
    """Quotas on a stepped clock, over a real usage table: yesterday's use does not count today."""
    db = open_database(quota_home)
    store = KeyStore(db)
    store.create("kid", requests_per_day=2)
    key = store.get("kid")
    now = [DAY * 20_000 + 3600.0]  # 01:00 UTC
    writer = UsageWriter(quota_home / "homellm.db")
    for ts in (now[0] - 7200, now[0] - 60):  # one yesterday at 23:00, one today
        writer.record(UsageRecord(ts=ts, key_name="kid", client_ip=None, method="POST", route="/api/chat",
                                  model="m", status=200, prompt_tokens=1, completion_tokens=1))  # fmt: skip
    writer.close()
    quotas = Quotas(db, clock=lambda: now[0])

    def ask() -> Ctx:
        ctx = Ctx("ollama", "POST", "/api/chat", "127.0.0.1", {}, key=key, stats=Stats())
        quotas.admit(ctx)
        return ctx

    done = ask()  # today's second
    quotas.finish(done)
    with pytest.raises(Exception, match="has used its 2 requests for today") as refused:
        ask()
    assert refused.value.headers["Retry-After"] == str(DAY - 3600 + 1)  # type: ignore[attr-defined]
    now[0] += DAY - 3600  # 00:00 UTC the next day
    quotas.finish(ask())


def test_a_request_in_flight_counts(quota_home: Path) -> None:
    """Two requests at once cannot both take the last one of the day."""
    db = open_database(quota_home)
    KeyStore(db).create("kid", requests_per_day=1)
    quotas = Quotas(db)
    key = KeyStore(db).get("kid")
    first = Ctx("ollama", "POST", "/api/chat", "127.0.0.1", {}, key=key)
    quotas.admit(first)
    with pytest.raises(Exception, match="1 requests for today"):
        quotas.admit(Ctx("ollama", "POST", "/api/chat", "127.0.0.1", {}, key=key))
    first.status, first.stats.error_status = 502, 502  # it failed at the backend: it does not count
    quotas.finish(first)
    quotas.admit(Ctx("ollama", "POST", "/api/chat", "127.0.0.1", {}, key=key))


def test_keys_and_usage_commands_show_quotas(quota_home: Path, ollama_fake: Fake) -> None:
    env = dict(os.environ, HOMELLM_HOME=str(quota_home), COLUMNS="120")

    def homellm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([homellm_exe(), *args], capture_output=True, text=True, env=env, timeout=60)

    made = homellm("keys", "create", "kid", "--requests-per-day", "3", "--tokens-per-day", "1000", "--json")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["key"]
    listed = json.loads(homellm("keys", "list", "--json").stdout)
    assert (listed[0]["requests_per_day"], listed[0]["tokens_per_day"], listed[0]["priority"]) == (3, 1000, 1)
    bad = homellm("keys", "create", "x", "--tokens-per-day", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --tokens-per-day must be a positive whole number"
    with run_gateway(quota_home, OllamaBackend(ollama_fake.url), requests_per_minute=0) as (url, _):
        for _ in range(2):
            assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(secret)).status_code == 200
    usage = homellm("usage")
    assert usage.returncode == 0, usage.stderr
    assert "Daily quotas (UTC day)" in usage.stdout
    assert "2 / 3 (67%)" in usage.stdout and "24 / 1,000 (2%)" in usage.stdout
    quota = json.loads(homellm("usage", "--quota", "--json").stdout)
    assert quota[0]["key"] == "kid" and (quota[0]["requests"], quota[0]["tokens"]) == (2, 24)
    changed = homellm("keys", "set", "kid", "--requests-per-day", "0", "--priority", "3")
    assert changed.returncode == 0 and "priority 3" in changed.stdout
    assert KeyStore(open_database(quota_home)).get("kid").requests_per_day is None
