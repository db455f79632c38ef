"""Streams: relayed as produced, re-framed on record boundaries, translated, cancelled upstream."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

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
    """The backend sends one token, then waits for us (its gate holds it for up to 30 s): the client, which
    gives up after 10 s, only gets that token if the gateway relays without buffering."""
    fake = ollama_fake if kind == "ollama" else openai_fake
    fake.script.gate = threading.Event()
    backend = OllamaBackend(fake.url) if kind == "ollama" else OpenAIBackend(fake.url)
    with (
        run_gateway(gateway_home, backend) as (url, _),
        httpx.stream("POST", url + path, json=body, headers=bearer(keys.bob), timeout=10) as r,
    ):
        assert r.status_code == 200 and r.headers["x-accel-buffering"] == "no"
        lines = r.iter_lines()
        try:
            first = next(line for line in lines if "tok0" in line)
        except httpx.ReadTimeout:
            pytest.fail("the gateway held the first token back while the backend was still generating")
        assert _content(first) == "tok0 " and not fake.rec.cancelled.is_set()
        fake.script.gate.set()  # now let the rest come
        rest = [_content(line) for line in lines if line.strip() and line != "data: [DONE]"]
    assert "".join(rest) == "tok1 tok2 tok3 tok4 "


def _content(line: str) -> str:
    """The text of one streamed record: an NDJSON line of Ollama's chat, or an SSE chunk of OpenAI's."""
    if line.startswith("data: "):
        delta = json.loads(line[6:])["choices"]
        return str(delta[0]["delta"].get("content") or "") if delta else ""
    return str(json.loads(line)["message"]["content"])


def wait_for_usage_row(home: Path, after_id: int, **match: object) -> dict[str, Any]:
    """The usage writer commits in batches on its own thread: poll for the row (bounded), never sleep."""
    where = " AND ".join(f"{k} = ?" for k in match)
    db = open_database(home)
    deadline = time.monotonic() + 30
    while True:
        row = db.execute(f"SELECT * FROM usage WHERE id > ? AND {where} ORDER BY id DESC", (after_id, *match.values()))
        found = row.fetchone()
        if found is not None:
            return dict(found)
        assert time.monotonic() < deadline, f"no usage row with {match} after 30 s"
        time.sleep(0.05)


def last_usage_id(home: Path) -> int:
    last: int = open_database(home).execute("SELECT COALESCE(MAX(id), 0) FROM usage").fetchone()[0]
    return last


def test_client_leaving_cancels_the_backend_stream(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    ollama_fake.script.gate = threading.Event()  # the backend is mid-generation and stays there
    before = last_usage_id(gateway_home)
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, gw):
        body = {"model": "fake:small", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 500}}
        with httpx.stream("POST", url + "/api/chat", json=body, headers=bearer(keys.bob)) as r:
            lines = r.iter_lines()
            next(lines)
        # the client has gone; the gateway must close its upstream request, which cancels the generator
        assert ollama_fake.rec.cancelled.wait(30), "the backend kept generating after the client left"
        row = wait_for_usage_row(gateway_home, before, key_name="bob", route="/api/chat")
        assert row["status"] == 499 and row["cancelled"] == 1
        assert gw.checks.slots.active.get("bob", 0) == 0  # the concurrency slot was freed before the row was written
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
    assert reply.total_duration and reply.eval_duration and reply.eval_duration <= reply.total_duration  # measured
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


def test_usage_records_tokens_and_ttft(gateway_home: Path, openai_gateway: str, keys: Keys) -> None:
    before = last_usage_id(gateway_home)
    r = httpx.post(openai_gateway + "/api/chat", headers=bearer(keys.admin),
                   json={"model": "fake:large", "messages": [], "options": {"num_predict": 6}})  # fmt: skip
    assert r.status_code == 200
    last = wait_for_usage_row(gateway_home, before, model="fake:large")
    assert last["key_name"] == "admin" and last["client_ip"] == "127.0.0.1" and last["route"] == "/api/chat"
    assert last["status"] == 200 and last["cancelled"] == 0 and last["error"] is None
    assert last["completion_tokens"] == 6 and last["prompt_tokens"] == 7 and last["ttft_ms"] is not None
    assert last["prompt"] is None  # no prompt text unless log_prompts is on
    rows = {row["model"]: row for row in summarize(open_database(gateway_home), "model")}
    assert rows["fake:large"]["completion_tokens"] >= 6 and rows["fake:large"]["avg_ttft_ms"] is not None


@pytest.mark.engine
def test_the_engine_stops_generating_when_the_client_leaves(engine_gateway: EngineGateway, keys: Keys) -> None:
    """llama.cpp serves one request at a time (requests queue): if the abandoned generation kept running to
    the end of its context (2,048 tokens here, so about 2,000 more), the next request would wait for all of
    it. The next request gets a timeout far beyond its own cost (a 1-token prompt, 2 tokens) and far below
    the abandoned rest, both counted in this engine's time per token right now, so a busy machine scales
    both alike."""
    # the logit bias forbids the end-of-text tokens: the generation only ends with the context
    body = {"model": "smollm2:135m", "prompt": "Once upon a time", "max_tokens": 8000, "stream": True,
            "logit_bias": {"0": -100, "1": -100, "2": -100}}  # fmt: skip
    before = last_usage_id(engine_gateway.home)
    with engine_gateway.client(keys.bob) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            chunks = (line for line in r.iter_lines() if line.startswith("data: {"))
            next(chunks)  # the prompt is processed
            started = time.perf_counter()
            for _ in range(40):
                assert "text" in next(chunks)
            per_token = (time.perf_counter() - started) / 40
        timeout = max(3.0, 400 * per_token)  # the abandoned rest: about 2,000 tokens
        try:
            follow = c.post("/v1/completions", json={"model": "smollm2:135m", "prompt": "Hi", "max_tokens": 2},
                            timeout=timeout)  # fmt: skip
        except httpx.TimeoutException:
            pytest.fail(f"the engine was still busy with the abandoned generation after {timeout:.1f} s "
                        f"({per_token * 1000:.1f} ms a token)")  # fmt: skip
        assert follow.status_code == 200
    row = wait_for_usage_row(engine_gateway.home, before, route="/v1/completions", cancelled=1)
    assert row["status"] == 499 and row["key_name"] == "bob"
