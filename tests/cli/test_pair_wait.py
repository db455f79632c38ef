"""``homellm pair`` waits and reports what happens to its code (the gateway writes the outcomes to the
database; here the store writes them directly, so each outcome is driven one at a time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.store.pairing import MAX_FAILURES_PER_CODE, OpenCode, Pairing

EXE = str(Path(sys.executable).with_name("homellm"))


class Waiting:
    def __init__(self, home: Path, *args: str) -> None:
        env = {**os.environ, "HOMELLM_HOME": str(home), "COLUMNS": "250"}
        self.proc = subprocess.Popen([EXE, "pair", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.first = self.proc.stdout.readline()
        if not self.first.startswith("{"):
            intro = [self.proc.stdout.readline() for _ in range(4)]
            assert intro[0] == "On the other machine run:\n" and intro[2].startswith("No fingerprint to compare")
            assert intro[3].startswith("The device's key may use every model")  # pairing offers an allowlist
        self.store = Pairing(open_database(home))
        self.keys = KeyStore(self.store.db)

    def code(self) -> OpenCode:
        text = json.loads(self.first)["code"] if self.first.startswith("{") else self.first.split()[2]
        found = self.store.open_code(text[:2])
        assert found is not None
        return found

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()


@pytest.fixture
def waiting(tmp_path: Path) -> Iterator[Waiting]:
    w = Waiting(tmp_path)
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
    w.proc.wait(10)


def test_failed_attempts_then_the_pairing_are_reported(waiting: Waiting) -> None:
    code = waiting.code()
    waiting.store.record_failure(code.id, "192.168.1.66", "eve")
    assert waiting.line().strip() == (
        "a pairing attempt with this code failed: wrong code or intercepted (the device saw another certificate); "
        "from 192.168.1.66, device name 'eve'"
    )
    assert waiting.store.redeem(code.id, "laptop", waiting.keys, "192.168.1.20") is not None
    assert waiting.line().strip() == "paired: device laptop"
    assert waiting.proc.wait(30) == 0


def test_a_withdrawn_code_is_reported(waiting: Waiting) -> None:
    code = waiting.code()
    for i in range(MAX_FAILURES_PER_CODE):
        waiting.store.record_failure(code.id, f"10.0.0.{i}")
    assert waiting.proc.wait(30) == 1
    assert "the code was withdrawn after too many wrong attempts" in waiting.proc.communicate()[0]


def test_an_expired_code_ends_the_wait(waiting: Waiting) -> None:
    waiting.store.db.execute("UPDATE pairing_codes SET expires_at = 0")
    assert waiting.line().strip() == "the code expired unused; run `homellm pair` again"
    assert waiting.proc.wait(30) == 1


def test_ctrl_c_stops_waiting_and_keeps_the_code(waiting: Waiting) -> None:
    assert waiting.proc.stderr is not None
    assert "waiting for the device" in waiting.proc.stderr.readline()
    waiting.proc.send_signal(signal.SIGINT)
    assert waiting.proc.wait(30) == 130
    assert "stopped waiting; the code stays valid until" in waiting.proc.stderr.read()
    assert waiting.store.is_open(waiting.code().id)


def test_json_lines(tmp_path: Path) -> None:
    w = Waiting(tmp_path, "--json", "--models", "smollm2")
    try:
        code = w.code()
        assert code.models == ["smollm2"] and set(json.loads(w.first)) == {"code", "expires_at"}
        assert w.store.redeem(code.id, "laptop", w.keys, "192.168.1.20") is not None
        assert json.loads(w.line()) == {"outcome": "paired", "device": "laptop", "source": "192.168.1.20"}
        assert w.proc.wait(30) == 0
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
