"""Which language the CLI speaks: --lang, HOMELLM_LANG, the locale variables, then the system's locale,
including the names Windows gives its locales (it sets no LANG)."""

from __future__ import annotations

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
