"""A scripted model server on loopback, speaking Ollama's API or the OpenAI API.

Tests use it to check what the gateway forwards, how it streams and when it cancels;
``benchmarks/gateway_overhead.py`` uses it so that only the gateway is measured. Tokens are
``tok0 tok1 ...``; ``delay`` spaces them out; a ``gate`` holds the stream after the first token
until the test opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODELS = ["fake:small", "fake:large"]


@dataclass
class Script:
    tokens: int = 5
    delay: float = 0.0
    gate: threading.Event | None = None  # when set, the stream waits for it after the first token


@dataclass
class Recorder:
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    completed: int = 0


def _count(body: dict[str, Any], default: int) -> int:
    opts = body.get("options") or {}
    for value in (body.get("max_tokens"), opts.get("num_predict")):
        if isinstance(value, int) and value >= 0:
            return value
    return default


def make_app(kind: str, script: Script, rec: Recorder) -> Starlette:
    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        body = json.loads(raw) if raw.strip() else {}
        rec.requests.append((request.method, request.url.path, body))
        return body

    async def tokens(n: int) -> AsyncIterator[str]:
        try:
            for i in range(n):
                if i == 1 and script.gate is not None:
                    await asyncio.to_thread(script.gate.wait, 30)
                if script.delay:
                    await asyncio.sleep(script.delay)
                yield f"tok{i} "
            rec.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            rec.cancelled.set()
            raise

    async def ollama_stream(body: dict[str, Any], chat: bool) -> AsyncIterator[bytes]:
        n = 0
        async for t in tokens(_count(body, script.tokens)):
            n += 1
            piece = {"message": {"role": "assistant", "content": t}} if chat else {"response": t}
            yield json.dumps({"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z", **piece,
                              "done": False}, separators=(",", ":")).encode() + b"\n"  # fmt: skip
        end = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
        yield json.dumps({"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z", **end, "done": True,
                          "done_reason": "stop", "prompt_eval_count": 7, "eval_count": n, "total_duration": 1},
                         separators=(",", ":")).encode() + b"\n"  # fmt: skip

    async def sse_stream(body: dict[str, Any], chat: bool) -> AsyncIterator[bytes]:
        n = 0
        if chat:
            yield b'data: {"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}\n\n'
        async for t in tokens(_count(body, script.tokens)):
            n += 1
            delta = {"delta": {"content": t}} if chat else {"text": t}
            yield (
                b"data: "
                + json.dumps(
                    {
                        "object": "chunk",
                        "model": body.get("model"),
                        "choices": [{"index": 0, **delta, "finish_reason": None}],
                    }
                ).encode()
                + b"\n\n"
            )
        finish = "length" if _count(body, script.tokens) == n and body.get("max_tokens") else "stop"
        yield (
            b"data: "
            + json.dumps(
                {
                    "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": n},
                }
            ).encode()
            + b"\n\n"
        )
        yield b"data: [DONE]\n\n"

    async def ollama_chat(request: Request) -> Response:
        body = await body_of(request)
        if body.get("model") not in MODELS:
            return JSONResponse({"error": f"model '{body.get('model')}' not found"}, status_code=404)
        chat = request.url.path == "/api/chat"
        if body.get("stream", True):
            return StreamingResponse(ollama_stream(body, chat), media_type="application/x-ndjson")
        text = "".join([t async for t in tokens(_count(body, script.tokens))])
        piece = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        return JSONResponse({"model": body["model"], **piece, "done": True, "done_reason": "stop",
                             "prompt_eval_count": 7, "eval_count": _count(body, script.tokens)})  # fmt: skip

    async def openai_completion(request: Request) -> Response:
        body = await body_of(request)
        chat = request.url.path.endswith("/chat/completions")
        if body.get("stream"):
            return StreamingResponse(sse_stream(body, chat), media_type="text/event-stream")
        n = _count(body, script.tokens)
        text = "".join([t async for t in tokens(n)])
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        return JSONResponse({"id": "x", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, **choice, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}})  # fmt: skip

    async def embeddings(request: Request) -> Response:
        body = await body_of(request)
        inputs = body.get("input") if "input" in body else body.get("prompt")
        items = inputs if isinstance(inputs, list) else [inputs]
        if kind == "ollama" and request.url.path == "/api/embed":
            return JSONResponse({"model": body["model"], "embeddings": [[0.1, 0.2, 0.3] for _ in items]})
        if kind == "ollama" and request.url.path == "/api/embeddings":
            return JSONResponse({"embedding": [0.1, 0.2, 0.3]})
        # per-token vectors, like llama-cpp-python without pooling
        data = [{"object": "embedding", "index": i, "embedding": [[0.0, 1.0], [1.0, 3.0]]} for i, _ in enumerate(items)]
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": 2, "total_tokens": 2}})  # fmt: skip

    async def anything(request: Request) -> Response:
        await body_of(request)
        path = request.url.path
        if path == "/api/version":
            return JSONResponse({"version": "0.12.0"}) if kind == "ollama" else JSONResponse({}, status_code=404)
        if path in ("/api/tags", "/api/ps") and kind == "ollama":
            return JSONResponse({"models": [{"name": m, "model": m, "size": 1} for m in MODELS]})
        if path == "/v1/models":
            return JSONResponse({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})
        return JSONResponse({"status": "success", "path": path})

    routes = [
        Route("/api/chat", ollama_chat, methods=["POST"]),
        Route("/api/generate", ollama_chat, methods=["POST"]),
        Route("/v1/chat/completions", openai_completion, methods=["POST"]),
        Route("/v1/completions", openai_completion, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/api/embed", embeddings, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
        Route("/{path:path}", anything, methods=["GET", "POST", "DELETE", "HEAD", "PUT"]),
    ]
    return Starlette(routes=routes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(url: str, timeout: float = 60, **client: Any) -> None:
    """Poll ``url`` until it answers below 500 (``client`` goes to httpx: headers, verify)."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1, **client).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up within {timeout:.0f}s")
        time.sleep(0.1)


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    config.setdefault("access_log", False)
    cfg = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", **config)
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    scheme = "https" if config.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:  # pragma: no cover - used by benchmarks/gateway_overhead.py
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="a scripted model server on loopback")
    parser.add_argument("--kind", choices=["ollama", "openai"], default="ollama")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = make_app(args.kind, Script(), Recorder())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":  # pragma: no cover
    main()
