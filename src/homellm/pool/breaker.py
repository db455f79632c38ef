"""The circuit breaker of one pool backend.

After ``failures`` consecutive failed requests the backend is *open* (out) for ``open_s`` seconds;
then it is *half-open*: exactly one request, the probe, is let through, and its outcome decides
(success closes the circuit, failure opens it for another ``open_s``). A failure is the backend
being unreachable, hanging up or answering 502/503/504, never a client's mistake (a 4xx), so that
one key's bad requests cannot take a backend out for everyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half-open"]


class Breaker:
    def __init__(self, failures: int = 3, open_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.open_s = open_s
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.probing = False  # the half-open probe is in flight

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() < self.opened_at + self.open_s else "half-open"

    def reopens_in(self) -> float:
        """Seconds until the next probe may go (0 when closed or half-open)."""
        return 0.0 if self.opened_at is None else max(self.opened_at + self.open_s - self.clock(), 0.0)

    def allows(self) -> bool:
        """May a request go to this backend now? (Half-open: only while no probe is in flight.)"""
        if self.opened_at is None:
            return True
        state = self.state
        return state == "closed" or (state == "half-open" and not self.probing)

    def begin(self) -> bool:
        """A request is about to go; True when it is the half-open probe (its outcome decides)."""
        if self.opened_at is not None and self.state == "half-open":
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> bool:
        """Count a failed request; True when this opened the circuit."""
        self.consecutive += 1
        was_probe, self.probing = self.probing, False
        if was_probe or (self.opened_at is None and self.consecutive >= self.failures):
            self.opened_at = self.clock()
            return True
        return False

    def abandon(self) -> None:
        """The probe ended without a verdict (the client left): the next request probes instead."""
        self.probing = False
