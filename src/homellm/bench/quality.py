"""``homellm bench quality``: generative evaluation through the chat API, resumable.

Each answer is appended to HOMELLM_HOME/bench/quality/RUN.jsonl as soon as it is graded; a
run with the same target, model, suite, data, limit and seed continues where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from homellm.bench import grading
from homellm.bench.datasets import Item
from homellm.bench.sandbox import run_program
from homellm.bench.target import Target
from homellm.errors import HomeLLMError
from homellm.i18n import _

PUBLISHED_NAMES = {"gsm8k": "GSM8K", "mmlu": "MMLU", "humaneval": "HumanEval"}
OUR_METHOD = {
    "gsm8k": "0-shot chain of thought, temperature 0, generative",
    "mmlu": "0-shot chain of thought (simple-evals template), temperature 0, generative",
    "humaneval": "0-shot, temperature 0, pass@1 in a sandbox",
}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Graded:
    id: str
    response: str
    strict: bool
    flexible: bool
    extracted: str | None = None
    expected: str | None = None
    detail: str = ""


def prompt_for(suite: str, item: Item) -> str:
    d = item.data
    if suite == "gsm8k":
        return grading.GSM8K_PROMPT.format(question=d["question"])
    if suite == "mmlu":
        a, b, c, e = d["choices"]
        return grading.MMLU_PROMPT.format(question=d["question"], a=a, b=b, c=c, d=e)
    return grading.HUMANEVAL_PROMPT.format(prompt=d["prompt"])


def grade(suite: str, item: Item, response: str) -> Graded:
    d = item.data
    if suite == "gsm8k":
        strict, flexible = grading.gsm8k_strict(response), grading.gsm8k_flexible(response)
        expected = grading.normalize_number(d["answer"])
        return Graded(item.id, response, strict == expected, flexible == expected, strict or flexible, expected)
    if suite == "mmlu":
        strict, flexible = grading.mmlu_strict(response), grading.mmlu_flexible(response)
        return Graded(
            item.id, response, strict == d["answer"], flexible == d["answer"], strict or flexible, d["answer"]
        )
    program = grading.extract_code(response, d["prompt"]) + "\n\n" + d["test"] + f"\n\ncheck({d['entry_point']})\n"
    result = run_program(program)
    return Graded(item.id, response, result.passed, result.passed, None, None, f"{result.status}: {result.detail}")


async def ask(t: Target, client: httpx.AsyncClient, model: str, prompt: str, seed: int, max_tokens: int) -> str:
    messages = [{"role": "user", "content": prompt}]
    if t.api == "ollama":
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": False,
                                "options": {"temperature": 0, "seed": seed, "num_predict": max_tokens}}  # fmt: skip
        r = await client.post("/api/chat", json=body)
    else:
        r = await client.post("/v1/chat/completions", json={"model": model, "messages": messages, "temperature": 0,
                                                            "seed": seed, "max_tokens": max_tokens})  # fmt: skip
    if r.status_code >= 400:
        raise HomeLLMError(
            _("the server answered {status_code}: {text}").format(status_code=r.status_code, text=r.text[:200])
        )
    data = r.json()
    if t.api == "ollama":
        return str((data.get("message") or {}).get("content", ""))
    return str(((data.get("choices") or [{}])[0].get("message") or {}).get("content", ""))


@dataclass
class QualityRun:
    run_id: str
    target: str
    server: str
    model: str
    suite: str
    source: str
    seed: int
    n: int
    strict: int
    flexible: int
    errors: int
    started_at: float
    published: list[dict[str, Any]] = field(default_factory=list)
    method: str = ""

    @property
    def accuracy(self) -> float:
        return self.strict / self.n if self.n else 0.0

    @property
    def flexible_accuracy(self) -> float:
        return self.flexible / self.n if self.n else 0.0

    def to_json(self) -> dict[str, Any]:
        lo, hi = wilson(self.strict, self.n)
        flo, fhi = wilson(self.flexible, self.n)
        return asdict(self) | {"kind": "quality", "accuracy": self.accuracy, "ci95": [lo, hi],
                               "flexible_accuracy": self.flexible_accuracy, "flexible_ci95": [flo, fhi]}  # fmt: skip


def run_id(target: str, model: str, suite: str, source: str, limit: int | None, seed: int) -> str:
    key = json.dumps([target, model, suite, source, limit, seed])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def published_scores(model: str, suite: str) -> list[dict[str, Any]]:
    from homellm.catalog import load_catalog
    from homellm.errors import NotFoundError

    try:
        spec = load_catalog().model(model)
    except NotFoundError:
        return []
    return [b.model_dump() for b in spec.benchmarks if b.benchmark == PUBLISHED_NAMES[suite]]


async def run_quality(
    t: Target,
    model: str,
    suite: str,
    items: list[Item],
    source: str,
    limit: int | None,
    seed: int,
    folder: Path,
    concurrency: int,
    tick: Callable[[Graded | None], None],
) -> QualityRun:
    rid = run_id(t.label, model, suite, source, limit, seed)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{rid}.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["id"]] = rec
    todo = [i for i in items if i.id not in done]
    for _done in range(len(items) - len(todo)):
        tick(None)
    errors = 0
    max_tokens = 768 if suite == "humaneval" else 512
    sem = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()

    async with t.client(timeout=httpx.Timeout(30, read=900)) as client:

        async def one(item: Item) -> None:
            nonlocal errors
            async with sem:
                try:
                    response = await ask(t, client, model, prompt_for(suite, item), seed, max_tokens)
                except (httpx.HTTPError, HomeLLMError):
                    errors += 1
                    tick(None)
                    return
                graded = await asyncio.to_thread(grade, suite, item, response)
            async with lock:
                with log.open("a") as fh:
                    fh.write(json.dumps(asdict(graded)) + "\n")
                done[item.id] = asdict(graded)
            tick(graded)

        await asyncio.gather(*(one(i) for i in todo))
    results = [done[i.id] for i in items if i.id in done]
    return QualityRun(rid, t.label, t.server, model, suite, source, seed, len(results),
                      sum(r["strict"] for r in results), sum(r["flexible"] for r in results), errors, time.time(),
                      published_scores(model, suite), OUR_METHOD[suite])  # fmt: skip
