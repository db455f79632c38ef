"""The queue in front of a busy pool, in-thread over loopback: its bound in time, a client leaving
while it waits, what /metrics says, and the single-backend case left on its fast path."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.conftest import Fake, Keys, run_gateway

from homellm.serve.backends import OllamaBackend
from homellm.serve.router import Member, PoolOptions, Router
from homellm.testing.processes import wait_for

BODY = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def busy(gateway_home: Path, ollama_fake: Fake) -> Iterator[tuple[str, Router]]:
    """A pool of one backend that runs one request at a time, with a half-second queue bound."""
    router = Router([Member("solo", OllamaBackend(ollama_fake.url), max_concurrency=1)],
                    PoolOptions(queue_wait_s=0.5, health_interval_s=0.2))  # fmt: skip
    with run_gateway(gateway_home, router, requests_per_minute=0) as (url, _):
        yield url, router


def test_a_request_waits_no_longer_than_the_bound(busy: tuple[str, Router], ollama_fake: Fake, keys: Keys) -> None:
    url, router = busy
    ollama_fake.script.paused = True
    with ThreadPoolExecutor(1) as ex:
        first = ex.submit(httpx.post, url + "/api/chat", json=BODY, headers=bearer(keys.bob), timeout=60)
        wait_for(lambda: len(ollama_fake.rec.arrivals) == 1, 30, "the first request at the backend")
        r = httpx.post(url + "/v1/chat/completions", json=BODY, headers=bearer(keys.bob), timeout=60)
        assert r.status_code == 429
        assert r.json()["error"]["message"] == "no backend was free for 0.5 s; the pool is busy"
        assert int(r.headers["retry-after"]) >= 1
        ollama_fake.script.paused = False
        assert first.result(60).status_code == 200
    metrics = httpx.get(url + "/metrics", headers=bearer(keys.admin)).text
    assert "homellm_queue_rejected_total 1.0" in metrics
    assert 'homellm_backend_up{backend="solo"} 1.0' in metrics
    assert 'homellm_backend_requests_total{backend="solo"} 1.0' in metrics
    assert router.waiting() == 0 and router.members[0].outstanding == 0


def test_a_client_that_leaves_while_it_waits_leaves_the_queue(
    busy: tuple[str, Router], ollama_fake: Fake, keys: Keys
) -> None:
    url, router = busy
    router.options = PoolOptions(queue_wait_s=60, health_interval_s=0.2)
    ollama_fake.script.paused = True
    host, port = url.removeprefix("http://").split(":")
    with ThreadPoolExecutor(1) as ex:
        first = ex.submit(httpx.post, url + "/api/chat", json=BODY, headers=bearer(keys.bob), timeout=60)
        wait_for(lambda: len(ollama_fake.rec.arrivals) == 1, 30, "the first request at the backend")
        body = json.dumps(BODY).encode()
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + keys.bob.encode()
                      + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)  # fmt: skip
            wait_for(lambda: router.waiting() == 1, 30, "the second request queued")
        wait_for(lambda: router.waiting() == 0, 30, "the queue to forget the request whose client left")
        ollama_fake.script.paused = False
        assert first.result(60).status_code == 200
    assert len(ollama_fake.rec.arrivals) == 1  # the one that left never reached the backend
    assert router.members[0].outstanding == 0


def test_one_backend_stays_on_the_fast_path(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    """One backend without a concurrency cap: no router on the request path and no health checks (the
    backend sees only the requests clients send)."""
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, gateway):
        assert gateway.router.single is gateway.backend
        for _ in range(3):
            assert httpx.post(url + "/api/chat", json=BODY, headers=bearer(keys.bob)).status_code == 200
        health = httpx.get(url + "/homellm/health", headers=bearer(keys.bob)).json()
    assert [r.path for r in ollama_fake.rec.requests] == ["/api/chat"] * 3 + ["/api/tags"]  # health asked once
    assert "backends" not in health and health["backend"] == "ok"


def test_a_member_a_check_gave_up_on_is_up_again_when_it_answers(
    gateway_home: Path, ollama_fake: Fake, keys: Keys
) -> None:
    """A CPU engine answers no health check while it generates a whole (unstreamed) answer, so a check may
    give up on it mid-request; the answer that then arrives is proof it is up."""
    router = Router([Member("a", OllamaBackend(ollama_fake.url)), Member("b", OllamaBackend(ollama_fake.url))],
                    PoolOptions(health_interval_s=3600))  # fmt: skip
    with run_gateway(gateway_home, router, requests_per_minute=0) as (url, _):
        ollama_fake.script.paused = True
        with ThreadPoolExecutor(1) as ex:
            pending = ex.submit(httpx.post, url + "/api/chat", json=BODY, headers=bearer(keys.bob), timeout=60)
            wait_for(lambda: len(ollama_fake.rec.arrivals) == 1, 30, "the request at the backend")
            busy = next(m for m in router.members if m.outstanding)
            busy.up, busy.detail = False, "no answer within 5 s"  # what a check that gave up leaves
            assert busy.state() == "down"
            ollama_fake.script.paused = False
            assert pending.result(60).status_code == 200
        assert busy.state() == "up" and busy.detail == ""
