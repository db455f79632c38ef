"""Streams: relayed as produced, re-framed on record boundaries, translated, cancelled upstream."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.conftest import EngineGateway, Fake, Keys, run_gateway

from homellm.serve.backends import OllamaBackend, OpenAIBackend
from homellm.store import open_database
from homellm.store.usage import summarize

AUTH = "Authorization"


def bearer(key: str) -> dict[str, str]:
    return {AUTH: f"Bearer {key}"}


@pytest.mark.parametrize(
    ("kind", "path", "body"),
    [
        ("ollama", "/api/chat", {"model": "fake:small", "messages": [{"role": "user", "content": "x"}]}),
        ("openai", "/api/chat", {"model": "fake:small", "messages": [{"role": "user", "content": "x"}]}),
        ("openai", "/v1/chat/completions", {"model": "fake:small", "messages": [], "stream": True}),
        ("ollama", "/v1/chat/completions", {"model": "fake:small", "messages": [], "stream": True}),
    ],
)
def test_tokens_are_relayed_as_they_are_produced(
    gateway_home: Path, ollama_fake: Fake, openai_fake: Fake, keys: Keys, kind: str, path: str, body: dict[str, object]
) -> None:
    """The backend sends one token, then waits for us: we only get it if the gateway does not buffer."""
    fake = ollama_fake if kind == "ollama" else openai_fake
    fake.script.gate = threading.Event()
    backend = OllamaBackend(fake.url) if kind == "ollama" else OpenAIBackend(fake.url)
    with (
        run_gateway(gateway_home, backend) as (url, _),
        httpx.stream("POST", url + path, json=body, headers=bearer(keys.bob), timeout=10) as r,
    ):
        assert r.headers["x-accel-buffering"] == "no"
        lines = r.iter_lines()
        first = next(line for line in lines if "tok0" in line)
        assert "tok0" in first and not fake.rec.cancelled.is_set()
        fake.script.gate.set()  # now let the rest come
        rest = "\n".join(lines)
    assert "tok4" in rest


def test_client_leaving_cancels_the_backend_stream(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    ollama_fake.script.gate = threading.Event()  # the backend is mid-generation and stays there
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, gw):
        body = {"model": "fake:small", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 500}}
        with httpx.stream("POST", url + "/api/chat", json=body, headers=bearer(keys.bob)) as r:
            lines = r.iter_lines()
            next(lines)
        # the client has gone; the gateway must close its upstream request, which cancels the generator
        assert ollama_fake.rec.cancelled.wait(5), "the backend kept generating after the client left"
        deadline = time.monotonic() + 5
        while gw.checks.slots.active.get("bob", 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.checks.slots.active.get("bob", 0) == 0  # the concurrency slot is free again
    ollama_fake.script.gate.set()


def test_ndjson_is_reframed_on_line_boundaries(gateway_home: Path, keys: Keys) -> None:
    """A backend that splits JSON lines across TCP writes: every chunk the client gets is whole lines."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from homellm.testing.fake_backend import serve_in_thread

    async def ragged(request: object) -> StreamingResponse:
        async def gen():  # type: ignore[no-untyped-def]
            text = b"".join(json.dumps({"response": f"w{i}", "done": i == 9}).encode() + b"\n" for i in range(10))
            for i in range(0, len(text), 7):  # 7-byte pieces cut through the lines
                yield text[i : i + 7]

        return StreamingResponse(gen(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/api/generate", ragged, methods=["POST"])])
    with serve_in_thread(app) as backend, run_gateway(gateway_home, OllamaBackend(backend)) as (url, _):
        got = []
        with httpx.stream("POST", url + "/api/generate", json={"model": "m", "prompt": "x"},
                          headers=bearer(keys.bob)) as r:  # fmt: skip
            for chunk in r.iter_raw():
                got.append(chunk)
                assert chunk.endswith(b"\n")
                for line in chunk.splitlines():
                    json.loads(line)
    assert b"".join(got).count(b"\n") == 10


def test_ollama_client_over_an_openai_backend_gets_translated_options_and_fields(
    openai_gateway: str, openai_fake: Fake, keys: Keys
) -> None:
    import ollama

    client = ollama.Client(host=openai_gateway, headers=bearer(keys.bob))
    reply = client.chat(
        model="fake:small",
        messages=[{"role": "user", "content": "hi"}],
        options={"temperature": 0.2, "num_predict": 3, "stop": ["\n"], "seed": 42, "top_k": 5},
    )
    sent = openai_fake.rec.requests[-1]
    assert sent[1] == "/v1/chat/completions"
    assert {k: sent[2][k] for k in ("temperature", "max_tokens", "stop", "seed", "top_k")} == {
        "temperature": 0.2, "max_tokens": 3, "stop": ["\n"], "seed": 42, "top_k": 5}  # fmt: skip
    assert reply.message.content == "tok0 tok1 tok2 "
    # num_predict reached: a real server says "length" (and so does the scripted one)
    assert reply.done_reason == "length" and reply.prompt_eval_count == 7 and reply.eval_count == 3
    assert isinstance(reply.total_duration, int) and isinstance(reply.eval_duration, int)
    parts = list(client.generate(model="fake:small", prompt="hi", stream=True, options={"num_predict": 4}))
    assert "".join(p.response for p in parts) == "tok0 tok1 tok2 tok3 "
    assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].eval_count == 4
    assert openai_fake.rec.requests[-1][2]["stream"] is True
    emb = client.embed(model="fake:small", input=["a", "b"])
    assert emb.embeddings == [[0.5, 2.0], [0.5, 2.0]]  # per-token vectors mean-pooled
    assert client.embeddings(model="fake:small", prompt="a").embedding == [0.5, 2.0]


def test_openai_client_over_an_ollama_backend_passes_through(
    ollama_gateway: str, ollama_fake: Fake, keys: Keys
) -> None:
    import openai

    client = openai.OpenAI(base_url=ollama_gateway + "/v1", api_key=keys.bob)
    client.chat.completions.create(model="fake:small", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert ollama_fake.rec.requests[-1][1] == "/v1/chat/completions"  # Ollama speaks /v1 itself


def test_usage_records_tokens_ttft_and_cancellation(gateway_home: Path, openai_gateway: str, keys: Keys) -> None:
    r = httpx.post(openai_gateway + "/api/chat", headers=bearer(keys.admin),
                   json={"model": "fake:large", "messages": [], "options": {"num_predict": 6}})  # fmt: skip
    assert r.status_code == 200
    time.sleep(0.5)  # the writer thread batches
    rows = {row["model"]: row for row in summarize(open_database(gateway_home), "model")}
    large = rows["fake:large"]
    assert large["completion_tokens"] >= 6 and large["prompt_tokens"] >= 7 and large["avg_ttft_ms"] is not None
    db = open_database(gateway_home)
    last = db.execute("SELECT * FROM usage WHERE model = 'fake:large' ORDER BY id DESC LIMIT 1").fetchone()
    assert last["key_name"] == "admin" and last["client_ip"] == "127.0.0.1" and last["route"] == "/api/chat"
    assert last["prompt"] is None  # no prompt text unless log_prompts is on


@pytest.mark.engine
def test_the_engine_stops_generating_when_the_client_leaves(engine_gateway: EngineGateway, keys: Keys) -> None:
    """llama.cpp serves one request at a time: if the abandoned 8,000-token generation kept running,
    the next request would wait for it (about a minute at ~130 tok/s)."""
    body = {"model": "smollm2:135m", "prompt": "Once upon a time", "max_tokens": 8000, "stream": True,
            "logit_bias": {"0": -100, "1": -100, "2": -100}}  # fmt: skip
    with engine_gateway.client(keys.bob) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(10)]
            assert any("text" in line for line in got)
        start = time.monotonic()
        follow = c.post("/v1/completions", json={"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2})
        assert follow.status_code == 200
        assert time.monotonic() - start < 15, "the engine was still busy with the abandoned generation"
    time.sleep(0.5)
    db = open_database(engine_gateway.home)
    row = db.execute("SELECT * FROM usage WHERE route = '/v1/completions' AND cancelled = 1").fetchone()
    assert row is not None and row["status"] == 499
