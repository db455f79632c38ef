"""API keys: high-entropy, shown once, stored as SHA-256 hashes, scoped to models, revocable."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from homellm.errors import NotFoundError, UsageError
from homellm.i18n import _

KEY_PREFIX = "hlm_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class ApiKey:
    name: str
    prefix: str
    models: tuple[str, ...] | None  # None: every model
    admin: bool
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    priority: int = 1  # its weight in the fair queue: 2 is served twice as often as 1 when both wait
    tokens_per_day: int | None = None  # quotas per UTC day; None: none
    requests_per_day: int | None = None

    @property
    def has_quota(self) -> bool:
        return self.tokens_per_day is not None or self.requests_per_day is not None

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def may_use(self, model: str) -> bool:
        return self.models is None or _model_matches(model, self.models)


def _model_matches(model: str, allowed: tuple[str, ...]) -> bool:
    """``qwen2.5`` allows every ``qwen2.5:*`` tag; ``qwen2.5:14b`` allows that tag (and ``:latest`` rules)."""
    name = model.strip().lower()
    base = name.removesuffix(":latest")
    for entry in allowed:
        e = entry.strip().lower()
        if name == e or base == e.removesuffix(":latest") or (":" not in e and name.split(":")[0] == e):
            return True
    return False


def parse_duration(text: str) -> float:
    m = _DURATION.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise UsageError(_("cannot read the duration {text!r}; write it like 30d, 12h or 2w").format(text=text))
    return int(m.group(1)) * _SECONDS[m.group(2)]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _row(row: sqlite3.Row) -> ApiKey:
    models = json.loads(row["models"]) if row["models"] is not None else None
    return ApiKey(
        name=row["name"],
        prefix=row["prefix"],
        models=tuple(models) if models is not None else None,
        admin=bool(row["admin"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        priority=row["priority"],
        tokens_per_day=row["tokens_per_day"],
        requests_per_day=row["requests_per_day"],
    )


def _check_limits(tokens_per_day: int | None, requests_per_day: int | None, priority: int | None) -> None:

    for flag, value in (("--tokens-per-day", tokens_per_day), ("--requests-per-day", requests_per_day)):
        if value is not None and not 0 < value <= 10**12:
            raise UsageError(_("{flag} must be a positive whole number").format(flag=flag))
    if priority is not None and not 1 <= priority <= 100:
        raise UsageError(_("--priority must be between 1 and 100"))


class KeyStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def create(
        self,
        name: str,
        models: list[str] | None = None,
        admin: bool = False,
        expires_in: float | None = None,
        *,
        tokens_per_day: int | None = None,
        requests_per_day: int | None = None,
        priority: int = 1,
    ) -> tuple[ApiKey, str]:
        """Create a key; the plaintext is returned once and never stored."""
        _check_limits(tokens_per_day, requests_per_day, priority)
        if not _NAME.fullmatch(name):
            raise UsageError(_("a key name is 1-64 letters, digits, spaces or . _ @ - (e.g. 'alice-laptop')"))
        if models is not None and not [m for m in models if m.strip()]:
            raise UsageError(_("--models needs at least one model name"))
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        try:
            self.db.execute(
                "INSERT INTO keys (name, prefix, hash, models, admin, created_at, expires_at, priority, tokens_per_day,"
                " requests_per_day) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    secret[:8],
                    hash_key(secret),
                    json.dumps([m.strip() for m in models if m.strip()]) if models is not None else None,
                    int(admin),
                    now,
                    now + expires_in if expires_in else None,
                    priority,
                    tokens_per_day,
                    requests_per_day,
                ),
            )
        except sqlite3.IntegrityError:
            raise UsageError(
                _("a key named {name!r} already exists; revoke it or pick another name").format(name=name)
            ) from None
        return self.get(name), secret

    def get(self, name: str) -> ApiKey:
        row = self.db.execute("SELECT * FROM keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(_("key"), name, [k.name for k in self.list()])
        return _row(row)

    def list(self) -> list[ApiKey]:
        return [_row(r) for r in self.db.execute("SELECT * FROM keys ORDER BY created_at")]

    def set_limits(
        self, name: str, tokens_per_day: int | None, requests_per_day: int | None, priority: int | None
    ) -> ApiKey:
        """Change a key's quotas (0 removes one) and fair-queue priority; None leaves a value as it is."""
        self.get(name)
        _check_limits(tokens_per_day or None, requests_per_day or None, priority)
        for column, value in (("tokens_per_day", tokens_per_day), ("requests_per_day", requests_per_day),
                              ("priority", priority)):  # fmt: skip
            if value is not None:
                self.db.execute(f"UPDATE keys SET {column} = ? WHERE name = ?", (value or None, name))
        return self.get(name)

    def revoke(self, name: str) -> ApiKey:
        key = self.get(name)
        if key.revoked_at is None:
            self.db.execute("UPDATE keys SET revoked_at = ? WHERE name = ?", (time.time(), name))
        return self.get(name)

    def verify(self, presented: str) -> ApiKey | None:
        """The active key matching ``presented``, else None. The hash is compared in constant time."""
        digest = hash_key(presented)
        row = self.db.execute("SELECT * FROM keys WHERE hash = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row["hash"], digest):
            return None
        key = _row(row)
        return key if key.active() else None

    def count_active(self) -> int:
        return sum(1 for k in self.list() if k.active())


class KeyCache:
    """The keys by hash, in memory, for the gateway's hot path.

    It reads the database on its own connection and reloads when ``PRAGMA data_version`` says that
    another connection (``homellm keys revoke`` in another process, the web app, the usage writer)
    committed, checking at most every ``interval`` seconds: a revocation takes effect within that
    interval, across processes, without a query per request.
    """

    def __init__(self, path: Path, interval: float = 0.25) -> None:
        from homellm.store.db import connect

        self.db = connect(path)
        self.interval = interval
        self._by_hash: dict[str, ApiKey] = {}
        self._version = -1
        self._checked = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False, force_check: bool = False) -> None:
        """Reload if the database changed (checked at most every ``interval`` unless ``force_check``)."""
        now = time.monotonic()
        if not (force or force_check) and now - self._checked < self.interval:
            return
        self._checked = now
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version or force:
            self._version = version
            self._by_hash = {r["hash"]: _row(r) for r in self.db.execute("SELECT * FROM keys")}

    def verify(self, presented: str) -> ApiKey | None:
        """The active key matching ``presented``, else None.

        The lookup is by the SHA-256 of the presented key, so its timing says nothing about any stored key.
        """
        self.refresh()
        digest = hash_key(presented)
        key = self._by_hash.get(digest)
        if key is None:  # a key made a moment ago works at once: look again if the database changed
            self.refresh(force_check=True)
            key = self._by_hash.get(digest)
        return key if key is not None and key.active() else None

    def get(self, name: str) -> ApiKey | None:
        self.refresh()
        return next((k for k in self._by_hash.values() if k.name == name), None)

    def close(self) -> None:
        self.db.close()
