"""Faults with real processes on loopback: a backend or the engine killed mid-stream, the gateway
killed under load, stalled and pipelined connections. Short versions of benchmarks/faults.py.

No timing asserts: every wait is for an event (a record, a row, a closed socket) with a generous
timeout, and the outcome is what is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools
import httpx
import psutil
import pytest

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.load import Outcome, run_load
from homellm.testing.processes import GatewayProcess, ScriptedBackend, wait_for
from homellm.testing.slow_clients import loopback_addresses, slow_connections

CAP = 64  # max_connections_per_ip's default: the guard under test, never raised here


@dataclass
class Home:
    path: Path
    user: str
    admin: str
    revoked: str


@pytest.fixture
def home(tmp_path: Path) -> Home:
    store = KeyStore(open_database(tmp_path / "home"))
    user = store.create("user")[1]
    admin = store.create("admin", admin=True)[1]
    revoked = store.create("revoked")[1]
    store.revoke("revoked")
    return Home(tmp_path / "home", user, admin, revoked)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stream_body(front: str, tag: str, tokens: int) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": tag}]
    if front == "ollama":
        return "/api/chat", {"model": "fake:small", "messages": messages, "options": {"num_predict": tokens}}
    return "/v1/chat/completions", {"model": "fake:small", "messages": messages, "stream": True, "max_tokens": tokens}


def assert_terminal_error(front: str, lines: list[str]) -> None:
    """The stream's last record is an error in the front's own format."""
    records = [x for x in lines if x.strip()]
    assert records, "the stream was empty"
    if front == "ollama":
        last = json.loads(records[-1])
        assert set(last) == {"error"} and isinstance(last["error"], str) and last["error"], records[-3:]
    else:
        assert records[-1] == "data: [DONE]", records[-3:]
        event = json.loads(records[-2].removeprefix("data: "))
        assert event["error"]["message"] and event["error"]["type"] == "server_error", records[-3:]


# ---- a backend killed mid-stream --------------------------------------------------------


@pytest.mark.parametrize("backend_kind", ["ollama", "openai"])
@pytest.mark.parametrize("front", ["ollama", "openai"])
def test_backend_killed_mid_stream_ends_the_stream_with_an_error_and_service_resumes(
    tmp_path: Path, home: Home, front: str, backend_kind: str
) -> None:
    with (
        ScriptedBackend(tmp_path / "backend.log", kind=backend_kind, delay=0.01) as backend,
        GatewayProcess(home.path, backend=backend.url, log_prompts=True) as gateway,
    ):
        path, body = stream_body(front, "killed-mid-stream", 100_000)
        with httpx.stream("POST", gateway.url + path, json=body, headers=bearer(home.user), timeout=30) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(x for x in lines if "tok" in x)
            backend.kill()  # kill -9 while tokens are flowing
            rest = list(lines)
        assert "tok0" in first
        assert_terminal_error(front, rest)
        (row,) = gateway.wait_usage("prompt = ?", ["killed-mid-stream"])
        assert row["status"] == 502 and row["error"], dict(row)

        backend.restart()  # same port: the next request must simply work
        path, body = stream_body(front, "after-restart", 3)
        r = httpx.post(gateway.url + path, json=body, headers=bearer(home.user), timeout=30)
        assert r.status_code == 200 and "tok2" in r.text and '"error"' not in r.text, r.text
        (row,) = gateway.wait_usage("prompt = ?", ["after-restart"])
        assert row["status"] == 200 and row["error"] is None


# ---- the embedded engine killed mid-stream ---------------------------------------------


def _engine_of(gateway: GatewayProcess) -> psutil.Process | None:
    for child in psutil.Process(gateway.pid).children():
        try:
            if "llama_cpp.server" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.engine
def test_engine_killed_mid_stream_ends_the_stream_and_is_restarted(home: Home, smollm2: Path) -> None:
    """The real llama.cpp engine under its supervisor, in a gateway of this test's own."""
    with GatewayProcess(home.path, model=smollm2, ready_timeout=300, engine_ctx=1024, log_prompts=True) as gateway:
        engine = _engine_of(gateway)
        assert engine is not None
        prompt = "engine-kill: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
        body = {"model": "smollm2:135m", "prompt": prompt, "max_tokens": 400, "stream": True, "temperature": 0}
        with httpx.stream(
            "POST", gateway.url + "/v1/completions", json=body, headers=bearer(home.user), timeout=120
        ) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(x for x in lines if x.startswith("data: {"))
            engine.send_signal(signal.SIGKILL)
            rest = list(lines)
        assert '"text"' in first
        assert_terminal_error("openai", rest)
        (row,) = gateway.wait_usage("prompt = ?", [prompt])
        assert row["status"] == 503 and "restarting" in row["error"], dict(row)  # the engine died: it restarts

        def answers() -> bool:
            small = {"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2}
            try:
                r = httpx.post(gateway.url + "/v1/completions", json=small, headers=bearer(home.user), timeout=60)
            except httpx.HTTPError:
                return False
            assert r.status_code in (200, 503), r.text  # 503 (Retry-After) while it restarts, nothing else
            return r.status_code == 200

        wait_for(answers, 300, "the supervisor to restart the engine", gateway)
        restarted = _engine_of(gateway)
        assert restarted is not None and restarted.pid != engine.pid


# ---- the gateway killed under load -------------------------------------------------------


def _key_rows(home: Path) -> list[tuple[Any, ...]]:
    db = open_database(home)
    try:
        return [
            tuple(r)
            for r in db.execute(
                "SELECT name, prefix, hash, models, admin, created_at, expires_at, revoked_at FROM keys ORDER BY name"
            )
        ]
    finally:
        db.close()


def test_gateway_killed_under_load_keeps_its_database_and_every_finished_request(tmp_path: Path, home: Home) -> None:
    keys_before = _key_rows(home.path)
    with (
        ScriptedBackend(tmp_path / "backend.log") as backend,
        GatewayProcess(
            home.path, backend=backend.url, log_prompts=True, requests_per_minute=0, max_streams_per_key=0
        ) as gateway,
    ):
        killed_at: list[float] = []
        ok_before_kill: list[Outcome] = []

        def note(outcome: Outcome) -> None:
            # kill once enough requests have finished, and well after the first of them
            if not killed_at and outcome.ok:
                ok_before_kill.append(outcome)
                if len(ok_before_kill) >= 300 and time.time() - ok_before_kill[0].finished > 2:
                    killed_at.append(time.time())
                    os.kill(gateway.pid, signal.SIGKILL)

        outcomes = asyncio.run(run_load(gateway.url, home.user, 16, lambda: bool(killed_at), on_outcome=note))
        gateway.popen.wait(30)
        kill = killed_at[0]
        finished_early = [o for o in outcomes if o.ok and o.finished <= kill - 1.0]
        assert len(finished_early) >= 100, "too few requests finished before the kill to check anything"

        db = gateway.database()
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            logged = [r["prompt"] for r in db.execute("SELECT prompt FROM usage")]
        finally:
            db.close()
        missing = sorted({o.tag for o in finished_early} - set(logged))
        assert not missing, f"{len(missing)} requests finished >= 1 s before the kill have no usage row: {missing[:5]}"
        assert len(logged) == len(set(logged)), "a request was logged twice"
        assert _key_rows(home.path) == keys_before

        gateway.start_again()
        tags = httpx.get(gateway.url + "/api/tags", headers=bearer(home.user), timeout=30)
        assert tags.status_code == 200 and tags.json()["models"]
        assert httpx.get(gateway.url + "/api/tags", headers=bearer(home.revoked), timeout=30).status_code == 401
        assert httpx.get(gateway.url + "/metrics", headers=bearer(home.admin), timeout=30).status_code == 200


# ---- stalled connections ------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["http", "https"])
def stall_gateway(request: pytest.FixtureRequest, tmp_path: Path, home: Home) -> Iterator[GatewayProcess]:
    """A gateway whose header and body timers outlast the test, so the stalled connections hang."""
    with (
        ScriptedBackend(tmp_path / "backend.log") as backend,
        GatewayProcess(
            home.path, backend=backend.url, tls=request.param, header_timeout_s=300, body_timeout_s=300
        ) as gateway,
    ):
        yield gateway


def _client_tls(gateway: GatewayProcess) -> ssl.SSLContext | None:
    if not gateway.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(gateway.cert))
    ctx.check_hostname = False
    return ctx


def _served(gateway: GatewayProcess, key: str, source: str) -> httpx.Response:
    verify: ssl.SSLContext | bool = _client_tls(gateway) or False
    transport = httpx.HTTPTransport(local_address=source, verify=verify)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get(gateway.url + "/api/tags", headers=bearer(key))


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_stalled_connections_from_one_address_are_capped_and_others_are_served(
    stall_gateway: GatewayProcess, home: Home, mode: str
) -> None:
    gateway = stall_gateway
    with slow_connections(gateway.port, 200, mode, ["127.0.0.1"], _client_tls(gateway)) as conns:
        assert conns.wait_closed(200 - CAP, timeout=60) == 200 - CAP
        for answer in conns.answers.values():  # refused at once: over HTTP with a reason; over TLS before the
            # handshake, where no answer is possible, the connection just ends
            if gateway.tls:
                assert answer == b"", answer
            else:
                assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer, answer
        assert conns.still_open() == CAP
        r = _served(gateway, home.user, "127.0.0.2")
        assert r.status_code == 200 and r.json()["models"]
        assert conns.still_open() == CAP  # they were hanging all along


def _gateway_connections(gateway: GatewayProcess) -> int:
    conns = psutil.Process(gateway.pid).net_connections("tcp")
    return sum(1 for c in conns if c.laddr and c.laddr.port == gateway.port and c.status == psutil.CONN_ESTABLISHED)


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_stalled_connections_spread_over_addresses_do_not_stop_a_normal_client(
    stall_gateway: GatewayProcess, home: Home, mode: str
) -> None:
    gateway = stall_gateway
    sources = loopback_addresses(2, 4)  # 50 connections from each: under the cap
    with slow_connections(gateway.port, 200, mode, sources, _client_tls(gateway)) as conns:
        wait_for(lambda: _gateway_connections(gateway) >= 200, 60, "the gateway to hold 200 connections", gateway)
        assert conns.still_open() == 200
        r = _served(gateway, home.user, "127.0.0.1")
        assert r.status_code == 200 and r.json()["models"]
        assert conns.still_open() == 200


def test_pending_tls_handshakes_count_against_the_address_cap(tmp_path: Path, home: Home) -> None:
    """A client that opens TCP connections and never starts TLS must not hold more than the cap.

    uvicorn's TLS runs before the protocol's ``connection_made``, so the per-address cap sees a
    connection only after its handshake: without a guard, one host holds any number of descriptors
    for the 60 s of asyncio's handshake timeout.
    """
    with (
        ScriptedBackend(tmp_path / "backend.log") as backend,
        GatewayProcess(home.path, backend=backend.url, tls=True) as gateway,
        slow_connections(gateway.port, 200, "handshake", ["127.0.0.1"]) as conns,
    ):
        closed = conns.wait_closed(200 - CAP, timeout=20)
        assert closed >= 200 - CAP, (
            f"the gateway holds {conns.still_open()} handshake-less connections from one address"
        )


def test_a_body_timeout_is_logged_as_the_408_the_client_got(tmp_path: Path, home: Home) -> None:
    """The protocol answers 408 when a body is too slow; the usage row must say so, not 499 (the
    client went away) with no reason."""
    with (
        ScriptedBackend(tmp_path / "backend.log") as backend,
        GatewayProcess(home.path, backend=backend.url, body_timeout_s=1) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as sock,
    ):
        sock.sendall(_chat_request(gateway.port, home.user, 1, body_cut=10))
        responses = _Responses()
        responses.read(sock, 1)
        assert responses.complete == 1 and b"did not arrive in time" in responses.bodies[0]
        (row,) = gateway.wait_usage("route = ?", ["/api/chat"])
    assert (row["status"], row["cancelled"]) == (408, 0), dict(row)
    assert row["error"] and "in time" in row["error"], dict(row)


# ---- pipelined requests and the connection timers ----------------------------------------


class _Responses:
    """HTTP/1.1 responses parsed off one socket (httptools, chunked or not)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = [b""]
        self.complete = 0
        self.parser = httptools.HttpResponseParser(self)

    def on_body(self, data: bytes) -> None:
        self.bodies[-1] += data

    def on_message_complete(self) -> None:
        self.complete += 1
        self.bodies.append(b"")

    def read(self, sock: socket.socket, want: int) -> None:
        while self.complete < want:
            data = sock.recv(65536)
            if not data:
                return
            self.parser.feed_data(data)


def _chat_request(port: int, key: str, tokens: int, body_cut: int | None = None) -> bytes:
    body = json.dumps(
        {"model": "fake:small", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": tokens}}
    ).encode()
    head = (
        f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + (body if body_cut is None else body[:body_cut])


def _ndjson_complete(body: bytes, tokens: int) -> bool:
    lines = [json.loads(x) for x in body.splitlines() if x.strip()]
    return len(lines) == tokens + 1 and lines[-1].get("done") is True


def test_pipelined_request_is_not_cut_by_the_header_timer(tmp_path: Path, home: Home) -> None:
    """Two requests in one write: the second one runs when the first is answered; the header timer
    (re-armed for the next request) must not close the connection under it."""
    with (
        ScriptedBackend(tmp_path / "backend.log", delay=0.05) as backend,
        GatewayProcess(home.path, backend=backend.url, header_timeout_s=1) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as sock,
    ):
        request = _chat_request(gateway.port, home.user, 60)  # about 3 s of tokens: longer than the timer
        sock.sendall(request + request)
        responses = _Responses()
        responses.read(sock, 2)
    assert responses.complete == 2, f"the second answer was cut after {len(responses.bodies[-1])} bytes"
    assert _ndjson_complete(responses.bodies[0], 60) and _ndjson_complete(responses.bodies[1], 60)


def test_pipelined_partial_body_does_not_corrupt_the_answer_in_progress(tmp_path: Path, home: Home) -> None:
    """A second request whose body is still coming, pipelined behind a long answer: its body timer
    must not write a 408 into the middle of the first answer."""
    with (
        ScriptedBackend(tmp_path / "backend.log", delay=0.05) as backend,
        GatewayProcess(home.path, backend=backend.url, body_timeout_s=1) as gateway,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as sock,
    ):
        sock.sendall(_chat_request(gateway.port, home.user, 60) + _chat_request(gateway.port, home.user, 1, 10))
        responses = _Responses()
        try:
            responses.read(sock, 1)
        except httptools.HttpParserError as exc:
            pytest.fail(f"the first answer was corrupted: {exc}: ...{responses.bodies[-1][-120:]!r}")
    assert responses.complete >= 1 and _ndjson_complete(responses.bodies[0], 60)
