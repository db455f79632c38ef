"""The SQLite database and its ordered migrations."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path


def m001_keys(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE keys (
            name TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            models TEXT,            -- JSON list, NULL = every model
            admin INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL,
            last_used_at REAL
        )"""
    )


def m002_usage(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            key_name TEXT,
            client_ip TEXT,
            method TEXT NOT NULL,
            route TEXT NOT NULL,
            model TEXT,
            status INTEGER NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_ms REAL,
            duration_ms REAL NOT NULL,
            cancelled INTEGER NOT NULL DEFAULT 0,
            prompt TEXT
        )"""
    )
    db.execute("CREATE INDEX usage_ts ON usage(ts)")


def m003_pairing(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE pairing_codes (
            hash TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            models TEXT,            -- JSON list for the device key, NULL = every model
            used_at REAL,
            used_by TEXT
        )"""
    )
    db.execute("CREATE TABLE pairing_failures (ts REAL NOT NULL)")


def m004_pake_pairing(db: sqlite3.Connection) -> None:
    """Pairing v2 (SPAKE2): a code is a nameplate and the password itself, no hash; attempts are events.

    Open v1 codes are dropped with their table (they lived 5 minutes; their hashes go with them).
    """
    db.execute("DROP TABLE pairing_codes")
    db.execute("DROP TABLE pairing_failures")
    db.execute(
        """CREATE TABLE pairing_codes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: events refer to it after the row is gone
            nameplate TEXT NOT NULL UNIQUE,         -- names the open code; sent in clear inside TLS
            password TEXT NOT NULL,                 -- the SPAKE2 secret; deleted on use, withdrawal or expiry
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            models TEXT                             -- JSON list for the device key, NULL = every model
        )"""
    )
    db.execute(
        """CREATE TABLE pairing_events (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            code_id INTEGER,                        -- NULL: a nameplate that was not open
            source TEXT NOT NULL,                   -- the client address (IPv6: its /64)
            outcome TEXT NOT NULL,                  -- failed | paired | withdrawn
            device TEXT
        )"""
    )
    db.execute("CREATE INDEX pairing_events_source ON pairing_events(source, ts)")
    db.execute("CREATE INDEX pairing_events_code ON pairing_events(code_id)")


def m005_usage_detail(db: sqlite3.Connection) -> None:
    """Why a request ended early (backend died, went silent, client stopped reading) and how long it queued."""
    db.execute("ALTER TABLE usage ADD COLUMN error TEXT")
    db.execute("ALTER TABLE usage ADD COLUMN queue_ms REAL")


def m006_web_sessions(db: sqlite3.Connection) -> None:
    """The web app's sign-ins: a cookie's token (stored as its SHA-256) bound to one API key, with its CSRF token."""
    db.execute(
        """CREATE TABLE web_sessions (
            hash TEXT PRIMARY KEY,      -- SHA-256 of the cookie's token; the token itself is never stored
            key_name TEXT NOT NULL,     -- the key this browser acts as (revoking it ends the session)
            csrf TEXT NOT NULL,         -- sent back in X-CSRF-Token on every state-changing request
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX web_sessions_key ON web_sessions(key_name)")


def m007_quotas_and_pool(db: sqlite3.Connection) -> None:
    """Per-key quotas and fair-queue priority; which pool backend served a request and its queue position."""
    db.execute("ALTER TABLE keys ADD COLUMN priority INTEGER NOT NULL DEFAULT 1")  # fair-queue weight
    db.execute("ALTER TABLE keys ADD COLUMN tokens_per_day INTEGER")  # NULL: no quota
    db.execute("ALTER TABLE keys ADD COLUMN requests_per_day INTEGER")
    db.execute("ALTER TABLE usage ADD COLUMN backend TEXT")
    db.execute("ALTER TABLE usage ADD COLUMN queue_position INTEGER")  # requests served before it while it queued
    db.execute("CREATE INDEX usage_key_ts ON usage(key_name, ts)")  # a key's use today, for its quota


def m008_workers(db: sqlite3.Connection) -> None:
    """Machines that joined the pool (``homellm join``): where the main gateway reaches them and the
    certificate it pins; a pairing code may register a worker instead of making a device key."""
    db.execute(
        """CREATE TABLE workers (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,                  -- https://ADDRESS:PORT, the address the worker paired from
            offer TEXT NOT NULL,                -- what it offers: ollama | openai | engine
            cert_pem TEXT NOT NULL,             -- the worker's own certificate, pinned
            fingerprint TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            weight REAL NOT NULL DEFAULT 1,
            max_concurrency INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            revoked_at REAL
        )"""
    )
    db.execute("ALTER TABLE pairing_codes ADD COLUMN worker TEXT")  # JSON pool settings; NULL: a device code


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    m001_keys,
    m002_usage,
    m003_pairing,
    m004_pake_pairing,
    m005_usage_detail,
    m006_web_sessions,
    m007_quotas_and_pool,
    m008_workers,
]


def private_folder(folder: Path) -> None:
    """Create ``folder`` (and parents) readable by this user only (0700)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):  # not every filesystem has modes
        folder.chmod(0o700)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) the database, switch to WAL and apply pending migrations.

    The database, its WAL and its shared-memory file hold key and pairing material: all three are
    0600 in a 0700 folder. The file is created 0600 before SQLite opens it, so that the WAL and SHM
    files SQLite creates next inherit that mode.
    """
    private_folder(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA secure_delete=ON")  # deleted pairing passwords are overwritten, not left in free pages
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done = {row["name"] for row in db.execute("SELECT name FROM _migrations")}
    for migration in MIGRATIONS:
        if migration.__name__ not in done:
            with db:
                db.execute("BEGIN IMMEDIATE")
                migration(db)
                db.execute("INSERT INTO _migrations VALUES (?, julianday('now'))", (migration.__name__,))
    for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):  # absent, or a filesystem without modes
            f.chmod(0o600)
    return db


def database_path(home: Path) -> Path:
    return home / "homellm.db"
