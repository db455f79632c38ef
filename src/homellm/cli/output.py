"""Shared CLI output: consoles, sizes, JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from homellm.untrusted import visible

if TYPE_CHECKING:
    from rich.table import Table

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


@dataclass(frozen=True)
class Col:
    """A table column: ``drop`` orders which columns give way first on a narrow terminal (0: never)."""

    name: str
    right: bool = False
    drop: int = 0


def narrow_table(columns: list[Col], rows: Sequence[Sequence[str | Text]], title: str | None = None) -> Table:
    """A table that stays readable at 80 columns: less important columns are dropped, in ``drop`` order,
    until the rest fits; the columns that remain wrap (names fold) instead of being cut to an ellipsis."""
    from rich.table import Table

    def cell_width(cell: str | Text) -> int:
        text = cell.plain if isinstance(cell, Text) else cell
        return max((len(line) for line in text.splitlines()), default=0)

    width = console.size.width
    keep = list(range(len(columns)))
    widths = [max([len(c.name), *(cell_width(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def needed() -> int:  # cell contents, one space of padding each side, one border between and around
        return sum(widths[i] + 3 for i in keep) + 1

    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop):
        if needed() <= width:
            break
        keep.remove(i)
    table = Table(title=title, title_justify="left")
    for i in keep:
        c = columns[i]
        table.add_column(c.name, justify="right" if c.right else "left", overflow="fold")
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


def when(ts: float | None) -> str:
    """A compact local time: ``11-28 09:30`` this year, ``2025-11-28`` before."""
    import time

    if ts is None:
        return "-"
    t = time.localtime(ts)
    return time.strftime("%m-%d %H:%M" if t.tm_year == time.localtime().tm_year else "%Y-%m-%d", t)
