"""One-time pairing codes and what happened to them.

``homellm pair`` stores a code; the gateway runs the PAKE with it (``serve/pairing.py``) and records each
outcome here, where the waiting ``homellm pair`` reads it. SPAKE2 needs the password itself, so a code's
row holds it: the row lives at most 5 minutes and is deleted when the code is used, withdrawn or expires
(``secure_delete`` overwrites it in the database file).

Wrong attempts are counted three ways, so that a stranger's guesses cannot lock the household out:
per code and source address (5, then that source may not try that code again), per source (20 in 5
minutes, then 429 on every code) and per code (50 from anywhere, then the code is withdrawn: the
backstop that bounds an attacker with many addresses). IPv6 sources count by /64.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from homellm.errors import UsageError
from homellm.i18n import _
from homellm.protocol.pairing import PairingCode, random_code
from homellm.store.keys import ApiKey, KeyStore

if TYPE_CHECKING:
    from homellm.store.workers import Offer, Worker, Workers

VALID_FOR = 300.0
FAILURE_WINDOW = 300.0
MAX_FAILURES_PER_CODE_AND_SOURCE = 5
MAX_FAILURES_PER_SOURCE = 20
MAX_FAILURES_PER_CODE = 50
EVENTS_KEPT_FOR = 86400.0

Outcome = Literal["paired", "failed", "withdrawn"]


def source_of(address: str) -> str:
    """The unit wrong attempts are counted by: the IPv4 address, or the IPv6 /64."""
    try:
        addr = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass(frozen=True)
class Code:
    """A code as ``homellm pair`` shows it."""

    id: int
    code: PairingCode
    expires_at: float


@dataclass(frozen=True)
class OpenCode:
    id: int
    code: PairingCode
    models: list[str] | None
    expires_at: float
    worker: dict[str, Any] | None = None  # a code for `homellm join`: the pool settings the worker gets


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    outcome: Outcome
    device: str | None
    source: str


class Pairing:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _purge(self, now: float) -> None:
        self.db.execute("DELETE FROM pairing_codes WHERE expires_at <= ?", (now,))
        self.db.execute("DELETE FROM pairing_events WHERE ts < ?", (now - EVENTS_KEPT_FOR,))

    def new_code(self, models: list[str] | None = None, worker: dict[str, Any] | None = None) -> Code:
        """A fresh code (its nameplate unique among open codes); the device key will get ``models``.

        With ``worker`` (pool settings: priority, weight, max_concurrency, name), the code registers a
        machine that joins the pool (``homellm join``) instead of making a device key.
        """
        if models is not None:
            models = [m.strip() for m in models if m.strip()]
            if not models:
                raise UsageError(_("--models needs at least one model name"))
        now = time.time()
        self._purge(now)
        for _attempt in range(20):
            taken = {r[0] for r in self.db.execute("SELECT nameplate FROM pairing_codes")}
            code = random_code(taken)
            try:
                cur = self.db.execute(
                    "INSERT INTO pairing_codes (nameplate, password, created_at, expires_at, models, worker) "
                    "VALUES (?,?,?,?,?,?)",
                    (code.nameplate, code.password, now, now + VALID_FOR,
                     json.dumps(models) if models is not None else None,
                     json.dumps(worker) if worker is not None else None),
                )  # fmt: skip
            except sqlite3.IntegrityError:  # another `homellm pair` took the nameplate meanwhile
                continue
            assert cur.lastrowid is not None
            return Code(cur.lastrowid, code, now + VALID_FOR)
        raise UsageError(_("could not find a free pairing nameplate; try again"))

    def open_code(self, nameplate: str) -> OpenCode | None:
        """The unexpired code with this nameplate."""
        now = time.time()
        self._purge(now)
        row = self.db.execute("SELECT * FROM pairing_codes WHERE nameplate = ?", (nameplate,)).fetchone()
        if row is None:
            return None
        models = json.loads(row["models"]) if row["models"] is not None else None
        worker = json.loads(row["worker"]) if row["worker"] is not None else None
        return OpenCode(row["id"], PairingCode(row["nameplate"], row["password"]), models, row["expires_at"], worker)

    def is_open(self, code_id: int) -> bool:
        now = time.time()
        return self.db.execute(
            "SELECT 1 FROM pairing_codes WHERE id = ? AND expires_at > ?", (code_id, now)
        ).fetchone() is not None  # fmt: skip

    # ---- wrong attempts ---------------------------------------------------------------------

    def source_failures(self, source: str) -> int:
        """Wrong attempts from this source in the last 5 minutes, on any code."""
        since = time.time() - FAILURE_WINDOW
        row = self.db.execute(
            "SELECT COUNT(*) FROM pairing_events WHERE source = ? AND outcome = 'failed' AND ts > ?", (source, since)
        ).fetchone()
        return int(row[0])

    def code_failures(self, code_id: int, source: str | None = None) -> int:
        """Wrong attempts on this code (from this source only, when given)."""
        if source is None:
            sql, args = "SELECT COUNT(*) FROM pairing_events WHERE code_id = ? AND outcome = 'failed'", (code_id,)
        else:
            sql = "SELECT COUNT(*) FROM pairing_events WHERE code_id = ? AND source = ? AND outcome = 'failed'"
            args = (code_id, source)  # type: ignore[assignment]
        return int(self.db.execute(sql, args).fetchone()[0])

    def record_failure(self, code_id: int | None, source: str, device: str | None = None) -> bool:
        """Count a wrong attempt; True when it withdrew the code (the per-code backstop)."""
        now = time.time()
        self.db.execute(
            "INSERT INTO pairing_events (ts, code_id, source, outcome, device) VALUES (?,?,?,'failed',?)",
            (now, code_id, source, device),
        )
        if code_id is None or self.code_failures(code_id) < MAX_FAILURES_PER_CODE:
            return False
        cur = self.db.execute("DELETE FROM pairing_codes WHERE id = ?", (code_id,))
        if cur.rowcount:
            self.db.execute(
                "INSERT INTO pairing_events (ts, code_id, source, outcome) VALUES (?,?,?,'withdrawn')",
                (now, code_id, source),
            )
        return bool(cur.rowcount)

    # ---- redeeming ---------------------------------------------------------------------------

    def redeem(self, code_id: int, device: str, keys: KeyStore, source: str) -> tuple[ApiKey, str] | None:
        """Spend the code and make the device key, scoped like the code.

        None when the code is no longer open (used concurrently, withdrawn or expired): one statement
        deletes the row, so of two concurrent redeemers exactly one gets it. (No multi-statement
        transaction: the gateway shares this connection with the usage writer's thread.) The key is
        named after the device, with ``-2``, ``-3``, … when that name is taken.
        """
        now = time.time()
        row = self.db.execute(
            "DELETE FROM pairing_codes WHERE id = ? AND expires_at > ? AND worker IS NULL RETURNING models",
            (code_id, now),
        ).fetchone()
        if row is None:
            return None
        models = json.loads(row["models"]) if row["models"] is not None else None
        granted = self._create_key(device, models, keys)
        self.db.execute(
            "INSERT INTO pairing_events (ts, code_id, source, outcome, device) VALUES (?,?,?,'paired',?)",
            (now, code_id, source, granted[0].name),
        )
        return granted

    def redeem_worker(
        self, code_id: int, name: str, url: str, offer: Offer, cert_pem: str, fingerprint: str, workers: Workers,
        source: str,
    ) -> Worker | None:  # fmt: skip
        """Spend a worker code and register the machine in the pool, with the code's pool settings."""
        now = time.time()
        row = self.db.execute(
            "DELETE FROM pairing_codes WHERE id = ? AND expires_at > ? AND worker IS NOT NULL RETURNING worker",
            (code_id, now),
        ).fetchone()
        if row is None:
            return None
        options = json.loads(row["worker"])
        worker = workers.add(str(options.get("name") or name), url, offer, cert_pem, fingerprint,
                             int(options.get("priority", 0)), float(options.get("weight", 1.0)),
                             int(options.get("max_concurrency", 0)))  # fmt: skip
        self.db.execute(
            "INSERT INTO pairing_events (ts, code_id, source, outcome, device) VALUES (?,?,?,'paired',?)",
            (now, code_id, source, worker.name),
        )
        return worker

    def _create_key(self, device: str, models: list[str] | None, keys: KeyStore) -> tuple[ApiKey, str]:
        taken = {k.name for k in keys.list()}
        for name in (device, *(f"{device}-{i}" for i in range(2, 100000))):
            if name in taken:
                continue
            try:
                return keys.create(name, models)
            except UsageError:
                if self.db.execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone() is None:
                    raise  # not a name clash
        raise UsageError(_("no free key name for device {device!r}").format(device=device))

    def withdraw(self, code_id: int) -> bool:
        return bool(self.db.execute("DELETE FROM pairing_codes WHERE id = ?", (code_id,)).rowcount)

    def events(self, code_id: int, after: int = 0) -> list[Event]:
        """What happened to a code, oldest first, after event id ``after`` (``homellm pair`` waits on this)."""
        rows = self.db.execute(
            "SELECT * FROM pairing_events WHERE code_id = ? AND id > ? ORDER BY id", (code_id, after)
        ).fetchall()
        return [Event(r["id"], r["ts"], r["outcome"], r["device"], r["source"]) for r in rows]
