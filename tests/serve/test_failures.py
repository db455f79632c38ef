"""Issue 9 parts B, C and D: what a client gets when something fails, and what the usage log says.

Backends that fail mid-stream, go silent, answer with errors or odd shapes; clients that leave or stop
reading. Waits are event-driven (the scripted backend's events, polling the usage table), never fixed sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.conftest import Fake, Keys, run_gateway

from homellm.serve.backends import OllamaBackend, OpenAIBackend
from homellm.store.db import database_path
from homellm.testing.fake_backend import serve_in_thread


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(autouse=True)
def since() -> float:
    """When the test began: its usage rows are newer (the gateway home is shared)."""
    global STARTED
    STARTED = time.time()
    return STARTED


STARTED = 0.0


def usage_row(home: Path, where: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
    """The newest usage row of this test matching ``where``, once the writer has committed it."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(database_path(home)) as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute("SELECT * FROM usage ORDER BY id DESC LIMIT 50")]
        for row in rows:
            if row["ts"] >= STARTED and where(row):
                return row
        if time.monotonic() > deadline:
            raise AssertionError(f"no such usage row; newest: {rows[:3]}")
        time.sleep(0.05)


CHAT = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}]}


# ---- mid-stream failures ---------------------------------------------------------------------


def test_a_backend_failing_mid_stream_ends_the_ollama_stream_with_an_error_line(
    gateway_home: Path, ollama_fake: Fake, keys: Keys
) -> None:
    ollama_fake.script.fail_after = 2
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, _):
        with httpx.stream("POST", url + "/api/chat", json=CHAT, headers=bearer(keys.bob)) as r:
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert r.status_code == 200
        assert [ln["message"]["content"] for ln in lines[:-1]] == ["tok0 ", "tok1 "]
        assert "error" in lines[-1] and not lines[-1].get("done")
        row = usage_row(gateway_home, lambda r: r["route"] == "/api/chat" and r["error"] is not None)
        assert row["status"] == 502 and "error" in row["error"]


def test_an_sse_error_event_is_translated_as_an_error_not_a_done(gateway_home: Path, openai_fake: Fake,
                                                                 keys: Keys) -> None:  # fmt: skip
    openai_fake.script.fail_after = 2
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        client = ollama.Client(host=url, headers=bearer(keys.bob))
        parts: list[Any] = []
        with pytest.raises(ollama.ResponseError) as info:
            for part in client.chat(model="fake:small", messages=[{"role": "user", "content": "x"}], stream=True):
                parts.append(part)
        assert "the model crashed" in str(info.value) and not any(p.done for p in parts)
        with pytest.raises(ollama.ResponseError):  # a non-streamed request fails the same way, in one answer
            client.chat(model="fake:small", messages=[{"role": "user", "content": "x"}])
        row = usage_row(gateway_home, lambda r: r["route"] == "/api/chat" and r["status"] == 502)
        assert "the model crashed" in (row["error"] or "")


def test_the_openai_front_gets_an_sse_error_event_then_done_when_the_backend_goes_silent(
    gateway_home: Path, openai_fake: Fake, keys: Keys
) -> None:
    openai_fake.script.stall_after = 2
    backend = OpenAIBackend(openai_fake.url, idle_timeout=1.0)
    with run_gateway(gateway_home, backend) as (url, _):
        body = {**CHAT, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=bearer(keys.bob)) as r:
            events = [e for e in r.read().decode().split("\n\n") if e.strip()]
        assert events[-1] == "data: [DONE]"
        error = json.loads(events[-2].removeprefix("data: "))["error"]
        assert error["code"] == "backend_timeout" and "silent" in error["message"]
        assert openai_fake.rec.cancelled.wait(10)  # the silent backend's request was closed
        row = usage_row(gateway_home, lambda r: r["route"] == "/v1/chat/completions" and r["status"] == 504)
        assert row["completion_tokens"] == 2 or row["error"]


# ---- clients that leave ----------------------------------------------------------------------


def test_a_client_leaving_a_non_streamed_request_cancels_it_upstream(gateway_home: Path, ollama_fake: Fake,
                                                                     keys: Keys) -> None:  # fmt: skip
    ollama_fake.script.gate = threading.Event()  # the generation starts and waits there
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, gw):
        sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        body = json.dumps({**CHAT, "stream": False}).encode()
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + keys.bob.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)  # fmt: skip
        deadline = time.monotonic() + 10
        while not ollama_fake.rec.ran and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ollama_fake.rec.ran, "the request never reached the backend"
        sock.close()  # the client leaves (the OpenAI clients' default is non-streamed)
        assert ollama_fake.rec.cancelled.wait(10), "the backend kept generating for a client that left"
        row = usage_row(gateway_home, lambda r: r["route"] == "/api/chat" and r["cancelled"] == 1)
        assert row["status"] == 499
        assert not gw.checks.slots.active.get("bob")
    ollama_fake.script.gate.set()


def test_a_client_that_stops_reading_is_cut_off_and_frees_the_backend(gateway_home: Path, ollama_fake: Fake,
                                                                      keys: Keys) -> None:  # fmt: skip
    ollama_fake.script.tokens = 10_000_000
    ollama_fake.script.text = ["x" * 4000]
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), send_timeout_s=1.0) as (url, gw):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        body = json.dumps(CHAT).encode()
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + keys.bob.encode()
                     + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)  # fmt: skip
        # ... and never reads: the buffers fill, the gateway's send blocks, the send timeout ends it
        assert ollama_fake.rec.cancelled.wait(60), "the upstream stream was never ended"
        row = usage_row(gateway_home, lambda r: r["route"] == "/api/chat" and r["status"] == 408)
        assert row["cancelled"] == 1 and "stopped reading" in row["error"]
        assert not gw.checks.slots.active.get("bob")
        sock.close()


# ---- errors in the front's shape -------------------------------------------------------------


def _odd_backend(answers: dict[str, tuple[int, Any]]) -> Starlette:
    """An OpenAI-style backend answering each path with a fixed status and body."""

    async def answer(request: Request) -> Response:
        status, body = answers.get(request.url.path, (404, {"detail": "Not Found"}))
        if isinstance(body, bytes):
            return Response(body, status, media_type="text/plain")
        return JSONResponse(body, status)

    async def models(request: Request) -> Response:
        return JSONResponse({"data": [{"id": "fake:small"}]})

    return Starlette(routes=[Route("/v1/models", models), Route("/{p:path}", answer, methods=["POST"])])


@pytest.mark.parametrize(
    ("status", "body", "expected", "message"),
    [
        (400, {"error": {"message": "prompt too long", "type": "invalid_request_error"}}, 400, "prompt too long"),
        (404, {"error": "no such thing"}, 404, "no such thing"),
        (413, b"too big", 413, "too big"),
        (422, {"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]}, 400,
         "messages: Field required"),
        (500, {"error": {"message": "an error was encountered while running the model"}}, 502, "while running"),
        (500, {"error": {"message": "Traceback (most recent call last): boom"}}, 502, "the server's log"),
        (401, {"error": "bad key"}, 502, "bad key"),
    ],
)  # fmt: skip
def test_backend_errors_keep_their_class_and_a_short_message(gateway_home: Path, keys: Keys, status: int, body: Any,
                                                             expected: int, message: str) -> None:  # fmt: skip
    answers = {"/v1/chat/completions": (status, body)}
    with (
        serve_in_thread(_odd_backend(answers)) as backend,
        run_gateway(gateway_home, OpenAIBackend(backend)) as (
            url,
            _,
        ),
    ):
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(keys.bob))
        assert r.status_code == expected
        error = r.json()["error"]
        assert message in error["message"] and "{" not in error["message"]
        assert error["type"] == ("invalid_request_error" if expected < 500 else "server_error")
        o = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob))  # the Ollama front, translated
        assert o.status_code == expected and message in o.json()["error"]


def test_unreachable_is_502_and_odd_answers_free_the_slot(gateway_home: Path, keys: Keys) -> None:
    answers = {"/v1/chat/completions": (200, {"choices": [None]})}
    with (
        serve_in_thread(_odd_backend(answers)) as backend,
        run_gateway(gateway_home, OpenAIBackend(backend), max_streams_per_key=1) as (url, gw),
    ):
        for _ in range(3):  # a JSON answer to a streamed request: a clear 502, and the key's one slot comes back
            r = httpx.post(url + "/api/chat", json=CHAT, headers=bearer(keys.bob))
            assert r.status_code == 502 and "without streaming" in r.json()["error"]
        assert httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(keys.bob)).status_code == 200
        assert not gw.checks.slots.active.get("bob")
    dead = OpenAIBackend("http://127.0.0.1:9")
    with run_gateway(gateway_home, dead) as (url, _):
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(keys.bob))
        assert r.status_code == 502 and "not reachable" in r.json()["error"]["message"]


# ---- what translated answers carry -----------------------------------------------------------


def test_translated_answers_carry_real_timings(gateway_home: Path, openai_fake: Fake, keys: Keys) -> None:
    openai_fake.script.delay = 0.01
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        client = ollama.Client(host=url, headers=bearer(keys.bob))
        reply = client.chat(
            model="fake:small", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 5}
        )
    assert reply.eval_count == 5 and reply.prompt_eval_count == 7
    assert reply.eval_duration and reply.eval_duration > 0 and reply.prompt_eval_duration
    assert reply.total_duration and reply.total_duration >= reply.eval_duration + reply.prompt_eval_duration


def test_include_usage_is_honoured_when_the_backend_sends_none(gateway_home: Path, openai_fake: Fake,
                                                               keys: Keys) -> None:  # fmt: skip
    openai_fake.script.stream_usage = False  # like llama-cpp-python
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 3}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=bearer(keys.bob)) as r:
            events = [e.removeprefix("data: ") for e in r.read().decode().split("\n\n") if e.strip()]
        assert events[-1] == "[DONE]"
        usage = json.loads(events[-2])["usage"]
        assert usage["completion_tokens"] == 3 and usage["total_tokens"] >= 3
        plain = {**CHAT, "stream": True, "max_tokens": 3}  # not asked: not added
        with httpx.stream("POST", url + "/v1/chat/completions", json=plain, headers=bearer(keys.bob)) as r:
            assert b'"usage"' not in r.read()


def test_tool_calls_and_json_schema_formats_are_translated(gateway_home: Path, openai_fake: Fake, keys: Keys) -> None:
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        client = ollama.Client(host=url, headers=bearer(keys.bob))
        whole = client.chat(model="fake:small", messages=[{"role": "user", "content": "weather?"}], tools=[tool])
        assert whole.message.tool_calls and whole.message.tool_calls[0].function.name == "weather"
        assert whole.message.tool_calls[0].function.arguments == {"city": "Kyoto"}
        parts = list(client.chat(model="fake:small", messages=[{"role": "user", "content": "weather?"}], tools=[tool],
                                 stream=True))  # fmt: skip
        calls = [c for p in parts for c in (p.message.tool_calls or [])]
        assert [c.function.arguments for c in calls] == [{"city": "Kyoto"}] and parts[-1].done
        # the tool's answer goes back as an OpenAI tool message tied to the call
        call = {"function": {"name": "weather", "arguments": {"city": "Kyoto"}}}
        client.chat(model="fake:small", messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "sunny", "tool_name": "weather"}])  # fmt: skip
        sent = openai_fake.rec.requests[-1].body["messages"]
        assert sent[2]["role"] == "tool" and sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]
        client.chat(model="fake:small", messages=[{"role": "user", "content": "x"}], format=schema)
        fmt = openai_fake.rec.requests[-1].body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema
