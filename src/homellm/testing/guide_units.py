"""Split the Japanese guide (a Markdown file) into the units that carry claims.

The audit test parses the guide with this and checks that every unit has a record in the
catalog (``catalog/data/guide.toml``): a unit is a table cell (each ``<br>``-separated part of
it), a list item, a paragraph line, a code block, or a heading that states a figure (``（12GB
VRAM）``, ``（予算: 20〜30万円）``). Source lists and the link section carry no claims.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_FIGURE_HEADING = re.compile(r"（[^）]*(GB|B|円)[^）]*）")
_LINK_ONLY = re.compile(r"^\[[^\]]*\]\([^)]*\)$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+(.*)$")
_LABEL_ONLY = re.compile(r"^\*\*[^*]+(\*\*\s*[:：]|[:：]\s*\*\*)\s*$")
_SHORT_LABEL = 12  # "以下を追加:", "環境変数を設定:": lines that only introduce the next ones
NO_CLAIMS_SECTIONS = ("参考リンク",)
SOURCE_LINES = ("**情報源**", "**調査日**")


@dataclass(frozen=True)
class GuideUnit:
    section: str  # the nearest heading above, as written (without the #'s)
    row: str  # a table row's first cell ("" outside tables)
    column: str  # a table cell's column header ("" outside tables)
    text: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.section, self.row, self.column, self.text)


def clean(text: str) -> str:
    """The form records store: no bold markers, no surrounding space."""
    return text.replace("**", "").strip()


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def guide_units(markdown: str) -> list[GuideUnit]:
    units: list[GuideUnit] = []
    section = ""
    lines = markdown.splitlines()
    i = 0
    in_sources = False
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        heading = _HEADING.match(stripped)
        if heading:
            section = clean(heading.group(2))
            in_sources = False
            if len(heading.group(1)) >= 3 and _FIGURE_HEADING.search(section):
                units.append(GuideUnit(section, "", "", section))
            i += 1
            continue
        if any(section.endswith(s) for s in NO_CLAIMS_SECTIONS):
            i += 1
            continue
        if stripped.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i].rstrip())
                i += 1
            units.append(GuideUnit(section, "", "", "\n".join(block).strip()))
            i += 1
            continue
        if stripped.startswith("|"):
            header = [clean(c).replace("<br>", "") for c in _cells(stripped)]
            i += 2  # the header and the |---| separator
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = _cells(lines[i])
                row = clean(cells[0])
                for column, cell in zip(header[1:], cells[1:], strict=False):
                    for part in cell.split("<br>"):
                        text = clean(part)
                        if text and text != "-":
                            units.append(GuideUnit(section, row, column, text))
                i += 1
            continue
        if not stripped or stripped == "---":
            in_sources = in_sources and bool(stripped)
            i += 1
            continue
        if stripped.startswith(SOURCE_LINES):
            in_sources = stripped.startswith("**情報源**")
            i += 1
            continue
        item = _LIST_ITEM.match(line)
        text = clean(item.group(1) if item else stripped)
        if in_sources or _LINK_ONLY.match(text) or _LABEL_ONLY.match(item.group(1) if item else stripped):
            i += 1
            continue
        if text.endswith((":", "：")) and len(text) <= _SHORT_LABEL:
            i += 1
            continue
        units.append(GuideUnit(section, "", "", text))
        i += 1
    return units
