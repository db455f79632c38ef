"""``homellm usage``: who used which model how much, from the gateway's log."""

from __future__ import annotations

import time

import typer

from homellm.cli.output import console, literal, print_json


def usage(
    by: str = typer.Option("key", "--by", help="Group by key, model or day."),
    since: str | None = typer.Option(None, "--since", help="7d, 24h or a date like 2026-11-01."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Requests, tokens and latency per key, model or day (no prompt text unless log_prompts is on)."""
    from rich.table import Table

    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.usage import parse_since, summarize

    rows = summarize(open_database(get_settings().home), by, parse_since(since) if since else None)
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no requests recorded yet")
        return
    table = Table(title_justify="left")
    for col in (by, "requests", "errors", "prompt tokens", "completion tokens", "avg TTFT", "avg time", "last"):
        table.add_column(col, justify="left" if col in (by, "last") else "right")
    for r in rows:
        ttft = "-" if r["avg_ttft_ms"] is None else f"{r['avg_ttft_ms']:.0f} ms"
        table.add_row(literal(r[by]), str(r["requests"]), str(r["errors"]), f"{r['prompt_tokens']:,}",
                      f"{r['completion_tokens']:,}", ttft, f"{r['avg_duration_ms']:.0f} ms",
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last"])))  # fmt: skip
    console.print(table)
