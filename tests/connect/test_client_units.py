"""Client-side pieces without a server: targets, env lines, profiles, pinning, chat input."""

from __future__ import annotations

import io
import ssl
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from homellm.connect.chat import ChatSession
from homellm.connect.env import detect_shell, env_lines
from homellm.connect.profiles import Profile, ProfileStore, normalize_target, pinned_context
from homellm.errors import NotFoundError, UsageError
from homellm.serve.tls import ensure_tls


@pytest.mark.parametrize(
    ("target", "url"),
    [
        ("pc", "https://pc:11435"),
        ("pc.local:9000", "https://pc.local:9000"),
        ("192.168.1.20", "https://192.168.1.20:11435"),
        ("https://pc:8443", "https://pc:8443"),
        ("http://pc:80", "http://pc:80"),
        ("[fd00::2]:11435", "https://[fd00::2]:11435"),
    ],
)
def test_targets(target: str, url: str) -> None:
    assert normalize_target(target) == url


@pytest.mark.parametrize("bad", ["", "two words", "ftp://x", "https://"])
def test_bad_targets(bad: str) -> None:
    with pytest.raises(UsageError):
        normalize_target(bad)


def _profile(tmp_path: Path) -> Profile:
    tls = ensure_tls(tmp_path / "srv", None, None)
    return Profile("pc", "https://pc:11435", tls.fingerprint, tls.cert.read_text(), "hlm_secret")


def test_env_lines_for_each_shell(tmp_path: Path) -> None:
    p = _profile(tmp_path)
    assert 'export OLLAMA_HOST="http://127.0.0.1:11434"' in env_lines(p, "bash")
    assert 'set -gx OPENAI_BASE_URL "http://127.0.0.1:11500/v1"' in env_lines(p, "fish", 11500)
    assert '$env:OPENAI_API_KEY = "hlm_secret"' in env_lines(p, "powershell")
    assert detect_shell("/usr/bin/fish", False) == "fish" and detect_shell(None, True) == "powershell"
    assert detect_shell("/bin/tcsh", False) == "bash"


def test_profiles_are_private_and_the_last_is_default(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    with pytest.raises(UsageError, match="no server connected yet"):
        store.get(None)
    p = _profile(tmp_path)
    store.save(p)
    store.save(Profile("nas", "https://nas:11435", p.fingerprint, p.cert_pem, "hlm_2"))
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert store.get(None).name == "nas" and store.get("pc").key == "hlm_secret"
    with pytest.raises(NotFoundError, match="did you mean 'pc'"):
        store.get("pcc")


def test_pinned_context_refuses_any_other_certificate(tmp_path: Path) -> None:
    from homellm.testing.fake_backend import Recorder, Script, make_app, serve_in_thread

    served = ensure_tls(tmp_path / "a", None, None)
    other = ensure_tls(tmp_path / "b", None, None)
    app = make_app("ollama", Script(), Recorder())
    with serve_in_thread(app, ssl_certfile=str(served.cert), ssl_keyfile=str(served.key)) as url:
        assert httpx.get(url + "/api/version", verify=pinned_context(served.cert.read_text())).status_code == 200
        with pytest.raises(httpx.ConnectError) as info:
            httpx.get(url + "/api/version", verify=pinned_context(other.cert.read_text()))
        assert isinstance(info.value.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(
            info.value
        )


def test_chat_reads_multiline_input_and_commands(tmp_path: Path) -> None:
    lines = iter(['"""first', "second", 'third"""', "/system be brief", "/clear", "/model other:1b", "/nope"])
    out = io.StringIO()
    session = ChatSession(httpx.Client(), "m", Console(file=out), lambda _: next(lines))
    assert session.read_message() == "first\nsecond\nthird"
    for _ in range(4):
        assert session.command(session.read_message() or "")
    assert session.system == "be brief" and session.model == "other:1b" and session.history == []
    assert "unknown command /nope" in out.getvalue()
    assert not session.command("/bye")
