"""A scripted model server on loopback: an imitation of Ollama, or of an OpenAI-compatible server.

Tests use it to check what the gateway forwards, how it streams and when it cancels;
``benchmarks/`` use it so that only the gateway is measured. Tokens are ``tok0 tok1 ...``.

What each imitation emulates, because the gateway's behaviour depends on it:

``kind="ollama"`` (Ollama's server, checked against its source, server/routes.go and middleware/openai.go)
  * bodies are decoded like Go's ``encoding/json`` into Ollama's structs (:mod:`homellm.testing.go_json`):
    case-insensitive folded keys, last key wins, trailing data ignored. ``/v1/*`` decodes the same way
    (Ollama's OpenAI layer binds into Go structs too);
  * an empty body is 400 ``missing request body``, malformed JSON 400 with the decoder's message, no model
    400 ``model is required``, an unknown model 404 ``model 'x' not found`` -- on ``/v1/*`` in the OpenAI
    error shape (``not_found_error``);
  * a client closing its connection stops a generation, streamed or not (Go cancels the request context);
  * streams are NDJSON; ``done_reason`` is ``length`` when ``num_predict`` ends the answer; a failure
    mid-stream is an ``{"error": ...}`` line, as Ollama sends;
  * :attr:`Recorder.ran` lists the model each request actually ran, as Ollama resolved it.

``kind="openai"`` (llama-server / llama-cpp-python)
  * a chat request with ``tools`` is answered with a call of the first tool, streamed as llama-server does
    (the arguments in two fragments, ``finish_reason: tool_calls``);
  * bodies are read like Python/pydantic (exact keys); a chat request without ``messages`` is FastAPI's
    422 ``{"detail": [...]}``; an unknown model is answered with the default model (llama-cpp-python's
    server does), which is why the gateway checks models itself;
  * streams are SSE; a usage chunk only when asked (``stream_options.include_usage``) and
    ``Script.stream_usage`` is on (llama-cpp-python sends none: set it off to imitate it);
  * ``finish_reason`` is ``length`` when ``max_tokens`` ends the answer; a failure mid-stream is an SSE
    ``{"error": {...}}`` event.

Both record every request's method, path, body and headers, and set ``cancelled`` when a generation
is stopped because the connection closed. ``Script`` shapes the answers: ``delay`` between tokens,
``gate`` holds the stream after the first token, ``fail_after`` sends an error after N tokens,
``stall_after`` goes silent after N tokens.

For the pool's tests, a server has its own model set (``Script.models``; Ollama's ``/api/ps`` lists
``Script.loaded``), can refuse generations with a status (``Script.status``, as an Ollama whose queue is
full answers 503), and, with ``control=True`` (a server in a process of its own), takes new script values
and reports the generations it started, in order, at ``/__script__`` (loopback only, tests only).
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
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from homellm.testing.go_json import GoJSONError, MissingBody, decode_struct

MODELS = ["fake:small", "fake:large"]

# Ollama's request structs: (Go type, string fields, other fields the imitation reads)
OLLAMA_TYPES: dict[str, tuple[str, list[str], list[str]]] = {
    "/api/chat": ("api.ChatRequest", ["model"], ["messages", "stream", "options", "format", "tools", "keep_alive"]),
    "/api/generate": ("api.GenerateRequest", ["model", "prompt", "system", "suffix"], ["stream", "options", "raw"]),
    "/api/embed": ("api.EmbedRequest", ["model"], ["input", "options", "truncate"]),
    "/api/embeddings": ("api.EmbeddingRequest", ["model", "prompt"], ["options"]),
    "/api/show": ("api.ShowRequest", ["model", "name", "system"], ["verbose"]),
    "/api/pull": ("api.PullRequest", ["model", "name"], ["insecure", "stream"]),
    "/api/push": ("api.PushRequest", ["model", "name"], ["insecure", "stream"]),
    "/api/create": ("api.CreateRequest", ["model", "name", "from"], ["files", "stream", "quantize"]),
    "/api/copy": ("api.CopyRequest", ["source", "destination"], []),
    "/api/delete": ("api.DeleteRequest", ["model", "name"], []),
    "/v1/chat/completions": ("openai.ChatCompletionRequest", ["model"], ["messages", "stream", "max_tokens"]),
    "/v1/completions": ("openai.CompletionRequest", ["model"], ["prompt", "stream", "max_tokens"]),
    "/v1/embeddings": ("openai.EmbedRequest", ["model"], ["input"]),
}


@dataclass
class Script:
    tokens: int = 5
    delay: float = 0.0
    gate: threading.Event | None = None  # when set, the stream waits for it after the first token
    fail_after: int | None = None  # send an error record after this many tokens, then end the stream
    stall_after: int | None = None  # go silent after this many tokens (until the connection closes)
    stream_usage: bool = True  # OpenAI kind: send a usage chunk when the client asks for it
    text: list[str] | None = None  # the tokens to send instead of tok0 tok1 ...
    models: list[str] | None = None  # the models it serves (default: MODELS)
    loaded: list[str] | None = None  # Ollama: the models /api/ps lists as loaded (default: all it serves)
    status: int | None = None  # refuse every generation with this status (503: Ollama's "server busy")
    paused: bool = False  # generations wait before their first token while this is set

    def served(self) -> list[str]:
        return list(self.models) if self.models is not None else list(MODELS)


class Seen(NamedTuple):
    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Recorder:
    requests: list[Seen] = field(default_factory=list)
    ran: list[tuple[str, str]] = field(default_factory=list)  # (path, model) of every generation started
    arrivals: list[dict[str, str]] = field(default_factory=list)  # every generation asked for, in order
    cancelled: threading.Event = field(default_factory=threading.Event)
    completed: int = 0

    def clear(self) -> None:
        self.requests.clear()
        self.ran.clear()
        self.arrivals.clear()
        self.cancelled.clear()


class Refusal(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body


def _count(body: dict[str, Any], default: int) -> tuple[int, bool]:
    """(tokens to send, whether a limit set that number)."""
    opts = body.get("options") if isinstance(body.get("options"), dict) else {}
    for value in (body.get("max_tokens"), (opts or {}).get("num_predict")):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value, True
    return default, False


def _tag(body: dict[str, Any]) -> str:
    """What a test wrote to tell its requests apart: the prompt, or the last message's content."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))[:80]
    return str(body.get("prompt", ""))[:80]


def make_app(kind: str, script: Script, rec: Recorder, control: bool = False) -> Starlette:
    def openai_error(status: int, message: str) -> dict[str, Any]:
        etype = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
        return {"error": {"message": message, "type": etype, "param": None, "code": None}}

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        path = request.url.path
        headers = {k.lower(): v for k, v in request.headers.items()}
        v1 = path.startswith("/v1/")
        if kind == "ollama" and path in OLLAMA_TYPES:
            type_name, strings, others = OLLAMA_TYPES[path]
            try:
                body = decode_struct(raw, type_name, strings, others)
            except MissingBody:
                rec.requests.append(Seen(request.method, path, {}, headers))
                msg = "missing request body"
                raise Refusal(400, openai_error(400, msg) if v1 else {"error": msg}) from None
            except GoJSONError as exc:
                rec.requests.append(Seen(request.method, path, {}, headers))
                raise Refusal(400, openai_error(400, str(exc)) if v1 else {"error": str(exc)}) from None
        else:
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                rec.requests.append(Seen(request.method, path, {}, headers))
                detail = [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]
                raise Refusal(422, {"detail": detail}) from None
            body = body if isinstance(body, dict) else {}
        rec.requests.append(Seen(request.method, path, body, headers))
        return body

    def model_of(body: dict[str, Any], path: str) -> str:
        """The model a request runs, resolved as the server resolves it; refusals as the server words them."""
        name = str(body.get("model") or body.get("name") or "") if path == "/api/show" else str(body.get("model") or "")
        served = script.served()
        if path not in ("/api/show",):
            rec.arrivals.append({"path": path, "model": name, "tag": _tag(body)})
            if script.status is not None:
                msg = "server busy, please try again.  maximum pending requests exceeded"
                raise Refusal(script.status, openai_error(script.status, msg) if kind == "openai" else {"error": msg})
        if kind == "openai":
            if path == "/v1/chat/completions" and "messages" not in body:
                detail = [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required", "input": body}]
                raise Refusal(422, {"detail": detail})
            return name if name in served else served[0]  # llama-cpp-python answers with its default model
        v1 = path.startswith("/v1/")
        if not name:
            raise Refusal(400, openai_error(400, "model is required") if v1 else {"error": "model is required"})
        if name not in served:
            msg = f"model '{name}' not found"
            raise Refusal(404, openai_error(404, msg) if v1 else {"error": msg})
        rec.ran.append((path, name))
        return name

    async def tokens(n: int) -> AsyncIterator[str]:
        try:
            while script.paused:
                await asyncio.sleep(0.005)
            for i in range(n):
                if i == 1 and script.gate is not None:
                    await asyncio.to_thread(script.gate.wait, 30)
                if script.stall_after is not None and i == script.stall_after:
                    await asyncio.Event().wait()  # silent until the connection closes
                if script.fail_after is not None and i == script.fail_after:
                    raise _Failure
                # a real server notices a closed connection between two tokens: give the disconnect
                # watcher its turn (uvicorn's send returns at once on a closed connection, without yielding)
                await asyncio.sleep(script.delay)
                yield script.text[i % len(script.text)] if script.text else f"tok{i} "
            rec.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            rec.cancelled.set()
            raise

    def line(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    async def ollama_stream(body: dict[str, Any], model: str, chat: bool) -> AsyncIterator[bytes]:
        n, limited = _count(body, script.tokens)
        sent = 0
        try:
            async for t in tokens(n):
                sent += 1
                piece = {"message": {"role": "assistant", "content": t}} if chat else {"response": t}
                yield line({"model": model, "created_at": "2026-01-01T00:00:00Z", **piece, "done": False})
        except _Failure:
            yield line({"error": "an error was encountered while running the model: unexpected EOF"})
            return
        end = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
        yield line({"model": model, "created_at": "2026-01-01T00:00:00Z", **end, "done": True,
                    "done_reason": "length" if limited and sent == n else "stop", "total_duration": 1000,
                    "load_duration": 10, "prompt_eval_count": 7, "prompt_eval_duration": 100, "eval_count": sent,
                    "eval_duration": 500})  # fmt: skip

    async def sse_stream(body: dict[str, Any], model: str, chat: bool) -> AsyncIterator[bytes]:
        n, limited = _count(body, script.tokens)
        sent = 0
        if chat:
            yield event({"object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})  # fmt: skip
        if chat and _tool_name(body):
            for i, part in enumerate(('{"city": ', '"Kyoto"}')):
                call = {"index": 0, "function": {"arguments": part}}
                if i == 0:
                    call |= {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": _tool_name(body), "arguments": part},
                    }
                choice = {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}
                yield event({"object": "chat.completion.chunk", "model": model, "choices": [choice]})
            yield event({"object": "chat.completion.chunk", "model": model,
                         "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})  # fmt: skip
            yield b"data: [DONE]\n\n"
            return
        try:
            async for t in tokens(n):
                sent += 1
                delta = {"delta": {"content": t}} if chat else {"text": t}
                yield event({"object": "chat.completion.chunk" if chat else "text_completion", "model": model,
                             "choices": [{"index": 0, **delta, "finish_reason": None}]})  # fmt: skip
        except _Failure:
            yield event({"error": {"message": "the model crashed", "type": "server_error"}})
            yield b"data: [DONE]\n\n"
            return
        finish = "length" if limited and sent == n else "stop"
        yield event({"object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {} if chat else None, "text": None if chat else "",
                                  "finish_reason": finish}]})  # fmt: skip
        options = body.get("stream_options")
        if script.stream_usage and isinstance(options, dict) and options.get("include_usage"):
            usage = {"prompt_tokens": 7, "completion_tokens": sent, "total_tokens": 7 + sent}
            yield event({"object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"

    async def whole(request: Request, n: int) -> str:
        """A non-streamed generation that stops when the client's connection closes, as Ollama's does
        (Go cancels the request's context); Starlette alone would finish it for nobody."""

        async def generate() -> str:
            return "".join([t async for t in tokens(n)])

        work = asyncio.ensure_future(generate())

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            work.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            return await work
        finally:
            watcher.cancel()

    async def refuse(request: Request, handler: Any) -> Response:
        try:
            result: Response = await handler(request)
            return result
        except Refusal as r:
            return JSONResponse(r.body, status_code=r.status)

    async def ollama_chat(request: Request) -> Response:
        body = await body_of(request)
        model = model_of(body, request.url.path)
        chat = request.url.path == "/api/chat"
        if body.get("stream", True) is not False:
            return StreamingResponse(ollama_stream(body, model, chat), media_type="application/x-ndjson")
        n, limited = _count(body, script.tokens)
        try:
            text = await whole(request, n)
        except _Failure:
            return JSONResponse({"error": "an error was encountered while running the model"}, status_code=500)
        piece = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        return JSONResponse({"model": model, **piece, "done": True, "done_reason": "length" if limited else "stop",
                             "prompt_eval_count": 7, "eval_count": n, "total_duration": 1000,
                             "prompt_eval_duration": 100, "eval_duration": 500})  # fmt: skip

    async def openai_completion(request: Request) -> Response:
        body = await body_of(request)
        model = model_of(body, request.url.path)
        chat = request.url.path.endswith("/chat/completions")
        if body.get("stream"):
            return StreamingResponse(sse_stream(body, model, chat), media_type="text/event-stream")
        n, limited = _count(body, script.tokens)
        try:
            text = await whole(request, n)
        except _Failure:
            return JSONResponse({"error": {"message": "the model crashed", "type": "server_error"}}, status_code=500)
        choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        return JSONResponse({"id": "x", "object": "chat.completion" if chat else "text_completion", "model": model,
                             "choices": [{"index": 0, **choice, "finish_reason": "length" if limited else "stop"}],
                             "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}})  # fmt: skip

    async def embeddings(request: Request) -> Response:
        body = await body_of(request)
        model = model_of(body, request.url.path)
        inputs = body.get("input") if "input" in body else body.get("prompt")
        items = inputs if isinstance(inputs, list) else [inputs]
        if kind == "ollama" and request.url.path == "/api/embed":
            return JSONResponse({"model": model, "embeddings": [[0.1, 0.2, 0.3] for _ in items]})
        if kind == "ollama" and request.url.path == "/api/embeddings":
            return JSONResponse({"embedding": [0.1, 0.2, 0.3]})
        if kind == "ollama":
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i, _ in enumerate(items)]
        else:  # per-token vectors, like llama-cpp-python without pooling
            data = [
                {"object": "embedding", "index": i, "embedding": [[0.0, 1.0], [1.0, 3.0]]} for i, _ in enumerate(items)
            ]
        return JSONResponse({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": 2, "total_tokens": 2}})  # fmt: skip

    async def show(request: Request) -> Response:
        body = await body_of(request)
        model = model_of(body, request.url.path)
        return JSONResponse({"modelfile": "", "parameters": "", "template": "", "details": {"family": "fake",
                             "format": "gguf", "parameter_size": "1M", "quantization_level": "Q4_0"},
                             "model_info": {"general.architecture": "llama", "general.name": model}})  # fmt: skip

    async def manage(request: Request) -> Response:
        body = await body_of(request)
        for f in ("model", "name", "from", "source"):
            if isinstance(body.get(f), str) and body[f]:
                rec.ran.append((request.url.path, body[f]))
        return JSONResponse({"status": "success"})

    async def anything(request: Request) -> Response:
        raw = await request.body()
        rec.requests.append(Seen(request.method, request.url.path, {"_bytes": len(raw)},
                                 {k.lower(): v for k, v in request.headers.items()}))  # fmt: skip
        path = request.url.path
        if path == "/api/version":
            return JSONResponse({"version": "0.12.0"}) if kind == "ollama" else JSONResponse({}, status_code=404)
        if path in ("/api/tags", "/api/ps") and kind == "ollama":
            listed = script.served() if path == "/api/tags" or script.loaded is None else script.loaded
            return JSONResponse({"models": [{"name": m, "model": m, "size": 1, "details": {"family": "fake"}}
                                            for m in listed]})  # fmt: skip
        if path == "/v1/models":
            return JSONResponse({"object": "list", "data": [{"id": m, "object": "model"} for m in script.served()]})
        if path.startswith("/api/blobs/"):
            return Response(status_code=201 if request.method == "POST" else 200)
        return JSONResponse({"error": "404 page not found"}, status_code=404)

    def wrap(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await refuse(request, handler)

        return endpoint

    async def scripted(request: Request) -> Response:
        """GET: the generations asked for so far (``?since=N``: from the N-th on); POST: new script values."""
        if request.method == "POST":
            for name, value in (await request.json()).items():
                if name in ("tokens", "delay", "models", "loaded", "status", "paused", "fail_after", "stall_after"):
                    setattr(script, name, value)
        since = int(request.query_params.get("since", "0"))
        return JSONResponse({"arrivals": rec.arrivals[since:], "count": len(rec.arrivals), "completed": rec.completed})

    routes = [
        *([Route("/__script__", scripted, methods=["GET", "POST"])] if control else []),
        Route("/api/chat", wrap(ollama_chat), methods=["POST"]),
        Route("/api/generate", wrap(ollama_chat), methods=["POST"]),
        Route("/v1/chat/completions", wrap(openai_completion), methods=["POST"]),
        Route("/v1/completions", wrap(openai_completion), methods=["POST"]),
        Route("/v1/embeddings", wrap(embeddings), methods=["POST"]),
        Route("/api/embed", wrap(embeddings), methods=["POST"]),
        Route("/api/embeddings", wrap(embeddings), methods=["POST"]),
        Route("/api/show", wrap(show), methods=["POST"]),
        *(
            Route(p, wrap(manage), methods=[m])
            for p, m in (
                ("/api/pull", "POST"),
                ("/api/push", "POST"),
                ("/api/create", "POST"),
                ("/api/copy", "POST"),
                ("/api/delete", "DELETE"),
            )
        ),
        Route("/{path:path}", anything, methods=["GET", "POST", "DELETE", "HEAD", "PUT"]),
    ]
    return Starlette(routes=routes)


def _tool_name(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        return str((tools[0].get("function") or {}).get("name") or "tool")
    return None


class _Failure(Exception):
    """The scripted mid-stream failure."""


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
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, scheme: str | None = None, **config: Any
) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a background thread; yields its base URL (``scheme`` when the
    protocol does TLS itself, as the gateway's does)."""
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
    scheme = scheme or ("https" if config.get("ssl_certfile") else "http")
    try:
        yield f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:  # pragma: no cover - used by benchmarks
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="a scripted model server on loopback")
    parser.add_argument("--kind", choices=["ollama", "openai"], default="ollama")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between tokens")
    args = parser.parse_args()
    app = make_app(args.kind, Script(delay=args.delay), Recorder())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":  # pragma: no cover
    main()
