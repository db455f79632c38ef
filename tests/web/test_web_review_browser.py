"""A review's browser test: a link carrying a key (``/app/#key=…``, what the household's QR code opens) signs
in a browser that has no session, and never replaces the session a browser already has. Any page can open
such a link; it would otherwise sign the household's browsers in as the key of whoever made the link."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Fake, run_gateway
from tests.web.test_web_browser import browser, device  # noqa: F401 - the fixture

from homellm.serve.backends import OllamaBackend
from homellm.serve.tls import ensure_tls
from homellm.store import open_database
from homellm.store.keys import KeyStore


@pytest.fixture
def two_keys(tmp_path: Path, ollama_fake: Fake) -> Iterator[tuple[str, str, str]]:
    home = tmp_path / "server"
    tls = ensure_tls(home, None, None)
    store = KeyStore(open_database(home))
    admin, other = store.create("admin", None, admin=True)[1], store.create("mallory", ["fake:small"])[1]
    with run_gateway(home, OllamaBackend(ollama_fake.url), tls) as (url, _gateway):
        yield url, admin, other


def test_a_key_in_a_link_does_not_replace_a_session(browser: Any, two_keys: tuple[str, str, str]) -> None:  # noqa: F811
    url, admin, other = two_keys
    with device(browser) as page:
        page.goto(f"{url}/app/#key={admin}")
        page.wait_for_selector("#chat:not([hidden])")
        assert page.text_content("#who") == "admin"
        page.goto("about:blank")
        page.goto(f"{url}/app/#key={other}")  # a link on another site's page, opened in this browser
        page.wait_for_selector("#chat:not([hidden])")
        assert page.text_content("#who") == "admin"
        assert page.is_visible("#household-link")  # still the admin's page
