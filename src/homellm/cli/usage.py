"""``homellm usage``: who used which model how much, from the gateway's log."""

from __future__ import annotations

import typer

from homellm.cli.output import console, literal, print_json
from homellm.i18n import _


def usage(
    by: str = typer.Option("key", "--by", help="Group by key, model or day."),
    since: str | None = typer.Option(None, "--since", help="7d, 24h or a date like 2026-11-01."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Requests, tokens and latency per key, model or day (no prompt text unless log_prompts is on)."""
    from rich.text import Text

    from homellm.cli.output import Col, narrow_table, when
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.usage import parse_since, summarize

    rows_data = summarize(open_database(get_settings().home), by, parse_since(since) if since else None)
    if json_out:
        print_json(rows_data)
        return
    if not rows_data:
        console.print("no requests recorded yet")
        return
    cols = [Col(by), Col(_("requests"), right=True), Col(_("errors"), right=True),
            Col(_("prompt tokens"), right=True, drop=2), Col(_("completion tokens"), right=True),
            Col(_("avg TTFT"), right=True), Col(_("avg time"), right=True, drop=3), Col(_("last"), drop=1)]  # fmt: skip
    rows: list[list[str | Text]] = []
    for r in rows_data:
        ttft = "-" if r["avg_ttft_ms"] is None else f"{r['avg_ttft_ms']:.0f} ms"
        rows.append([literal(r[by]), str(r["requests"]), str(r["errors"]), f"{r['prompt_tokens']:,}",
                     f"{r['completion_tokens']:,}", ttft, f"{r['avg_duration_ms']:.0f} ms",
                     when(r["last"])])  # fmt: skip
    console.print(narrow_table(cols, rows))
