"""Text from outside (a server's error, an mDNS name, a device name) made safe to show or store.

A terminal obeys escape sequences and Rich obeys ``[markup]``; both would let a stranger on the LAN
rewrite what the user reads. :func:`visible` bounds the length and writes every control, format and
unassigned character as a Python escape (``\\x1b``, ``\\n``, ``\\u202e``); the CLI then prints the result
without markup.
"""

from __future__ import annotations

import unicodedata

_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def visible(text: str, limit: int = 200) -> str:
    """``text`` with control characters made visible and at most ``limit`` characters (then ``…``)."""
    shown = "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _HIDDEN else ch
        for ch in text[:limit]
    )
    return shown + "…" if len(text) > limit else shown
