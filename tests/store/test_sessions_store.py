"""The web app's sessions in SQLite: only a hash of the token is stored; sessions expire and slide."""

from __future__ import annotations

from pathlib import Path

from homellm.store import open_database
from homellm.store.sessions import SESSION_TTL, SessionStore


def test_a_session_is_found_by_its_token_and_stored_as_a_hash(tmp_path: Path) -> None:
    db = open_database(tmp_path)
    store = SessionStore(db)
    token, session = store.create("phone", now=1000.0)
    assert store.get(token, now=1001.0) == session
    assert store.get(token + "x", now=1001.0) is None and store.get("", now=1001.0) is None
    assert store.get("a" * 100, now=1001.0) is None
    row = db.execute("SELECT * FROM web_sessions").fetchone()
    assert token not in tuple(row) and row["key_name"] == "phone"


def test_sessions_expire_and_are_extended_in_their_second_half(tmp_path: Path) -> None:
    store = SessionStore(open_database(tmp_path))
    token, _ = store.create("phone", now=0.0)
    early = store.get(token, now=SESSION_TTL * 0.25)
    assert early is not None and early.expires_at == SESSION_TTL  # first half: no write
    late = store.get(token, now=SESSION_TTL * 0.75)
    assert late is not None and late.expires_at == SESSION_TTL * 1.75
    assert store.get(token, now=SESSION_TTL * 2.0) is None


def test_revoking_a_key_ends_its_sessions(tmp_path: Path) -> None:
    store = SessionStore(open_database(tmp_path))
    a, _ = store.create("phone")
    b, _ = store.create("phone")
    c, _ = store.create("laptop")
    assert store.count("phone") == 2 and store.delete_for_key("phone") == 2
    assert store.get(a) is None and store.get(b) is None and store.get(c) is not None


def test_a_key_keeps_a_bounded_number_of_sessions(tmp_path: Path) -> None:
    """Signing in again and again (20 a minute per address, each session living 30 days) cannot grow the
    table without bound: a key's oldest sessions give way to its newest."""
    from homellm.store.sessions import MAX_SESSIONS_PER_KEY

    store = SessionStore(open_database(tmp_path))
    tokens = [store.create("phone", now=float(i))[0] for i in range(MAX_SESSIONS_PER_KEY + 10)]
    other, _ = store.create("laptop", now=0.5)
    assert store.count("phone", now=100.0) == MAX_SESSIONS_PER_KEY
    assert store.get(tokens[-1], now=100.0) is not None and store.get(tokens[0], now=100.0) is None
    assert store.get(other, now=100.0) is not None  # another key's sessions are its own
