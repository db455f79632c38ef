"""The web app's server side over HTTPS on loopback: the real gateway (homellm's own certificate, real SQLite)
in front of the scripted Ollama. Pages and their headers, signing in, the session cookie and its CSRF
token, pairing a browser under the pairing limits, the household endpoints, and languages."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.cli.test_cli import homellm
from tests.conftest import Fake, run_gateway

from homellm.i18n import use_language
from homellm.serve.app import Gateway
from homellm.serve.backends import OllamaBackend
from homellm.serve.tls import TlsFiles, ensure_tls
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.store.pairing import MAX_FAILURES_PER_CODE_AND_SOURCE, Pairing
from homellm.web.assets import CSP

CHAT = {"model": "fake:small", "messages": [{"role": "user", "content": "hi"}], "stream": False}
REVOKED_WITHIN = 1.0


@dataclass
class Web:
    url: str
    home: Path
    tls: TlsFiles
    gateway: Gateway
    admin: str
    reader: str  # may use fake:small only, not admin

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.tls.cert)),
                            timeout=30, **kw)  # type: ignore[arg-type]  # fmt: skip

    def signed_in(self, key: str) -> tuple[httpx.Client, str]:
        """A browser-like client signed in with ``key``: (the client holding the cookie, the CSRF token)."""
        c = self.client()
        r = c.post("/app/api/session", json={"key": key})
        assert r.status_code == 200, r.text
        return c, c.get("/app/api/me").json()["csrf"]


@pytest.fixture
def web(tmp_path: Path, ollama_fake: Fake) -> Iterator[Web]:
    home = tmp_path / "server"
    tls = ensure_tls(home, None, None)
    keys = KeyStore(open_database(home))
    admin = keys.create("admin", None, admin=True)[1]
    reader = keys.create("reader", ["fake:small"])[1]
    with run_gateway(home, OllamaBackend(ollama_fake.url), tls, cors_origins=["https://other.example"]) as (url, gw):
        yield Web(url, home, tls, gw, admin, reader)


# ---- pages ---------------------------------------------------------------------------------------


def test_a_browser_at_the_root_is_sent_to_the_app_and_api_clients_are_not(web: Web) -> None:
    with web.client() as c:
        browser = c.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert browser.status_code == 303 and browser.headers["location"] == "/app/"
        assert c.get("/").text == "Ollama is running"  # curl, the ollama client
        assert c.get("/", headers={"Accept": "application/json"}).text == "Ollama is running"
        assert c.get("/app").headers["location"] == "/app/"


@pytest.mark.parametrize(
    ("path", "ctype"),
    [("/app/", "text/html"), ("/app/static/js/chat.js", "text/javascript"), ("/app/static/style.css", "text/css"),
     ("/app/manifest.webmanifest", "application/manifest+json"), ("/app/static/icon-192.png", "image/png")],
)  # fmt: skip
def test_pages_and_files_carry_the_security_headers(web: Web, path: str, ctype: str) -> None:
    with web.client() as c:
        r = c.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
        assert r.headers["content-security-policy"] == CSP
        assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
        again = c.get(path, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "path",
    ["/app/static/household.html", "/app/static/index.html", "/app/static/../../serve/app.py", "/app/static/js",
     "/app/nothing", "/app/static/js/../../web/app.py", "/app/static/%2e%2e/app.py"],
)  # fmt: skip
def test_only_the_apps_own_files_are_served(web: Web, path: str) -> None:
    with web.client() as c:
        assert c.get(path).status_code == 404


def test_the_pages_use_no_inline_script_or_style(web: Web) -> None:
    """The CSP would block them: every script is a module file, every style in style.css."""
    import re

    with web.client() as c:
        pages = [c.get("/app/").text, c.get("/app/household", follow_redirects=False).text]
        admin, _csrf = web.signed_in(web.admin)
        pages.append(admin.get("/app/household").text)
    for page in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
        assert not re.search(r"\son[a-z]+=|\sstyle=|<style", page)
        assert "http://" not in page and "https://" not in page  # nothing from elsewhere (no CDN)


# ---- signing in ----------------------------------------------------------------------------------


def test_a_key_becomes_a_session_cookie(web: Web) -> None:
    with web.client() as c:
        r = c.post("/app/api/session", json={"key": web.reader})
        assert r.status_code == 200 and r.json() == {"name": "reader", "admin": False}
        cookie = r.headers["set-cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
            assert attribute in cookie
        token = cookie.split(";")[0].split("=", 1)[1]
        me = c.get("/app/api/me").json()
        assert me["name"] == "reader" and me["models"] == ["fake:small"] and me["csrf"]
    stored = open_database(web.home).execute("SELECT hash, key_name FROM web_sessions").fetchall()
    assert [r["key_name"] for r in stored] == ["reader"] and token not in stored[0]["hash"]  # a hash, not the token


def test_a_wrong_key_gets_no_session(web: Web) -> None:
    with web.client() as c:
        r = c.post("/app/api/session", json={"key": "hlm_not-a-key"})
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert c.get("/app/api/me").status_code == 401


def test_the_session_works_on_the_api_only_with_its_csrf_token(web: Web, ollama_fake: Fake) -> None:
    c, csrf = web.signed_in(web.reader)
    with contextlib.closing(c):
        assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["fake:small"]  # the key's allowlist
        assert c.post("/api/chat", json=CHAT).status_code == 403  # no token
        assert c.post("/api/chat", json=CHAT, headers={"X-CSRF-Token": "x" * 32}).status_code == 403
        assert ollama_fake.rec.ran == []
        r = c.post("/api/chat", json=CHAT, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
        denied = c.post("/api/chat", json=CHAT | {"model": "fake:large"}, headers={"X-CSRF-Token": csrf})
        assert denied.status_code == 403 and "fake:large" in denied.json()["error"]  # the model allowlist applies
        assert c.post("/app/api/logout", json={}).status_code == 403  # logging out changes state: token needed


def test_a_session_is_refused_from_another_origin(web: Web, ollama_fake: Fake) -> None:
    """Even an origin listed in cors_origins cannot use a browser's session (it may use keys)."""
    c, csrf = web.signed_in(web.reader)
    with contextlib.closing(c):
        r = c.post("/api/chat", json=CHAT, headers={"X-CSRF-Token": csrf, "Origin": "https://other.example"})
        assert r.status_code == 403
        own = c.post("/api/chat", json=CHAT, headers={"X-CSRF-Token": csrf, "Origin": web.url})
        assert own.status_code == 200 and "access-control-allow-origin" not in own.headers
        signin = c.post("/app/api/session", json={"key": web.reader}, headers={"Origin": "https://other.example"})
        assert signin.status_code == 403  # no login CSRF from a listed origin either
        form = c.post("/app/api/session", content=json.dumps({"key": web.reader}),
                      headers={"Content-Type": "text/plain"})  # fmt: skip
        assert form.status_code == 415  # a body a cross-site form could send without a preflight
    assert [p for p, _m in ollama_fake.rec.ran] == ["/api/chat"]


def test_logout_ends_the_session(web: Web) -> None:
    c, csrf = web.signed_in(web.reader)
    with contextlib.closing(c):
        r = c.post("/app/api/logout", json={}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and "Max-Age=0" in r.headers["set-cookie"]
        assert c.get("/app/api/me").status_code == 401
    assert open_database(web.home).execute("SELECT COUNT(*) FROM web_sessions").fetchone()[0] == 0


def test_a_key_revoked_in_another_process_ends_its_sessions_within_a_second(web: Web) -> None:
    c, _csrf = web.signed_in(web.reader)
    with contextlib.closing(c):
        assert c.get("/api/tags").status_code == 200
        revoke = homellm("keys", "revoke", "reader", home=web.home)
        assert revoke.returncode == 0, revoke.stderr
        committed = time.monotonic()
        late = []
        while True:
            sent = time.monotonic() - committed
            r = c.get("/api/tags")
            if r.status_code == 401:
                break
            assert r.status_code == 200
            if sent > REVOKED_WITHIN:  # judged by when the request was sent
                late.append(round(sent, 2))
            assert sent < 60, "the revoked key's session is still accepted"
        assert late == []
        assert "revoked or has expired" in r.json()["error"]


def test_signing_in_is_rate_limited_per_address(web: Web) -> None:
    with web.client() as c:
        codes = [c.post("/app/api/session", json={"key": f"hlm_wrong{i}"}).status_code for i in range(21)]
    assert codes[:20] == [401] * 20 and codes[20] == 429


# ---- pairing a browser ---------------------------------------------------------------------------


def test_a_pairing_code_becomes_a_device_key_and_a_session(web: Web) -> None:
    store = Pairing(open_database(web.home))
    code = store.new_code(["fake:small"])
    with web.client() as phone:
        r = phone.post("/app/api/pair", json={"code": str(code.code).lower(), "device": "Pixel 8"})
        assert r.status_code == 200 and r.json() == {"name": "Pixel 8", "admin": False}
        me = phone.get("/app/api/me").json()
        assert me["name"] == "Pixel 8" and me["models"] == ["fake:small"]
        again = phone.post("/app/api/pair", json={"code": str(code.code), "device": "Pixel 8"})
        assert again.status_code == 401  # spent
    key = KeyStore(open_database(web.home)).get("Pixel 8")
    assert key.models == ("fake:small",) and not key.admin
    assert [e.outcome for e in store.events(code.id)] == ["paired"]  # what a waiting `homellm pair` prints


def test_wrong_codes_count_like_the_pake_attempts(web: Web) -> None:
    store = Pairing(open_database(web.home))
    code = store.new_code()
    wrong = f"{code.code.nameplate}{'2' if code.code.password[0] != '2' else '3'}{code.code.password[1:]}"
    with web.client() as c:
        statuses = [c.post("/app/api/pair", json={"code": wrong, "device": "guess"}).status_code
                    for _ in range(MAX_FAILURES_PER_CODE_AND_SOURCE + 1)]  # fmt: skip
        assert statuses == [401] * MAX_FAILURES_PER_CODE_AND_SOURCE + [429]
        # this address may no longer try this code, even the right one; the household's own devices still can
        assert c.post("/app/api/pair", json={"code": str(code.code), "device": "x"}).status_code == 429
    assert store.code_failures(code.id) == MAX_FAILURES_PER_CODE_AND_SOURCE and store.is_open(code.id)


@pytest.mark.parametrize(
    "body",
    [{}, {"code": "ABCD-EFGH"}, {"code": 12345678, "device": "x"}, {"code": "not a code", "device": "x"},
     {"code": "ABCD-EFGH", "device": "<script>"}, {"code": "ABCD-EFGH", "device": "x" * 41}],
)  # fmt: skip
def test_bad_pairing_requests_are_refused_before_any_code_is_read(web: Web, body: dict[str, object]) -> None:
    with web.client() as c:
        r = c.post("/app/api/pair", json=body)
    assert r.status_code == 400 and r.json()["error"]


def test_the_qr_link_carries_the_code_and_the_fingerprint_in_its_fragment(web: Web) -> None:
    env_home = web.home
    r = homellm("pair", "--qr", "--json", "--no-wait", home=env_home)
    assert r.returncode == 0, r.stderr
    code, link = (json.loads(line) for line in r.stdout.splitlines())
    fingerprint = web.tls.fingerprint
    assert link["fingerprint"] == fingerprint
    assert link["url"].startswith("https://") and link["url"].endswith(f"/app/#pair={code['code']}&fp={fingerprint}")
    shown = homellm("pair", "--qr", "--no-wait", home=env_home)
    assert "▀" in shown.stdout or "█" in shown.stdout  # the QR code itself, in half blocks


# ---- the household (admin keys only) -------------------------------------------------------------


def test_a_non_admin_can_neither_load_nor_call_the_household(web: Web) -> None:
    c, csrf = web.signed_in(web.reader)
    with contextlib.closing(c):
        assert c.get("/app/household").status_code == 403
        for path in ("/app/api/admin/keys", "/app/api/admin/usage/7", "/app/api/admin/server"):
            assert c.get(path).status_code == 403
        h = {"X-CSRF-Token": csrf}
        assert c.post("/app/api/admin/keys", json={"name": "mine", "admin": True}, headers=h).status_code == 403
        assert c.post("/app/api/admin/keys/revoke", json={"name": "admin"}, headers=h).status_code == 403
        assert c.post("/app/api/admin/codes", json={}, headers=h).status_code == 403
    with web.client() as anonymous:
        assert anonymous.get("/app/household").headers["location"] == "/app/"
        assert anonymous.get("/app/api/admin/keys").status_code == 401
    assert [k.name for k in KeyStore(open_database(web.home)).list()] == ["admin", "reader"]


def test_an_admin_runs_the_keys_from_the_page(web: Web) -> None:
    c, csrf = web.signed_in(web.admin)
    h = {"X-CSRF-Token": csrf}
    with contextlib.closing(c):
        made = c.post("/app/api/admin/keys", json={"name": "tablet", "models": ["fake:small"], "admin": False,
                                                   "expires": "30d"}, headers=h).json()  # fmt: skip
        secret = made["secret"]
        assert secret.startswith("hlm_") and made["url"].endswith(f"#key={secret}&fp={web.tls.fingerprint}")
        assert made["qr"].startswith("data:image/svg+xml")
        listed = c.get("/app/api/admin/keys").json()
        tablet = next(k for k in listed["keys"] if k["name"] == "tablet")
        assert tablet["models"] == ["fake:small"] and tablet["expires_at"] and "hash" not in tablet
        assert all(secret not in json.dumps(k) for k in listed["keys"])  # shown once, never listed
        tab, _ = web.signed_in(secret)
        with contextlib.closing(tab):
            assert tab.get("/app/api/me").status_code == 200
            revoked = c.post("/app/api/admin/keys/revoke", json={"name": "tablet"}, headers=h).json()
            assert revoked["sessions_ended"] == 1 and revoked["key"]["revoked_at"]
            assert tab.get("/app/api/me").status_code == 401  # at once: the page's revocation refreshes the cache
        opened = c.post("/app/api/admin/codes", json={"models": None}, headers=h).json()
        assert opened["url"].endswith(f"#pair={opened['code']}&fp={web.tls.fingerprint}")
        codes = c.get("/app/api/admin/keys").json()["codes"]
        assert [x["id"] for x in codes] == [opened["id"]] and opened["code"][4:] not in json.dumps(codes)
        assert c.post("/app/api/admin/codes/withdraw", json={"id": opened["id"]}, headers=h).json()["withdrawn"]
        bad = c.post("/app/api/admin/keys", json={"name": "x", "expires": "soon"}, headers=h)
        assert bad.status_code == 400 and "30d" in bad.json()["error"]
        assert c.post("/app/api/admin/keys/revoke", json={"name": "nobody"}, headers=h).status_code == 404


def test_usage_and_live_streams(web: Web, ollama_fake: Fake) -> None:
    c, csrf = web.signed_in(web.admin)
    h = {"X-CSRF-Token": csrf}
    with contextlib.closing(c):
        assert c.post("/api/chat", json=CHAT, headers=h).status_code == 200
        ollama_fake.script.gate = gate = threading.Event()
        reader = httpx.Client(base_url=web.url, verify=False, headers={"Authorization": f"Bearer {web.reader}"})
        with reader, reader.stream("POST", "/api/chat", json=CHAT | {"stream": True}) as stream:
            lines = stream.iter_lines()
            next(lines)  # the first token is out; the backend holds the rest
            live = c.get("/app/api/admin/usage/7").json()["live"]
            assert [(s["key"], s["model"], s["streaming"]) for s in live] == [("reader", "fake:small", True)]
            gate.set()
            assert json.loads(list(lines)[-1])["done"] is True
        wait_for_usage_rows(web.home, {"admin", "reader"})
        usage = c.get("/app/api/admin/usage/7").json()
    assert usage["live"] == []
    rows = {r["key"]: r for r in usage["daily"]}
    assert rows["admin"]["model"] == "fake:small" and rows["admin"]["completion_tokens"] == 5
    assert rows["reader"]["avg_ttft_ms"] is not None  # streamed: the first token is timed
    assert {k["key"] for k in usage["by_key"]} >= {"admin", "reader"}


def test_the_server_as_the_household_sees_it(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU part reads NVML; no driver exists here, so an NVML stand-in says what a GPU would."""
    from tests.hardware.test_detect import FakeNVML

    import homellm.hardware.nvidia as nvidia

    real = nvidia.gpu_usage
    card = FakeNVML([(b"NVIDIA GeForce RTX 4090", 24 * 2**30, 15 * 2**30)], [37])
    monkeypatch.setattr(nvidia, "gpu_usage", lambda: real(card))
    c, _csrf = web.signed_in(web.admin)
    with contextlib.closing(c):
        data = c.get("/app/api/admin/server").json()
    assert data["backend"]["kind"] == "ollama" and data["backend"]["health"]["ok"] is True
    assert [m["name"] for m in data["models"]] == ["fake:small", "fake:large"]
    assert [m["name"] for m in data["loaded"]] == ["fake:small", "fake:large"]  # the scripted /api/ps
    assert data["gpus"] == [{"name": "NVIDIA GeForce RTX 4090", "memory_total": 24 * 2**30,
                             "memory_used": 9 * 2**30, "memory_free": 15 * 2**30, "utilization": 37}]  # fmt: skip
    checks = {f["check"] for f in data["doctor"]}
    assert {"Ollama exposed", "TLS certificate", "admin keys"} <= checks
    assert all(set(f) == {"status", "check", "detail", "fix"} for f in data["doctor"])
    assert data["fingerprint"] == web.tls.fingerprint


def wait_for_usage_rows(home: Path, keys: set[str]) -> None:
    """Until the usage writer (batches every 0.2 s) has committed a model's row for each of ``keys``."""
    db = open_database(home)
    deadline = time.monotonic() + 30
    while {r[0] for r in db.execute("SELECT key_name FROM usage WHERE model IS NOT NULL")} < keys:
        assert time.monotonic() < deadline, "the usage rows never arrived"
        time.sleep(0.05)


# ---- languages -----------------------------------------------------------------------------------


def test_the_pages_words_follow_accept_language(web: Web) -> None:
    with web.client() as c:
        ja = c.get("/app/api/i18n", headers={"Accept-Language": "ja-JP,ja;q=0.9,en-US;q=0.8"}).json()
        en = c.get("/app/api/i18n", headers={"Accept-Language": "en-US,en;q=0.9,ja;q=0.5"}).json()
        other = c.get("/app/api/i18n", headers={"Accept-Language": "de-DE"}).json()
    assert ja["lang"] == "ja" and ja["messages"]["Sign in"] == "サインイン" and ja["messages"]["Stop"] == "停止"
    assert en["lang"] == "en" and en["messages"]["Sign in"] == "Sign in"
    assert other["lang"] == "en"


def test_the_gateways_errors_follow_the_requests_language(web: Web) -> None:
    with web.client() as c:
        c.cookies.set("homellm_session", "not-a-session", domain="127.0.0.1")
        ja = c.get("/app/api/me", headers={"Accept-Language": "ja"})
        en = c.get("/app/api/me")
    assert ja.status_code == en.status_code == 401
    with use_language("ja"):
        from homellm.i18n import _

        expected = _("your sign-in has ended; sign in again")
    assert ja.json()["error"] == expected != en.json()["error"] == "your sign-in has ended; sign in again"
