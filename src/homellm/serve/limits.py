"""Per-key limits: requests per minute (sliding window) and concurrent requests."""

from __future__ import annotations

import math
import time
from collections import deque


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str, now: float | None = None) -> float:
        """0 if the request may go ahead (and counts it), else seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return max(hits[0] + 60 - now, 0.001)
        hits.append(now)
        return 0.0


class ConcurrencyLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        if self.limit <= 0:
            return True
        if self.active.get(key, 0) >= self.limit:
            return False
        self.active[key] = self.active.get(key, 0) + 1
        return True

    def release(self, key: str) -> None:
        if self.limit > 0 and self.active.get(key, 0) > 0:
            self.active[key] -= 1


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
