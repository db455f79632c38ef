"""Pairing codes and attempts in real SQLite: the v2 schema and its migration, expiry, the per-code
backstop, one redeem out of two concurrent ones, key names and scope."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from homellm.store import open_database
from homellm.store.db import MIGRATIONS, database_path, m001_keys, m002_usage, m003_pairing
from homellm.store.keys import KeyStore
from homellm.store.pairing import MAX_FAILURES_PER_CODE, Pairing, source_of


def _stores(home: Path) -> tuple[Pairing, KeyStore]:
    db = open_database(home)
    return Pairing(db), KeyStore(db)


def test_an_older_database_migrates_and_loses_its_code_hashes(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for migration in (m001_keys, m002_usage, m003_pairing):
        migration(old)
        old.execute("INSERT INTO _migrations VALUES (?, 0)", (migration.__name__,))
    old_hash = hashlib.sha256(b"ABCDEFGH").hexdigest()
    old.execute("INSERT INTO pairing_codes (hash, created_at, expires_at) VALUES (?, ?, ?)", (old_hash, 0, 1e12))
    old.execute("INSERT INTO pairing_failures VALUES (?)", (time.time(),))
    old.execute("INSERT INTO keys (name, prefix, hash, created_at) VALUES ('old', 'hlm_abcd', 'x', 0)")
    old.commit()
    old.close()

    db = open_database(tmp_path)
    assert [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY rowid")] == [m.__name__ for m in MIGRATIONS]
    columns = {r[1] for r in db.execute("PRAGMA table_info(pairing_codes)")}
    assert columns == {"id", "nameplate", "password", "created_at", "expires_at", "models", "worker"}  # worker: m008
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "pairing_failures" not in tables and "pairing_events" in tables
    assert db.execute("SELECT COUNT(*) FROM pairing_codes").fetchone()[0] == 0
    assert [k.name for k in KeyStore(db).list()] == ["old"]  # keys survive
    assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1  # set by homellm (some SQLite builds default to it)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert old_hash.encode() not in path.read_bytes()  # the dropped hash is overwritten, not left in free pages
    pairing, _ = _stores(tmp_path)
    assert pairing.new_code().id == 1


def test_codes_are_short_unique_by_nameplate_and_hold_no_hash(tmp_path: Path) -> None:
    pairing, _ = _stores(tmp_path)
    codes = [pairing.new_code() for _ in range(60)]
    assert len({c.code.nameplate for c in codes}) == 60
    assert all(len(str(c.code)) == 9 and str(c.code)[4] == "-" for c in codes)
    row = pairing.db.execute("SELECT * FROM pairing_codes WHERE id = ?", (codes[0].id,)).fetchone()
    digests = {hashlib.sha256(v.encode()).hexdigest() for v in (str(codes[0].code), str(codes[0].code)[:4])}
    assert not digests & {str(v) for v in tuple(row)}
    assert pairing.open_code(codes[0].code.nameplate) is not None


def test_expired_and_used_codes_leave_no_password_behind(tmp_path: Path) -> None:
    pairing, keys = _stores(tmp_path)
    expired, used = pairing.new_code(), pairing.new_code()
    pairing.db.execute("UPDATE pairing_codes SET expires_at = 0 WHERE id = ?", (expired.id,))
    assert pairing.open_code(expired.code.nameplate) is None
    assert not pairing.is_open(expired.id)
    assert pairing.redeem(used.id, "laptop", keys, "127.0.0.1") is not None
    assert pairing.redeem(expired.id, "laptop", keys, "127.0.0.1") is None
    assert pairing.db.execute("SELECT COUNT(*) FROM pairing_codes").fetchone()[0] == 0
    pairing.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = database_path(tmp_path).read_bytes()
    assert expired.code.password.encode() not in data and used.code.password.encode() not in data
    # the nameplate is free again
    assert expired.code.nameplate not in {r[0] for r in pairing.db.execute("SELECT nameplate FROM pairing_codes")}


def test_the_per_code_backstop_withdraws_the_code(tmp_path: Path) -> None:
    pairing, keys = _stores(tmp_path)
    code = pairing.new_code()
    for i in range(MAX_FAILURES_PER_CODE - 1):
        assert not pairing.record_failure(code.id, f"10.0.0.{i % 10}")
    assert pairing.is_open(code.id) and pairing.code_failures(code.id) == MAX_FAILURES_PER_CODE - 1
    assert pairing.code_failures(code.id, "10.0.0.1") == 5
    assert pairing.record_failure(code.id, "10.0.0.99")
    assert not pairing.is_open(code.id) and pairing.redeem(code.id, "laptop", keys, "10.0.0.1") is None
    assert [e.outcome for e in pairing.events(code.id)][-2:] == ["failed", "withdrawn"]


def test_source_failures_count_in_a_window(tmp_path: Path) -> None:
    pairing, _ = _stores(tmp_path)
    for _ in range(3):
        pairing.record_failure(None, "10.0.0.7")
    pairing.record_failure(None, "10.0.0.8")
    assert pairing.source_failures("10.0.0.7") == 3
    pairing.db.execute("UPDATE pairing_events SET ts = ts - 301 WHERE source = '10.0.0.7'")
    assert pairing.source_failures("10.0.0.7") == 0 and pairing.source_failures("10.0.0.8") == 1


@pytest.mark.parametrize(
    ("address", "source"),
    [("192.168.1.20", "192.168.1.20"), ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
     ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"), ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
     ("::ffff:10.0.0.1", "10.0.0.1"), ("fe80::1%eth0", "fe80::/64"), ("not an address", "not an address")],
)  # fmt: skip
def test_sources_group_ipv6_by_64(address: str, source: str) -> None:
    assert source_of(address) == source


def test_two_concurrent_redeems_give_one_key(tmp_path: Path) -> None:
    pairing, _ = _stores(tmp_path)
    code = pairing.new_code()
    barrier = threading.Barrier(8)
    results: list[object] = []

    def redeem() -> None:
        mine, keys = _stores(tmp_path)  # each its own connection, as two processes would have
        barrier.wait()
        results.append(mine.redeem(code.id, "laptop", keys, "127.0.0.1"))

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = [r for r in results if r is not None]
    assert len(results) == 8 and len(granted) == 1
    assert [e.outcome for e in pairing.events(code.id)] == ["paired"]


def test_device_keys_get_unique_names_and_the_codes_scope(tmp_path: Path) -> None:
    pairing, keys = _stores(tmp_path)
    keys.create("laptop")
    names = []
    for _ in range(3):
        code = pairing.new_code(["qwen2.5", " phi4:14b "])
        granted = pairing.redeem(code.id, "laptop", keys, "127.0.0.1")
        assert granted is not None
        key, secret = granted
        names.append(key.name)
        assert key.models == ("qwen2.5", "phi4:14b") and not key.admin
        assert key.may_use("qwen2.5:7b") and not key.may_use("llama3")
        assert keys.verify(secret) == key
    assert names == ["laptop-2", "laptop-3", "laptop-4"]
    everything = pairing.new_code()
    granted = pairing.redeem(everything.id, "tablet", keys, "127.0.0.1")
    assert granted is not None and granted[0].models is None


def test_an_empty_model_list_is_refused_when_the_code_is_made(tmp_path: Path) -> None:
    from homellm.errors import UsageError

    pairing, _ = _stores(tmp_path)
    with pytest.raises(UsageError, match="at least one model"):
        pairing.new_code([" ", ""])
