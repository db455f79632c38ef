"""Relaying backend streams to clients as they come.

* :class:`Relay` sends records the moment they arrive and watches the client the whole time: a
  client that leaves, or stops reading for ``send_timeout`` seconds, closes the upstream response,
  which makes llama.cpp, Ollama and vLLM stop generating. A backend that dies or goes silent
  mid-stream ends the client's stream with an explicit error record in its front's format.
* Streams are re-framed on line (NDJSON) or event (SSE) boundaries, so a client never receives
  half a JSON object. Passthrough streams are sniffed (not re-encoded) for token counts.
* :func:`ndjson_from_openai` translates SSE chunks into Ollama NDJSON; :func:`collect_openai`
  reads a whole SSE stream into one answer (for a non-streamed request the gateway streamed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError
from homellm.i18n import _
from homellm.protocol import translate
from homellm.serve.request import Ctx, Receive, Scope, Send, error_data

if TYPE_CHECKING:
    from homellm.serve.backends import Backend
    from homellm.serve.policy import Front
    from homellm.serve.upstream import UpstreamResponse

STREAM_HEADERS = [(b"x-accel-buffering", b"no"), (b"cache-control", b"no-cache")]
MAX_RECORD = 8 * 1024 * 1024  # a backend line longer than this is an error, not a reason to run out of memory


class UpstreamError(Exception):
    """The backend failed mid-stream (already mapped to the status and message the client sees)."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(str(error))
        self.error = error


async def records(resp: UpstreamResponse, separator: bytes, backend: Backend) -> AsyncIterator[bytes]:
    """Complete records only (lines or SSE events), batched as they arrive; closes ``resp`` at the end."""
    buf = b""
    try:
        async for data in resp.chunks():
            buf += data
            cut = buf.rfind(separator)
            if cut >= 0:
                cut += len(separator)
                yield buf[:cut]
                buf = buf[cut:]
            if len(buf) > MAX_RECORD:
                raise UpstreamError(GatewayError(502, _("the backend sent a record larger than 8 MiB")))
        if buf.strip():
            yield buf if buf.endswith(separator) else buf + separator
    except (UpstreamError, asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as exc:
        raise UpstreamError(await backend.failure(exc)) from exc
    finally:
        resp.close()  # an unfinished stream closes its connection, which stops the backend


def _event_json(event: bytes) -> dict[str, Any]:
    data = event.strip()
    if not data.startswith(b"data:"):
        return {}
    data = data[5:].strip()
    if not data or data == b"[DONE]":
        return {}
    try:
        parsed = json.loads(data)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


async def ndjson_passthrough(upstream: AsyncIterator[bytes], ctx: Ctx) -> AsyncIterator[bytes]:
    """Ollama NDJSON as is; the final ``done`` line gives the token counts, an ``error`` line the failure."""
    stats = ctx.stats
    async for block in upstream:
        stats.mark_first()
        if b'"done":true' in block or b'"done": true' in block or b'"error"' in block:
            for line in block.splitlines():
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("done"):
                    stats.prompt_tokens = rec.get("prompt_eval_count")
                    stats.completion_tokens = rec.get("eval_count")
                elif isinstance(rec, dict) and "error" in rec:
                    stats.fail(502, str(rec["error"])[:500])
        yield block


_TEXT_MARKS = (b'"content":"', b'"content": "', b'"text":"', b'"text": "')
_EMPTY_MARKS = (b'"content":""', b'"content": ""', b'"text":""', b'"text": ""')


def _count_text(block: bytes) -> int:
    """Chunks carrying text in a block of SSE events (one token each on llama.cpp-style servers)."""
    return sum(block.count(m) for m in _TEXT_MARKS) - sum(block.count(m) for m in _EMPTY_MARKS)


async def sse_passthrough(upstream: AsyncIterator[bytes], ctx: Ctx, want_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI SSE as is. Usage comes from the backend's usage chunk, else from counting chunks; when the
    client asked for ``stream_options.include_usage`` and the backend sent none, the gateway adds it."""
    stats = ctx.stats
    counted = 0
    usage_sent = False
    async for block in upstream:
        counted += _count_text(block)
        if counted:
            stats.mark_first()
        tail = b""
        if b'"usage"' in block or b'"error"' in block or b"[DONE]" in block:
            for event in block.split(b"\n\n"):
                chunk = _event_json(event)
                usage = chunk.get("usage")
                if isinstance(usage, dict) and usage:
                    stats.prompt_tokens = usage.get("prompt_tokens")
                    stats.completion_tokens = usage.get("completion_tokens")
                    usage_sent = True
                message = translate.error_message(chunk)
                if message is not None:
                    stats.fail(502, message)
            if want_usage and not usage_sent and b"data: [DONE]" in block:
                head, _sep, rest = block.partition(b"data: [DONE]")
                block, tail = head, b"data: [DONE]" + rest
                block += _usage_event(counted, stats.prompt_tokens)
                usage_sent = True
        yield block + tail
    if stats.completion_tokens is None:
        stats.completion_tokens = counted


def _usage_event(completion: int, prompt: int | None) -> bytes:
    usage = {"prompt_tokens": prompt or 0, "completion_tokens": completion, "total_tokens": (prompt or 0) + completion}
    return b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [], "usage": usage}).encode() + b"\n\n"


async def ndjson_from_openai(
    upstream: AsyncIterator[bytes],
    ctx: Ctx,
    out: translate.OllamaStream,
    before_final: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """An OpenAI SSE stream as Ollama NDJSON; an error event becomes an Ollama error line.
    ``before_final`` runs before the closing ``done`` line (to count prompt tokens the backend did not)."""
    stats = ctx.stats
    async for block in upstream:
        lines = []
        for event in block.split(b"\n\n"):
            chunk = _event_json(event)
            if not chunk:
                continue
            message = translate.error_message(chunk)
            if message is not None:
                raise UpstreamError(GatewayError(502, _("backend: {message}").format(message=message)))
            for obj in out.feed(chunk):
                stats.mark_first()
                lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())
        if lines:
            yield b"\n".join(lines) + b"\n"
    if before_final is not None:
        await before_final()
    tools = out.tool_chunk()
    final = out.final()
    stats.prompt_tokens = final.get("prompt_eval_count")
    stats.completion_tokens = final.get("eval_count")
    pre = json.dumps(tools, separators=(",", ":")).encode() + b"\n" if tools else b""
    yield pre + json.dumps(final, separators=(",", ":")).encode() + b"\n"


async def collect_openai(
    upstream: AsyncIterator[bytes], ctx: Ctx, sink: translate.OllamaStream | translate.OpenAIWhole
) -> None:
    """Read a whole OpenAI SSE stream into ``sink``; an error event raises GatewayError(502)."""
    async for block in upstream:
        for event in block.split(b"\n\n"):
            chunk = _event_json(event)
            if not chunk:
                continue
            message = translate.error_message(chunk)
            if message is not None:
                raise GatewayError(502, _("backend: {message}").format(message=message))
            if chunk.get("choices"):
                ctx.stats.mark_first()
            sink.feed(chunk)


def error_record(front: Front, error: GatewayError) -> bytes:
    """The terminal record of a stream that failed: an NDJSON error line, or an SSE error event then [DONE]."""
    data = json.dumps(error_data(front, error), ensure_ascii=False).encode()
    if front == "openai":
        return b"data: " + data + b"\n\ndata: [DONE]\n\n"
    return data + b"\n"


class Relay:
    """An ASGI reply that streams ``chunks``, watches the client, and never leaves a stream without an end."""

    def __init__(
        self, chunks: AsyncIterator[bytes], upstream: UpstreamResponse, media_type: str, ctx: Ctx,
        send_timeout: float,
    ) -> None:  # fmt: skip
        self.chunks = chunks
        self.upstream = upstream
        self.status = upstream.status
        self.media_type = media_type
        self.ctx = ctx
        self.send_timeout = send_timeout
        self.headers = [(b"content-type", media_type.encode()), *STREAM_HEADERS]

    def add_headers(self, headers: dict[str, str]) -> None:
        self.headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A client leaving cancels this task (the server's protocol does it, see serve/server.py): the
        ``finally`` below then closes the upstream response, which stops the backend's generation."""
        ctx, stats = self.ctx, self.ctx.stats
        try:
            await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
            ctx.response_started = True
            try:
                async for chunk in self.chunks:
                    async with asyncio.timeout(self.send_timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError as exc:
                stats.fail(exc.error.status, str(exc.error))
                async with asyncio.timeout(self.send_timeout):
                    await send(
                        {"type": "http.response.body", "body": error_record(ctx.front, exc.error), "more_body": True}
                    )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            stats.cancelled = True
            stats.fail(408, _("the client stopped reading for {s:.0f} s").format(s=self.send_timeout))
        except OSError:  # ASGI servers may raise on send after a disconnect
            stats.cancelled = True
        finally:
            self.upstream.close()  # closing the connection is what stops the backend's generation, at once
            await self.chunks.aclose()  # type: ignore[attr-defined]
