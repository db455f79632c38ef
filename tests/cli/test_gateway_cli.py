"""``homellm keys``, ``usage`` and ``up --demo`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
from pathlib import Path

import ollama
import pexpect
import pytest
from tests.cli.test_cli import homellm

from homellm.testing.fake_backend import free_port


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    r = homellm(
        "keys", "create", "alice-phone", "--models", "qwen2.5,phi4", "--expires", "30d", "--json", home=tmp_path
    )
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["name"] == "alice-phone" and made["key"].startswith("hlm_")
    human = homellm("keys", "create", "root", "--admin", home=tmp_path)
    assert "Copy it now" in human.stdout and re.search(r"hlm_\S{40,}", human.stdout)
    listed = json.loads(homellm("keys", "list", "--json", home=tmp_path).stdout)
    alice = next(k for k in listed if k["name"] == "alice-phone")
    assert alice["models"] == ["qwen2.5", "phi4"] and alice["active"] and alice["expires_at"]
    assert made["key"] not in homellm("keys", "list", home=tmp_path).stdout  # secrets are never listed
    assert homellm("keys", "revoke", "alice-phone", home=tmp_path).returncode == 0
    listed = json.loads(homellm("keys", "list", "--json", home=tmp_path).stdout)
    assert not next(k for k in listed if k["name"] == "alice-phone")["active"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "dup"], "already exists"),
        (["keys", "create", "x", "--expires", "forever"], "cannot read the duration"),
        (["keys", "revoke", "nobody"], "unknown key 'nobody'"),
        (["usage", "--by", "color"], "--by must be one of"),
        (["usage", "--since", "someday"], "cannot read --since"),
        (["serve"], "choose a backend"),
        (["serve", "--model", "/nope.gguf"], "no such file: /nope.gguf"),
        (["serve", "--model", "y.gguf", "--models-dir", "."], "only one of"),
        (["serve", "--backend", "http://x", "--model", "y.gguf"], "no such file: y.gguf"),  # a pool: both, checked
        (["serve", "--config", "/nope.toml"], "no such config file"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    homellm("keys", "create", "dup", home=tmp_path)
    r = homellm(*args, home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_usage_empty_and_json(tmp_path: Path) -> None:
    assert "no requests recorded yet" in homellm("usage", home=tmp_path).stdout
    assert json.loads(homellm("usage", "--by", "model", "--json", home=tmp_path).stdout) == []


def _up(home: Path, port: int) -> pexpect.spawn:
    """``homellm up --demo`` in a terminal (a pty), as a person starts it."""
    env = dict(os.environ, HOMELLM_HOME=str(home), COLUMNS="200")
    exe = str(Path(sys.executable).with_name("homellm"))
    child = pexpect.spawn(exe, ["up", "--demo", "--port", str(port)], env=env, encoding="utf-8", timeout=180)
    child.expect("Ctrl-C stops the gateway")
    return child


@pytest.mark.engine
def test_up_demo_serves_smollm2_over_tls_with_a_new_admin_key(tmp_path: Path) -> None:
    port = free_port()
    child = _up(tmp_path, port)
    try:
        out = child.before
        key = re.search(r"Admin key \(shown once, keep it safe\): (hlm_\S+)", out)
        fingerprint = re.search(r"fingerprint: (SHA256:[0-9A-F:]+)", out)
        assert key and fingerprint, out
        assert f"on this machine: https://localhost:{port}" in out
        assert "https://" in out and "curl -k --pinnedpubkey 'sha256//" in out and "OPENAI_BASE_URL=" in out
        cert = tmp_path / "tls" / "cert.pem"
        client = ollama.Client(host=f"https://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key[1]}"},
                               verify=ssl.create_default_context(cafile=str(cert)))  # fmt: skip
        reply = client.chat(
            model="smollm2:135m", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 4}
        )
        assert reply.message.content
        unauth = ollama.Client(host=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert)))
        with pytest.raises(ollama.ResponseError):
            unauth.list()
        # a second `up` on the same port says so in one line, before starting anything
        second = homellm("up", "--demo", "--port", str(port), home=tmp_path)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"port {port} is already in use" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert "Ctrl-C" not in second.stdout
    finally:
        child.sendintr()
        child.expect(pexpect.EOF)
    assert "Traceback" not in (child.before or "")  # Ctrl-C is quiet
    # a second `up` (the gateway stopped) starts again and mints no other admin key
    again = _up(tmp_path, port)
    try:
        assert "Admin key" not in again.before and "homellm keys create NAME --admin" in again.before
    finally:
        again.sendintr()
        again.expect(pexpect.EOF)
    listed = json.loads(homellm("keys", "list", "--json", home=tmp_path).stdout)
    assert [k["name"] for k in listed] == ["admin"] and listed[0]["admin"]
