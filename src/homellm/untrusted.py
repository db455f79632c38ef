"""Text from outside (model output, a server's error, an mDNS name, a device name) made safe to show or store.

A terminal obeys escape sequences and Rich obeys ``[markup]``; both would let a model or a stranger on
the LAN rewrite what the user reads. Shared core: the CLI, the client side and the gateway all print or
store such text.

* :func:`visible` is for one-line fields (names, messages): bounded, and every control, format and
  unassigned character written as a Python escape (``\\x1b``, ``\\n``, ``\\u202e``).
* :func:`visible_stream` is for model output streamed to a terminal: newlines and tabs stay, every
  other control character and the bidirectional overrides are shown (``^[`` for ESC), never obeyed.
  It maps characters one by one, so an escape sequence split across two chunks is caught too.

The CLI prints both without markup.
"""

from __future__ import annotations

import unicodedata

_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_STREAM = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(i) not in "\n\t"}
_STREAM |= {ord(c): f"\\u{ord(c):04x}" for c in (*_BIDI, "\u2028", "\u2029")}
_STREAM[0x1B] = "^["  # ESC, the start of every terminal escape sequence


def visible(text: str, limit: int = 200) -> str:
    """``text`` with control characters made visible and at most ``limit`` characters (then ``…``)."""
    shown = "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _HIDDEN else ch
        for ch in text[:limit]
    )
    return shown + "…" if len(text) > limit else shown


def visible_stream(text: str) -> str:
    """Model output for a terminal: lines and tabs kept, control sequences shown instead of obeyed."""
    return text.translate(_STREAM)
