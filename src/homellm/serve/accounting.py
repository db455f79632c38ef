"""After every request, exactly once: its usage row and its metrics.

Labels come from the route table (``Ctx.label``), never from the request, so unknown paths cannot
grow the metrics. Prompt text is stored only when ``log_prompts`` is on, and bounded.
"""

from __future__ import annotations

import time
from typing import Any

from homellm.serve.metrics import Metrics
from homellm.serve.request import Ctx
from homellm.store.usage import UsageRecord, UsageWriter

MAX_STORED_TEXT = 10_000


class Accounting:
    def __init__(self, usage: UsageWriter, metrics: Metrics) -> None:
        self.usage = usage
        self.metrics = metrics
        # the label sets are few (routes x statuses): keep their children instead of looking them up per request
        self._requests: dict[tuple[str, int], Any] = {}
        self._durations: dict[str, Any] = {}

    def finish(self, ctx: Ctx) -> None:
        stats = ctx.stats
        duration = time.perf_counter() - ctx.started
        status = 499 if stats.cancelled and not stats.error else (stats.error_status or ctx.status)
        m = self.metrics
        counter = self._requests.get((ctx.label, status))
        if counter is None:
            counter = self._requests[(ctx.label, status)] = m.requests.labels(ctx.label, str(status))
        counter.inc()
        histogram = self._durations.get(ctx.label)
        if histogram is None:
            histogram = self._durations[ctx.label] = m.duration.labels(ctx.label)
        histogram.observe(duration)
        if stats.cancelled:
            m.cancelled.inc()
        if ctx.model and ctx.status < 400:
            if stats.prompt_tokens:
                m.tokens.labels(ctx.model, "prompt").inc(stats.prompt_tokens)
            if stats.completion_tokens:
                m.tokens.labels(ctx.model, "completion").inc(stats.completion_tokens)
            if stats.ttft_ms is not None:
                m.ttft.labels(ctx.model).observe(stats.ttft_ms / 1000)
        self.usage.record(
            UsageRecord(
                ts=time.time(),
                key_name=ctx.key.name if ctx.key else None,
                client_ip=ctx.client_ip,
                method=ctx.method,
                route=ctx.label,
                model=ctx.model,
                status=status,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
                ttft_ms=stats.ttft_ms,
                duration_ms=duration * 1000,
                cancelled=stats.cancelled,
                prompt=ctx.prompt[:MAX_STORED_TEXT] if ctx.prompt else None,
                error=stats.error[:500] if stats.error else None,
                queue_ms=stats.queue_ms,
                backend=stats.backend,
                queue_position=stats.queue_position,
            )
        )
