"""Showing text that came from outside (model output, model and device names, mDNS records) safely.

Shared core: the CLI, the client side and the gateway all print or store such text.
"""

from __future__ import annotations

# C0/C1 controls (but newline and tab), DEL, and the bidirectional overrides that can reorder what a
# terminal shows ("Trojan Source"): untrusted text is shown with these made visible, never obeyed.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_VISIBLE = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(i) not in "\n\t"}
_VISIBLE |= {ord(c): f"\\u{ord(c):04x}" for c in _BIDI}
_VISIBLE[0x1B] = "^["  # ESC, the start of every terminal escape sequence


def visible(text: str) -> str:
    """``text`` with control characters shown as escapes (``^[``, ``\\x07``), so a terminal obeys none of them."""
    return text.translate(_VISIBLE)
