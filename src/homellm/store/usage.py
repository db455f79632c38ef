"""The usage log: one row per request, written off the request path by a background thread."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from homellm.errors import UsageError
from homellm.i18n import _

log = logging.getLogger("homellm.gateway")
# what SQLite may raise for one record (OverflowError: an integer beyond 64 bits) or for the whole batch
ROW_ERRORS = (sqlite3.Error, ValueError, TypeError, ArithmeticError)


class UsageRecord(NamedTuple):
    """One request (a tuple in the table's column order: the writer inserts it as it is)."""

    ts: float
    key_name: str | None
    client_ip: str | None
    method: str
    route: str
    model: str | None
    status: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    cancelled: bool = False
    prompt: str | None = None
    error: str | None = None
    queue_ms: float | None = None
    backend: str | None = None  # the pool member that answered
    queue_position: int | None = None  # requests served before it while it waited for a backend


_INSERT = (
    "INSERT INTO usage (ts, key_name, client_ip, method, route, model, status, prompt_tokens, completion_tokens,"
    " ttft_ms, duration_ms, cancelled, prompt, error, queue_ms, backend, queue_position)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


class UsageWriter:
    """Queues records and commits them in timed batches from one thread, on its own connection.

    ``record`` only appends to a queue, so a request never waits on SQLite; the thread commits
    what arrived every ``interval`` seconds (WAL, ``synchronous=NORMAL``: a killed gateway keeps
    every committed batch). Keys' last use is updated in the same transaction.
    """

    def __init__(self, path: Path, interval: float = 0.2) -> None:
        from homellm.store.db import connect

        self.db = connect(path)
        self.interval = interval
        self._queue: queue.SimpleQueue[UsageRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="homellm-usage", daemon=True)
        self._thread.start()

    def record(self, rec: UsageRecord) -> None:
        self._queue.put(rec)

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            if batch[0] is not None:
                time.sleep(self.interval)  # let a batch gather
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            self._write_each([r for r in batch if r is not None])

    def _write_each(self, records: list[UsageRecord]) -> None:
        """Write a batch; when it fails, its records one by one, so that a record SQLite refuses costs only
        its own row and never stops this thread (which would end the usage log and the quotas' count)."""
        try:
            self._write(records)
            return
        except ROW_ERRORS:
            pass
        for r in records:
            try:
                self._write([r])
            except ROW_ERRORS as exc:
                log.error("a usage row could not be written (%s): %r", exc, r[:8])

    def _write(self, records: list[UsageRecord]) -> None:
        if not records:
            return
        last_used: dict[str, float] = {}
        for r in records:
            if r.key_name:
                last_used[r.key_name] = max(r.ts, last_used.get(r.key_name, 0.0))
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(_INSERT, records)
            self.db.executemany("UPDATE keys SET last_used_at = ? WHERE name = ?",
                                [(ts, name) for name, ts in last_used.items()])  # fmt: skip

    def close(self) -> None:
        """Flush everything queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.db.close()


_GROUPS = {"key": "COALESCE(key_name, '(none)')", "model": "COALESCE(model, '-')", "day": "date(ts, 'unixepoch')",
           "backend": "COALESCE(backend, '-')"}  # fmt: skip


def summarize(db: sqlite3.Connection, by: str = "key", since: float | None = None) -> list[dict[str, Any]]:
    if by not in _GROUPS:
        raise UsageError(_("--by must be one of {groups}").format(groups=", ".join(_GROUPS)))
    sql = (
        f"SELECT {_GROUPS[by]} AS grp, COUNT(*) AS requests, SUM(status >= 400) AS errors,"
        " COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, COALESCE(SUM(completion_tokens), 0) AS completion_tokens,"
        " AVG(ttft_ms) AS avg_ttft_ms, AVG(duration_ms) AS avg_duration_ms, MAX(ts) AS last"
        " FROM usage WHERE ts >= ? GROUP BY grp ORDER BY requests DESC"
    )
    rows = db.execute(sql, (since or 0,)).fetchall()
    # a sqlite3.Row iterates over values, so the column names need .keys()
    return [{by: r["grp"], **{k: r[k] for k in r.keys() if k != "grp"}} for r in rows]  # noqa: SIM118


def used_today(db: sqlite3.Connection, key: str, since: float, routes: tuple[str, ...]) -> tuple[int, int]:
    """(requests, tokens) of ``key`` since ``since`` on the inference ``routes``, as quotas count them:
    a request counts when it was answered or its client left; its tokens count in all cases."""
    marks = ",".join("?" * len(routes))
    row = db.execute(
        "SELECT COALESCE(SUM(status < 400 OR cancelled), 0),"
        " COALESCE(SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)), 0)"
        f" FROM usage WHERE key_name = ? AND ts >= ? AND route IN ({marks})",
        (key, since, *routes),
    ).fetchone()
    return int(row[0]), int(row[1])


def parse_since(text: str, now: float | None = None) -> float:
    """``7d``, ``24h`` (ago) or an ISO date ``2026-11-01``."""
    from datetime import datetime

    from homellm.store.keys import parse_duration

    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except UsageError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(_("cannot read --since {text!r}; write 7d, 24h or 2026-11-01").format(text=text)) from None


def daily(db: sqlite3.Connection, since: float) -> list[dict[str, Any]]:
    """Requests that named a model, per day (UTC), key and model: counts, tokens, time to first token."""
    rows = db.execute(
        "SELECT date(ts, 'unixepoch') AS day, COALESCE(key_name, '(none)') AS key, model, COUNT(*) AS requests,"
        " SUM(status >= 400) AS errors, SUM(cancelled) AS cancelled, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens,"
        " COALESCE(SUM(completion_tokens), 0) AS completion_tokens, AVG(ttft_ms) AS avg_ttft_ms"
        " FROM usage WHERE ts >= ? AND model IS NOT NULL GROUP BY day, key, model ORDER BY day, key, model",
        (since,),
    ).fetchall()
    return [dict(r) for r in rows]
