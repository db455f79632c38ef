"""Which backend answers a request: the pool's members, their health, and the queue in front of them.

For a request naming model M, among the members that are up, whose circuit is not open, that have M
and that have a free slot (fewer requests running than their ``max_concurrency``, or no cap), the
router picks, in this order:

1. those where M is loaded now (Ollama's ``/api/ps``; any other server, and the engine, serves what
   it lists), which saves a 10-30 s model load;
2. then the highest ``priority`` tier (primary and backup);
3. then the least outstanding work per unit of ``weight`` (ties: the fewest requests served per weight,
   so a quiet pool still shares by weight).

When every member that has M is busy, the request waits in its key's queue and is served in fair
order between keys (:mod:`homellm.pool.fair_queue`); the queue is bounded per key and in time (429
with Retry-After beyond). A failed request (the backend unreachable, hanging up, or answering
502/503/504) counts against the member's circuit breaker (:mod:`homellm.pool.breaker`) and marks it
down until its next health check passes; the forwarder then retries on another member if nothing has
reached the client yet. Each member is checked every ``health_interval_s`` (models, and what is loaded).

It knows nothing of HTTP fronts: the forwarder asks it for a :class:`Lease` and gives it back. With one
backend and no concurrency cap (the common case), :attr:`Router.single` is that backend and the
forwarder never calls the router on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError
from homellm.i18n import _
from homellm.pool.breaker import Breaker
from homellm.pool.fair_queue import FairQueue
from homellm.serve.backends import Backend, ModelEntry
from homellm.serve.limits import retry_after

if TYPE_CHECKING:
    from homellm.serve.metrics import Metrics
    from homellm.settings import Settings

log = logging.getLogger("homellm.gateway")
PROBE_TIMEOUT = 1.0  # a health check that takes longer marks an idle backend down
FIRST_PROBE_TIMEOUT = 5.0


def model_key(name: str) -> str:
    """``qwen2.5`` and ``qwen2.5:latest`` are one model (Ollama's rule); case is kept."""
    return name.removesuffix(":latest")


@dataclass(frozen=True)
class PoolOptions:
    health_interval_s: float = 0.5
    breaker_failures: int = 3
    breaker_open_s: float = 30.0
    fair: bool = True
    queue_per_key: int = 256
    queue_wait_s: float = 120.0

    @classmethod
    def from_settings(cls, s: Settings) -> PoolOptions:
        return cls(s.health_interval_s, s.breaker_failures, s.breaker_open_s, s.fair_queueing, s.queue_per_key,
                   s.queue_wait_s)  # fmt: skip


@dataclass(eq=False)
class Member:
    """One backend in the pool, with what the health checks and the requests taught the router."""

    name: str
    backend: Backend
    priority: int = 0
    weight: float = 1.0
    max_concurrency: int = 0  # 0: no cap
    joined: bool = False  # a machine added with `homellm join` (not from the settings)
    up: bool = True
    detail: str = ""  # why it is down
    entries: list[ModelEntry] = field(default_factory=list)
    names: frozenset[str] = frozenset()  # its models as Ollama reads them (``x`` is ``x:latest``)
    exact: frozenset[str] = frozenset()  # its models as it lists them
    ps: list[dict[str, Any]] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)
    outstanding: int = 0
    served: int = 0
    failures: int = 0
    checked_at: float | None = None
    reads_seen: int = -1  # the backend's data arrivals at the last health check
    answered: Any = None  # its requests counter in the metrics (a cached child)
    breaker: Breaker = field(default_factory=Breaker)

    def has(self, model: str) -> bool:
        """Whether it serves ``model`` under that name. Only Ollama reads ``x:latest`` as ``x``: an
        OpenAI-compatible server (llama-cpp-python's, the embedded engine's) answers a name it does not
        list with its default model, which the key may not be allowed to use."""
        if self.backend.kind == "ollama":
            return model_key(model) in self.names
        return model in self.exact

    def warm(self, model: str) -> bool:
        return model_key(model) in self.loaded

    def free(self) -> bool:
        return self.max_concurrency == 0 or self.outstanding < self.max_concurrency

    def usable(self) -> bool:
        return self.up and self.breaker.allows()

    def state(self) -> str:
        if not self.up:
            return "down"
        breaker = self.breaker.state
        return "up" if breaker == "closed" else breaker

    def learn(self, entries: list[ModelEntry], ps: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.names = frozenset(model_key(e.name) for e in entries)
        self.exact = frozenset(e.name for e in entries)
        self.ps = ps
        self.loaded = {model_key(str(m.get("name") or m.get("model") or "")) for m in ps}


class Lease:
    """A slot on a member, held while a request runs there (a stream: until it ends). Requests that
    take no slot (``/api/show``, model management) hold a lease with ``slot=False``, for its verdict."""

    __slots__ = ("_done", "_router", "_started", "decided", "member", "position", "probe", "queue_ms", "slot")

    def __init__(self, router: Router, member: Member, probe: bool, slot: bool = True) -> None:
        self._router = router
        self.member = member
        self.probe = probe
        self.slot = slot
        self.queue_ms: float | None = None
        self.position: int | None = None
        self._started = time.monotonic()
        self._done = False
        self.decided = False

    @property
    def backend(self) -> Backend:
        return self.member.backend

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._router._release(self, time.monotonic() - self._started)


@dataclass(eq=False)
class _Waiter:
    model: str | None
    exclude: frozenset[str]
    future: asyncio.Future[Lease]
    chosen: Member | None = None
    ahead: int = 0  # requests taken from the queue before it while it waited


class Router:
    def __init__(
        self,
        members: list[Member],
        options: PoolOptions | None = None,
        metrics: Metrics | None = None,
        watch: Callable[[], Awaitable[list[Member] | None]] | None = None,
    ) -> None:
        self.options = options or PoolOptions()
        self.members: list[Member] = []
        self.metrics = metrics
        self.watch = watch  # the joined workers, when they changed (the gateway reads its database)
        self.queue: FairQueue[_Waiter] = FairQueue(self.options.fair)
        self.single: Backend | None = None
        self.service_s = 1.0  # running mean of how long a request holds its slot (for Retry-After)
        self._checkers: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._started = False
        for m in members:
            self._add(m)

    def use_metrics(self, metrics: Metrics) -> None:
        self.metrics = metrics
        for m in self.members:
            m.answered = metrics.backend_requests.labels(m.name)

    @classmethod
    def of(cls, backend: Backend, options: PoolOptions | None = None, metrics: Metrics | None = None) -> Router:
        return cls([Member("default", backend)], options, metrics)

    # ---- membership ---------------------------------------------------------------------------

    def _add(self, m: Member) -> None:
        m.breaker = Breaker(self.options.breaker_failures, self.options.breaker_open_s)
        if self.metrics is not None:
            m.answered = self.metrics.backend_requests.labels(m.name)
        self.members.append(m)
        self._reshape()

    def _reshape(self) -> None:
        only = self.members[0] if len(self.members) == 1 else None
        self.single = only.backend if only is not None and only.max_concurrency == 0 else None
        if self._started and self.single is None:
            for m in self.members:
                if m.name not in self._checkers:
                    self._checkers[m.name] = asyncio.create_task(self._check_loop(m))

    @property
    def pooled(self) -> bool:
        return self.single is None

    def describe(self) -> str:
        if self.single is not None:
            return self.single.describe()
        names = ", ".join(f"{m.name} ({m.backend.describe()})" for m in self.members)
        return _("a pool of {n} backends: {names}").format(n=len(self.members), names=names)

    def kinds(self) -> set[str]:
        return {m.backend.kind for m in self.members}

    async def start(self) -> None:
        await asyncio.gather(*(m.backend.start() for m in self.members))
        self._started = True
        if self.pooled:  # the first look is patient: backends (and this machine) may be busy starting
            await asyncio.gather(*(self._check(m, FIRST_PROBE_TIMEOUT) for m in self.members))
        self._reshape()
        if self.watch is not None:
            joined = await self.watch()
            if joined:
                await self.sync_joined(joined)
            self._watcher = asyncio.create_task(self._watch_loop())

    async def close(self) -> None:
        tasks = [*self._checkers.values(), *([self._watcher] if self._watcher else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.gather(*(m.backend.close() for m in self.members), return_exceptions=True)

    async def _watch_loop(self) -> None:
        assert self.watch is not None
        while True:
            await asyncio.sleep(self.options.health_interval_s)
            try:
                joined = await self.watch()
            except Exception as exc:  # a locked database: try again next time
                log.warning("could not read the joined workers: %s", exc)
                continue
            if joined is not None:
                await self.sync_joined(joined)

    async def sync_joined(self, joined: list[Member]) -> None:
        """Make the joined members those of ``joined`` (a worker paired, or one was revoked)."""
        wanted = {m.name: m for m in joined}
        for m in [m for m in self.members if m.joined and m.name not in wanted]:
            self.members.remove(m)
            task = self._checkers.pop(m.name, None)
            if task is not None:
                task.cancel()
            await m.backend.close()
            log.warning("pool: %s left the pool", m.name)
        taken = {m.name for m in self.members}
        for m in joined:
            if m.name in taken:
                continue
            await m.backend.start()
            self._add(m)
            await self._check(m, FIRST_PROBE_TIMEOUT)
            log.warning("pool: %s joined the pool", m.name)
        self._reshape()
        self._dispatch()

    # ---- health -------------------------------------------------------------------------------

    async def _check_loop(self, m: Member) -> None:
        while True:
            await asyncio.sleep(self.options.health_interval_s)
            await self._check(m)

    async def _check(self, m: Member, timeout: float = PROBE_TIMEOUT) -> None:
        from homellm.serve.upstream import ConnectFailed

        was_up = m.up
        try:
            async with asyncio.timeout(timeout):
                entries, ps = await m.backend.probe()
        except Exception as exc:
            reads, m.reads_seen = m.reads_seen, m.backend.reads
            alive = m.backend.reads != reads  # data came from it since the last check ended
            hung = isinstance(exc, TimeoutError)
            if hung and not m.backend.answers_while_busy and m.outstanding and alive:
                # llama-cpp-python answers nothing else while it generates; tokens still came since the last
                # check, so it is busy, not gone
                m.detail = _("busy: the health check waited behind {n} requests").format(n=m.outstanding)
                return
            m.up = False
            m.detail = (_("no answer within {s:g} s").format(s=timeout) if hung else str(exc))[:300]
            m.checked_at = time.time()
            if was_up:
                log.warning("pool: %s is down: %s", m.name, m.detail)
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                # its machine is gone, or it hangs although it always answers checks: what waits on it now
                # fails at once (and is retried elsewhere when nothing reached its client yet)
                if isinstance(cause, ConnectFailed) or (hung and m.backend.answers_while_busy):
                    cut = m.backend.abort(_("{name} stopped answering").format(name=m.name))
                    if cut:
                        log.warning("pool: cut %d requests waiting on %s", cut, m.name)
            self._gauge(m)
            return
        m.learn(entries, ps)
        m.reads_seen = m.backend.reads
        m.up, m.detail, m.checked_at = True, "", time.time()
        if not was_up:
            log.warning("pool: %s is up again", m.name)
        self._gauge(m)
        self._dispatch()

    def _gauge(self, m: Member) -> None:
        if self.metrics is not None:
            self.metrics.backend_up.labels(m.name).set(1 if m.usable() else 0)

    # ---- picking ------------------------------------------------------------------------------

    def _best(self, model: str | None, exclude: frozenset[str]) -> Member | None:
        """The member a request for ``model`` goes to now, or None when each one that could is busy."""
        wanted = None if model is None else model_key(model)
        best: Member | None = None
        best_rank: tuple[bool, int, float, float] | None = None
        for m in self.members:
            if (
                (m.max_concurrency and m.outstanding >= m.max_concurrency)
                or not m.up
                or (model is not None and not m.has(model))
                or (exclude and m.name in exclude)
                or not m.breaker.allows()
            ):
                continue
            rank = (wanted is None or wanted not in m.loaded, -m.priority, m.outstanding / m.weight,
                    m.served / m.weight)  # fmt: skip
            if best_rank is None or rank < best_rank:
                best, best_rank = m, rank
        return best

    def _lease(self, m: Member) -> Lease:
        m.outstanding += 1
        return Lease(self, m, m.breaker.begin())

    def find(self, model: str | None, exclude: frozenset[str] = frozenset()) -> Member:
        """A member for a request that takes no slot (``/api/show``, management); 404/503 as for acquire."""
        self._available(model, exclude)
        best = self._best(model, exclude)
        if best is not None:
            return best
        ranked = sorted((m for m in self.members if m.usable() and (model is None or m.has(model))
                         and m.name not in exclude), key=lambda m: (-m.priority, m.outstanding / m.weight))  # fmt: skip
        return ranked[0]

    def _available(self, model: str | None, exclude: frozenset[str]) -> None:
        """Raise when no member that is not excluded could ever take this request now."""
        having = [m for m in self.members if m.name not in exclude and (model is None or m.has(model))]
        if not having:
            if exclude:
                raise GatewayError(502, _("no other backend has model {model!r}").format(model=model))
            raise GatewayError(404, _("model {model!r} not found").format(model=model))
        if any(m.usable() for m in having):
            return
        wait = min((m.breaker.reopens_in() for m in having if m.up), default=0.0) or self.options.health_interval_s
        raise GatewayError(
            503,
            _("every backend that has model {model!r} is down or failing; retry in {s:.0f} s").format(
                model=model, s=max(wait, 1)
            ),
            headers={"Retry-After": retry_after(wait)},
        )

    async def acquire(
        self, model: str | None, key: str, priority: float = 1.0, exclude: frozenset[str] = frozenset()
    ) -> Lease:
        """A slot for a request: at once when a member is free, else after waiting in ``key``'s queue."""
        best = self._best(model, exclude)
        if best is not None:
            self.queue.charge(key, priority)
            return self._lease(best)
        self._available(model, exclude)
        o = self.options
        if self.queue.waiting(key) >= o.queue_per_key:
            self._rejected()
            raise GatewayError(
                429,
                _("{n} requests of this key are already waiting for a backend").format(n=o.queue_per_key),
                headers={"Retry-After": retry_after(self._drain_estimate())},
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, exclude, loop.create_future())
        ticket = self.queue.push(key, priority, waiter)
        enqueued = time.monotonic()
        self._queue_gauge()
        try:
            async with asyncio.timeout(o.queue_wait_s):
                lease = await waiter.future
        except TimeoutError:
            if not self._taken(waiter):
                self.queue.remove(ticket)
                self._queue_gauge()
                self._rejected()
                raise GatewayError(
                    429,
                    _("no backend was free for {s:g} s; the pool is busy").format(s=o.queue_wait_s),
                    headers={"Retry-After": retry_after(self._drain_estimate())},
                ) from None
            lease = waiter.future.result()
        except asyncio.CancelledError:  # the client left while it waited
            if self._taken(waiter):
                waiter.future.result().release()
            else:
                self.queue.remove(ticket)
                self._queue_gauge()
            raise
        lease.queue_ms = (time.monotonic() - enqueued) * 1000
        lease.position = waiter.ahead
        if self.metrics is not None:
            self.metrics.queue_wait.observe(lease.queue_ms / 1000)
            self.metrics.queue_position.observe(waiter.ahead)
        return lease

    @staticmethod
    def _taken(waiter: _Waiter) -> bool:
        return waiter.future.done() and not waiter.future.cancelled()

    def _drain_estimate(self) -> float:
        slots = sum(m.max_concurrency or 1 for m in self.members if m.usable()) or 1
        return max(len(self.queue) * self.service_s / slots, 1.0)

    def _rejected(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_rejected.inc()

    def _queue_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_waiting.set(len(self.queue))

    def _dispatch(self) -> None:
        """Hand free slots to waiting requests, in fair order."""
        if not len(self.queue):
            return

        def can_serve(w: _Waiter) -> bool:
            if w.future.done():  # cancelled: drop it
                return True
            w.chosen = self._best(w.model, w.exclude)
            return w.chosen is not None

        while (ticket := self.queue.pop(can_serve)) is not None:
            w = ticket.item
            if w.future.done() or w.chosen is None:
                continue
            w.ahead = self.queue.served - 1 - ticket.served_before
            w.future.set_result(self._lease(w.chosen))
        self._queue_gauge()

    def _release(self, lease: Lease, held_s: float) -> None:
        m = lease.member
        if lease.probe and not lease.decided:
            m.breaker.abandon()
        if not lease.slot:
            return
        m.outstanding -= 1
        m.served += 1
        self.service_s += (held_s - self.service_s) * 0.1
        self._dispatch()

    # ---- outcomes -----------------------------------------------------------------------------

    def succeeded(self, lease: Lease, model: str | None) -> None:
        """The member answered (its headers came, or its whole answer): it has the model loaded now."""
        m = lease.member
        lease.decided = True
        breaker = m.breaker
        if breaker.opened_at is not None:
            log.warning("pool: %s answered again; its circuit is closed", m.name)
            breaker.success()
            self._gauge(m)
        breaker.consecutive = 0
        if not m.up:  # a check gave up on it while it was busy (a slow CPU engine): an answer says it is up
            m.up, m.detail = True, ""
            log.warning("pool: %s answered; it is up", m.name)
            self._gauge(m)
        if model is not None and model not in m.loaded:
            m.loaded.add(model_key(model))
        if m.answered is not None:
            m.answered.inc()

    def failed(self, lease: Lease, detail: str) -> None:
        """The member failed this request: down until a health check passes; its breaker counts it."""
        m = lease.member
        lease.decided = True
        m.failures += 1
        m.up, m.detail = False, detail[:300]
        if m.breaker.failure():
            log.warning("pool: %s failed %d requests in a row; out for %.0f s", m.name, m.breaker.consecutive,
                        m.breaker.open_s)  # fmt: skip
        self._gauge(m)
        if self.metrics is not None:
            self.metrics.backend_failures.labels(m.name).inc()

    def has_other(self, model: str | None, exclude: frozenset[str]) -> bool:
        return any(m.name not in exclude and m.usable() and (model is None or m.has(model)) for m in self.members)

    # ---- what the pool has ----------------------------------------------------------------------

    def entries(self) -> list[ModelEntry]:
        """Every model of the members that are up, once each (the highest-priority member's description)."""
        seen: dict[str, ModelEntry] = {}
        for m in sorted(self.members, key=lambda m: -m.priority):
            if m.up:
                for e in m.entries:
                    seen.setdefault(model_key(e.name), e)
        return list(seen.values())

    def loaded_now(self) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for m in sorted(self.members, key=lambda m: -m.priority):
            if m.up:
                for p in m.ps:
                    seen.setdefault(model_key(str(p.get("name") or p.get("model") or "")), p)
        return list(seen.values())

    def status(self, show: Callable[[str], bool]) -> list[dict[str, Any]]:
        """Each member's state for ``/homellm/health`` (admin keys); models filtered by ``show``."""
        out = []
        for m in self.members:
            out.append({
                "name": m.name,
                "url": m.backend.base_url,
                "kind": m.backend.kind,
                "joined": m.joined,
                "state": m.state(),
                "detail": m.detail or None,
                "breaker": m.breaker.state,
                "reopens_in_s": round(m.breaker.reopens_in(), 1) or None,
                "priority": m.priority,
                "weight": m.weight,
                "max_concurrency": m.max_concurrency,
                "outstanding": m.outstanding,
                "served": m.served,
                "failures": m.failures,
                "models": sorted(e.name for e in m.entries if show(e.name)),
                "loaded": sorted(n for n in m.loaded if show(n)),
            })  # fmt: skip
        return out

    def waiting(self) -> int:
        return len(self.queue)
