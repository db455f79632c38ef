"""``homellm bridge`` as a trust boundary on the laptop (issue 8, part C), attacked as a web page or a
local process would attack it.

The bridge under test forwards to a real homellm gateway (in-thread, over TLS with homellm's own
certificate) in front of the scripted fake Ollama, with a real admin key in a real profile: so a
request the bridge lets through really runs, and one it refuses never reaches the backend. Every
raw-socket test runs under both HTTP parsers uvicorn may pick (h11 and httptools). The browser
tests drive Debian's Chromium (headless) with Playwright; ``--host-resolver-rules`` points a
rebinding name at 127.0.0.1 and pages come from a local test server on loopback.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from tests.conftest import require_tool, run_gateway

from homellm.connect.bridge import Bridge
from homellm.connect.browser_guard import ALLOWED_HEADERS, HostGuard, OriginPolicy
from homellm.connect.profiles import Profile, ProfileStore
from homellm.serve.backends import OllamaBackend
from homellm.serve.tls import TlsFiles, ensure_tls, fingerprint_of_pem
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.fake_backend import Recorder, Script, free_port, make_app, serve_in_thread, wait_until_up

PARSERS = ["h11", "httptools"]
CHAT = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "stream": False}
STREAM = {**CHAT, "stream": True}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP rebind.test 127.0.0.1"]  # fmt: skip
EXE = Path(sys.executable).with_name("homellm")


# ---- the paired server, the profile, the bridge ----------------------------------------------


@dataclass
class Server:
    url: str
    tls: TlsFiles
    key: str
    script: Script
    rec: Recorder

    def profile(self, **changes: str) -> Profile:
        fields = {"name": "gpu-pc", "url": self.url, "fingerprint": self.tls.fingerprint,
                  "cert_pem": self.tls.cert.read_text(), "key": self.key} | changes  # fmt: skip
        return Profile(**fields)

    def forwarded(self) -> list[str]:
        """What reached the model server, as ``METHOD /path``."""
        return [f"{seen.method} {seen.path}" for seen in self.rec.requests]


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("gpu-pc")
    tls = ensure_tls(home, None, None)
    key = KeyStore(open_database(home)).create("laptop", None, admin=True)[1]  # an admin key, as in the issue
    script, rec = Script(), Recorder()
    with (
        serve_in_thread(make_app("ollama", script, rec)) as backend,
        run_gateway(home, OllamaBackend(backend), tls) as (url, _gateway),
    ):
        yield Server(url, tls, key, script, rec)


@pytest.fixture
def server(_server: Server) -> Iterator[Server]:
    _server.script.tokens, _server.script.gate = 5, None
    _server.rec.requests.clear()
    _server.rec.cancelled.clear()
    yield _server
    if _server.script.gate is not None:
        _server.script.gate.set()  # release a stream a failed test left waiting


@dataclass
class Running:
    port: int
    parser: str


@pytest.fixture(scope="module", params=PARSERS)
def bridge(request: pytest.FixtureRequest, _server: Server) -> Iterator[Running]:
    port = free_port()
    with serve_in_thread(Bridge(_server.profile()), port=port, http=request.param):
        yield Running(port, request.param)


# ---- raw HTTP/1.1 over a socket: nothing between the test and the parser --------------------------


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def send_raw(port: int, request: bytes) -> Reply:
    """Send bytes as they are; read the whole answer (the request says Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    reply = Reply(int(lines[0].split()[1]), headers, body)
    if (reply.header("transfer-encoding") or "").lower() == "chunked":
        reply.body = _dechunk(body)
    return reply


def request(
    port: int, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
    host: str | None = None,
) -> Reply:  # fmt: skip
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body or method in ("POST", "PUT", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
    return send_raw(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def post_json(port: int, path: str, body: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Reply:
    return request(port, "POST", path, [("Content-Type", "application/json"), *(headers or [])],
                   json.dumps(body).encode())  # fmt: skip


# ---- routes: forward what a device uses, refuse management, nothing else ------------------------

FORWARDED = [
    ("GET", "/", None),
    ("HEAD", "/", None),
    ("GET", "/api/version", None),
    ("GET", "/api/tags", None),
    ("GET", "/api/ps", None),
    ("POST", "/api/show", {"model": "fake:small"}),
    ("POST", "/api/chat", CHAT),
    ("POST", "/api/generate", {"model": "fake:small", "prompt": "x", "stream": False}),
    ("POST", "/api/embed", {"model": "fake:small", "input": "x"}),
    ("POST", "/api/embeddings", {"model": "fake:small", "prompt": "x"}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/fake:small", None),
    ("POST", "/v1/chat/completions", {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/completions", {"model": "fake:small", "prompt": "x"}),
    ("POST", "/v1/embeddings", {"model": "fake:small", "input": "x"}),
]
MANAGEMENT = [
    ("POST", "/api/pull", {"model": "evil/model"}),
    ("POST", "/api/push", {"model": "fake:small"}),
    ("POST", "/api/create", {"model": "x", "from": "fake:small"}),
    ("POST", "/api/copy", {"source": "fake:small", "destination": "y"}),
    ("DELETE", "/api/delete", {"model": "fake:small"}),
    ("POST", "/api/blobs/sha256:" + "a" * 64, None),
    ("HEAD", "/api/blobs/sha256:" + "a" * 64, None),
]
NOT_FORWARDED = [
    ("GET", "/metrics", 404),  # the gateway's, for admins: not an Ollama route
    ("GET", "/homellm/health", 404),
    ("POST", "/homellm/pair", 404),
    ("GET", "/api/unknown", 404),
    ("GET", "/api/blobs/../../etc/passwd", 400),
    ("GET", "/api/chat", 405),
    ("PUT", "/api/chat", 405),
    ("GET", "/api/tags/", 404),
]


def _body(body: dict[str, Any] | None) -> bytes:
    return json.dumps(body).encode() if body is not None else b""


@pytest.mark.parametrize(("method", "path", "body"), FORWARDED)
def test_what_a_device_uses_is_forwarded(
    bridge: Running, server: Server, method: str, path: str, body: dict[str, Any] | None
) -> None:
    r = request(bridge.port, method, path, [("Content-Type", "application/json")], _body(body))
    assert r.status == 200, r.body
    if method == "GET" and path != "/":
        assert r.header("content-type") == "application/json" and r.json()


@pytest.mark.parametrize(("method", "path", "body"), MANAGEMENT)
def test_model_management_is_never_forwarded(
    bridge: Running, server: Server, method: str, path: str, body: dict[str, Any] | None
) -> None:
    r = request(bridge.port, method, path, [("Content-Type", "application/json")], _body(body))
    assert r.status == 403
    if method != "HEAD":
        assert "on the server itself" in r.json()["error"]
    assert server.forwarded() == []  # even though the profile's key is an admin key


@pytest.mark.parametrize(("method", "path", "status"), NOT_FORWARDED)
def test_nothing_else_is_forwarded(bridge: Running, server: Server, method: str, path: str, status: int) -> None:
    r = request(bridge.port, method, path)
    assert r.status == status and "error" in r.json()
    assert server.forwarded() == []


def test_openai_errors_come_in_openai_shape(bridge: Running, server: Server) -> None:
    r = request(bridge.port, "GET", "/v1/nothing")
    assert r.status == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_bodies_are_bounded(server: Server) -> None:
    port = free_port()
    with serve_in_thread(Bridge(server.profile(), max_body_bytes=1024), port=port):
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
        assert post_json(port, "/api/chat", big).status == 413
        assert post_json(port, "/api/chat", CHAT).status == 200
    assert server.forwarded() == ["POST /api/chat"]


# ---- the Host guard (DNS rebinding) -----------------------------------------------------------

HOSTS = [
    ("127.0.0.1:{port}", 200),
    ("localhost:{port}", 200),
    ("LOCALHOST", 200),
    ("[::1]:{port}", 200),
    ("0.0.0.0:{port}", 200),
    ("ollama.localhost:{port}", 200),
    ("evil.example:{port}", 403),
    ("rebind.test:{port}", 403),
    ("localhost.evil.example:{port}", 403),
    ("127.0.0.1.nip.io:{port}", 403),
    ("192.168.1.20:{port}", 403),
    ("laptop.local:{port}", 403),
]


@pytest.mark.parametrize(("host", "status"), HOSTS)
def test_host_guard(bridge: Running, server: Server, host: str, status: int) -> None:
    r = request(bridge.port, "GET", "/api/tags", host=host.format(port=bridge.port))
    assert r.status == status
    if status == 403:
        assert "DNS rebinding" in r.json()["error"] and server.forwarded() == []


def test_two_host_headers_are_refused(bridge: Running, server: Server) -> None:
    r = send_raw(bridge.port, b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
                              b"Connection: close\r\n\r\n")  # fmt: skip
    assert r.status == 400 and server.forwarded() == []


def test_allowed_hosts_extend_the_guard(server: Server) -> None:
    port = free_port()
    with serve_in_thread(Bridge(server.profile(), hosts=HostGuard(["laptop.example"])), port=port):
        assert request(port, "GET", "/api/tags", host=f"laptop.example:{port}").status == 200
        assert request(port, "GET", "/api/tags", host=f"evil.example:{port}").status == 403


# ---- the origin policy and CORS preflights ------------------------------------------------------

ORIGINS = [
    (None, 200, None),
    ("http://localhost:3000", 200, "http://localhost:3000"),
    ("https://127.0.0.1:8443", 200, "https://127.0.0.1:8443"),
    ("app://obsidian.md", 200, "app://obsidian.md"),
    ("vscode-webview://1abc", 200, "vscode-webview://1abc"),
    ("http://127.0.0.1:{port}", 200, None),  # same origin: not a CORS request
    ("http://evil.example", 403, None),
    ("https://localhost.evil.example", 403, None),
    ("null", 403, None),
    ("chrome-extension://abcdef", 403, None),
]


@pytest.mark.parametrize(("origin", "status", "allow_origin"), ORIGINS)
def test_origin_policy(
    bridge: Running, server: Server, origin: str | None, status: int, allow_origin: str | None
) -> None:
    headers = [("Origin", origin.format(port=bridge.port))] if origin else []
    r = request(bridge.port, "GET", "/api/tags", headers)
    assert r.status == status
    assert r.header("access-control-allow-origin") == allow_origin
    if allow_origin:
        assert r.header("vary") == "Origin"
    assert server.forwarded() == ([] if status == 403 else ["GET /api/tags"])


def test_a_simple_cross_site_post_never_reaches_the_model(bridge: Running, server: Server) -> None:
    # text/plain needs no preflight: a page can send it blind. The bridge refuses before forwarding.
    r = request(bridge.port, "POST", "/api/chat", [("Origin", "http://evil.example"), ("Content-Type", "text/plain")],
                json.dumps(CHAT).encode())  # fmt: skip
    assert r.status == 403 and server.forwarded() == []


def test_preflights_are_answered_by_the_bridge(bridge: Running, server: Server) -> None:
    ask = [("Origin", "http://localhost:5173"), ("Access-Control-Request-Method", "POST"),
           ("Access-Control-Request-Headers", "authorization,content-type,x-stainless-lang")]  # fmt: skip
    r = request(bridge.port, "OPTIONS", "/api/chat", ask)
    assert r.status == 204 and r.body == b""
    assert r.header("access-control-allow-origin") == "http://localhost:5173"
    assert r.header("access-control-allow-methods") == "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
    assert r.header("access-control-allow-headers") == ",".join(ALLOWED_HEADERS)
    assert r.header("access-control-max-age") == "43200"
    assert r.header("vary") == "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    assert r.header("access-control-allow-credentials") is None
    refused = request(bridge.port, "OPTIONS", "/api/chat", [("Origin", "http://evil.example"), *ask[1:]])
    assert refused.status == 403 and refused.header("access-control-allow-origin") is None
    plain = request(bridge.port, "OPTIONS", "/api/tags")
    assert plain.status == 204 and plain.header("access-control-allow-origin") is None
    assert server.forwarded() == []


def test_listed_origins_and_ollama_origins_star(server: Server) -> None:
    port = free_port()
    policy = OriginPolicy(["https://notes.example", "*.trusted.example"])
    with serve_in_thread(Bridge(server.profile(), origins=policy), port=port):
        for origin, status in [("https://notes.example", 200), ("https://a.trusted.example", 200),
                               ("https://other.example", 403)]:  # fmt: skip
            assert request(port, "GET", "/api/tags", [("Origin", origin)]).status == status, origin
    port = free_port()
    with serve_in_thread(Bridge(server.profile(), origins=OriginPolicy(["*"])), port=port):
        r = request(port, "GET", "/api/tags", [("Origin", "http://evil.example")])
        assert r.status == 200 and r.header("access-control-allow-origin") == "*" and r.header("vary") is None


# ---- what travels upstream and what comes back ---------------------------------------------------


@dataclass
class Recording:
    url: str
    seen: list[list[tuple[str, str]]] = field(default_factory=list)


@contextlib.contextmanager
def recording_server(cert: Path, key: Path, port: int = 0) -> Iterator[Recording]:
    """A TLS server that records every request's headers and answers like a server that sets cookies,
    CORS and HSTS headers (the bridge must pass none of them on). It closes each connection."""
    recording = Recording("")

    async def anything(request: Request) -> Response:
        recording.seen.append(
            [(k.decode(), v.decode()) for k, v in request.headers.raw] + [(":path", request.url.path)]
        )
        return JSONResponse({"models": []}, headers={
            "Set-Cookie": "session=1", "Access-Control-Allow-Origin": "*", "Strict-Transport-Security": "max-age=9",
            "X-Request-Id": "r-1", "Connection": "close"})  # fmt: skip

    app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "DELETE", "HEAD"])])
    with serve_in_thread(app, port=port or free_port(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as url:
        recording.url = url
        yield recording


def _profile_for(url: str, pinned: Path, key: str = "hlm_profilekey") -> Profile:
    pem = pinned.read_text()
    return Profile("rec", url, fingerprint_of_pem(pem.encode()), pem, key)


def test_browser_headers_never_travel_and_the_key_is_the_profiles(tmp_path: Path) -> None:
    tls = ensure_tls(tmp_path, None, None)
    with recording_server(tls.cert, tls.key) as rec:
        port = free_port()
        with serve_in_thread(Bridge(_profile_for(rec.url, tls.cert)), port=port):
            sent = [("Origin", "http://localhost:3000"), ("Referer", "http://localhost:3000/secret"),
                    ("Cookie", "sid=secret"), ("Authorization", "Bearer sk-from-the-page"), ("X-Api-Key", "page"),
                    ("X-Forwarded-For", "10.9.9.9"), ("Forwarded", "for=10.9.9.9"), ("Proxy-Authorization", "Basic x"),
                    ("User-Agent", "obsidian/1.0"), ("Accept-Language", "ja"), ("X-Stainless-Lang", "js")]  # fmt: skip
            r = request(port, "GET", "/api/tags", sent)
    assert r.status == 200 and r.json() == {"models": []}
    (seen,) = rec.seen
    names = [k for k, _ in seen]
    assert dict(seen)["authorization"] == "Bearer hlm_profilekey" and names.count("authorization") == 1
    assert dict(seen)["host"] == rec.url.removeprefix("https://")
    assert {
        "origin",
        "referer",
        "cookie",
        "x-api-key",
        "x-forwarded-for",
        "forwarded",
        "proxy-authorization",
    }.isdisjoint(names)
    assert (dict(seen)["user-agent"], dict(seen)["accept-language"], dict(seen)["x-stainless-lang"]) == (
        "obsidian/1.0", "ja", "js")  # fmt: skip
    # and back: no cookie, no foreign CORS answer, no HSTS for localhost
    assert r.header("set-cookie") is None and r.header("strict-transport-security") is None
    assert r.header("access-control-allow-origin") == "http://localhost:3000" and r.header("x-request-id") == "r-1"


# ---- the absolute-form request line: the key never leaves for another host ----------------------


class Listener:
    """The attacker's host: records every connection made to it and the bytes it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.received.append(b"")
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    self.received[-1] = conn.recv(65536)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def attacker() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


# target -> status under (h11, httptools). h11 hands the absolute URL to the app as the path, which
# the bridge refuses; httptools keeps only the path, which the bridge sends to the profile's server.
ABSOLUTE = [
    ("http://127.0.0.1:{lport}/steal", {"h11": 400, "httptools": 404}),
    ("http://127.0.0.1:{lport}/api/tags", {"h11": 400, "httptools": 200}),
    ("https://127.0.0.1:{lport}/api/tags", {"h11": 400, "httptools": 200}),
    ("http://user@127.0.0.1:{lport}/api/tags", {"h11": 400, "httptools": 200}),
    ("//127.0.0.1:{lport}/api/tags", {"h11": 400, "httptools": 400}),
]


@pytest.mark.parametrize(("target", "status"), ABSOLUTE)
@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "127.0.0.1:{lport}"])
def test_an_absolute_target_never_changes_the_upstream(
    bridge: Running, server: Server, attacker: Listener, target: str, status: dict[str, int], host: str
) -> None:
    ports = {"port": bridge.port, "lport": attacker.port}
    r = request(bridge.port, "GET", target.format(**ports), host=host.format(**ports))
    assert r.status == status[bridge.parser], r.body
    if r.status == 200:  # answered by the paired gateway: the upstream stayed the profile's
        assert {m["name"] for m in r.json()["models"]} == {"fake:small", "fake:large"}
        assert server.forwarded() == ["GET /api/tags"]
    else:
        assert server.forwarded() == []
    # the bridge has answered, so whatever it was going to send has been sent: nothing went to the attacker
    assert attacker.received == []


# ---- TLS pinning: at start and on every new connection ------------------------------------------


def _ca_and_leaf(folder: Path) -> tuple[Path, Path, Path]:
    """A CA certificate (to pin) and a leaf it issued (cert, key): the pinned context alone would trust it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: str, key: Any, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("pinned", "pinned", ca_key, ca_key, ca=True)
    leaf = build("issued-by-pinned", "pinned", leaf_key, ca_key, ca=False)
    paths = folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))  # fmt: skip
    return paths


def test_another_certificate_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    pinned = ensure_tls(tmp_path / "pinned", None, None)
    other = ensure_tls(tmp_path / "other", None, None)
    with recording_server(other.cert, other.key) as rec:
        port = free_port()
        with serve_in_thread(Bridge(_profile_for(rec.url, pinned.cert)), port=port):
            r = request(port, "GET", "/api/tags")
    assert r.status == 502 and f"presents the certificate {other.fingerprint}, not the pinned" in r.json()["error"]
    assert r.json()["error"].count(pinned.fingerprint) == 1 and rec.seen == []


def test_the_pin_is_the_exact_certificate_not_what_it_signs(tmp_path: Path) -> None:
    ca, leaf, leaf_key = _ca_and_leaf(tmp_path)
    with recording_server(leaf, leaf_key) as rec:
        port = free_port()
        with serve_in_thread(Bridge(_profile_for(rec.url, ca)), port=port):
            r = request(port, "GET", "/api/tags")
    assert r.status == 502
    assert fingerprint_of_pem(leaf.read_bytes()) in r.json()["error"]  # says what it saw
    assert rec.seen == []


def test_the_pin_is_checked_on_every_new_connection(tmp_path: Path) -> None:
    pinned = ensure_tls(tmp_path / "pinned", None, None)
    other = ensure_tls(tmp_path / "other", None, None)
    server_port, port = free_port(), free_port()
    with serve_in_thread(Bridge(_profile_for(f"https://127.0.0.1:{server_port}", pinned.cert)), port=port):
        with recording_server(pinned.cert, pinned.key, server_port) as good:
            assert request(port, "GET", "/api/tags").status == 200
        # the same address now presents another certificate (each answer closed its connection)
        with recording_server(other.cert, other.key, server_port) as swapped:
            r = request(port, "GET", "/api/tags")
    assert len(good.seen) == 1
    assert r.status == 502 and f"{other.fingerprint}, not the pinned" in r.json()["error"] and swapped.seen == []


# ---- streaming and cancellation --------------------------------------------------------------


def test_streams_pass_through_as_they_come(bridge: Running, server: Server) -> None:
    server.script.gate = threading.Event()  # the backend holds the stream after the first token
    with httpx.stream("POST", f"http://127.0.0.1:{bridge.port}/api/chat", json=STREAM, timeout=30) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines))
        assert first["message"]["content"] == "tok0 " and not first["done"]  # arrived while the rest is held
        server.script.gate.set()
        rest = [json.loads(line) for line in lines if line]
    assert [c["message"]["content"] for c in rest] == ["tok1 ", "tok2 ", "tok3 ", "tok4 ", ""]
    assert rest[-1]["done"] is True


def test_a_client_leaving_closes_the_upstream_request(bridge: Running, server: Server) -> None:
    server.script.gate = threading.Event()
    completed = server.rec.completed
    body = json.dumps({**STREAM, "options": {"num_predict": 50}}).encode()
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=30) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        data = b""
        while b"tok0" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    # the client is gone; the gateway sees the bridge close the upstream request and stops the backend
    assert server.rec.cancelled.wait(30)
    assert server.rec.completed == completed


class Silent:
    """An upstream that reads a request and never answers; it notes when the request arrived and when
    its client (the bridge) hung up."""

    def __init__(self) -> None:
        self.arrived, self.hung_up = threading.Event(), threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        self.arrived.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        self.hung_up.set()


@pytest.mark.parametrize("parser", PARSERS)
def test_a_client_leaving_before_the_answer_starts_closes_the_upstream_request(tmp_path: Path, parser: str) -> None:
    tls = ensure_tls(tmp_path, None, None)
    silent = Silent()
    with serve_in_thread(silent, port=free_port(), ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key)) as url:
        port = free_port()
        with serve_in_thread(Bridge(_profile_for(url, tls.cert)), port=port, http=parser):
            body = json.dumps(CHAT).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                assert silent.arrived.wait(30)  # forwarded, no answer yet (a long prompt being read)
            assert silent.hung_up.wait(30)


# ---- the command: flags, OLLAMA_ORIGINS, the pin at start ----------------------------------------


def _homellm(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "HOMELLM_HOME": str(home), "COLUMNS": "200", **(env or {})}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, env=full, timeout=60, check=False)


def test_the_command_reads_flags_and_ollama_origins(server: Server, tmp_path: Path) -> None:
    ProfileStore(tmp_path).save(server.profile())
    port = free_port()
    env = {**os.environ, "HOMELLM_HOME": str(tmp_path), "OLLAMA_ORIGINS": "http://env.test:8080"}
    proc = subprocess.Popen([str(EXE), "bridge", "--port", str(port), "--origins", "http://flag.test",
                             "--allowed-hosts", "laptop.example"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/", timeout=30)
        for origin, status in [("http://env.test:8080", 200), ("http://flag.test", 200), ("http://other.test", 403)]:
            assert request(port, "GET", "/api/tags", [("Origin", origin)]).status == status, origin
        assert request(port, "GET", "/api/tags", host="laptop.example").status == 200
        assert request(port, "GET", "/api/tags", host="other.example").status == 403
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert f"bridge: http://127.0.0.1:{port} -> {server.url} (pinned" in out
    assert "also allowed: origins http://env.test:8080, http://flag.test; hosts laptop.example" in out
    assert "Traceback" not in err


def test_the_command_refuses_a_changed_certificate_at_start(server: Server, tmp_path: Path) -> None:
    other = ensure_tls(tmp_path / "other", None, None)
    ProfileStore(tmp_path).save(server.profile(cert_pem=other.cert.read_text(), fingerprint=other.fingerprint))
    r = _homellm(tmp_path, "bridge", "--port", str(free_port()))
    assert r.returncode == 3 and "changed" in r.stderr and "Refusing" in r.stderr
    assert "Traceback" not in r.stderr and "bridge: http" not in r.stdout


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--origins", "notes.example"], {}, "is not like http://host:port"),
        (["--origins", "http://*.a.*"], {}, "more than one"),
        ([], {"OLLAMA_ORIGINS": "localhost:3000"}, "is not like http://host:port"),
        (["--allowed-hosts", "*"], {}, "--allowed-hosts"),
    ],
)
def test_the_command_refuses_bad_lists_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    r = _homellm(tmp_path, "bridge", *args, env=env)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ---- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        require_tool(False, "Debian's Chromium", "apt-get install -y chromium (the browser tests drive it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    yield context.new_page()
    context.close()


PAGE_APP = Starlette(routes=[Route("/", lambda _: HTMLResponse("<!doctype html><title>a web page</title>"))])


@pytest.fixture(scope="module")
def web_page_port() -> Iterator[int]:
    port = free_port()
    with serve_in_thread(PAGE_APP, port=port):
        yield port


@pytest.fixture(scope="module")
def browser_bridge(_server: Server) -> Iterator[int]:
    port = free_port()
    with serve_in_thread(Bridge(_server.profile()), port=port):
        yield port


READ = """async (url) => {
  try { const r = await fetch(url); return 'read ' + r.status + ' ' + await r.text(); }
  catch (e) { return 'refused ' + e.name; }
}"""
BLIND_POST = """async ([url, body]) => {
  const r = await fetch(url, {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body});
  return r.type;
}"""


def test_chromium_an_unlisted_origin_cannot_use_the_bridge(
    page: Any, server: Server, browser_bridge: int, web_page_port: int
) -> None:
    page.goto(f"http://rebind.test:{web_page_port}/")  # an origin Ollama's list does not have
    assert page.evaluate(READ, f"http://127.0.0.1:{browser_bridge}/api/tags") == "refused TypeError"
    # a blind "simple" POST is sent by the browser, and refused by the bridge before the model runs
    assert page.evaluate(BLIND_POST, [f"http://127.0.0.1:{browser_bridge}/api/chat", json.dumps(CHAT)]) == "opaque"
    assert server.forwarded() == []


def test_chromium_a_rebinding_host_gets_403(page: Any, server: Server, browser_bridge: int, _server: Server) -> None:
    # visiting the bridge by the rebinding name
    response = page.goto(f"http://rebind.test:{browser_bridge}/api/tags")
    assert response.status == 403 and "DNS rebinding" in page.content()
    # the attack itself: a page on rebind.test:PORT, whose name then points at a bridge on that port
    port = free_port()
    with serve_in_thread(PAGE_APP, port=port):
        page.goto(f"http://rebind.test:{port}/")
    with serve_in_thread(Bridge(_server.profile()), port=port):
        same_origin = page.evaluate(READ, "/api/tags")
        chat = page.evaluate(
            "async (body) => (await fetch('/api/chat', {method: 'POST', body})).status", json.dumps(CHAT)
        )
    assert same_origin.startswith("read 403 ") and "DNS rebinding" in same_origin
    assert chat == 403 and server.forwarded() == []


STREAM_CHAT = """async ([url, body]) => {
  const r = await fetch(url, {method: 'POST', body,
    headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer sk-from-the-page'}});
  const reader = r.body.getReader(), text = new TextDecoder(), chunks = [];
  const first = await reader.read();
  chunks.push(text.decode(first.value));
  await window.openGate();  // only now may the model go on
  for (;;) { const {done, value} = await reader.read(); if (done) break; chunks.push(text.decode(value)); }
  return {status: r.status, chunks};
}"""


def test_chromium_an_allowed_origin_streams_a_chat(
    page: Any, server: Server, browser_bridge: int, web_page_port: int
) -> None:
    server.script.gate = gate = threading.Event()
    page.expose_function("openGate", gate.set)
    page.goto(f"http://localhost:{web_page_port}/")  # Ollama's defaults allow http://localhost:*
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        result = page.evaluate(STREAM_CHAT, [f"http://127.0.0.1:{browser_bridge}/api/chat", json.dumps(STREAM)])
    assert result["status"] == 200  # readable: the page's origin passed the bridge's CORS check
    assert answer.value.headers["access-control-allow-origin"] == f"http://localhost:{web_page_port}"
    assert "tok0" in result["chunks"][0] and "tok1" not in result["chunks"][0]  # read before the model went on
    lines = [json.loads(line) for line in "".join(result["chunks"]).splitlines() if line]
    assert "".join(c["message"]["content"] for c in lines) == "tok0 tok1 tok2 tok3 tok4 "
    assert lines[-1]["done"] is True
    assert server.forwarded() == ["POST /api/chat"]  # the preflight was the bridge's; the page's token replaced
