"""``homellm usage`` over rows the real gateway wrote, and prompt text in the usage log only with
``log_prompts`` (bounded)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.cli.test_cli import homellm
from tests.conftest import Fake, run_gateway

from homellm.serve.accounting import MAX_STORED_TEXT
from homellm.serve.backends import OllamaBackend
from homellm.store import open_database
from homellm.store.db import database_path
from homellm.store.keys import KeyStore


def chat(model: str, text: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": False, **extra}


def wait_for_rows(home: Path, n: int) -> list[dict[str, Any]]:
    """The usage writer commits in batches on its own thread: poll until its rows are in (bounded)."""
    db = open_database(home)
    deadline = time.monotonic() + 30
    while (count := db.execute("SELECT COUNT(*) FROM usage").fetchone()[0]) < n:
        assert time.monotonic() < deadline, f"{count} usage rows of {n} after 30 s"
        time.sleep(0.05)
    assert count == n
    return [dict(r) for r in db.execute("SELECT * FROM usage ORDER BY id")]


def test_usage_reports_what_the_gateway_recorded(tmp_path: Path, ollama_fake: Fake) -> None:
    store = KeyStore(open_database(tmp_path))
    alice, bob = store.create("alice")[1], store.create("bob")[1]
    with run_gateway(tmp_path, OllamaBackend(ollama_fake.url)) as (url, _):
        for _ in range(3):
            r = httpx.post(url + "/api/chat", json=chat("fake:small", options={"num_predict": 4}),
                           headers={"Authorization": f"Bearer {alice}"})  # fmt: skip
            assert r.status_code == 200
        streamed = httpx.post(url + "/api/chat", json={**chat("fake:large"), "stream": True, "options":
                              {"num_predict": 2}}, headers={"Authorization": f"Bearer {bob}"})  # fmt: skip
        assert streamed.status_code == 200
        missing = httpx.post(url + "/api/chat", json=chat("nope:1b"), headers={"Authorization": f"Bearer {bob}"})
        assert missing.status_code == 404  # the backend does not have it
        rows = wait_for_rows(tmp_path, 5)
    assert [(r["key_name"], r["model"], r["status"]) for r in rows] == [
        ("alice", "fake:small", 200), ("alice", "fake:small", 200), ("alice", "fake:small", 200),
        ("bob", "fake:large", 200), ("bob", "nope:1b", 404)]  # fmt: skip
    assert rows[3]["prompt_tokens"] == 7 and rows[3]["completion_tokens"] == 2  # read from the stream's last line

    by_key = {r["key"]: r for r in json.loads(homellm("usage", "--json", home=tmp_path).stdout)}
    assert set(by_key) == {"alice", "bob"}
    assert {k: by_key["alice"][k] for k in ("requests", "errors", "prompt_tokens", "completion_tokens")} == {
        "requests": 3, "errors": 0, "prompt_tokens": 21, "completion_tokens": 12}  # fmt: skip
    assert by_key["bob"]["requests"] == 2 and by_key["bob"]["errors"] == 1
    by_model = {r["model"]: r["requests"] for r in json.loads(homellm("usage", "--by", "model", "--json",
                                                                       home=tmp_path).stdout)}  # fmt: skip
    assert by_model == {"fake:small": 3, "fake:large": 1, "nope:1b": 1}
    by_day = json.loads(homellm("usage", "--by", "day", "--json", home=tmp_path).stdout)
    assert {d["day"]: d["requests"] for d in by_day} == Counter(
        time.strftime("%Y-%m-%d", time.gmtime(r["ts"])) for r in rows
    )
    assert json.loads(homellm("usage", "--since", "1h", "--json", home=tmp_path).stdout) != []
    assert json.loads(homellm("usage", "--since", "2999-01-01", "--json", home=tmp_path).stdout) == []

    table = homellm("usage", home=tmp_path)
    assert table.returncode == 0, table.stderr
    cells = [[c.strip() for c in line.split("\u2502")[1:-1]] for line in table.stdout.splitlines()]  # rich's │
    lines = {row[0]: row for row in cells if row}
    assert lines["alice"][1:5] == ["3", "0", "21", "12"]
    assert lines["bob"][1:3] == ["2", "1"]


@pytest.mark.parametrize("log_prompts", [False, True], ids=["counts-only", "log-prompts"])
def test_prompt_text_is_stored_only_with_log_prompts_and_bounded(
    tmp_path: Path, ollama_fake: Fake, log_prompts: bool
) -> None:
    key = KeyStore(open_database(tmp_path)).create("k")[1]
    secret, long = "the surprise party is on friday", "y" * (MAX_STORED_TEXT + 5000)
    with run_gateway(tmp_path, OllamaBackend(ollama_fake.url), log_prompts=log_prompts) as (url, _):
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.post(url + "/api/chat", json=chat("fake:small", secret), headers=auth).status_code == 200
        body = {"model": "fake:small", "prompt": long, "stream": False}
        assert httpx.post(url + "/api/generate", json=body, headers=auth).status_code == 200
        rows = wait_for_rows(tmp_path, 2)
    if log_prompts:
        assert rows[0]["prompt"] == secret
        assert rows[1]["prompt"] == long[:MAX_STORED_TEXT]  # bounded
    else:
        assert [r["prompt"] for r in rows] == [None, None]
        db = open_database(tmp_path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert secret.encode() not in database_path(tmp_path).read_bytes()  # not anywhere in the file
    report = homellm("usage", "--json", home=tmp_path)
    assert secret not in report.stdout and json.loads(report.stdout)[0]["requests"] == 2  # counts, never text
