"""Shared CLI output: consoles, sizes, JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from homellm.untrusted import visible

GIB = 1024**3

# emoji=False: Rich would turn ":cd:" inside a certificate fingerprint into an emoji
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def literal(text: object, limit: int = 200) -> Text:
    """Untrusted text for a Rich table or line: bounded, no markup, control characters visible."""
    return Text(visible(str(text), limit))
