"""Issue 8 parts B, D and E on the laptop: an mDNS announcement is a hint shown literally, never proof
of identity; an existing key never goes on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.security.conftest import Served

from homellm.discovery import service_info
from homellm.serve.network import lan_addresses

EXE = str(Path(sys.executable).with_name("homellm"))


def _homellm(home: Path, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "HOMELLM_KEY"}
    full_env = inherited | {"HOMELLM_HOME": str(home), "COLUMNS": "250"} | env
    return subprocess.run([EXE, *args], input=stdin, capture_output=True, text=True, env=full_env, timeout=60)


def test_discover_shows_a_hostile_announcement_literally(tmp_path: Path) -> None:
    from zeroconf import Zeroconf

    addresses = [a for a in lan_addresses() if ":" not in a]
    if not addresses:
        pytest.skip("mDNS needs a non-loopback IPv4 interface")
    props = {"version": "[bold]1\x1b[2J\x1b]0;pwned\x07", "fp": "SHA256:AA:BB", "tls": "1"}
    zc = Zeroconf(interfaces=addresses[:1])
    info = service_info("evil [/] [red]x", 11999, addresses[:1], props)
    zc.register_service(info, allow_name_change=True)
    try:
        r = _homellm(tmp_path, "discover", "--timeout", "4")
        listed = _homellm(tmp_path, "discover", "--timeout", "4", "--json")
    finally:
        zc.unregister_service(info)
        zc.close()
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "evil" in ln)
    assert line.startswith("evil [/] [red]x  https://") and "(version [bold]1\\x1b[2J\\x1b]0;pwned\\x07)" in line
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "fingerprint" not in r.stdout and "SHA256:AA" not in r.stdout  # not shown as if it meant something
    assert "proves who the server is" in r.stdout
    found = [f for f in json.loads(listed.stdout) if f["name"].startswith("evil")]
    assert found and found[0]["url"].startswith(f"https://{addresses[0]}:11999")


def test_a_key_is_never_taken_from_the_command_line(tmp_path: Path, served: Served) -> None:
    _, secret = served.gateway.keys.create("tablet", ["smollm2"])
    fp = served.tls.fingerprint
    r = _homellm(tmp_path, "connect", served.url, "--key", secret, "--fingerprint", fp)
    assert r.returncode == 2 and "unexpected extra argument" in r.stderr.lower()
    assert not (tmp_path / "profiles.json").exists()
    r = _homellm(tmp_path, "connect", served.url, "--key", "--fingerprint", fp, stdin="")
    assert r.returncode == 2 and "give the key through HOMELLM_KEY or --key-stdin" in r.stderr

    r = _homellm(
        tmp_path, "connect", served.url, "--key-stdin", "--fingerprint", fp, "--name", "a", stdin=secret + "\n"
    )
    assert r.returncode == 0, r.stderr
    r = _homellm(tmp_path, "connect", served.url, "--key", "--fingerprint", fp, "--name", "b", HOMELLM_KEY=secret)
    assert r.returncode == 0, r.stderr
    profiles = json.loads((tmp_path / "profiles.json").read_text())["profiles"]
    assert profiles["a"]["key"] == profiles["b"]["key"] == secret
    # without a fingerprint there is nothing to trust the certificate by, and stdin is taken by the key
    r = _homellm(tmp_path, "connect", served.url, "--key-stdin", stdin=secret + "\n")
    assert r.returncode == 2 and "--fingerprint" in r.stderr
