"""The usage writer's thread survives a record SQLite refuses: only that row is lost, never the log."""

from __future__ import annotations

import time
from pathlib import Path

from homellm.store.db import connect
from homellm.store.usage import UsageRecord, UsageWriter


def test_a_record_sqlite_refuses_costs_only_its_own_row(tmp_path: Path) -> None:
    path = tmp_path / "homellm.db"
    writer = UsageWriter(path, interval=0.01)
    try:
        writer.record(UsageRecord(time.time(), "k", "127.0.0.1", "POST", "/api/chat", "m", 200, 10**30))
        writer.record(UsageRecord(time.time(), "k", "127.0.0.1", "POST", "/api/chat", "m", 200, 5))
        db = connect(path)
        deadline = time.monotonic() + 10
        while not (rows := db.execute("SELECT prompt_tokens FROM usage").fetchall()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r[0] for r in rows] == [5]
        writer.record(UsageRecord(time.time(), "k", "127.0.0.1", "POST", "/api/chat", "m", 200, 7))
        while len(rows := db.execute("SELECT prompt_tokens FROM usage").fetchall()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted(r[0] for r in rows) == [5, 7]  # the thread is still writing
    finally:
        writer.close()
