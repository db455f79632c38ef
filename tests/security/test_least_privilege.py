"""Issue 8 parts 5, 6 and E: scopes hold, secrets stay private, and the laptop does not obey what it prints."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from tests.conftest import Fake, Keys, homellm_exe, run_gateway

from homellm.connect.profiles import Profile, ProfileStore
from homellm.errors import UsageError
from homellm.serve.backends import OpenAIBackend
from homellm.serve.tls import ensure_tls
from homellm.store import open_database
from homellm.store.keys import KeyStore


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_errors_and_health_never_name_models_outside_the_allowlist(gateway_home: Path, openai_fake: Fake,
                                                                   keys: Keys) -> None:  # fmt: skip
    with run_gateway(gateway_home, OpenAIBackend(openai_fake.url)) as (url, _):
        r = httpx.post(url + "/v1/chat/completions", json={"model": "smollm2", "messages": []},
                       headers=bearer(keys.alice))  # fmt: skip
        assert r.status_code == 404 and "fake:small" in r.text and "fake:large" not in r.text
        health = httpx.get(url + "/homellm/health", headers=bearer(keys.alice)).json()
        assert health["models"] == 1 and "fake:large" not in str(health) and openai_fake.url not in str(health)
        full = httpx.get(url + "/homellm/health", headers=bearer(keys.bob)).json()
        assert full["models"] == 2 and openai_fake.url in full["describe"]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_every_file_holding_a_secret_is_private(tmp_path: Path, openai_fake: Fake) -> None:
    home = tmp_path / "home"
    tls = ensure_tls(home, None, None)
    key = KeyStore(open_database(home)).create("k")[1]
    with run_gateway(home, OpenAIBackend(openai_fake.url), tls=tls) as (url, _):
        assert httpx.get(url + "/api/tags", headers=bearer(key), verify=False).status_code == 200
        ProfileStore(home).save(Profile("p", url, tls.fingerprint, tls.cert.read_text(), key))
        db = home / "homellm.db"
        for f in (db, db.with_name("homellm.db-wal"), db.with_name("homellm.db-shm"), tls.key, home / "profiles.json"):
            assert f.exists() and _mode(f) == 0o600, (f, oct(_mode(f)))
        for d in (home, home / "tls"):
            assert _mode(d) == 0o700, (d, oct(_mode(d)))


def test_the_certificate_is_a_leaf_for_this_servers_names_only(tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(ensure_tls(tmp_path, None, None).cert.read_bytes())
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)


def test_a_key_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    store = KeyStore(open_database(tmp_path))
    for bad in ("eve\n", "eve\r", "eve\x1b", "\neve"):
        with pytest.raises(UsageError):
            store.create(bad)
    store.create("eve")
    assert store.revoke("eve").revoked_at is not None


def test_keys_are_never_taken_from_the_command_line(tmp_path: Path, openai_fake: Fake) -> None:
    env = dict(os.environ, HOMELLM_HOME=str(tmp_path), COLUMNS="200")
    r = subprocess.run([homellm_exe(), "bench", "speed", "http://127.0.0.1:1", "-m", "x", "--key", "hlm_secret"],
                       env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "No such option" in r.stderr
    # `connect` reads its key from HOMELLM_KEY, a prompt or --key-stdin: test_client_trusts_no_announcement.py


@pytest.mark.parametrize(
    "hostile",
    [
        "\x1b]52;c;cm0gLXJmIH4=\x07",  # OSC 52: write to the clipboard
        "\x1b]0;pwned\x07",  # set the terminal title
        "\x1b[2K\x1b[1A\x1b[2K",  # erase lines above
        "\u202egnp.exe",  # bidirectional override
    ],
    ids=["osc52-clipboard", "title", "line-erase", "bidi"],
)
def test_run_prints_model_output_with_control_sequences_made_visible(
    tmp_path: Path, ollama_fake: Fake, keys: Keys, gateway_home: Path, hostile: str
) -> None:
    from homellm.serve.backends import OllamaBackend

    ollama_fake.script.text = ["before ", hostile, " after"]
    ollama_fake.script.tokens = 3
    tls = ensure_tls(gateway_home, None, None)
    with run_gateway(gateway_home, OllamaBackend(ollama_fake.url), tls=tls) as (url, _):
        ProfileStore(tmp_path).save(Profile("gw", url, tls.fingerprint, tls.cert.read_text(), keys.bob))
        env = dict(os.environ, HOMELLM_HOME=str(tmp_path))
        r = subprocess.run([homellm_exe(), "run", "fake:small", "hi"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "before" in r.stdout and "after" in r.stdout
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    assert "^[" in r.stdout or "\\u202e" in r.stdout
