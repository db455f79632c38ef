"""One-time pairing codes: ``homellm pair`` makes one, ``homellm connect --code`` trades it for a device key.

A code is valid for 5 minutes and works once. Failed attempts are counted across all codes:
after 5 wrong codes within the validity window every open code is withdrawn, so guessing
is hopeless (about 2^40 codes, 5 guesses).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from homellm.errors import GatewayError
from homellm.store.keys import ApiKey, KeyStore

VALID_FOR = 300.0
MAX_FAILURES = 5
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L
_DEVICE = re.compile(r"[^A-Za-z0-9._@-]+")


@dataclass(frozen=True)
class Code:
    code: str
    expires_at: float


def _digest(code: str) -> str:
    return hashlib.sha256(code.replace("-", "").strip().upper().encode()).hexdigest()


class Pairing:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def new_code(self, models: list[str] | None = None) -> Code:
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
        code = f"{raw[:4]}-{raw[4:]}"
        now = time.time()
        self.db.execute(
            "INSERT INTO pairing_codes (hash, created_at, expires_at, models) VALUES (?,?,?,?)",
            (_digest(code), now, now + VALID_FOR, json.dumps(models) if models is not None else None),
        )
        return Code(code, now + VALID_FOR)

    def redeem(self, code: str, device: str, keys: KeyStore) -> tuple[ApiKey, str]:
        """The new device key for a valid, unused code; raises GatewayError (401/429) otherwise."""
        now = time.time()
        failures = self.db.execute("SELECT COUNT(*) FROM pairing_failures WHERE ts > ?", (now - VALID_FOR,)).fetchone()
        if failures[0] >= MAX_FAILURES:
            self.db.execute("UPDATE pairing_codes SET expires_at = ? WHERE used_at IS NULL", (now,))
            raise GatewayError(429, "too many wrong pairing codes; run `homellm pair` again on the server in a while",
                               headers={"Retry-After": str(int(VALID_FOR))})  # fmt: skip
        row = self.db.execute(
            "SELECT * FROM pairing_codes WHERE hash = ? AND used_at IS NULL AND expires_at > ?", (_digest(code), now)
        ).fetchone()
        if row is None:
            self.db.execute("INSERT INTO pairing_failures VALUES (?)", (now,))
            raise GatewayError(401, "the pairing code is wrong, used or expired; run `homellm pair` on the server")
        cur = self.db.execute(
            "UPDATE pairing_codes SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL",
            (now, device, row["hash"]),
        )
        if cur.rowcount != 1:  # redeemed concurrently
            raise GatewayError(401, "the pairing code was just used")
        models = json.loads(row["models"]) if row["models"] is not None else None
        base = _DEVICE.sub("-", device).strip("-")[:40] or "device"
        names = {k.name for k in keys.list()}
        name = next(n for n in (base, *(f"{base}-{i}" for i in range(2, 1000))) if n not in names)
        return keys.create(name, models)
