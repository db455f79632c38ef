"""SQLite storage: API keys and the usage log, in HOMELLM_HOME/homellm.db (WAL mode)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(home: Path) -> sqlite3.Connection:
    from homellm.store.db import connect, database_path

    return connect(database_path(home))
