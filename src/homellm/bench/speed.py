"""``homellm bench speed``: latency and throughput at several concurrency levels.

Prompts are synthetic: a unique request number and common words, so no two requests share a
prefix (no prompt cache hides prefill). Their length is calibrated against the server's own
token count before the run. Each level starts with a warm-up request that is not counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from homellm.bench.metrics import LevelSummary, RequestTiming, summarize
from homellm.bench.target import Target
from homellm.errors import HomeLLMError
from homellm.i18n import _

_WORD_TEXT = """
time people way year day thing man world life hand part child eye woman place work week case
point number group problem fact home water room mother area money story month lot right study
book job word business issue side kind head house service friend father power hour game line end
member law car city name team minute idea kid body information back parent face others level
office door health person art war history party result change morning reason research girl guy
moment air teacher force education
"""
WORDS = tuple(_WORD_TEXT.split())  # common single-token English words


@dataclass
class SpeedConfig:
    model: str
    concurrency: list[int]
    prompt_tokens: int = 256
    max_tokens: int = 128
    requests: int | None = None  # per level; default 4 x concurrency
    duration: float | None = None  # per level, instead of a request count
    seed: int = 0


def make_prompt(words: int, uid: int, rng: random.Random) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(max(words, 1)))
    return f"Request {uid}. Continue this list of words for as long as you can: {body}"


async def _count_prompt(t: Target, client: httpx.AsyncClient, model: str, prompt: str) -> int | None:
    """The server's token count for a prompt (a 1-token, non-streamed request)."""
    messages = [{"role": "user", "content": prompt}]
    if t.api == "ollama":
        r = await client.post("/api/chat", json={"model": model, "messages": messages, "stream": False,
                                                 "options": {"num_predict": 1}})  # fmt: skip
        _raise(r)
        value = r.json().get("prompt_eval_count")
    else:
        r = await client.post("/v1/chat/completions", json={"model": model, "messages": messages, "max_tokens": 1})
        _raise(r)
        value = (r.json().get("usage") or {}).get("prompt_tokens")
    return int(value) if isinstance(value, int) and value > 0 else None


def _raise(r: httpx.Response) -> None:
    if r.status_code >= 400:
        try:
            err = r.json().get("error")
            msg = err.get("message") if isinstance(err, dict) else err
        except ValueError:
            msg = r.text[:200]
        raise HomeLLMError(_("the server answered {status_code}: {msg}").format(status_code=r.status_code, msg=msg))


async def calibrate(t: Target, client: httpx.AsyncClient, model: str, target_tokens: int) -> tuple[int, int | None]:
    """(words per prompt, the server's count for such a prompt); count None if the server reports none."""
    rng = random.Random(12345)
    a_words, b_words = 16, 96
    a = await _count_prompt(t, client, model, make_prompt(a_words, 900001, rng))
    b = await _count_prompt(t, client, model, make_prompt(b_words, 900002, rng))
    if a is None or b is None or b <= a:
        return max(target_tokens // 2, 1), None
    per_word = (b - a) / (b_words - a_words)
    words = max(1, round(a_words + (target_tokens - a) / per_word))
    for _attempt in range(3):  # nudge to the exact count
        got = await _count_prompt(t, client, model, make_prompt(words, 900003, random.Random(words)))
        if got is None or got == target_tokens:
            return words, got
        words = max(1, words + round((target_tokens - got) / per_word))
    return words, got


async def one_request(t: Target, client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> RequestTiming:
    timing = RequestTiming(start=time.perf_counter())
    messages = [{"role": "user", "content": prompt}]
    try:
        if t.api == "ollama":
            body: dict[str, Any] = {"model": model, "messages": messages, "stream": True,
                                    "options": {"num_predict": max_tokens, "temperature": 0.7}}  # fmt: skip
            async with client.stream("POST", "/api/chat", json=body) as r:
                if r.status_code >= 400:
                    await r.aread()
                    _raise(r)
                async for line in r.aiter_lines():
                    if not line:
                        continue
                    chunk = json.loads(line)
                    if (chunk.get("message") or {}).get("content"):
                        timing.content_times.append(time.perf_counter())
                    if chunk.get("done"):
                        timing.completion_tokens = chunk.get("eval_count")
                        timing.prompt_tokens = chunk.get("prompt_eval_count")
                        if chunk.get("eval_count") and chunk.get("eval_duration"):
                            timing.server_decode_tps = chunk["eval_count"] / (chunk["eval_duration"] / 1e9)
        else:
            body = {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens,
                    "stream_options": {"include_usage": True}}  # fmt: skip
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    await r.aread()
                    _raise(r)
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        timing.content_times.append(time.perf_counter())
                    usage = chunk.get("usage") or {}
                    if usage:
                        timing.completion_tokens = usage.get("completion_tokens")
                        timing.prompt_tokens = usage.get("prompt_tokens")
                    tps = (chunk.get("timings") or {}).get("predicted_per_second")
                    if tps:
                        timing.server_decode_tps = float(tps)
    except (httpx.HTTPError, HomeLLMError, ValueError) as exc:
        timing.error = str(exc) or type(exc).__name__
    timing.end = time.perf_counter()
    return timing


async def run_level(
    t: Target, cfg: SpeedConfig, concurrency: int, words: int, tick: Callable[[], None], uid_base: int
) -> tuple[list[RequestTiming], float]:
    limits = httpx.Limits(max_connections=concurrency + 1)
    async with t.client(limits=limits, timeout=httpx.Timeout(30, read=600)) as client:
        rng = random.Random(cfg.seed * 1000 + concurrency)
        await one_request(t, client, cfg.model, make_prompt(words, uid_base, rng), cfg.max_tokens)  # warm-up
        total = cfg.requests or 4 * concurrency
        deadline = time.perf_counter() + cfg.duration if cfg.duration else None
        counter = iter(range(1, 10**9))
        results: list[RequestTiming] = []

        async def worker() -> None:
            while True:
                n = next(counter)
                if deadline is None and n > total:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                prompt = make_prompt(words, uid_base + n, rng)
                results.append(await one_request(t, client, cfg.model, prompt, cfg.max_tokens))
                tick()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - start


@dataclass
class SpeedRun:
    target: str
    server: str
    model: str
    config: SpeedConfig
    prompt_words: int
    calibrated_prompt_tokens: int | None
    levels: list[LevelSummary]
    started_at: float


async def run_speed(t: Target, cfg: SpeedConfig, tick: Callable[[], None]) -> SpeedRun:
    started = time.time()
    async with t.client(timeout=httpx.Timeout(30, read=600)) as client:
        words, counted = await calibrate(t, client, cfg.model, cfg.prompt_tokens)
    levels = []
    for i, c in enumerate(cfg.concurrency):
        timings, wall = await run_level(t, cfg, c, words, tick, uid_base=(i + 1) * 100000)
        levels.append(summarize(c, timings, wall))
    return SpeedRun(t.label, t.server, cfg.model, cfg, words, counted, levels, started)
