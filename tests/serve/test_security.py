"""Every security rule of the gateway, each with a request that tries to break it."""

from __future__ import annotations

import base64
import select
import socket
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import Fake, Keys, run_gateway

from homellm.serve.backends import OllamaBackend, OpenAIBackend
from homellm.serve.limits import RateLimiter

CHAT = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "stream": False}
MODEL_ROUTES = [
    ("POST", "/api/chat", {"model": "fake:large", "messages": []}),
    ("POST", "/api/generate", {"model": "fake:large", "prompt": "x"}),
    ("POST", "/api/embed", {"model": "fake:large", "input": "x"}),
    ("POST", "/api/embeddings", {"model": "fake:large", "prompt": "x"}),
    ("POST", "/api/show", {"model": "fake:large"}),
    ("POST", "/api/show", {"name": "fake:large"}),
    ("POST", "/v1/chat/completions", {"model": "fake:large", "messages": []}),
    ("POST", "/v1/completions", {"model": "fake:large", "prompt": "x"}),
    ("POST", "/v1/embeddings", {"model": "fake:large", "input": "x"}),
    ("GET", "/v1/models/fake:large", None),
]
ADMIN_ROUTES = [
    ("POST", "/api/pull", {"model": "evil/model"}),
    ("POST", "/api/push", {"model": "fake:small"}),
    ("POST", "/api/create", {"model": "x", "from": "fake:small"}),
    ("POST", "/api/copy", {"source": "fake:small", "destination": "y"}),
    ("DELETE", "/api/delete", {"model": "fake:small"}),
    ("POST", "/api/blobs/sha256:" + "a" * 64, None),
    ("HEAD", "/api/blobs/sha256:" + "a" * 64, None),
    ("GET", "/metrics", None),
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers_for", "status"),
    [
        (lambda k: {}, 401),
        (lambda k: bearer("hlm_wrong"), 401),
        (lambda k: bearer(k.expired), 401),
        (lambda k: bearer(k.revoked), 401),
        (lambda k: {"Authorization": f"Token {k.bob}"}, 401),
        (lambda k: bearer(k.bob), 200),
        (lambda k: {"X-Api-Key": k.bob}, 200),
        (lambda k: {"Authorization": "Basic " + base64.b64encode(f"user:{k.bob}".encode()).decode()}, 200),
    ],
    ids=["none", "wrong", "expired", "revoked", "bad-scheme", "bearer", "x-api-key", "basic-password"],
)
def test_key_sources(ollama_gateway: str, keys: Keys, headers_for: object, status: int) -> None:
    headers = headers_for(keys)  # type: ignore[operator]
    r = httpx.post(ollama_gateway + "/api/chat", json=CHAT, headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.json()["error"] and r.headers["www-authenticate"].startswith("Bearer")


def test_a_key_in_the_query_string_is_ignored(ollama_gateway: str, keys: Keys, ollama_fake: Fake) -> None:
    for param in ("key", "api_key", "token", "access_token"):
        r = httpx.post(f"{ollama_gateway}/api/chat?{param}={keys.bob}", json=CHAT)
        assert r.status_code == 401
    assert ollama_fake.rec.requests == []


@pytest.mark.parametrize(("method", "path", "body"), MODEL_ROUTES)
def test_model_allowlist_holds_on_every_route_that_names_a_model(
    gateway_home: Path, openai_fake: Fake, keys: Keys, method: str, path: str, body: dict[str, object] | None
) -> None:
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        r = httpx.request(method, url + path, json=body, headers=bearer(keys.alice))
    assert r.status_code == 403, r.text
    assert openai_fake.rec.requests == [] or all(seen.path == "/v1/models" for seen in openai_fake.rec.requests)


def test_listings_show_only_the_keys_models(ollama_gateway: str, openai_gateway: str, keys: Keys) -> None:
    tags = httpx.get(ollama_gateway + "/api/tags", headers=bearer(keys.alice)).json()
    assert [m["name"] for m in tags["models"]] == ["fake:small"]
    ps = httpx.get(ollama_gateway + "/api/ps", headers=bearer(keys.alice)).json()
    assert [m["name"] for m in ps["models"]] == ["fake:small"]
    for gw in (ollama_gateway, openai_gateway):
        models = httpx.get(gw + "/v1/models", headers=bearer(keys.alice)).json()
        assert [m["id"] for m in models["data"]] == ["fake:small"]
        everything = httpx.get(gw + "/v1/models", headers=bearer(keys.bob)).json()
        assert len(everything["data"]) == 2


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_model_management_needs_an_admin_key(
    ollama_gateway: str, ollama_fake: Fake, keys: Keys, method: str, path: str, body: dict[str, object] | None
) -> None:
    r = httpx.request(method, ollama_gateway + path, json=body, headers=bearer(keys.bob))
    assert r.status_code == 403
    assert ollama_fake.rec.requests == []
    ok = httpx.request(method, ollama_gateway + path, json=body, headers=bearer(keys.admin))
    assert ok.status_code in (200, 201)  # Ollama answers a blob upload with 201 Created
    if path != "/metrics":
        assert ollama_fake.rec.requests[-1][1] == path


def test_model_management_on_a_backend_without_it_is_501(openai_gateway: str, keys: Keys) -> None:
    r = httpx.post(openai_gateway + "/api/pull", json={"model": "x"}, headers=bearer(keys.admin))
    assert r.status_code == 501


# Paths with ``..`` are not here: httpx normalises them away before sending. They go over raw
# sockets in tests/security/test_hostile_input.py (test_path_tricks_never_reach_the_backend).
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/unknown"),
        ("GET", "/api/blobs/sha256:" + "a" * 64),
        ("GET", "/v1/files"),
        ("PUT", "/api/chat"),
        ("GET", "/api/chat"),
        ("POST", "/api/tags"),
        ("TRACE", "/"),
    ],
)
def test_routing_is_default_deny(ollama_gateway: str, ollama_fake: Fake, keys: Keys, method: str, path: str) -> None:
    r = httpx.request(method, ollama_gateway + path, headers=bearer(keys.admin))
    assert r.status_code in (404, 405)
    assert ollama_fake.rec.requests == []


def test_metrics_for_admins(ollama_gateway: str, keys: Keys) -> None:
    httpx.post(ollama_gateway + "/api/chat", json=CHAT, headers=bearer(keys.bob))
    text = httpx.get(ollama_gateway + "/metrics", headers=bearer(keys.admin)).text
    assert 'homellm_requests_total{route="/api/chat",status="200"}' in text


# ---- network ---------------------------------------------------------------------------


def test_ip_allowlist(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), allow_cidrs=["10.0.0.0/8"]) as (url, _):
        r = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob))
        assert r.status_code == 403 and "127.0.0.1" in r.json()["error"]
        # a forged X-Forwarded-For does not help
        r = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob) | {"X-Forwarded-For": "10.1.2.3"})
        assert r.status_code == 403
    assert ollama_fake.rec.requests == []


def test_default_allowlist_covers_private_ranges() -> None:
    from homellm.serve.network import ip_allowed, parse_networks
    from homellm.settings import DEFAULT_ALLOW_CIDRS

    nets = parse_networks(DEFAULT_ALLOW_CIDRS)
    for ip in ("127.0.0.1", "192.168.1.20", "10.3.4.5", "172.20.0.1", "100.101.102.103", "169.254.1.1", "fd12::1",
               "::1", "::ffff:192.168.1.2"):  # fmt: skip
        assert ip_allowed(ip, nets), ip
    for ip in ("8.8.8.8", "1.1.1.1", "2001:4860::8888", "172.32.0.1", "100.128.0.1"):
        assert not ip_allowed(ip, nets), ip


@pytest.mark.parametrize("host", ["evil.example", "attacker.com:11435", "127.0.0.1.nip.io", ""])
def test_host_header_guards_against_dns_rebinding(ollama_gateway: str, keys: Keys, host: str) -> None:
    r = httpx.post(ollama_gateway + "/api/chat", json=CHAT, headers=bearer(keys.bob) | {"Host": host})
    assert r.status_code == 403


def test_cors_allows_only_listed_origins(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    good = "http://localhost:3000"
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), cors_origins=[good]) as (url, _):
        pre = httpx.options(url + "/api/chat", headers={"Origin": good, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == good
        r = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob) | {"Origin": good})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == good
        bad = httpx.options(url + "/api/chat", headers={"Origin": "https://evil.example"})
        assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers
        r = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob) | {"Origin": "https://evil.example"})
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_no_wildcard_cors_by_default(ollama_gateway: str, keys: Keys) -> None:
    r = httpx.post(ollama_gateway + "/api/chat", json=CHAT, headers=bearer(keys.bob) | {"Origin": "http://a.b"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


# ---- limits ----------------------------------------------------------------------------


def test_body_size_limit(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), max_body_bytes=1000) as (url, _):
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        assert httpx.post(url + "/api/chat", json=big, headers=bearer(keys.bob)).status_code == 413

        def chunks():  # no Content-Length: chunked transfer encoding
            for _ in range(10):
                yield b"x" * 500

        r = httpx.post(url + "/v1/chat/completions", content=chunks(), headers=bearer(keys.bob))
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert ollama_fake.rec.requests == []


def test_rate_limit_answers_429_with_retry_after(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), requests_per_minute=3) as (url, _):
        codes = [httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(keys.bob))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
        # another key has its own budget
        assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.admin)).status_code == 200
    assert len(ollama_fake.rec.requests) == 4  # the refused requests never reached the backend


class SteppedClock:
    """The rate limiter's clock, moved by the test instead of waiting a minute."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.now = 1000.0
        check = limiter.check
        limiter.check = lambda key, now=None: check(key, self.now)  # type: ignore[method-assign]


def test_rate_limit_window_recovers(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    """The limit is a sliding minute: refused requests are accepted again as old ones leave the window."""
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), requests_per_minute=2) as (url, gw):
        clock = SteppedClock(gw.checks.rate)

        def status() -> tuple[int, str | None]:
            r = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob))
            return r.status_code, r.headers.get("retry-after")

        assert status() == (200, None)  # at 1000
        clock.now = 1030.0
        assert status() == (200, None)
        assert status() == (429, "30")  # the first leaves the window at 1060
        clock.now = 1059.5
        assert status() == (429, "1")
        clock.now = 1060.0
        assert status() == (200, None)  # one slot back, not two
        assert status() == (429, "30")
        clock.now = 1150.0
        assert [status()[0] for _ in range(3)] == [200, 200, 429]
    assert len(ollama_fake.rec.requests) == 5


def test_rate_limiter_slides_per_key() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.check("a", now=0.0) == 0 and limiter.check("a", now=10.0) == 0
    assert limiter.check("a", now=59.0) == pytest.approx(1.0) and limiter.check("b", now=59.0) == 0
    assert limiter.check("a", now=60.0) == 0  # the hit at 0 has left the window
    assert limiter.check("a", now=60.0) == pytest.approx(10.0)
    assert RateLimiter(per_minute=0).check("a", now=0.0) == 0  # 0 = unlimited


def test_concurrent_streams_per_key(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    import threading

    ollama_fake.script.gate = threading.Event()
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), max_streams_per_key=1) as (url, _):
        body = {**CHAT, "stream": True}
        with httpx.stream("POST", url + "/api/chat", json=body, headers=bearer(keys.bob)) as first:
            lines = first.iter_lines()  # keep it: a dropped iterator closes the stream
            next(lines)  # the first stream is running, held by the backend
            r = httpx.post(url + "/api/chat", json=body, headers=bearer(keys.bob))
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            ollama_fake.script.gate.set()
        assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob)).status_code == 200


def test_slow_headers_are_cut_off(gateway_home: Path, ollama_fake: Fake) -> None:
    """Slowloris: a header line every 0.2 s, never the blank line that ends them. Each byte would reset a
    keep-alive timer; the header timeout (1 s here) closes the connection however the lines trickle."""
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), header_timeout_s=1.0) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _closed_while_trickling(sock, give_up_after=60), "the gateway kept a never-ending request open"
    assert ollama_fake.rec.requests == []


def _closed_while_trickling(sock: socket.socket, give_up_after: float) -> bool:
    deadline = time.monotonic() + give_up_after
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"X-a: b\r\n")
            readable, _, _ = select.select([sock], [], [], 0.2)  # the trickle's pace
            if readable and sock.recv(4096) == b"":
                return True
        except OSError:  # reset by the server
            return True
    return False


# ---- errors in each API's own shape ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content", "status"),
    [
        ("/api/chat", b"{not json", 400),
        ("/v1/chat/completions", b"{not json", 400),
        ("/api/chat", b"[1, 2]", 400),
        ("/api/chat", b'{"messages": []}', 400),
        ("/v1/embeddings", b"", 400),
    ],
)
def test_bad_json_is_400_in_the_fronts_shape(
    ollama_gateway: str, ollama_fake: Fake, keys: Keys, path: str, content: bytes, status: int
) -> None:
    r = httpx.post(ollama_gateway + path, content=content, headers=bearer(keys.bob))
    assert r.status_code == status and ollama_fake.rec.requests == []  # refused by the gateway itself
    err = r.json()["error"]
    if path.startswith("/v1/"):
        assert set(err) == {"message", "type", "code"} and err["type"] == "invalid_request_error"
    else:
        assert isinstance(err, str) and err


# Backend errors (down, silent, 4xx, 5xx) as the gateway's answers: tests/serve/test_backend_errors.py
