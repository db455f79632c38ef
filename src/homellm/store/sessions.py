"""The web app's sign-ins: a random token in an HttpOnly cookie, bound to one API key on the server.

The token is 32 random bytes; only its SHA-256 is stored, so the database cannot be used to sign in.
A session is only as good as its key: the gateway checks the key (live, from its key cache) on every
request, so revoking or expiring the key ends every session made with it. A session lives
:data:`SESSION_TTL` seconds and is extended when it is used in its second half (one write at most per
half-life, never one per request).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

SESSION_TTL = 30 * 86400.0
TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 64  # a longer cookie value is no token of ours
MAX_SESSIONS_PER_KEY = 64  # a key's oldest sessions give way to its newest beyond this


@dataclass(frozen=True)
class WebSession:
    key_name: str
    csrf: str
    expires_at: float


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def create(self, key_name: str, now: float | None = None) -> tuple[str, WebSession]:
        """A new session for ``key_name``: (the cookie's token, shown once; the session)."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = WebSession(key_name, secrets.token_urlsafe(24), now + SESSION_TTL)
        self.db.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,))
        self.db.execute(
            "INSERT INTO web_sessions (hash, key_name, csrf, created_at, expires_at) VALUES (?,?,?,?,?)",
            (_hash(token), key_name, session.csrf, now, session.expires_at),
        )
        self.db.execute(  # signing in again and again must not grow the table without bound
            "DELETE FROM web_sessions WHERE key_name = ? AND hash NOT IN (SELECT hash FROM web_sessions"
            " WHERE key_name = ? ORDER BY created_at DESC LIMIT ?)",
            (key_name, key_name, MAX_SESSIONS_PER_KEY),
        )
        return token, session

    def get(self, token: str, now: float | None = None) -> WebSession | None:
        """The unexpired session of this token (extended when in its second half), else None."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        now = time.time() if now is None else now
        digest = _hash(token)
        row = self.db.execute("SELECT * FROM web_sessions WHERE hash = ?", (digest,)).fetchone()
        if row is None or row["expires_at"] <= now:
            return None
        expires = row["expires_at"]
        if expires - now < SESSION_TTL / 2:
            expires = now + SESSION_TTL
            self.db.execute("UPDATE web_sessions SET expires_at = ? WHERE hash = ?", (expires, digest))
        return WebSession(row["key_name"], row["csrf"], expires)

    def delete(self, token: str) -> None:
        self.db.execute("DELETE FROM web_sessions WHERE hash = ?", (_hash(token),))

    def delete_for_key(self, key_name: str) -> int:
        """End every session of a key (its revocation); the number ended."""
        return self.db.execute("DELETE FROM web_sessions WHERE key_name = ?", (key_name,)).rowcount

    def count(self, key_name: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        row = self.db.execute(
            "SELECT COUNT(*) FROM web_sessions WHERE key_name = ? AND expires_at > ?", (key_name, now)
        ).fetchone()
        return int(row[0])
