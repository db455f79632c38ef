"""Which language the CLI speaks: --lang, HOMELLM_LANG, the locale variables, then the system's locale,
including the names Windows gives its locales (it sets no LANG)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from homellm.i18n import language_from_accept, language_from_env, normalize


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("ja_JP.UTF-8", "ja"),
        ("ja-JP", "ja"),
        ("JA", "ja"),
        ("ja_JP.eucJP@euro", "ja"),
        ("Japanese_Japan", "ja"),  # Windows: locale.getlocale() -> ('Japanese_Japan', '932')
        ("Japanese_Japan.932", "ja"),
        ("English_United States", "en"),  # Windows, en-US
        ("en_US", "en"),
        ("C", None),
        ("POSIX", None),
        ("de_DE.UTF-8", None),
        ("German_Germany", None),
        ("", None),
        (None, None),
    ],
)
def test_locale_names(tag: str | None, expected: str | None) -> None:
    assert normalize(tag) == expected


def test_order_of_sources() -> None:
    assert language_from_env({"HOMELLM_LANG": "ja", "LANG": "en_US.UTF-8"}) == "ja"
    assert language_from_env({"LANGUAGE": "fr:ja", "LANG": "en_US.UTF-8"}) == "ja"
    assert language_from_env({"LC_ALL": "C", "LANG": "ja_JP.UTF-8"}) == "en"  # LC_ALL wins, and names English
    assert language_from_env({"LANG": "ja_JP.UTF-8"}, "English_United States") == "ja"
    # Windows: no variable at all, the user's regional setting decides
    assert language_from_env({}, "Japanese_Japan") == "ja"
    assert language_from_env({}, "English_United States") == "en"
    assert language_from_env({}, None) == "en"
    assert language_from_env({"HOMELLM_LANG": "klingon"}, "Japanese_Japan") == "ja"  # unknown: fall through


def test_accept_language() -> None:
    assert language_from_accept("ja,en-US;q=0.8") == "ja"
    assert language_from_accept("en-US,ja;q=0.9") == "en"
    assert language_from_accept("fr-FR, de;q=0.5") == "en"
    assert language_from_accept("en;q=0.1, ja;q=0.2") == "ja"
    assert language_from_accept("ja;q=abc, en;q=0.5") == "en"


def test_japanese_help_folds_instead_of_cutting(tmp_path: Path) -> None:
    """Japanese has no spaces to wrap at: at 80 columns a long option help must fold, not end in '…'."""
    env = {**os.environ, "COLUMNS": "80", "HOMELLM_HOME": str(tmp_path), "LANG": "ja_JP.UTF-8"}
    env.pop("HOMELLM_LANG", None)
    for command in (["pair"], ["keys", "create"]):
        r = subprocess.run([sys.executable, "-m", "homellm", *command, "--help"], capture_output=True, text=True,
                           env=env, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "…" not in r.stdout, r.stdout
        assert re.search(r"[\u3040-\u30ff]", r.stdout), r.stdout  # kana: the help is in Japanese
    english = subprocess.run([sys.executable, "-m", "homellm", "--lang", "en", "pair", "--help"], capture_output=True,
                             text=True, env=env, timeout=60)  # fmt: skip
    assert "one-time code" in english.stdout and not re.search(r"[\u3040-\u30ff]", english.stdout)
