"""Both languages in the web app: every message the pages ask for is in the catalog list, and every one of
them, and every message the web app's server side can send, has a Japanese translation."""

from __future__ import annotations

import ast
from pathlib import Path

from babel.messages.pofile import read_po

from homellm.i18n import LOCALE_DIR, language_from_accept, use_language
from homellm.web.assets import STATIC
from homellm.web.messages import WEB_MESSAGES, catalog, used_in_pages

PO = LOCALE_DIR / "ja" / "LC_MESSAGES" / "homellm.po"
WEB_SOURCES = [*Path(STATIC.parent).glob("*.py")]


def japanese() -> dict[str, str]:
    with PO.open("rb") as f:
        return {m.id: m.string for m in read_po(f) if m.id and isinstance(m.id, str)}


def server_messages() -> set[str]:
    """The constant strings the web package passes to ``_()``."""
    found: set[str] = set()
    for source in WEB_SOURCES:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            called = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "N_")
            if called and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def test_the_pages_ask_for_exactly_the_listed_messages() -> None:
    assert used_in_pages(STATIC) == set(WEB_MESSAGES)
    assert len(WEB_MESSAGES) == len(set(WEB_MESSAGES)) > 90


def test_every_web_message_has_a_japanese_translation() -> None:
    ja = japanese()
    messages = set(WEB_MESSAGES) | server_messages()
    missing = sorted(m for m in messages if not ja.get(m))
    assert missing == [], f"no Japanese for: {missing}"
    with use_language("ja"):
        served = catalog()
    untranslated = [m for m, text in served.items() if text == m and m not in ("GPU",)]
    assert untranslated == [], "the compiled .mo is older than the .po: run pybabel compile"


def test_japanese_keeps_the_terms_users_know_in_latin_letters() -> None:
    ja = japanese()
    for term in ("API", "GPU", "VRAM", "CSRF", "QR"):
        for message in [m for m in ja if term in m and m in set(WEB_MESSAGES) | server_messages()]:
            assert term in ja[message], (message, ja[message])


def test_placeholders_survive_translation() -> None:
    import re

    ja = japanese()
    for message in set(WEB_MESSAGES) | server_messages():
        assert sorted(re.findall(r"\{\w+\}", message)) == sorted(re.findall(r"\{\w+\}", ja[message])), message


def test_accept_language_picks_the_best_of_our_languages() -> None:
    cases = {"ja": "ja", "ja-JP,ja;q=0.9,en;q=0.8": "ja", "en-US,en;q=0.9,ja;q=0.8": "en", "de-DE,ja;q=0.5": "ja",
             "de-DE": "en", "": "en", "*": "en", "ja;q=0,en;q=0.1": "en", "ja;q=bad,en": "en"}  # fmt: skip
    assert {h: language_from_accept(h) for h in cases} == cases
