"""A load generator for soak and fault runs: concurrent clients sending a mix of streamed and whole
requests to both APIs, checking every answer and logging when each one completed.

It expects a backend that answers ``tok0 tok1 ...`` (the scripted backend, or the Go synthetic one
in ``benchmarks/``). Every request carries a unique prompt (``tag``), so that with ``log_prompts`` on
its usage row can be found again; ``finished`` is wall-clock time, comparable with the ``ts`` column.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp

KINDS = ("ollama-stream", "ollama-whole", "openai-stream", "openai-whole")


@dataclass
class Outcome:
    tag: str
    kind: str
    started: float  # time.time()
    finished: float
    status: int  # 0: no answer
    error: str | None  # None: the answer was complete and exactly what the backend sent

    @property
    def ok(self) -> bool:
        return self.error is None


def expected_text(tokens: int) -> str:
    return "".join(f"tok{i} " for i in range(tokens))


def request_for(kind: str, tag: str, tokens: int, model: str = "fake:small") -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": tag}]
    stream = kind.endswith("stream")
    if kind.startswith("ollama"):
        return "/api/chat", {"model": model, "messages": messages, "stream": stream, "options": {"num_predict": tokens}}
    return "/v1/chat/completions", {"model": model, "messages": messages, "stream": stream, "max_tokens": tokens}


def check_answer(kind: str, body: bytes, tokens: int) -> str | None:
    """None when ``body`` is a complete, correct answer of this kind; else what is wrong."""
    want = expected_text(tokens)
    try:
        if kind == "ollama-whole":
            got = json.loads(body)["message"]["content"]
        elif kind == "openai-whole":
            got = json.loads(body)["choices"][0]["message"]["content"]
        elif kind == "ollama-stream":
            lines = [json.loads(x) for x in body.splitlines() if x.strip()]
            if not lines or not lines[-1].get("done") or any("error" in x for x in lines):
                return f"stream did not end with done: {body[-200:]!r}"
            got = "".join(x.get("message", {}).get("content", "") for x in lines)
        else:
            events = [e.strip() for e in body.split(b"\n\n") if e.strip()]
            if not events or events[-1] != b"data: [DONE]":
                return f"stream did not end with [DONE]: {body[-200:]!r}"
            chunks = [json.loads(e[5:]) for e in events[:-1]]
            if any("error" in c for c in chunks):
                return f"error event: {body[-300:]!r}"
            got = "".join((c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c["choices"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unreadable answer ({type(exc).__name__}): {body[:200]!r}"
    return None if got == want else f"wrong text: {got[:80]!r}"


async def one(session: aiohttp.ClientSession, kind: str, tag: str, tokens: int) -> Outcome:
    import aiohttp

    path, payload = request_for(kind, tag, tokens)
    started = time.time()
    status = 0
    try:
        async with session.post(path, json=payload) as resp:
            status = resp.status
            body = await resp.read()
        error = f"HTTP {status}: {body[:200]!r}" if status != 200 else check_answer(kind, body, tokens)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Outcome(tag, kind, started, time.time(), status, error)


def session_for(url: str, key: str, local_addr: str | None = None, limit: int = 0, **kw: Any) -> aiohttp.ClientSession:
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=limit, local_addr=(local_addr, 0) if local_addr else None, force_close=False, enable_cleanup_closed=True
    )
    timeout = aiohttp.ClientTimeout(total=kw.pop("timeout", 60))
    return aiohttp.ClientSession(
        url, connector=connector, timeout=timeout, headers={"Authorization": f"Bearer {key}"}, **kw
    )


async def run_load(
    url: str,
    key: str,
    concurrency: int,
    stop: Callable[[], bool],
    kinds: Sequence[str] = KINDS,
    tokens: int = 20,
    prefix: str = "req",
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """``concurrency`` clients, each sending one request after another until ``stop()`` is true."""
    outcomes: list[Outcome] = []
    numbers = itertools.count()
    async with session_for(url, key, limit=concurrency) as session:

        async def client(worker: int) -> None:
            while not stop():
                n = next(numbers)
                outcome = await one(session, kinds[(n + worker) % len(kinds)], f"{prefix}-{n}", tokens)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

        await asyncio.gather(*(client(w) for w in range(concurrency)))
    return outcomes
