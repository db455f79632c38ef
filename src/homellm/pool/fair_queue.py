"""Requests waiting for a backend, served fairly between keys.

Each key has its own first-in-first-out queue; between keys the order is start-time fair queueing
(SFQ, Goyal et al. 1996) with one unit of work per request: a request gets the start tag
``S = max(V, F_key)`` and its key's finish tag becomes ``F_key = S + 1 / priority``, where ``V`` is the
start tag of the request served last. The waiting request with the smallest start tag goes next
(ties: the one that came first). So a key that was idle starts level with the key being served, and
its single request goes before the second of another key's 200: it waits for at most the requests
already running, one service time. Priorities weight the shares (priority 2 is served twice as often
as 1 while both wait). With ``fair=False`` the order is first come, first served (for comparison).

No I/O and no clock: the router decides when a slot is free and which waiting request it can serve.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Ticket(Generic[T]):
    key: str
    start: float
    seq: int
    item: T
    served_before: int = field(default=0)  # how many requests the queue had served when this one joined it


class FairQueue(Generic[T]):
    def __init__(self, fair: bool = True) -> None:
        self.fair = fair
        self._queues: dict[str, deque[Ticket[T]]] = {}
        self._finish: dict[str, float] = {}
        self._virtual = 0.0
        self._seq = itertools.count()
        self._len = 0
        self.served = 0  # requests taken from the queue so far

    def __len__(self) -> int:
        return self._len

    def waiting(self, key: str) -> int:
        q = self._queues.get(key)
        return len(q) if q else 0

    def push(self, key: str, priority: float, item: T) -> Ticket[T]:
        seq = next(self._seq)
        if self.fair:
            start = max(self._virtual, self._finish.get(key, 0.0))
            self._finish[key] = start + 1.0 / max(priority, 1e-9)
        else:
            start = float(seq)
        ticket = Ticket(key, start, seq, item, self.served)
        self._queues.setdefault(key, deque()).append(ticket)
        self._len += 1
        return ticket

    def charge(self, key: str, priority: float) -> None:
        """A request of ``key`` was served without waiting: it counts in the key's share all the same (else
        the first of a flood, served at once, would leave its key level with a newcomer's)."""
        if self.fair:
            start = max(self._virtual, self._finish.get(key, 0.0))
            self._finish[key] = start + 1.0 / max(priority, 1e-9)
            self._virtual = start

    def position(self, ticket: Ticket[T]) -> int:
        """Requests that would be served before this one if every slot could take any of them."""
        mine = (ticket.start, ticket.seq)
        return sum(1 for q in self._queues.values() for t in q if (t.start, t.seq) < mine)

    def remove(self, ticket: Ticket[T]) -> bool:
        """Take a ticket out without serving it (its request timed out or its client left)."""
        q = self._queues.get(ticket.key)
        if not q or ticket not in q:
            return False
        q.remove(ticket)
        self._len -= 1
        if not q:
            del self._queues[ticket.key]
        return True

    def pop(self, can_serve: Callable[[T], bool]) -> Ticket[T] | None:
        """The next request in fair order among those ``can_serve`` accepts (per key, its first such)."""
        best: Ticket[T] | None = None
        for q in self._queues.values():
            for t in q:
                if can_serve(t.item):
                    if best is None or (t.start, t.seq) < (best.start, best.seq):
                        best = t
                    break  # each key offers its first request this slot can serve
        if best is not None:
            self.remove(best)
            self._virtual = max(self._virtual, best.start)
            self.served += 1
            if self.fair and not self._queues:  # idle: old finish tags carry no debt into the next busy period
                self._finish = {k: f for k, f in self._finish.items() if f > self._virtual}
        return best
