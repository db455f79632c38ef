"""``homellm firewall | doctor | service``: preparing the server machine."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from homellm.cli.output import console, print_json
from homellm.i18n import _

if TYPE_CHECKING:
    from homellm.host.service import ServiceFile

service_app = typer.Typer(help=_("Start the gateway at login: install, uninstall or show the service."),
                          no_args_is_help=True)  # fmt: skip


def firewall(
    apply: bool = typer.Option(False, "--apply", help=_("Run the commands (needs administrator rights).")),
    port: int | None = typer.Option(None, "--port", help=_("The gateway port (default: from the settings).")),
    json_out: bool = typer.Option(False, "--json", help=_("Machine-readable output.")),
) -> None:
    """Print (or apply) a rule opening only the gateway port, only to the local subnet."""
    from homellm.errors import HomeLLMError
    from homellm.host.firewall import apply as run_plan
    from homellm.host.firewall import detect_linux, local_subnets, plan
    from homellm.settings import get_settings

    os_name = platform.system()
    p = plan(os_name, port or get_settings().port, local_subnets(), detect_linux() if os_name == "Linux" else None)
    if json_out and not apply:
        print_json({"system": p.system, "commands": p.commands, "note": p.note})
        return
    console.print(f"[bold]{p.system}[/]: {p.note}" if p.note else f"[bold]{p.system}[/]")
    for c in p.commands:
        console.print(f"  {c}", soft_wrap=True, markup=False)
    if not apply or not p.commands:
        return
    failed = [(c, rc, out) for c, rc, out in run_plan(p) if rc != 0]
    for c, rc, out in failed:
        console.print(_("[red]failed ({rc}):[/] {command}\n  {out}").format(rc=rc, command=c, out=out), soft_wrap=True)
    if failed:
        raise HomeLLMError(
            _("could not apply the rule (administrator rights needed?); run the commands above yourself")
        )
    console.print(_("[green]applied[/]"))


def doctor(json_out: bool = typer.Option(False, "--json", help=_("Machine-readable output."))) -> None:
    """Audit this host: Ollama exposed without auth, OLLAMA_ORIGINS=*, the gateway port, TLS, key hygiene."""
    from dataclasses import asdict

    from homellm.host.doctor import audit
    from homellm.serve.network import lan_addresses
    from homellm.settings import get_settings
    from homellm.store import open_database
    from homellm.store.keys import KeyStore

    settings = get_settings()
    findings = audit(settings, KeyStore(open_database(settings.home)).list(), list(lan_addresses()), platform.system())
    if json_out:
        print_json([asdict(f) for f in findings])
    else:
        for f in findings:
            color = {"ok": "green", "warn": "yellow", "fail": "bold red"}[f.status]
            console.print(f"[{color}]{f.status:>4}[/]  {f.check}: {f.detail}", soft_wrap=True)
            if f.fix:
                console.print(_("        fix: {fix}").format(fix=f.fix), soft_wrap=True)
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(1)


def _service() -> ServiceFile:
    from homellm.host.service import for_platform
    from homellm.settings import get_settings

    return for_platform(platform.system(), get_settings().home, Path.home())


def _run(cmds: list[list[str]]) -> None:
    from homellm.errors import HomeLLMError

    for cmd in cmds:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        except OSError as exc:
            raise HomeLLMError(
                _("cannot run {program}: {strerror}").format(program=cmd[0], strerror=exc.strerror)
            ) from None
        if p.returncode != 0:
            raise HomeLLMError(
                _("{cmd} failed: {output}").format(
                    cmd=" ".join(cmd), output=(p.stderr or p.stdout).strip().splitlines()[-1:]
                )
            )


@service_app.command("install")
def install(dry_run: bool = typer.Option(False, "--dry-run", help=_("Only print the definition."))) -> None:
    """Install and start the service."""
    svc = _service()
    if dry_run:
        console.print(svc.content, markup=False, soft_wrap=True)
        return
    if svc.path is not None:
        svc.path.parent.mkdir(parents=True, exist_ok=True)
        svc.path.write_text(svc.content)
    _run(svc.install)
    console.print(_("installed{path}; the gateway starts at login").format(path=f" {svc.path}" if svc.path else ""))


@service_app.command("uninstall")
def uninstall() -> None:
    """Stop and remove the service."""
    svc = _service()
    _run(svc.uninstall)
    if svc.path is not None and svc.path.exists():
        svc.path.unlink()
    console.print(_("uninstalled"))


@service_app.command("status")
def status() -> None:
    """Show whether the service is installed and running."""
    svc = _service()
    try:
        p = subprocess.run(svc.status, capture_output=True, text=True, timeout=30, check=False)
        out = (p.stdout or p.stderr).strip()
    except OSError as exc:
        out = f"cannot run {svc.status[0]}: {exc.strerror}"
    installed = svc.path.exists() if svc.path else None
    console.print(
        _("definition: {where}{state}").format(
            where=svc.path or _("Task Scheduler task homellm"),
            state="" if installed is None else (_(" (present)") if installed else _(" (not installed)")),
        )
    )
    console.print(out, markup=False, soft_wrap=True)
