"""Issue 8 parts 4 and D: a key holder's hostile bodies and headers crash, bloat and stall nothing.

Against the real gateway: the real engine (llama.cpp) where the attack was on it, the scripted
Ollama imitation elsewhere; requests with bytes an HTTP library would refuse to send go over raw sockets.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from tests.conftest import EngineGateway, Fake, Keys, homellm_exe, run_gateway

from homellm.serve.backends import OllamaBackend
from homellm.store.db import database_path

MODEL = "smollm2:135m"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes as they are (no client library normalises them) and read the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.engine
def test_a_huge_grammar_cannot_crash_the_engine(engine_gateway: EngineGateway, keys: Keys) -> None:
    grammar = "root ::= " + " | ".join(f'"{i}"' for i in range(40_000))  # about 200 KB
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "grammar": grammar, "max_tokens": 4}
    with engine_gateway.client(keys.bob) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and "grammar" in r.json()["error"]["message"]
        schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}
        big = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}  # fmt: skip
        assert c.post("/v1/chat/completions", json=big).status_code == 400
        bias = {"model": MODEL, "messages": [], "logit_bias": {str(i): 1 for i in range(1000)}}
        assert c.post("/v1/chat/completions", json=bias).status_code == 400
        # the engine is still up and answering
        ok = c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                                                  "max_tokens": 2})  # fmt: skip
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] is not None


def test_model_names_are_bounded_stored_as_data_and_printed_literally(
    gateway_home: Path, ollama_fake: Fake, keys: Keys, tmp_path: Path
) -> None:
    db = database_path(gateway_home)
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, gw):
        for name in ("[/]", "[bold red]x[/]", ":cd: :smile:"):
            r = httpx.post(url + "/api/chat", json={"model": name, "messages": []}, headers=bearer(keys.bob))
            assert r.status_code == 404  # the backend has no such model; the name is logged as data
        before = db.stat().st_size + db.with_name(db.name + "-wal").stat().st_size
        for name in ("\x1b]0;pwned\x07", "x" * (15 * 1024 * 1024)):
            r = httpx.post(url + "/api/chat", json={"model": name, "messages": []}, headers=bearer(keys.bob))
            assert r.status_code == 400
        gw.usage.close()  # flush
    after = db.stat().st_size + db.with_name(db.name + "-wal").stat().st_size
    assert after - before < 256 * 1024  # a refused 15 MiB name is not written anywhere
    env = dict(os.environ, HOMELLM_HOME=str(gateway_home), COLUMNS="200")
    out = subprocess.run([homellm_exe(), "usage", "--by", "model"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "[/]" in out.stdout and "[bold red]x[/]" in out.stdout and ":cd: :smile:" in out.stdout
    assert "\x1b" not in out.stdout and "pwned" not in out.stdout


def test_unknown_paths_do_not_grow_the_metrics(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, _), httpx.Client(base_url=url) as c:
        c.get("/nothing/0")
        c.get("/metrics", headers=bearer(keys.admin))  # its own labels exist from now on
        size = len(c.get("/metrics", headers=bearer(keys.admin)).text)
        for i in range(1, 2000):
            assert c.get(f"/nothing/{i}").status_code == 404
        text = c.get("/metrics", headers=bearer(keys.admin)).text
    assert "/nothing/" not in text and 'route="unmatched"' in text
    assert len(text) - size < 200  # counters change, labels do not multiply


def test_a_malformed_header_is_a_400_and_leaks_no_slot(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    body = json.dumps({"model": "fake:small", "messages": [], "stream": False}).encode()
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), max_streams_per_key=2) as (url, _):
        for _ in range(6):
            answer = raw_request(url, b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                                 + keys.bob.encode() + b"\r\nContent-Type: application/json\xff\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
            assert answer.startswith(b"HTTP/1.1 400") and b"Traceback" not in answer
        ok = httpx.post(url + "/api/chat", content=body, headers=bearer(keys.bob))
        assert ok.status_code == 200  # no concurrency slot was leaked


@pytest.mark.parametrize(
    "target",
    [b"/api/blobs/sha256:" + b"a" * 64 + b"%0A", b"/api/blobs/../../etc/passwd", b"/api/blobs/sha256:../../x",
     b"/api/../api/tags", b"/v1/models/..%2F..%2Fetc", b"http://attacker.example/api/tags"],
)  # fmt: skip
def test_path_tricks_never_reach_the_backend(gateway_home: Path, ollama_fake: Fake, keys: Keys, target: bytes) -> None:
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, _):
        answer = raw_request(url, b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                             + keys.admin.encode() + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 403, 404, 405), answer[:200]
    assert ollama_fake.rec.requests == []


def test_a_huge_body_does_not_stall_other_requests(gateway_home: Path, ollama_fake: Fake, keys: Keys) -> None:
    """15 MiB of 540,000 tiny messages: parsed off the event loop, so a small request is answered first."""
    messages = [{"role": "user", "content": "x"}] * 540_000
    huge = json.dumps({"model": "fake:small", "stream": False, "messages": messages}, separators=(",", ":")).encode()
    assert len(huge) < 16 * 1024 * 1024
    order: list[str] = []
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url)) as (url, _):
        uploaded = threading.Event()

        def big() -> None:
            def body() -> object:
                yield huge
                uploaded.set()

            r = httpx.post(url + "/api/chat", content=body(), headers=bearer(keys.bob), timeout=120)
            order.append(f"big {r.status_code}")

        t = threading.Thread(target=big)
        t.start()
        assert uploaded.wait(60)
        small = httpx.post(url + "/api/chat", json={"model": "fake:small", "messages": [], "stream": False},
                           headers=bearer(keys.alice), timeout=120)  # fmt: skip
        order.append(f"small {small.status_code}")
        t.join(120)
    assert order[0] == "small 200", order
    assert order[1] in ("big 200", "big 413"), order
