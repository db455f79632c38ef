"""``homellm usage``: who used which model how much, from the gateway's log."""

from __future__ import annotations

import sqlite3
from typing import Any

import typer
from rich.text import Text

from homellm.cli.output import console, literal, print_json
from homellm.i18n import _


def usage(
    by: str = typer.Option(
        "key", "--by", help=_("Group by key, model, day or backend (the pool member that answered).")
    ),
    since: str | None = typer.Option(None, "--since", help=_("7d, 24h or a date like 2026-11-01.")),
    json_out: bool = typer.Option(False, "--json", help=_("Machine-readable output.")),
    quota: bool = typer.Option(False, "--quota", help=_("Only today's use of each key's daily quota.")),
) -> None:
    """Requests, tokens and latency per key, model, day or backend, and today's use of daily quotas.

    No prompt text unless log_prompts is on.
    """
    from homellm.cli.output import Col, narrow_table, when
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.usage import parse_since, summarize

    db = open_database(get_settings().home)
    quotas = quota_use(db)
    if quota:
        if json_out:
            print_json(quotas)
        else:
            _print_quotas(quotas, always=True)
        return
    rows_data = summarize(db, by, parse_since(since) if since else None)
    if json_out:
        print_json(rows_data)
        return
    if not rows_data:
        console.print(_("no requests recorded yet"))
        _print_quotas(quotas)
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
    _print_quotas(quotas)


def quota_use(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Each active key with a quota: its use since 00:00 UTC, its limits, when they reset."""
    import time

    from homellm.serve.quota import DAY, inference_labels, reset_in
    from homellm.store.keys import KeyStore
    from homellm.store.usage import used_today

    now = time.time()
    routes = inference_labels()
    out = []
    for k in KeyStore(db).list():
        if k.has_quota and k.active(now):
            requests, tokens = used_today(db, k.name, int(now // DAY) * DAY, routes)
            out.append(
                {
                    "key": k.name,
                    "requests": requests,
                    "requests_per_day": k.requests_per_day,
                    "tokens": tokens,
                    "tokens_per_day": k.tokens_per_day,
                    "resets_in_s": int(reset_in(now)),
                }
            )
    return out


def _print_quotas(quotas: list[dict[str, Any]], always: bool = False) -> None:
    from homellm.cli.output import Col, narrow_table
    from homellm.serve.quota import duration_words

    if not quotas:
        if always:
            console.print(_("no key has a daily quota; set one with: homellm keys set NAME --tokens-per-day N"))
        return

    def used(n: int, limit: int | None) -> str:
        return f"{n:,}" if limit is None else f"{n:,} / {limit:,} ({100 * n / limit:.0f}%)"

    cols = [Col(_("key")), Col(_("requests today"), right=True), Col(_("tokens today"), right=True),
            Col(_("resets in"), right=True, drop=1)]  # fmt: skip
    rows: list[list[str | Text]] = [
        [literal(q["key"]), used(q["requests"], q["requests_per_day"]), used(q["tokens"], q["tokens_per_day"]),
         duration_words(q["resets_in_s"])]
        for q in quotas
    ]  # fmt: skip
    console.print(narrow_table(cols, rows, title=_("Daily quotas (UTC day)")))
