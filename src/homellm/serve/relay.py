"""Relaying backend streams to clients as they come.

* :class:`RelayResponse` sends chunks the moment they arrive and watches for the client
  leaving the whole time; when it leaves, the upstream response is closed, which makes
  llama.cpp, Ollama and vLLM stop generating.
* Passthrough streams are re-framed on line (NDJSON) or event (SSE) boundaries, so a client
  never receives half a JSON object, and are sniffed (not parsed) for token counts.
* :func:`openai_to_ollama_stream` translates SSE chunks into Ollama NDJSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from homellm.protocol import translate

STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


@dataclass
class StreamStats:
    """What a relay learned about one response, for the usage log."""

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cancelled: bool = False
    error: str | None = None

    def mark_first(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.started) * 1000


class RelayResponse:
    """An ASGI response that streams ``chunks`` and cancels them when the client disconnects."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        status: int,
        media_type: str,
        stats: StreamStats,
        on_done: Callable[[StreamStats], None],
        headers: dict[str, str] | None = None,
    ) -> None:
        self.chunks = chunks
        self.status = status
        self.media_type = media_type
        self.stats = stats
        self.on_done = on_done
        self.headers = {**STREAM_HEADERS, **(headers or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", self.media_type.encode())]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        finished = False
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            if not finished:
                                self.stats.cancelled = True
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                try:
                    await send({"type": "http.response.start", "status": self.status, "headers": raw_headers})
                    async for chunk in self.chunks:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    finished = True
                except OSError:  # ASGI 2.4 servers raise on send after a disconnect
                    self.stats.cancelled = True
                tg.cancel_scope.cancel()
        finally:
            await self.chunks.aclose()  # type: ignore[attr-defined]
            self.on_done(self.stats)


async def _close(resp: httpx.Response) -> None:
    await resp.aclose()


async def reframe(resp: httpx.Response, separator: bytes) -> AsyncIterator[bytes]:
    """Complete records only (lines or SSE events), batched as they arrive; closes ``resp`` at the end."""
    buf = b""
    try:
        async for data in resp.aiter_bytes():
            buf += data
            cut = buf.rfind(separator)
            if cut >= 0:
                cut += len(separator)
                yield buf[:cut]
                buf = buf[cut:]
        if buf.strip():
            yield buf if buf.endswith(separator) else buf + separator
    finally:
        await _close(resp)


async def ollama_passthrough(resp: httpx.Response, stats: StreamStats) -> AsyncIterator[bytes]:
    """Ollama NDJSON as is; the final ``done`` line gives the token counts."""
    async for block in reframe(resp, b"\n"):
        stats.mark_first()
        if b'"done":true' in block or b'"done": true' in block:
            last = block.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            try:
                final = json.loads(last)
                stats.prompt_tokens = final.get("prompt_eval_count")
                stats.completion_tokens = final.get("eval_count")
            except ValueError:
                pass
        yield block


async def sse_passthrough(resp: httpx.Response, stats: StreamStats) -> AsyncIterator[bytes]:
    """OpenAI SSE as is; usage comes from a ``usage`` chunk if the backend sends one, else we count chunks."""
    counted = 0
    async for block in reframe(resp, b"\n\n"):
        counted += _count_text(block)
        if counted:
            stats.mark_first()
        if b'"usage":{' in block or b'"usage": {' in block:
            for event in block.split(b"\n\n"):
                usage = _event_json(event).get("usage") if event.startswith(b"data:") else None
                if usage:
                    stats.prompt_tokens = usage.get("prompt_tokens")
                    stats.completion_tokens = usage.get("completion_tokens")
        yield block
    if stats.completion_tokens is None:
        stats.completion_tokens = counted


_TEXT_MARKS = (b'"content":"', b'"content": "', b'"text":"', b'"text": "')
_EMPTY_MARKS = (b'"content":""', b'"content": ""', b'"text":""', b'"text": ""')


def _count_text(block: bytes) -> int:
    """Chunks carrying text in a block of SSE events (one token each on llama.cpp-style servers)."""
    return sum(block.count(m) for m in _TEXT_MARKS) - sum(block.count(m) for m in _EMPTY_MARKS)


def _event_json(event: bytes) -> dict[str, Any]:
    data = event.strip()[5:].strip()
    if not data or data == b"[DONE]":
        return {}
    try:
        parsed = json.loads(data)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def openai_to_ollama_stream(
    resp: httpx.Response, kind: str, model: str, stats: StreamStats
) -> AsyncIterator[bytes]:
    """Translate an OpenAI SSE stream into Ollama NDJSON (``kind`` is chat or generate)."""
    timing = translate.Timing()
    finish: str | None = None
    usage: dict[str, Any] | None = None
    counted = 0
    async for block in reframe(resp, b"\n\n"):
        lines = []
        for event in block.split(b"\n\n"):
            if not event.startswith(b"data:"):
                continue
            chunk = _event_json(event)
            if chunk.get("usage"):
                usage = chunk["usage"]
            text, reason = translate.openai_delta(chunk)
            finish = reason or finish
            if text:
                counted += 1
                timing.mark_first()
                stats.mark_first()
                out = translate.chat_chunk(model, text) if kind == "chat" else translate.generate_chunk(model, text)
                lines.append(json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode())
        if lines:
            yield b"\n".join(lines) + b"\n"
    final = translate.final_chunk(kind, model, finish, timing, usage, counted)
    stats.prompt_tokens = final.get("prompt_eval_count")
    stats.completion_tokens = final.get("eval_count")
    yield json.dumps(final, separators=(",", ":")).encode() + b"\n"
