"""Speed metrics, defined once, computed from the timestamps of one streamed request.

* TTFT: from sending the request to the first chunk with non-empty content (a role-only
  first chunk does not count).
* ITL: the gaps between consecutive content chunks.
* TPOT: (last content chunk - first content chunk) / (completion tokens - 1), so the first
  token, which includes the prompt processing, is excluded.
* End-to-end latency: from sending the request to the end of the response.
* Decode tokens/s (client): (completion tokens - 1) / (last - first content chunk).
* Decode tokens/s (server): what the server reports (Ollama eval_count / eval_duration,
  llama-server ``timings.predicted_per_second``); None when it reports nothing.
Completion tokens are the server's count; when it reports none they are counted as content
chunks and the result says so.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field


@dataclass
class RequestTiming:
    start: float
    end: float = 0.0
    content_times: list[float] = field(default_factory=list)  # arrival of each non-empty content chunk
    completion_tokens: int | None = None  # from the server
    prompt_tokens: int | None = None  # from the server
    server_decode_tps: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.content_times)

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else len(self.content_times)

    @property
    def ttft(self) -> float | None:
        return self.content_times[0] - self.start if self.content_times else None

    @property
    def itl(self) -> list[float]:
        t = self.content_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def tpot(self) -> float | None:
        if len(self.content_times) < 2 or self.tokens < 2:
            return None
        return (self.content_times[-1] - self.content_times[0]) / (self.tokens - 1)

    @property
    def e2e(self) -> float:
        return self.end - self.start

    @property
    def client_decode_tps(self) -> float | None:
        tpot = self.tpot
        return 1.0 / tpot if tpot else None


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


@dataclass
class Distribution:
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: list[float]) -> Distribution:
        return cls(statistics.fmean(values) if values else None, percentile(values, 50), percentile(values, 90),
                   percentile(values, 99))  # fmt: skip


@dataclass
class LevelSummary:
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    decode_client: Distribution
    decode_server: Distribution
    requests_per_s: float
    output_tokens_per_s: float
    prompt_tokens: int | None
    server_counted_tokens: bool


def summarize(concurrency: int, timings: list[RequestTiming], wall_s: float) -> LevelSummary:
    ok = [t for t in timings if t.ok]
    servers = [t.server_decode_tps for t in ok if t.server_decode_tps]
    prompts = {t.prompt_tokens for t in ok if t.prompt_tokens is not None}
    return LevelSummary(
        concurrency=concurrency,
        requests=len(timings),
        errors=len(timings) - len(ok),
        wall_s=wall_s,
        ttft=Distribution.of([t.ttft for t in ok if t.ttft is not None]),
        tpot=Distribution.of([t.tpot for t in ok if t.tpot is not None]),
        itl=Distribution.of([gap for t in ok for gap in t.itl]),
        e2e=Distribution.of([t.e2e for t in ok]),
        decode_client=Distribution.of([t.client_decode_tps for t in ok if t.client_decode_tps]),
        decode_server=Distribution.of(servers),
        requests_per_s=len(ok) / wall_s if wall_s > 0 else 0.0,
        output_tokens_per_s=sum(t.tokens for t in ok) / wall_s if wall_s > 0 else 0.0,
        prompt_tokens=round(statistics.fmean(prompts)) if prompts else None,
        server_counted_tokens=all(t.completion_tokens is not None for t in ok) and bool(ok),
    )
