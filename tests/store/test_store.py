"""Keys and usage in real SQLite."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from homellm.errors import NotFoundError, UsageError
from homellm.store import open_database
from homellm.store.db import MIGRATIONS, database_path
from homellm.store.keys import KeyStore, hash_key, parse_duration
from homellm.store.usage import UsageRecord, UsageWriter, parse_since, summarize


def test_database_is_private_wal_and_migrated_once(tmp_path: Path) -> None:
    db = open_database(tmp_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert oct(database_path(tmp_path).stat().st_mode & 0o777) == "0o600"
    open_database(tmp_path)  # again: nothing to apply
    names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert names == [m.__name__ for m in MIGRATIONS] and names == sorted(names)
    assert {"keys", "usage", "pairing_codes"} <= {r[0] for r in db.execute("SELECT name FROM sqlite_master")}


def test_keys_are_high_entropy_hashed_and_shown_once(tmp_path: Path) -> None:
    store = KeyStore(open_database(tmp_path))
    key, secret = store.create("alice-laptop", ["qwen2.5"])
    assert secret.startswith("hlm_") and len(secret) >= 40
    assert store.verify(secret) == key
    raw = database_path(tmp_path).read_bytes() + (tmp_path / "homellm.db-wal").read_bytes()
    assert secret.encode() not in raw  # only the hash is stored
    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert {k.name for k in store.list()} == {"alice-laptop"}


def test_model_allowlist_matching(tmp_path: Path) -> None:
    store = KeyStore(open_database(tmp_path))
    key, _ = store.create("k", ["qwen2.5", "llama3.1:8b"])
    assert key.may_use("qwen2.5:14b") and key.may_use("qwen2.5") and key.may_use("QWEN2.5:7B")
    assert key.may_use("llama3.1:8b")
    assert not key.may_use("llama3.1:70b") and not key.may_use("qwen2.5-coder:7b") and not key.may_use("")
    latest, _ = store.create("l", ["phi4:latest"])
    assert latest.may_use("phi4") and latest.may_use("phi4:latest")


def test_revoke_and_expiry(tmp_path: Path) -> None:
    store = KeyStore(open_database(tmp_path))
    _, s1 = store.create("a")
    b, s2 = store.create("b", expires_in=3600)
    store.revoke("a")
    assert store.verify(s1) is None
    assert store.verify(s2) is not None and b.expires_at is not None
    assert b.expires_at - b.created_at == pytest.approx(3600)
    assert b.active(now=b.expires_at - 1) and not b.active(now=b.expires_at)  # the expiry instant itself is out
    # the hour passes: moved in the database instead of waited for
    store.db.execute("UPDATE keys SET expires_at = ? WHERE name = 'b'", (time.time() - 1,))
    assert store.verify(s2) is None and store.count_active() == 0
    with pytest.raises(NotFoundError, match="did you mean 'b'"):
        store.revoke("b2")


@pytest.mark.parametrize("bad", ["", " spaced", "x" * 65, "semi;colon", "../etc"])
def test_key_names_are_checked(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError):
        KeyStore(open_database(tmp_path)).create(bad)


def test_duplicate_names_and_durations(tmp_path: Path) -> None:
    store = KeyStore(open_database(tmp_path))
    store.create("dup")
    with pytest.raises(UsageError, match="already exists"):
        store.create("dup")
    assert parse_duration("30d") == 30 * 86400 and parse_duration("12h") == 43200 and parse_duration("2w") == 1209600
    for bad in ("30", "0d", "soon", "-1d"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_usage_writer_batches_and_summarizes(tmp_path: Path) -> None:
    db = open_database(tmp_path)
    KeyStore(db).create("alice")
    writer = UsageWriter(database_path(tmp_path))
    now = time.time()
    for i in range(50):
        writer.record(UsageRecord(ts=now - i * 3600, key_name="alice" if i % 2 else "bob", client_ip="10.0.0.2",
                                  method="POST", route="/api/chat", model="m", status=200 if i else 500,
                                  prompt_tokens=10, completion_tokens=20, ttft_ms=50.0, duration_ms=100.0))  # fmt: skip
    writer.close()
    assert KeyStore(db).get("alice").last_used_at == now - 3600  # the latest of alice's records
    by_key = {r["key"]: r for r in summarize(db, "key")}
    assert by_key["alice"]["requests"] == 25 and by_key["bob"]["errors"] == 1
    assert by_key["alice"]["completion_tokens"] == 500
    recent = summarize(db, "key", parse_since("10h", now + 1))
    assert sum(r["requests"] for r in recent) == 10
    assert len(summarize(db, "day")) >= 2
    with pytest.raises(UsageError):
        summarize(db, "color")
    with pytest.raises(UsageError):
        parse_since("yesterday-ish")


def test_concurrent_connections_see_each_others_writes(tmp_path: Path) -> None:
    a, b = open_database(tmp_path), sqlite3.connect(database_path(tmp_path))
    KeyStore(a).create("x")
    assert b.execute("SELECT COUNT(*) FROM keys").fetchone()[0] == 1


@pytest.mark.parametrize("applied", range(1, len(MIGRATIONS)), ids=lambda n: f"after-{MIGRATIONS[n - 1].__name__}")
def test_an_older_database_is_migrated_with_its_data(tmp_path: Path, applied: int) -> None:
    """A database made by an older homellm (only the first migrations applied) opens with its keys and
    usage intact and every later column present."""
    path = database_path(tmp_path)
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for migration in MIGRATIONS[:applied]:
        migration(old)
        old.execute("INSERT INTO _migrations VALUES (?, 0)", (migration.__name__,))
    secret = "hlm_" + "k" * 43
    old.execute("INSERT INTO keys (name, prefix, hash, models, admin, created_at) VALUES (?, ?, ?, ?, 1, ?)",
                ("old-admin", secret[:8], hash_key(secret), '["qwen2.5"]', 1.0))  # fmt: skip
    has_usage = "m002_usage" in {m.__name__ for m in MIGRATIONS[:applied]}
    if has_usage:
        old.execute("INSERT INTO usage (ts, key_name, client_ip, method, route, model, status, prompt_tokens,"
                    " completion_tokens, ttft_ms, duration_ms) VALUES (5.0, 'old-admin', '10.0.0.2', 'POST',"
                    " '/api/chat', 'qwen2.5', 200, 11, 22, 33.0, 44.0)")  # fmt: skip
    old.commit()
    old.close()

    db = open_database(tmp_path)
    assert [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY rowid")] == [m.__name__ for m in MIGRATIONS]
    key = KeyStore(db).verify(secret)
    assert key is not None and key.name == "old-admin" and key.admin and key.models == ("qwen2.5",)
    # m008: an old key has the default queue priority and no quota
    assert (key.priority, key.tokens_per_day, key.requests_per_day) == (1, None, None)
    columns = {r[1] for r in db.execute("PRAGMA table_info(usage)")}
    assert {"error", "queue_ms", "cancelled", "prompt", "backend", "queue_position"} <= columns
    assert {r[1] for r in db.execute("PRAGMA table_info(workers)")} >= {"name", "url", "offer", "cert_pem"}  # m008
    limited = KeyStore(db).set_limits("old-admin", 1000, 10, 3)
    assert (limited.priority, limited.tokens_per_day, limited.requests_per_day) == (3, 1000, 10)
    if has_usage:
        row = dict(db.execute("SELECT * FROM usage").fetchone())
        assert (row["ts"], row["model"], row["prompt_tokens"], row["completion_tokens"], row["duration_ms"]) == (
            5.0, "qwen2.5", 11, 22, 44.0)  # fmt: skip
        assert row["error"] is None and row["queue_ms"] is None and row["cancelled"] == 0
        assert row["backend"] is None and row["queue_position"] is None
    # and the new columns are written
    writer = UsageWriter(path)
    writer.record(UsageRecord(ts=6.0, key_name="old-admin", client_ip=None, method="POST", route="/api/chat",
                              model="qwen2.5", status=502, error="backend died", queue_ms=1.5, backend="gpu",
                              queue_position=4))  # fmt: skip
    writer.close()
    row = tuple(db.execute("SELECT error, queue_ms, backend, queue_position FROM usage WHERE ts = 6.0").fetchone())
    assert row == ("backend died", 1.5, "gpu", 4)
