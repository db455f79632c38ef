"""The web app in a real browser: Debian's Chromium (headless), driven by Playwright, against real gateways.

* ``engine_web``: ``homellm serve --models-dir DIR --tls`` as a process of its own, with the real llama.cpp
  engine serving three copies of SmolLM2-135M (three model names: a key's allowlist and a model switch can
  be seen). A phone pairs by the QR code's URL, chats, stops a generation, switches model; an admin runs
  the household from the page; Japanese input goes through an IME composition made with CDP.
* ``scripted_web``: the in-thread gateway in front of the scripted Ollama, whose ``Script.text`` sets the
  tokens: hostile Markdown (XSS payloads) and the screenshots' answers.

The phone reaches the gateway on 127.0.0.1: the QR code names this machine's LAN address, which the test
swaps for loopback (the gateway's Host guard accepts both).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import pytest
from tests.conftest import Fake, run_gateway

from homellm.serve.backends import OllamaBackend
from homellm.serve.tls import ensure_tls, fingerprint_of_pem
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.fake_backend import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 800}
IPHONE_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Version/17.5 Mobile/15E148 Safari/604.1")  # fmt: skip
EXE = Path(sys.executable).with_name("homellm")
ANSWER_TIMEOUT = 180_000  # ms: SmolLM2 on two shared CPU cores
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"


# ---- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is missing: apt-get install -y chromium (the browser tests drive it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def device(browser: Any, **options: Any) -> Iterator[Any]:
    """A browser context of its own (its own cookies and IndexedDB): one phone or laptop. Self-signed
    certificate warnings are clicked through, as a person does on the first visit."""
    context = browser.new_context(ignore_https_errors=True, **{"viewport": DESKTOP, **options})
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"the page threw: {errors}"


# ---- the real engine behind the real gateway -------------------------------------------------------------


@dataclass
class EngineWeb:
    url: str
    home: Path
    port: int
    admin: str
    models: list[str]
    proc: subprocess.Popen[bytes]
    fingerprint: str

    def engine(self) -> psutil.Process:
        """llama-cpp-python's server, the gateway's supervised child."""
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return next(c for c in children if "llama_cpp.server" in " ".join(c.cmdline()))

    def usage(self, sql: str, *args: object) -> list[sqlite3.Row]:
        db = open_database(self.home)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def wait_for_usage(self, sql: str, *args: object) -> list[sqlite3.Row]:
        """Rows the usage writer commits in batches: polled until they exist (no sleep-and-hope)."""
        deadline = time.monotonic() + 60
        while not (rows := self.usage(sql, *args)):
            assert time.monotonic() < deadline, f"no usage row for {sql} {args}"
            time.sleep(0.05)
        return rows


@pytest.fixture(scope="module")
def engine_web(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> Iterator[EngineWeb]:
    home = tmp_path_factory.mktemp("engine-web")
    models = home / "models"
    models.mkdir()
    for name in ("smollm2-main", "smollm2-second", "smollm2-third"):
        (models / f"{name}.gguf").symlink_to(smollm2)
    admin = KeyStore(open_database(home)).create("admin", None, admin=True)[1]
    port = free_port()
    env = dict(os.environ, HOMELLM_HOME=str(home), HOMELLM_ENGINE_CTX="2048", HOMELLM_PORT=str(port))
    log = home / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(EXE), "serve", "--models-dir", str(models), "--tls"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    cert = home / "tls" / "cert.pem"
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                verify = ssl.create_default_context(cafile=str(cert)) if cert.exists() else None
                if verify and httpx.get(url + "/", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        tags = httpx.get(url + "/api/tags", verify=verify, headers={"Authorization": f"Bearer {admin}"}, timeout=180)
        tags = tags.json()
        names = [m["name"] for m in tags["models"]]
        assert len(names) == 3
        yield EngineWeb(url, home, port, admin, names, proc, fingerprint_of_pem(cert.read_bytes()))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def pairing_url(web: EngineWeb, models: list[str]) -> str:
    """What `homellm pair --qr` puts in the QR code, with the LAN address swapped for loopback."""
    env = dict(os.environ, HOMELLM_HOME=str(web.home), HOMELLM_PORT=str(web.port))
    r = subprocess.run([str(EXE), "pair", "--qr", "--json", "--no-wait", "--models", ",".join(models)], env=env,
                       capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    link = json.loads(r.stdout.splitlines()[-1])
    assert link["fingerprint"] == web.fingerprint
    parts = urlsplit(link["url"])
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{web.port}"))


def ask(page: Any, text: str, state: str = "done") -> Any:
    """Type a message, send it with Enter, and wait for the answer to reach ``state``."""
    before = page.locator("article.assistant").count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    answer = page.locator("article.assistant").nth(before)
    answer.and_(page.locator(f"[data-state={state}]")).wait_for(timeout=ANSWER_TIMEOUT)
    return answer


def model_options(page: Any) -> list[str]:
    return [str(v) for v in page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")]


# ---- a phone, from the QR code to a streaming chat ----------------------------------------------------


def test_a_phone_pairs_by_the_qr_code_streams_stops_and_switches_model(
    browser: Any, engine_web: EngineWeb, capsys: pytest.CaptureFixture[str]
) -> None:
    main, second, _third = engine_web.models
    url = pairing_url(engine_web, [main, second])
    assert "#pair=" in url and "&fp=SHA256:" in url
    with device(browser, viewport=PHONE, is_mobile=True, has_touch=True, user_agent=IPHONE_UA) as page:
        opened = time.monotonic()
        page.goto(url)
        page.wait_for_selector("#pairing:not([hidden])")
        assert page.text_content("#pair-fp") == engine_web.fingerprint  # shown to compare with `homellm up`
        assert "#" not in page.url  # the code left the address bar and the history
        page.click("#pair-go")  # the one tap: no key typed
        page.wait_for_selector("#chat:not([hidden])")
        assert model_options(page) == [main, second]  # the device key's allowlist, not the server's third model
        page.fill("#input", "Write two sentences about the sea.")
        page.press("#input", "Enter")
        page.wait_for_selector("article.assistant[data-state=streaming]", timeout=ANSWER_TIMEOUT)
        first_token = time.monotonic() - opened
        page.wait_for_selector("article.assistant[data-state=done]", timeout=ANSWER_TIMEOUT)
        with capsys.disabled():
            print(f"\n[web] QR URL opened -> first token on screen: {first_token:.1f} s (one tap, target < 30 s)")
        device_key = "iPhone-web"
        assert engine_web.usage("SELECT 1 FROM keys WHERE name = ? AND admin = 0", device_key)

        # Stop: the engine is held (SIGSTOP) so that the answer cannot finish first; the gateway notices the
        # browser leaving, closes the upstream request and records the request as cancelled
        stopped_before = len(engine_web.usage("SELECT 1 FROM usage WHERE key_name = ? AND cancelled = 1", device_key))
        engine = engine_web.engine()
        for _attempt in range(3):  # a short answer may finish before the engine is held: then ask again
            page.fill("#input", "Write a very long story about a dragon and a lighthouse, in ten chapters.")
            page.press("#input", "Enter")
            last = page.locator("article.assistant").last
            last.and_(page.locator("[data-state=streaming], [data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT)
            engine.send_signal(signal.SIGSTOP)
            if last.get_attribute("data-state") == "streaming":
                break
            engine.send_signal(signal.SIGCONT)
        else:
            pytest.fail("three answers finished before the engine could be held")
        try:
            page.click("#stop")
            last.and_(page.locator("[data-state=stopped]")).wait_for()
            rows = engine_web.wait_for_usage(
                "SELECT status, route FROM usage WHERE key_name = ? AND cancelled = 1 LIMIT -1 OFFSET ?",
                device_key, stopped_before,
            )  # fmt: skip
            assert [(r["status"], r["route"]) for r in rows] == [(499, "/api/chat")]
        finally:
            engine.send_signal(signal.SIGCONT)
        assert page.is_visible("#send") and not page.is_visible("#stop")

        # the engine took the next request: its one slot is free again. Now on the second model
        page.select_option("#model", second)
        answer = ask(page, "Say hello.")
        assert answer.inner_text().strip()
        engine_web.wait_for_usage("SELECT 1 FROM usage WHERE key_name = ? AND model = ? AND status = 200",
                                  device_key, second)  # fmt: skip
        # regenerate replaces the last answer with a new one from the same model
        page.click("#regenerate")
        page.locator("article.assistant").last.and_(page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT)
        rows = engine_web.wait_for_usage(
            "SELECT 1 FROM usage WHERE key_name = ? AND model = ? AND status = 200 LIMIT -1 OFFSET 1",
            device_key,
            second,
        )
        assert rows and page.locator("article.assistant[data-state=stopped]").count() == 1

        # the history is this browser's own: after a reload it is still there; the server kept no text
        page.reload()
        page.wait_for_selector("#chat:not([hidden])")
        assert page.locator("article.user").count() >= 3 and page.locator("[data-state=stopped]").count() == 1
        assert engine_web.usage("SELECT 1 FROM usage WHERE prompt IS NOT NULL") == []


def test_the_system_prompt_goes_with_the_conversation(browser: Any, engine_web: EngineWeb) -> None:
    with device(browser) as page:
        page.goto(f"{engine_web.url}/app/#key={engine_web.admin}")
        page.wait_for_selector("#chat:not([hidden])")
        page.click("#system-box summary")
        page.fill("#system", "Answer in one short sentence.")
        with page.expect_request(lambda r: r.url.endswith("/api/chat")) as sent:
            ask(page, "What is a GPU?")
        body = json.loads(sent.value.post_data)
        assert body["messages"][0] == {"role": "system", "content": "Answer in one short sentence."}
        assert body["messages"][-1] == {"role": "user", "content": "What is a GPU?"} and body["stream"] is True
        assert sent.value.headers["x-csrf-token"]


# ---- Japanese -------------------------------------------------------------------------------------------------


RECORD_ENTER = """() => {
  window.enters = [];
  document.getElementById('input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter') window.enters.push({composing: e.isComposing, code: e.keyCode, shift: e.shiftKey});
  }, true);
}"""


def test_japanese_switch_sticks_and_ime_enter_does_not_send(browser: Any, engine_web: EngineWeb) -> None:
    with device(browser, locale="en-US") as page:
        page.goto(f"{engine_web.url}/app/#key={engine_web.admin}")
        page.wait_for_selector("#chat:not([hidden])")
        assert page.text_content("#send") == "Send"
        page.select_option("#lang", "ja")
        page.wait_for_selector("#send:text-is('送信')")  # (no wait_for_function: the page's CSP forbids eval)
        page.reload()  # the choice sticks on this device, over the browser's English
        page.wait_for_selector("#chat:not([hidden])")
        page.wait_for_selector("html[lang=ja]", state="attached")
        assert page.text_content("#send") == "送信" and page.text_content("#stop") == "停止"
        assert page.get_attribute("#input", "placeholder") == "メッセージ（Enter で送信、Shift+Enter で改行）"

        page.evaluate(RECORD_ENTER)
        page.focus("#input")
        cdp = page.context.new_cdp_session(page)
        cdp.send("Input.imeSetComposition", {"text": "にほんご", "selectionStart": 4, "selectionEnd": 4})
        page.keyboard.press("Enter")  # confirms the conversion: must not send
        assert page.locator("article.user").count() == 0
        cdp.send("Input.insertText", {"text": "日本語"})  # the composition ends with the chosen text
        assert "日本語" in page.input_value("#input") and page.locator("article.user").count() == 0
        page.fill("#input", "日本語")  # (the synthetic Enter above also left a line break a real IME consumes)
        page.focus("#input")
        page.keyboard.press("End")
        page.keyboard.press("Shift+Enter")  # a new line, not a send
        assert page.input_value("#input") == "日本語\n" and page.locator("article.user").count() == 0
        page.keyboard.type("で一言あいさつしてください")
        page.keyboard.press("Enter")
        page.wait_for_selector("article.user")
        assert page.locator("article.user").first.inner_text() == "日本語\nで一言あいさつしてください"
        enters = page.evaluate("window.enters")
        assert enters[0]["composing"] is True  # the browser saw Enter inside the composition
        assert [e["composing"] for e in enters[1:]] == [False, False] and enters[1]["shift"] is True
        page.locator("article.assistant").last.and_(page.locator("[data-state=done]")).wait_for(timeout=ANSWER_TIMEOUT)

        # the gateway's own errors come in Japanese too (the page sends its language)
        page.click("#logout")
        page.wait_for_selector("#signin:not([hidden])")
        assert page.text_content("#signin-reason") == "サインアウトしました。"
        page.fill("#signin-key", "hlm_this-is-not-a-key")
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#signin-error:not([hidden])")
        assert page.text_content("#signin-error") == "API キーが無効か、失効済みか、期限切れです"


# ---- the household ----------------------------------------------------------------------------------------


def test_an_admin_creates_and_revokes_a_key_and_its_session_is_thrown_out(browser: Any, engine_web: EngineWeb) -> None:
    main = engine_web.models[0]
    with device(browser) as admin, device(browser, viewport=PHONE, is_mobile=True) as tablet:
        admin.goto(f"{engine_web.url}/app/#key={engine_web.admin}")
        admin.wait_for_selector("#chat:not([hidden])")
        admin.click("#household-link")
        admin.wait_for_selector("body[data-ready=true]", timeout=60_000)
        admin.fill("#key-name", "tablet")
        admin.fill("#key-models", main)
        admin.click("#key-form button[type=submit]")
        admin.wait_for_selector("#key-made:not([hidden])")
        secret = admin.text_content("#key-secret") or ""
        assert secret.startswith("hlm_") and (admin.get_attribute("#key-qr", "src") or "").startswith("data:image/svg")
        admin.wait_for_selector("tr[data-key=tablet]")

        tablet.goto(f"{engine_web.url}/app/#key={secret}")  # what the QR code of the new key opens
        tablet.wait_for_selector("#chat:not([hidden])")
        assert model_options(tablet) == [main] and not tablet.is_visible("#household-link")

        admin.on("dialog", lambda dialog: dialog.accept())
        admin.click("tr[data-key=tablet] button.revoke")
        admin.wait_for_selector("tr[data-key=tablet] td.state.revoked")

        tablet.fill("#input", "hello?")
        tablet.press("#input", "Enter")
        tablet.wait_for_selector("#signin:not([hidden])")  # thrown out: the next request was refused
        assert tablet.text_content("#signin-reason") == "your sign-in has ended; sign in again"
    assert engine_web.usage("SELECT 1 FROM web_sessions WHERE key_name = 'tablet'") == []


def test_a_non_admin_can_neither_load_nor_call_the_household(browser: Any, engine_web: EngineWeb) -> None:
    _, secret = KeyStore(open_database(engine_web.home)).create("kid-laptop", [engine_web.models[0]])
    with device(browser) as page:
        page.goto(f"{engine_web.url}/app/#key={secret}")
        page.wait_for_selector("#chat:not([hidden])")
        assert not page.is_visible("#household-link")
        response = page.goto(f"{engine_web.url}/app/household")
        assert response is not None and response.status == 403
        page.goto(f"{engine_web.url}/app/")
        page.wait_for_selector("#chat:not([hidden])")
        statuses = page.evaluate("""async () => {
          const me = await (await fetch('/app/api/me')).json();
          const h = {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf};
          return [
            (await fetch('/app/api/admin/keys')).status,
            (await fetch('/app/api/admin/server')).status,
            (await fetch('/app/api/admin/usage/30')).status,
            (await fetch('/app/api/admin/keys', {method: 'POST', headers: h,
              body: JSON.stringify({name: 'sneaky', admin: true})})).status,
            (await fetch('/app/api/admin/keys/revoke', {method: 'POST', headers: h,
              body: JSON.stringify({name: 'admin'})})).status,
          ];
        }""")
        assert statuses == [403, 403, 403, 403, 403]
    assert engine_web.usage("SELECT 1 FROM keys WHERE name = 'sneaky'") == []


# ---- untrusted output, the CSP, the layout: the scripted backend ---------------------------------------------------


@dataclass
class ScriptedWeb:
    url: str
    admin: str
    fake: Fake
    home: Path


@pytest.fixture
def scripted_web(tmp_path: Path, ollama_fake: Fake) -> Iterator[ScriptedWeb]:
    home = tmp_path / "server"
    tls = ensure_tls(home, None, None)
    admin = KeyStore(open_database(home)).create("admin", None, admin=True)[1]
    with run_gateway(home, OllamaBackend(ollama_fake.url), tls) as (url, _gateway):
        yield ScriptedWeb(url, admin, ollama_fake, home)


XSS = [
    '<img src=x onerror="window.pwned=1">',
    "<script>window.pwned=2</script>",
    "[click me](javascript:window.pwned=3)",
    "[data](data:text/html,<script>window.pwned=4</script>)",
    '![image](javascript:window.pwned=5) <a href="javascript:window.pwned=6">html link</a>',
    '<iframe src="javascript:window.pwned=7"></iframe> <svg onload=window.pwned=8>',
    "```html\n<img src=x onerror=window.pwned=9><script>window.pwned=10</script>\n```",
    "**[bold link](JaVaScRiPt:window.pwned=11)** and [ok](https://example.org/docs)",
]


def test_model_output_renders_inert(browser: Any, scripted_web: ScriptedWeb) -> None:
    scripted_web.fake.script.text = ["\n\n".join(XSS)]
    scripted_web.fake.script.tokens = 1
    with device(browser) as page:
        page.goto(f"{scripted_web.url}/app/#key={scripted_web.admin}")
        page.wait_for_selector("#chat:not([hidden])")
        answer = ask(page, "show me some HTML")
        assert page.evaluate("window.pwned") is None
        assert answer.locator("img, script, iframe, svg, object, embed, style").count() == 0
        attributes = answer.evaluate(
            "el => [...el.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))"
        )
        assert not [a for a in attributes if a.startswith("on") or a in ("src", "style", "srcdoc")]
        hrefs = answer.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        assert hrefs == ["https://example.org/docs"]
        assert answer.locator("a").evaluate_all("as => as.map(a => a.rel)") == ["noopener noreferrer nofollow"]
        text = answer.inner_text()
        for literal in ('<img src=x onerror="window.pwned=1">', "<script>window.pwned=2</script>",
                        "javascript:window.pwned=3", "<svg onload=window.pwned=8>"):  # fmt: skip
            assert literal in text  # shown as the characters they are
        code = answer.locator(".code pre code")
        assert code.inner_text() == "<img src=x onerror=window.pwned=9><script>window.pwned=10</script>"
        page.locator(".code button.copy").click()
        assert page.evaluate("window.pwned") is None


CSP_PROBE = """() => new Promise((resolve) => {
  const seen = [];
  document.addEventListener('securitypolicyviolation', (e) => seen.push(e.effectiveDirective));
  const s = document.createElement('script');
  s.textContent = 'window.inlineRan = true';
  document.body.append(s);
  const b = document.createElement('button');
  b.setAttribute('onclick', 'window.handlerRan = true');
  document.body.append(b);
  b.click();
  setTimeout(() => resolve({seen, inline: window.inlineRan === true, handler: window.handlerRan === true}), 200);
})"""


def test_the_csp_blocks_injected_inline_script(browser: Any, scripted_web: ScriptedWeb) -> None:
    with device(browser) as page:
        page.goto(f"{scripted_web.url}/app/")
        page.wait_for_selector("#signin:not([hidden])")
        result = page.evaluate(CSP_PROBE)
    assert result["inline"] is False and result["handler"] is False
    assert "script-src-elem" in result["seen"] and "script-src-attr" in result["seen"]


SHOWCASE = [
    "Here is a small Python function that counts the words in a file:\n\n",
    "```python\nfrom collections import Counter\n\ndef count_words(path):\n",
    "    with open(path, encoding='utf-8') as f:\n        return Counter(f.read().split())\n```\n\n",
    "- `Counter` keeps a **count** per word\n- `most_common(3)` gives the top three\n",
]
SHOWCASE_JA = [
    "ファイル内の単語を数える小さな Python 関数です:\n\n",
    "```python\nfrom collections import Counter\n\ndef count_words(path):\n",
    "    with open(path, encoding='utf-8') as f:\n        return Counter(f.read().split())\n```\n\n",
    "- `Counter` は単語ごとの**出現回数**を数えます\n- `most_common(3)` で上位 3 件が得られます\n",
]


def _save(page: Any, name: str, folder: Path, full_page: bool = False) -> None:
    """A screenshot, reduced to a small palette PNG; into docs/images when HOMELLM_UPDATE_SCREENSHOTS=1."""
    from PIL import Image

    path = folder / name
    page.screenshot(path=str(path), full_page=full_page)
    Image.open(path).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    if os.environ.get("HOMELLM_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / name).write_bytes(path.read_bytes())


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_layouts_at_phone_and_desktop_width_in_both_languages(
    browser: Any, scripted_web: ScriptedWeb, tmp_path: Path, lang: str
) -> None:
    fake = scripted_web.fake
    fake.script.text, fake.script.tokens = (SHOWCASE if lang == "en" else SHOWCASE_JA), 4
    question = "Count the words in a file, in Python." if lang == "en" else "ファイルの単語を Python で数えたい"
    scheme = "light" if lang == "en" else "dark"
    for viewport in (PHONE, DESKTOP):
        size = f"{viewport['width']}"
        with device(browser, viewport=viewport, color_scheme=scheme, locale="ja-JP" if lang == "ja" else "en-US",
                    is_mobile=viewport is PHONE) as page:  # fmt: skip
            page.goto(f"{scripted_web.url}/app/#key={scripted_web.admin}")
            page.wait_for_selector("#chat:not([hidden])")
            assert page.evaluate("document.documentElement.lang") == lang  # from Accept-Language alone
            ask(page, question)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"the page scrolls sideways at {size} px"
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(15, 17, 21)")
            _save(page, f"web-chat-{lang}-{size}.png", tmp_path)
            page.goto(f"{scripted_web.url}/app/household")
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            _save(page, f"web-household-{lang}-{size}.png", tmp_path, full_page=viewport is DESKTOP)
    if lang == "en":
        with device(browser, viewport=PHONE, is_mobile=True) as page:
            page.goto(f"{scripted_web.url}/app/#pair=ABCD-EFGH&fp=SHA256:{':'.join(['AB'] * 32)}")
            page.wait_for_selector("#pairing:not([hidden])")
            _save(page, "web-pair-en-375.png", tmp_path)


def test_the_app_installs_as_a_pwa(browser: Any, scripted_web: ScriptedWeb) -> None:
    with device(browser) as page:
        page.goto(f"{scripted_web.url}/app/")
        manifest = page.evaluate("""async () => {
          const link = document.querySelector('link[rel=manifest]');
          const m = await (await fetch(link.href)).json();
          const icons = await Promise.all(m.icons.map(async (i) => (await fetch(i.src)).status));
          return {m, icons};
        }""")
    m = manifest["m"]
    assert m["start_url"] == "/app/" and m["scope"] == "/app/" and m["display"] == "standalone"
    assert {"192x192", "512x512"} <= {i["sizes"] for i in m["icons"]} and manifest["icons"] == [200, 200, 200]


def test_a_shared_browser_shows_each_key_its_own_history(browser: Any, scripted_web: ScriptedWeb) -> None:
    """Two people on one laptop, one after the other: each sees only the conversations of their own key."""
    other = KeyStore(open_database(scripted_web.home)).create("bob-phone", None)[1]
    scripted_web.fake.script.tokens = 3
    with device(browser) as page:
        page.goto(f"{scripted_web.url}/app/#key={scripted_web.admin}")
        page.wait_for_selector("#chat:not([hidden])")
        ask(page, "alice asks about her tax return")
        history = page.locator("#history-list")
        history.get_by_text("alice asks about her tax return").wait_for()
        page.click("#logout")
        page.wait_for_selector("#signin:not([hidden])")

        page.goto("about:blank")  # a new page load: only the fragment would differ
        page.goto(f"{scripted_web.url}/app/#key={other}")
        page.wait_for_selector("#chat:not([hidden])")
        assert page.locator("article.user").count() == 0
        assert "alice asks" not in history.inner_text()
        ask(page, "bob asks about football")
        history.get_by_text("bob asks about football").wait_for()
        page.click("#logout")
        page.wait_for_selector("#signin:not([hidden])")

        page.goto("about:blank")
        page.goto(f"{scripted_web.url}/app/#key={scripted_web.admin}")
        page.wait_for_selector("#chat:not([hidden])")
        history.get_by_text("alice asks about her tax return").wait_for()
        assert "bob asks" not in history.inner_text()
        assert page.locator("article.user").first.inner_text() == "alice asks about her tax return"
