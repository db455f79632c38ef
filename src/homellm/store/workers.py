"""Machines that joined the main gateway's pool with ``homellm join``.

A row says where the main gateway reaches the worker (the address it paired from, and the port it
offered), what it offers, and its certificate, which the link pins. A worker is added only by a
pairing code made with ``homellm pair --worker`` (serve/pairing.py), and leaves with
``homellm workers revoke``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Literal

from homellm.errors import NotFoundError, UsageError
from homellm.i18n import _

Offer = Literal["ollama", "openai", "engine", "rpc"]  # rpc: it lends its device to a split (join --rpc)
OFFERS: tuple[Offer, ...] = ("ollama", "openai", "engine", "rpc")


@dataclass(frozen=True)
class Worker:
    name: str
    url: str
    offer: Offer
    cert_pem: str
    fingerprint: str
    priority: int
    weight: float
    max_concurrency: int
    created_at: float
    revoked_at: float | None


def _row(r: sqlite3.Row) -> Worker:
    return Worker(r["name"], r["url"], r["offer"], r["cert_pem"], r["fingerprint"], r["priority"], r["weight"],
                  r["max_concurrency"], r["created_at"], r["revoked_at"])  # fmt: skip


class Workers:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def add(
        self, name: str, url: str, offer: Offer, cert_pem: str, fingerprint: str,
        priority: int = 0, weight: float = 1.0, max_concurrency: int = 0,
    ) -> Worker:  # fmt: skip
        """Register a worker under ``name`` (``-2``, ``-3``, … when an active one has it). A revoked
        worker of that name is replaced: a machine that joins again gets its old name back."""
        if offer not in OFFERS:
            raise UsageError(_("a worker offers one of: {offers}").format(offers=", ".join(OFFERS)))
        taken = {r[0] for r in self.db.execute("SELECT name FROM workers WHERE revoked_at IS NULL")}
        chosen = next(n for n in (name, *(f"{name}-{i}" for i in range(2, 10000))) if n not in taken)
        self.db.execute("DELETE FROM workers WHERE name = ? AND revoked_at IS NOT NULL", (chosen,))
        self.db.execute(
            "INSERT INTO workers (name, url, offer, cert_pem, fingerprint, priority, weight, max_concurrency,"
            " created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (chosen, url, offer, cert_pem, fingerprint, priority, weight, max_concurrency, time.time()),
        )
        return self.get(chosen)

    def get(self, name: str) -> Worker:
        row = self.db.execute("SELECT * FROM workers WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(_("worker"), name, [w.name for w in self.list()])
        return _row(row)

    def list(self, active_only: bool = True) -> list[Worker]:
        where = "WHERE revoked_at IS NULL " if active_only else ""
        return [_row(r) for r in self.db.execute(f"SELECT * FROM workers {where}ORDER BY created_at")]

    def revoke(self, name: str) -> Worker:
        worker = self.get(name)
        if worker.revoked_at is None:
            self.db.execute("UPDATE workers SET revoked_at = ? WHERE name = ?", (time.time(), name))
        return self.get(name)

    def version(self) -> tuple[int, float, int]:
        """Changes when a worker is added or revoked (from any process): the gateway polls it."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(MAX(created_at), 0), COUNT(revoked_at) FROM workers"
        ).fetchone()
        return int(row[0]), float(row[1]), int(row[2])
