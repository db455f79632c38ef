"""The README walkthrough on two machines: network namespaces joined by a veth pair stand in for
the GPU PC and the laptop. Where namespaces cannot be made (no root) it runs over loopback and says
why, without discovery; in CI (``CI`` set, running as root) that is a failure, not a fallback.

GPU PC: ``homellm up --demo``; laptop: ``discover``, ``connect --code``, ``ping``, ``run``, ``chat``,
``bridge`` and the official ollama client through the bridge; then the failure cases.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homellm.protocol.pairing import parse_code
from homellm.store.pairing import MAX_FAILURES_PER_CODE_AND_SOURCE
from homellm.testing.fake_backend import free_port
from homellm.testing.netns import netns_unavailable

pytestmark = pytest.mark.engine
EXE = str(Path(sys.executable).with_name("homellm"))
# free ports, not Ollama's 11434 or homellm's 11435: the loopback fallback shares this machine's ports
PORT, CLOSED_PORT, BRIDGE_PORT = free_port(), free_port(), free_port()


@dataclass
class Host:
    ns: str | None  # None: this namespace (loopback fallback)
    ip: str
    home: Path

    def cmd(self, *args: str) -> list[str]:
        env = ["env", f"HOMELLM_HOME={self.home}", "COLUMNS=200"]
        prefix = ["ip", "netns", "exec", self.ns] if self.ns else []
        return [*prefix, *env, *args]

    def homellm(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(EXE, *args), input=stdin, capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Host]]:
    root = tmp_path_factory.mktemp("two-machines")
    reason = netns_unavailable()
    if reason and os.environ.get("CI"):
        pytest.fail(f"network namespaces are required in CI, to test discovery between two hosts: {reason}")
    if reason:
        print(f"\n[two machines] network namespaces unavailable ({reason}); running over loopback instead")
        yield Host(None, "127.0.0.1", root / "server"), Host(None, "127.0.0.1", root / "laptop")
        return
    tag = secrets.token_hex(3)
    srv, lap, va, vb = f"hlm-srv-{tag}", f"hlm-lap-{tag}", f"hs{tag}", f"hl{tag}"
    net = f"10.{77 + int(tag[:2], 16) % 100}.{int(tag[2:4], 16)}"
    script = [
        ["ip", "netns", "add", srv], ["ip", "netns", "add", lap],
        ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
        ["ip", "link", "set", va, "netns", srv], ["ip", "link", "set", vb, "netns", lap],
        ["ip", "-n", srv, "addr", "add", f"{net}.1/24", "dev", va],
        ["ip", "-n", lap, "addr", "add", f"{net}.2/24", "dev", vb],
        ["ip", "-n", srv, "link", "set", va, "up", "multicast", "on"],
        ["ip", "-n", lap, "link", "set", vb, "up", "multicast", "on"],
        ["ip", "-n", srv, "link", "set", "lo", "up"], ["ip", "-n", lap, "link", "set", "lo", "up"],
    ]  # fmt: skip
    try:
        for step in script:
            subprocess.run(step, check=True, capture_output=True)
        print(f"\n[two machines] GPU PC in netns {srv} ({net}.1), laptop in netns {lap} ({net}.2)")
        yield Host(srv, f"{net}.1", root / "server"), Host(lap, f"{net}.2", root / "laptop")
    finally:
        for ns in (srv, lap):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def gpu_pc(machines: tuple[Host, Host]) -> Iterator[tuple[Host, str]]:
    """``homellm up --demo`` on the GPU PC; yields the host and the admin key it printed."""
    server, _ = machines
    host_flag = [] if server.ns else ["--host", "127.0.0.1"]
    proc = server.popen(EXE, "up", "--demo", "--port", str(PORT), *host_flag)
    out = ""
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    try:
        while "Ctrl-C stops" not in out:
            line = proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                pytest.fail(f"homellm up did not start: {out}")
            out += line
        # `up` under a pipe (a service's log) keeps the new admin key out of its output, in a 0600 file
        assert "hlm_" not in out and "admin-key.txt" in out, out
        key_file = server.home / "admin-key.txt"
        assert key_file.stat().st_mode & 0o777 == 0o600
        yield server, key_file.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(30)


def _profiles(laptop: Host) -> dict[str, object]:
    data: dict[str, object] = json.loads((laptop.home / "profiles.json").read_text())
    return data


def test_walkthrough(machines: tuple[Host, Host], gpu_pc: tuple[Host, str]) -> None:
    server, laptop = machines
    # 1. discover (mDNS does not work on loopback-only setups)
    if laptop.ns:
        found = json.loads(laptop.homellm("discover", "--json", "--timeout", "5").stdout)
        mine = [f for f in found if server.ip in f["addresses"]]
        assert mine, f"discovery across the namespaces found {found}"
        assert mine[0]["port"] == PORT  # where to connect; who answers is proved by the code, not by mDNS
        target = mine[0]["name"]
    else:
        print("[two machines] discovery skipped: mDNS needs a non-loopback interface")
        target = f"{server.ip}:{PORT}"
    # 2. pair on the server (it waits for the outcome), connect on the laptop: no fingerprint to compare
    pairing = server.popen(EXE, "pair", "--json")
    assert pairing.stdout is not None
    code = json.loads(pairing.stdout.readline())["code"]
    r = laptop.homellm("connect", target, "--code", code, "--name", "gpu-pc", "--device", "laptop")
    assert r.returncode == 0, r.stderr
    assert "paired: the server made key laptop" in r.stdout
    assert json.loads(pairing.stdout.readline()) == {"outcome": "paired", "device": "laptop", "source": laptop.ip}
    assert pairing.wait(30) == 0
    profile_file = laptop.home / "profiles.json"
    assert oct(profile_file.stat().st_mode & 0o777) == "0o600"
    # the code works once
    again = laptop.homellm("connect", target, "--code", code, "--name", "other")
    assert again.returncode == 2 and "wrong, used or expired" in again.stderr
    # 3. ping, list, run, chat
    ping = laptop.homellm("ping")
    assert ping.returncode == 0, ping.stdout
    for step in ("name resolution", "TCP connection", "TLS certificate", "authentication", "backend", "models"):
        assert f"ok   {step}" in ping.stdout
    assert laptop.homellm("list").stdout.split() == ["smollm2:135m"]
    run = laptop.homellm("run", "smollm2:135m", "Say hello in three words.")
    assert run.returncode == 0 and run.stdout.strip(), run.stderr
    piped = laptop.homellm("run", "smollm2:135m", stdin="What is 2+2?")
    assert piped.returncode == 0 and piped.stdout.strip()
    script = f'Hi there\n"""\nTwo lines\nof input\n"""\n/system Be brief\n/save {laptop.home / "chat.json"}\n/bye\n'
    chat = laptop.homellm("chat", "smollm2:135m", stdin=script)
    assert chat.returncode == 0, chat.stderr
    saved = json.loads((laptop.home / "chat.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert saved["messages"][3]["content"] == "Two lines\nof input"
    # 4. env and the bridge with the official ollama client
    env = laptop.homellm("env", "--shell", "fish", "--port", str(BRIDGE_PORT)).stdout
    assert f'set -gx OLLAMA_HOST "http://127.0.0.1:{BRIDGE_PORT}"' in env and "OPENAI_API_KEY" in env
    bridge = laptop.popen(EXE, "bridge", "--port", str(BRIDGE_PORT))
    try:
        client_code = (
            "import ollama, time\n"
            "for _ in range(100):\n"
            f"    try:\n        ollama.Client(host='http://127.0.0.1:{BRIDGE_PORT}').list(); break\n"
            "    except Exception: time.sleep(0.2)\n"
            f"c = ollama.Client(host='http://127.0.0.1:{BRIDGE_PORT}')\n"
            "parts = list(c.chat(model='smollm2:135m', messages=[{'role': 'user', 'content': 'hi'}], stream=True,"
            " options={'num_predict': 5}))\n"
            "print('STREAMED', len(parts), parts[-1].done)\n"
            "print('MODELS', [m.model for m in c.list().models])\n"
        )
        r = subprocess.run(laptop.cmd(sys.executable, "-c", client_code), capture_output=True, text=True, timeout=120)
        assert "STREAMED" in r.stdout and "True" in r.stdout, r.stdout + r.stderr
        assert "MODELS ['smollm2:135m']" in r.stdout
        # a second bridge on the same port says what to do
        busy = laptop.homellm("bridge", "--port", str(BRIDGE_PORT))
        assert busy.returncode == 2 and f"port {BRIDGE_PORT} is in use" in busy.stderr and "--port" in busy.stderr
    finally:
        bridge.terminate()
        bridge.wait(20)


def test_failures_are_diagnosed(machines: tuple[Host, Host], gpu_pc: tuple[Host, str]) -> None:
    server, laptop = machines
    code = json.loads(server.homellm("pair", "--json", "--no-wait").stdout)["code"]
    assert laptop.homellm("connect", f"{server.ip}:{PORT}", "--code", code, "--name", "pc").returncode == 0
    data = _profiles(laptop)
    good = dict(data["profiles"]["pc"])  # type: ignore[index]

    def with_profile(**changes: str) -> None:
        data["profiles"]["pc"] = {**good, **changes}  # type: ignore[index]
        (laptop.home / "profiles.json").write_text(json.dumps(data))

    # a closed port
    with_profile(url=f"https://{server.ip}:{CLOSED_PORT}")
    ping = laptop.homellm("ping", "pc")
    assert ping.returncode == 1 and "FAIL TCP connection" in ping.stdout and "not running there" in ping.stdout
    # a wrong key
    with_profile(key="hlm_wrong")
    ping = laptop.homellm("ping", "pc")
    assert ping.returncode == 1 and "FAIL authentication" in ping.stdout and "pair again" in ping.stdout
    # a changed certificate (pinned to another one): refused, never silently accepted
    from homellm.serve.tls import ensure_tls

    other = ensure_tls(laptop.home / "other-server", None, None)
    with_profile(cert_pem=other.cert.read_text(), fingerprint=other.fingerprint)
    ping = laptop.homellm("ping", "pc")
    assert ping.returncode == 1 and "FAIL TLS certificate" in ping.stdout
    run = laptop.homellm("run", "smollm2:135m", "hi", "--profile", "pc")
    assert run.returncode == 3 and "certificate of" in run.stderr and "changed" in run.stderr
    assert "Traceback" not in run.stderr
    with_profile()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ping", "nosuch"], "unknown profile 'nosuch'"),
        (["connect", "ht!tp://x y", "--code", "AAAA-BBBB"], "is not a host name, address or URL"),
        (["connect", "10.254.254.254:9", "--code", "AAAA-BBBB"], "cannot get a TLS certificate"),
        (["connect", "example.invalid", "--code", "AAAA-BBB0"], "is not a pairing code"),
        (["connect", "example.invalid", "--code", "AAAA-BBBB", "--device", "_x"], "cannot be used"),
        (["connect", "example.invalid", "--yes"], "give --code CODE"),
        (["env", "--shell", "tcsh"], "unknown shell 'tcsh'"),
    ],
)
def test_bad_input_is_one_line(
    machines: tuple[Host, Host], gpu_pc: tuple[Host, str], args: list[str], message: str
) -> None:
    _, laptop = machines
    r = laptop.homellm(*args, timeout=60)
    assert r.returncode in (1, 2, 3) and message in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_expired_code_and_guessing_are_refused(machines: tuple[Host, Host], gpu_pc: tuple[Host, str]) -> None:
    server, laptop = machines
    code = json.loads(server.homellm("pair", "--json", "--no-wait").stdout)["code"]
    with sqlite3.connect(server.home / "homellm.db") as db:
        db.execute("UPDATE pairing_codes SET expires_at = 0")
    r = laptop.homellm("connect", f"{server.ip}:{PORT}", "--code", code)
    assert r.returncode == 2 and "wrong, used or expired" in r.stderr
    fresh = json.loads(server.homellm("pair", "--json", "--no-wait").stdout)["code"]
    wrong = fresh[:5] + ("2222" if fresh[5:] != "2222" else "3333")  # the right nameplate, a wrong password
    for _ in range(MAX_FAILURES_PER_CODE_AND_SOURCE):  # each one is a full SPAKE2 attempt that fails
        r = laptop.homellm("connect", f"{server.ip}:{PORT}", "--code", wrong)
        assert r.returncode == 3 and "is relaying the connection" in r.stderr
    # the cap: now even the right code is refused from this address, before any key exchange
    r = laptop.homellm("connect", f"{server.ip}:{PORT}", "--code", fresh)
    assert r.returncode == 2 and "too many wrong attempts at this code from your address" in r.stderr
    with sqlite3.connect(server.home / "homellm.db") as db:
        nameplate = parse_code(fresh).nameplate
        (code_id,) = db.execute("SELECT id FROM pairing_codes WHERE nameplate = ?", (nameplate,)).fetchone()
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM pairing_events WHERE code_id = ?", (code_id,))]
        assert outcomes == ["failed"] * MAX_FAILURES_PER_CODE_AND_SOURCE  # counted once each; nothing paired
        db.execute("DELETE FROM pairing_events")


def test_manual_connection_checks_the_given_fingerprint(machines: tuple[Host, Host], gpu_pc: tuple[Host, str]) -> None:
    server, laptop = machines
    made = json.loads(server.homellm("keys", "create", "tablet", "--models", "smollm2", "--json").stdout)
    from homellm.serve.tls import fingerprint_of_pem

    fp = fingerprint_of_pem((server.home / "tls" / "cert.pem").read_bytes())
    url = f"https://{server.ip}:{PORT}"
    wrong = fp[:-2] + ("00" if not fp.endswith("00") else "11")
    r = laptop.homellm("connect", url, "--key-stdin", "--fingerprint", wrong, "--name", "tablet", stdin=made["key"])
    assert r.returncode == 3 and "refusing to connect" in r.stderr
    r = laptop.homellm("connect", url, "--key-stdin", "--fingerprint", fp, "--name", "tablet", stdin=made["key"])
    assert r.returncode == 0 and "matches the fingerprint you gave" in r.stdout
    assert laptop.homellm("list", "tablet").stdout.split() == ["smollm2:135m"]
