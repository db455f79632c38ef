"""Per-key quotas: requests and tokens per UTC day, enforced from the usage log.

A key's use today is read from the usage table the first time the key asks (so a restarted gateway
keeps counting), then kept in memory as requests finish. A request counts when it was answered or its
client left (a refusal or a backend failure does not); its prompt and completion tokens count in all
cases. Requests in flight count against the request quota, so a burst cannot overshoot it; a request
that crosses the token quota finishes, and the next one is refused with 429 and the reset time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from homellm.errors import GatewayError
from homellm.i18n import _
from homellm.serve.request import Ctx
from homellm.store.usage import used_today

DAY = 86400


def inference_labels() -> tuple[str, ...]:
    from homellm.serve.policy import ROUTES

    return tuple(sorted({r.label for r in ROUTES.values() if r.inference}))


def reset_in(now: float) -> float:
    """Seconds until the next UTC midnight."""
    return (int(now // DAY) + 1) * DAY - now


def duration_words(seconds: float) -> str:
    minutes = max(int(seconds // 60), 1)
    return (
        _("{h} h {m} min").format(h=minutes // 60, m=minutes % 60) if minutes >= 60 else _("{m} min").format(m=minutes)
    )


class Quotas:
    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self.routes = inference_labels()
        self._day = -1
        self._used: dict[str, list[int]] = {}  # key name -> [requests, tokens] finished today
        self._running: dict[str, int] = {}

    def _today(self, key: str) -> list[int]:
        now = self.clock()
        day = int(now // DAY)
        if day != self._day:
            self._day, self._used = day, {}
        used = self._used.get(key)
        if used is None:
            used = self._used[key] = list(used_today(self.db, key, day * DAY, self.routes))
        return used

    def admit(self, ctx: Ctx) -> None:
        """Refuse a request of a key over its quota (429 with the reset time); count it as running."""
        key = ctx.key
        if key is None or not key.has_quota:
            return
        requests, tokens = self._today(key.name)
        running = self._running.get(key.name, 0)
        wait = reset_in(self.clock())
        headers = {"Retry-After": str(int(wait) + 1)}
        if key.requests_per_day is not None and requests + running >= key.requests_per_day:
            raise GatewayError(429, _("key {key!r} has used its {n} requests for today; the quota resets at 00:00 UTC, "
                                      "in {wait}").format(key=key.name, n=key.requests_per_day,
                                                          wait=duration_words(wait)), headers=headers)  # fmt: skip
        if key.tokens_per_day is not None and tokens >= key.tokens_per_day:
            raise GatewayError(429, _("key {key!r} has used its {n} tokens for today; the quota resets at 00:00 UTC, "
                                      "in {wait}").format(key=key.name, n=key.tokens_per_day,
                                                          wait=duration_words(wait)), headers=headers)  # fmt: skip
        self._running[key.name] = running + 1
        ctx.quota = True

    def finish(self, ctx: Ctx) -> None:
        if not ctx.quota or ctx.key is None:
            return
        ctx.quota = False
        name = ctx.key.name
        self._running[name] = max(self._running.get(name, 1) - 1, 0)
        stats = ctx.stats
        used = self._today(name)
        status = stats.error_status or ctx.status
        if status < 400 or stats.cancelled:
            used[0] += 1
        used[1] += (stats.prompt_tokens or 0) + (stats.completion_tokens or 0)
