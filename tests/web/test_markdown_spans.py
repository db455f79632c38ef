"""The Markdown renderer's inline patterns scan a bounded span from each opening marker.

An unbounded lazy span (``[\\s\\S]*?``) rescans the rest of the line from every ``**`` or ``_`` that has no
closer, so a model answering one long line of ``**a `` took quadratic time in the browser: measured with
Node on the old pattern, 64 KB of it took 0.9 s per repaint and 1 MB minutes (the chat repaints the whole
answer as it streams). The rule checked here is the property that makes the scan linear.
"""

from __future__ import annotations

import re
from pathlib import Path

import homellm.web

MARKDOWN = Path(homellm.web.__file__).parent / "static" / "js" / "markdown.js"


def test_every_lazy_span_in_the_inline_pattern_is_bounded() -> None:
    source = MARKDOWN.read_text()
    found = re.search(r"const INLINE =\s*/(.*)/g;", source)
    assert found is not None
    pattern = found.group(1)
    assert "*?" not in pattern and "+?" not in pattern, "an unbounded lazy quantifier rescans the line"
    bounds = [int(n) for n in re.findall(r"\{0,(\d+)\}\?", pattern)]
    assert len(bounds) == 4 and max(bounds) <= 2000  # code, bold, bold, emphasis
