"""``homellm keys create | list | revoke``: the gateway's API keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from homellm.cli.output import console, literal, print_json, when
from homellm.i18n import N_, _

if TYPE_CHECKING:
    from homellm.store.keys import ApiKey, KeyStore

TokensOpt = typer.Option(None, "--tokens-per-day", help=_("Prompt and completion tokens a day (UTC); beyond: 429."))
RequestsOpt = typer.Option(None, "--requests-per-day", help=_("Requests a day (UTC); beyond: 429."))
PRIORITY_HELP = N_("Its weight when requests wait for a backend: 2 is served twice as often as 1 (1-100).")

app = typer.Typer(help=_("Create, list and revoke API keys (one per person or device)."), no_args_is_help=True)


def _store() -> KeyStore:
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.keys import KeyStore

    return KeyStore(open_database(get_settings().home))


@app.command("create")
def create(
    name: str = typer.Argument(..., help=_("Who or what the key is for, e.g. 'alice-laptop'.")),
    models: str | None = typer.Option(
        None, "--models", help=_("Comma-separated models this key may use (default: all).")
    ),
    admin: bool = typer.Option(
        False, "--admin", help=_("Allow model management (pull, create, delete, ...) and /metrics.")
    ),
    expires: str | None = typer.Option(None, "--expires", help=_("Lifetime, e.g. 30d, 12h, 2w.")),
    tokens_per_day: int | None = TokensOpt,
    requests_per_day: int | None = RequestsOpt,
    priority: int = typer.Option(1, "--priority", help=_(PRIORITY_HELP)),
    json_out: bool = typer.Option(False, "--json", help=_('Print {"name": ..., "key": ...}.')),
) -> None:
    """Create a key. It is shown once; homellm keeps only its hash."""
    from homellm.store.keys import parse_duration

    store = _store()
    allowed = [m for m in models.split(",")] if models is not None else None
    key, secret = store.create(name, allowed, admin, parse_duration(expires) if expires else None,
                               tokens_per_day=tokens_per_day, requests_per_day=requests_per_day,
                               priority=priority)  # fmt: skip
    if json_out:
        print_json({"name": key.name, "key": secret})
        return
    console.print(
        _("Created key [bold]{name}[/]{admin}. Copy it now; it is not shown again:").format(
            name=key.name, admin=_(" (admin)") if key.admin else ""
        )
    )
    console.print(f"\n  {secret}\n", soft_wrap=True)
    scope = ", ".join(key.models) if key.models is not None else "all models"
    console.print(
        _("[dim]may use: {scope}; expires: {expires}[/]").format(
            scope=scope, expires=when(key.expires_at) if key.expires_at else _("never")
        )
    )
    if key.has_quota or key.priority != 1:
        console.print(_("[dim]quota: {quota}; priority {priority}[/]").format(quota=quota_text(key),
                                                                             priority=key.priority))  # fmt: skip


def quota_text(key: ApiKey) -> str:
    parts = []
    if key.requests_per_day is not None:
        parts.append(_("{n:,} requests").format(n=key.requests_per_day))
    if key.tokens_per_day is not None:
        parts.append(_("{n:,} tokens").format(n=key.tokens_per_day))
    return _("{limits} a day").format(limits=", ".join(parts)) if parts else _("none")


@app.command("set")
def set_limits(
    name: str = typer.Argument(..., help=_("The key's name.")),
    tokens_per_day: int | None = typer.Option(None, "--tokens-per-day", help=_("Tokens a day (0: no quota).")),
    requests_per_day: int | None = typer.Option(None, "--requests-per-day", help=_("Requests a day (0: no quota).")),
    priority: int | None = typer.Option(None, "--priority", help=_(PRIORITY_HELP)),
) -> None:
    """Change a key's daily quotas or its priority in the queue (the gateway applies it within a second)."""
    from homellm.errors import UsageError

    if tokens_per_day is None and requests_per_day is None and priority is None:
        raise UsageError(_("give --tokens-per-day, --requests-per-day or --priority"))
    key = _store().set_limits(name, tokens_per_day, requests_per_day, priority)
    console.print(
        _("key {name}: quota {quota}; priority {priority}").format(
            name=key.name, quota=quota_text(key), priority=key.priority
        ),
        markup=False,
    )


@app.command("list")
def list_keys(json_out: bool = typer.Option(False, "--json", help=_("Machine-readable output."))) -> None:
    """List keys (never their secrets)."""
    from rich.text import Text

    from homellm.cli.output import Col, narrow_table

    store = _store()
    keys = store.list()
    if json_out:
        print_json([
            {"name": k.name, "prefix": k.prefix, "models": list(k.models) if k.models is not None else None,
             "admin": k.admin, "active": k.active(), "created_at": k.created_at, "expires_at": k.expires_at,
             "revoked_at": k.revoked_at, "last_used_at": k.last_used_at, "priority": k.priority,
             "tokens_per_day": k.tokens_per_day, "requests_per_day": k.requests_per_day}
            for k in keys
        ])  # fmt: skip
        return
    if not keys:
        console.print(_("no keys yet; create one with: homellm keys create NAME"))
        return
    cols = [
        Col(_("name")),
        Col(_("key"), drop=2),
        Col(_("models")),
        Col(_("admin")),
        Col(_("status")),
        Col(_("created"), drop=1),
        Col(_("expires"), drop=3),
        Col(_("last used")),
        Col(_("quota a day"), drop=4),
    ]
    rows: list[list[str | Text]] = []
    for k in keys:
        status = _("revoked") if k.revoked_at else (_("expired") if not k.active() else _("active"))
        models = ", ".join(k.models) if k.models is not None else _("all")
        rows.append([literal(k.name), f"{k.prefix}…", literal(models), _("yes") if k.admin else "", status,
                     when(k.created_at), when(k.expires_at), when(k.last_used_at),
                     quota_text(k) if k.has_quota else ""])  # fmt: skip
    console.print(narrow_table(cols, rows))


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help=_("The key's name."))) -> None:
    """Revoke a key; requests with it are refused from now on."""
    store = _store()
    store.revoke(name)
    console.print(_("revoked key {name!r}").format(name=name))
