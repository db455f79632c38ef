"""Issue 8 part B: a relay on the LAN with its own certificate cannot take over pairing.

The household runs ``homellm pair`` on the server (it waits for the outcome) and ``homellm connect
--code`` on the laptop; the attacker's relay sits in between. Both ends must fail, each saying why; the
relay must learn neither the code nor a key; then the same code still pairs directly.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.security.conftest import Relay, Served

from homellm.connect.client import PairingFailed, pair, server_certificate
from homellm.store import open_database
from homellm.store.pairing import Pairing

EXE = str(Path(sys.executable).with_name("homellm"))


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOMELLM_HOME": str(home), "COLUMNS": "250"}


class PairProcess:
    """``homellm pair`` on the server, read line by line as it waits."""

    def __init__(self, home: Path) -> None:
        self.proc = subprocess.Popen([EXE, "pair"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=_env(home))  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, pattern: str) -> re.Match[str]:
        while True:
            line = self.lines.get(timeout=60)  # a safety net, not a timing assertion
            self.seen.append(line)
            if not line:
                pytest.fail(f"homellm pair ended without {pattern!r}: {''.join(self.seen)}")
            found = re.search(pattern, line)
            if found:
                return found


@pytest.fixture
def pairing(served: Served) -> Iterator[PairProcess]:
    p = PairProcess(served.home)
    yield p
    if p.proc.poll() is None:
        p.proc.terminate()
    p.proc.wait(10)


def _connect(home: Path, url: str, code: str) -> subprocess.CompletedProcess[str]:
    args = [EXE, "connect", url, "--code", code, "--device", "laptop", "--name", "pc"]
    return subprocess.run(args, capture_output=True, text=True, env=_env(home), timeout=60)


def test_a_relay_makes_pairing_fail_on_both_ends(
    tmp_path: Path, served: Served, relay: Relay, pairing: PairProcess
) -> None:
    code = pairing.wait_for(r"Pairing code: (\w{4}-\w{4})")[1]
    laptop = tmp_path / "laptop"

    through_relay = _connect(laptop, relay.url, code)
    assert through_relay.returncode == 3, through_relay.stdout + through_relay.stderr
    assert (
        "pairing failed: the code was wrong, or someone between you and the server is relaying the connection "
        f"(the certificate you see, {relay.tls.fingerprint}, is not the server's)"
    ) in " ".join(through_relay.stderr.split())
    assert "Traceback" not in through_relay.stderr and not (laptop / "profiles.json").exists()
    pairing.wait_for(
        r"a pairing attempt with this code failed: wrong code or intercepted \(the device saw another certificate\)"
    )
    assert pairing.proc.poll() is None  # still waiting: the household can try again

    # the relay saw the whole conversation in clear, and none of it gives away the code or a key
    password = code.replace("-", "")[2:]
    seen = bytes(relay.to_server + relay.to_client)
    assert b"/homellm/pair/confirm" in relay.to_server and b"403" in relay.to_client  # it did relay both rounds
    for secret in (code, code.replace("-", ""), password):
        assert secret.encode() not in seen
        assert hashlib.sha256(secret.encode()).hexdigest().encode() not in seen.lower()
    assert b"hlm_" not in seen
    assert served.gateway.keys.list() == []

    # the same code, straight to the server, pairs; `homellm pair` reports it and ends
    direct = _connect(laptop, served.url, code)
    assert direct.returncode == 0, direct.stderr
    assert "paired: the server made key laptop for this device (all models)" in direct.stdout
    pairing.wait_for(r"paired: device laptop")
    assert pairing.proc.wait(30) == 0


def test_the_relay_cannot_finish_a_pairing_in_process_either(served: Served, relay: Relay) -> None:
    code = Pairing(open_database(served.home)).new_code()
    pem, seen = server_certificate(relay.url)
    assert seen == relay.tls.fingerprint != served.tls.fingerprint
    with pytest.raises(PairingFailed, match="is relaying the connection"):
        pair(relay.url, str(code.code), pem, "laptop")
    real_pem, _ = server_certificate(served.url)
    assert pair(served.url, str(code.code), real_pem, "laptop")["name"] == "laptop"


def test_pair_suggests_connecting_without_a_fingerprint(served: Served) -> None:
    r = subprocess.run([EXE, "pair", "--no-wait"], capture_output=True, text=True, env=_env(served.home), timeout=60)
    assert r.returncode == 0, r.stderr
    code = re.search(r"Pairing code: (\w{4}-\w{4})", r.stdout)
    assert code is not None
    assert re.search(rf"homellm connect \S+\.local --code {code[1]}\n", r.stdout)
    assert "No fingerprint to compare" in r.stdout and "--fingerprint" not in r.stdout
