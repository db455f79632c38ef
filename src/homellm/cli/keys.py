"""``homellm keys create | list | revoke``: the gateway's API keys."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from homellm.cli.output import console, literal, print_json

if TYPE_CHECKING:
    from homellm.store.keys import KeyStore

app = typer.Typer(help="Create, list and revoke API keys (one per person or device).", no_args_is_help=True)


def _store() -> KeyStore:
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.keys import KeyStore

    return KeyStore(open_database(get_settings().home))


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Who or what the key is for, e.g. 'alice-laptop'."),
    models: str | None = typer.Option(None, "--models", help="Comma-separated models this key may use (default: all)."),
    admin: bool = typer.Option(
        False, "--admin", help="Allow model management (pull, create, delete, ...) and /metrics."
    ),
    expires: str | None = typer.Option(None, "--expires", help="Lifetime, e.g. 30d, 12h, 2w."),
    json_out: bool = typer.Option(False, "--json", help='Print {"name": ..., "key": ...}.'),
) -> None:
    """Create a key. It is shown once; homellm keeps only its hash."""
    from homellm.store.keys import parse_duration

    store = _store()
    allowed = [m for m in models.split(",")] if models is not None else None
    key, secret = store.create(name, allowed, admin, parse_duration(expires) if expires else None)
    if json_out:
        print_json({"name": key.name, "key": secret})
        return
    console.print(
        f"Created key [bold]{key.name}[/]{' (admin)' if key.admin else ''}. Copy it now; it is not shown again:"
    )
    console.print(f"\n  {secret}\n", soft_wrap=True)
    scope = ", ".join(key.models) if key.models is not None else "all models"
    console.print(f"[dim]may use: {scope}; expires: {_when(key.expires_at) if key.expires_at else 'never'}[/]")


@app.command("list")
def list_keys(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List keys (never their secrets)."""
    from rich.table import Table

    store = _store()
    keys = store.list()
    if json_out:
        print_json([
            {"name": k.name, "prefix": k.prefix, "models": list(k.models) if k.models is not None else None,
             "admin": k.admin, "active": k.active(), "created_at": k.created_at, "expires_at": k.expires_at,
             "revoked_at": k.revoked_at, "last_used_at": k.last_used_at}
            for k in keys
        ])  # fmt: skip
        return
    if not keys:
        console.print("no keys yet; create one with: homellm keys create NAME")
        return
    table = Table(title_justify="left")
    for col in ("name", "key", "models", "admin", "status", "created", "expires", "last used"):
        table.add_column(col)
    for k in keys:
        status = "revoked" if k.revoked_at else ("expired" if not k.active() else "active")
        table.add_row(literal(k.name), f"{k.prefix}…", literal(", ".join(k.models) if k.models is not None else "all"),
                      "yes" if k.admin else "", status, _when(k.created_at), _when(k.expires_at),
                      _when(k.last_used_at))  # fmt: skip
    console.print(table)


@app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """Revoke a key; requests with it are refused from now on."""
    store = _store()
    store.revoke(name)
    console.print(f"revoked key {name!r}")
