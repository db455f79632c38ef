"""TLS certificates, and the rules the gateway enforces before it listens."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from tests.conftest import EngineGateway, Keys, homellm_exe

from homellm.errors import UsageError
from homellm.serve.network import hostname, lan_addresses
from homellm.serve.server import check_exposure_rules
from homellm.serve.tls import ensure_tls, fingerprint_of_pem
from homellm.settings import Settings


def test_self_signed_certificate_names_every_way_to_reach_this_machine(tmp_path: Path) -> None:
    tls = ensure_tls(tmp_path, None, None)
    assert tls.generated and oct(tls.key.stat().st_mode & 0o777) == "0o600"
    cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    assert {hostname(), f"{hostname()}.local", "localhost"} <= dns
    assert {"127.0.0.1", "::1", *lan_addresses()} <= ips
    again = ensure_tls(tmp_path, None, None)
    assert not again.generated and again.fingerprint == tls.fingerprint  # made once, then reused
    assert tls.fingerprint.startswith("SHA256:") and len(tls.fingerprint.split(":")) == 33


def test_own_certificate_is_used_and_bad_ones_are_refused(tmp_path: Path) -> None:
    made = ensure_tls(tmp_path / "a", None, None)
    mine = ensure_tls(tmp_path / "b", made.cert, made.key)
    assert not mine.generated and mine.fingerprint == made.fingerprint
    with pytest.raises(UsageError, match="both"):
        ensure_tls(tmp_path, made.cert, None)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(UsageError, match="not a PEM certificate"):
        ensure_tls(tmp_path, junk, made.key)


@pytest.mark.engine
def test_served_certificate_matches_the_printed_fingerprint(engine_gateway: EngineGateway) -> None:
    host, port = engine_gateway.url.removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)))
    printed = fingerprint_of_pem(engine_gateway.cert.read_bytes())
    assert fingerprint_of_pem(pem.encode()) == printed
    assert printed in engine_gateway.log.read_text()
    with pytest.raises(httpx.ConnectError):  # an unpinned, untrusted client refuses it
        httpx.get(engine_gateway.url + "/")


@pytest.mark.parametrize(
    ("host", "tls", "keys", "insecure", "outcome"),
    [
        ("127.0.0.1", False, 0, False, "ok"),
        ("0.0.0.0", True, 1, False, "ok"),
        ("0.0.0.0", False, 1, False, "refused"),
        ("0.0.0.0", True, 0, False, "refused"),
        ("192.168.1.5", None, 0, False, "refused"),
        ("0.0.0.0", False, 0, True, "warned"),
    ],
)
def test_beyond_loopback_needs_tls_and_a_key(
    host: str, tls: bool | None, keys: int, insecure: bool, outcome: str
) -> None:
    settings = Settings(host=host, tls=tls, insecure=insecure)
    if outcome == "refused":
        with pytest.raises(UsageError, match="refusing to listen"):
            check_exposure_rules(settings, keys)
        return
    warnings = check_exposure_rules(settings, keys)
    assert bool(warnings) == (outcome == "warned")
    if outcome == "warned":
        assert all(w.startswith("INSECURE") for w in warnings)


def test_tls_defaults_on_beyond_loopback() -> None:
    assert Settings(host="0.0.0.0").tls_enabled
    assert not Settings(host="127.0.0.1").tls_enabled


def test_serve_refuses_to_listen_insecurely_from_the_cli(tmp_path: Path) -> None:
    env = dict(os.environ, HOMELLM_HOME=str(tmp_path))
    r = subprocess.run([homellm_exe(), "serve", "--backend", "http://127.0.0.1:9", "--host", "0.0.0.0", "--no-tls"],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0: TLS is off; there is no API key" in r.stderr
    assert "Traceback" not in r.stderr


def test_settings_layering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from homellm.settings import load_settings

    config = tmp_path / "config.toml"
    config.write_text('port = 12000\nrequests_per_minute = 10\ncors_origins = ["http://a.test"]\n')
    monkeypatch.setenv("HOMELLM_HOME", str(tmp_path))
    monkeypatch.setenv("HOMELLM_REQUESTS_PER_MINUTE", "20")
    s = load_settings(port=None)
    assert (s.port, s.requests_per_minute, s.cors_origins) == (12000, 20, ["http://a.test"])  # TOML < env
    assert load_settings(port=13000).port == 13000  # < CLI flag
    config.write_text("port = 'many'\n")
    with pytest.raises(UsageError, match=r"config.toml: port = 'many' is not valid \(expected an integer\)"):
        load_settings()
    config.write_text("port = \n")  # not TOML at all
    with pytest.raises(UsageError, match=r"cannot read .*config.toml: Invalid value \(at line 1"):
        load_settings()
    monkeypatch.setenv("HOMELLM_PORT", "x")
    config.write_text("port = 12000\nprot = 12001\n")
    with pytest.raises(UsageError, match="the environment variable HOMELLM_PORT: port = 'x' is not valid"):
        load_settings()


def test_a_misspelt_setting_is_warned_about_with_a_suggestion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from homellm.settings import config_warnings

    monkeypatch.setenv("HOMELLM_HOME", str(tmp_path))
    (tmp_path / "config.toml").write_text("prot = 11436\nhost = '0.0.0.0'\n")
    [warning] = config_warnings()
    assert "unknown setting 'prot' is ignored; did you mean 'port'?" in warning


def test_exposed_backend_is_warned_about(tmp_path: Path) -> None:
    """An 'Ollama' listening on every interface, as after OLLAMA_HOST=0.0.0.0."""
    from homellm.serve.exposure import exposure_warning
    from homellm.testing.fake_backend import Recorder, Script, make_app, serve_in_thread

    if not [a for a in lan_addresses() if ":" not in a]:
        pytest.skip("this machine has no non-loopback IPv4 address to test exposure on")
    with serve_in_thread(make_app("ollama", Script(), Recorder()), host="0.0.0.0") as url:
        port = url.rsplit(":", 1)[1]
        warning = exposure_warning(f"http://127.0.0.1:{port}", "ollama")
    assert warning is not None and "OLLAMA_HOST" in warning and "without a key" in warning
    with serve_in_thread(make_app("ollama", Script(), Recorder())) as url:  # loopback only: fine
        assert exposure_warning(url, "ollama") is None


def test_keys_needed_even_for_basic_clients(engine_gateway: EngineGateway, keys: Keys) -> None:
    """A URL with credentials (https://user:KEY@host) works, as some apps only take that."""
    host = engine_gateway.url.removeprefix("https://")
    with httpx.Client(verify=engine_gateway.ssl()) as c:
        assert c.get(f"https://x:{keys.bob}@{host}/api/tags").status_code == 200
        assert c.get(f"https://x:nope@{host}/api/tags").status_code == 401
