"""User-facing text in English and Japanese, through gettext catalogs.

Every message a user reads goes through :func:`_` (or :func:`N_` for a constant that is
translated where it is shown). The language is a context variable, so the CLI sets it once
(``--lang``, ``LC_ALL``/``LC_MESSAGES``/``LANG``) and the gateway sets it per request from
``Accept-Language`` or the web app's choice. English is the source language; Japanese lives in
``locale/ja/LC_MESSAGES/homellm.po`` (compiled to ``.mo``, which ships in the wheel).
"""

from __future__ import annotations

import gettext
from contextvars import ContextVar
from functools import cache
from pathlib import Path

__all__ = [
    "LANGUAGES",
    "N_",
    "_",
    "current_language",
    "language_from_accept",
    "language_from_env",
    "ngettext",
    "set_language",
    "system_locale",
    "use_language",
]

DOMAIN = "homellm"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "ja")

_language: ContextVar[str] = ContextVar("homellm_language", default="en")


@cache
def _translations(lang: str) -> gettext.NullTranslations:
    if lang == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)


# Windows names its locales in words: locale.getlocale() gives ("Japanese_Japan", "932") there
WINDOWS_NAMES = {"japanese": "ja", "english": "en"}


def normalize(tag: str | None) -> str | None:
    """``ja_JP.UTF-8``, ``ja-JP``, ``JA``, Windows' ``Japanese_Japan.932`` -> ``ja``; ``C``/``POSIX``/unknown
    -> None."""
    if not tag:
        return None
    base = tag.strip().split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    base = WINDOWS_NAMES.get(base, base)
    return base if base in LANGUAGES else None


def language_from_env(env: dict[str, str], system_locale: str | None = None) -> str:
    """``HOMELLM_LANG`` first, then gettext's order: ``LANGUAGE`` (a list), ``LC_ALL``, ``LC_MESSAGES``,
    ``LANG``; when none is set (Windows sets none), the system's locale name. English otherwise."""
    chosen = normalize(env.get("HOMELLM_LANG"))
    if chosen:
        return chosen
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var)
        if not value:
            continue
        for part in value.split(":"):
            lang = normalize(part)
            if lang:
                return lang
        if var != "LANGUAGE":
            return "en"  # a set variable that names another language (C, de_DE) means English here
    return normalize(system_locale) or "en"


def system_locale() -> str | None:
    """The OS's locale name when no variable names one: on Windows, the user's regional setting."""
    import locale

    try:
        return locale.getlocale()[0]
    except ValueError:  # an unparsable locale
        return None


def language_from_accept(header: str) -> str:
    """The best of our languages for an ``Accept-Language`` header (``ja,en-US;q=0.8`` -> ``ja``); English
    when it names neither. At most 16 entries are read."""
    best, best_q = "en", 0.0
    for part in header.split(",")[:16]:
        tag, _sep, params = part.strip().partition(";")
        q = 1.0
        name, _eq, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        lang = normalize(tag)
        if lang and q > best_q:
            best, best_q = lang, q
    return best


def set_language(lang: str) -> None:
    _language.set(normalize(lang) or "en")


class use_language:
    """Run a block in a language (the gateway's per-request language)."""

    def __init__(self, lang: str | None) -> None:
        self.lang = normalize(lang) or "en"

    def __enter__(self) -> str:
        self._token = _language.set(self.lang)
        return self.lang

    def __exit__(self, *exc: object) -> None:
        _language.reset(self._token)


def current_language() -> str:
    return _language.get()


def _(message: str) -> str:
    """``message`` in the current language."""
    return _translations(_language.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _translations(_language.get()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark a constant for extraction; translate it with ``_()`` where it is shown."""
    return message
