"""The ``homellm`` command tree. Each command group lives in its own module; this one wires them
together. :mod:`homellm.cli.main` is the entry point that runs it."""

from __future__ import annotations

import typer

from homellm import __version__
from homellm.cli import advisor, bench, connect, gateway, host, keys, pool, usage
from homellm.i18n import _

app = typer.Typer(
    name="homellm",
    help=_("Run your own LLM at home and share it safely with every device in the house."),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
advisor.register(app)
app.command("serve")(gateway.serve)
app.command("up")(gateway.up)
app.add_typer(keys.app, name="keys")
app.command("usage")(usage.usage)
connect.register(app)
app.command("firewall")(host.firewall)
app.command("doctor")(host.doctor)
app.add_typer(host.service_app, name="service")
app.add_typer(bench.app, name="bench")
app.command("join")(pool.join)
app.add_typer(pool.workers_app, name="workers")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"homellm {__version__}")
        raise typer.Exit()


def _lang(value: str | None) -> str | None:
    from homellm.i18n import LANGUAGES

    if value is not None and value not in LANGUAGES:
        raise typer.BadParameter(_("choose one of: {langs}").format(langs=", ".join(LANGUAGES)))
    return value  # applied by homellm.cli.main before the commands were built


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help=_("Show the version.")),
    lang: str | None = typer.Option(
        None, "--lang", callback=_lang, help=_("Language of messages: en or ja (default: from LANG / LC_ALL).")
    ),
) -> None:
    """Plan, serve, connect to and benchmark a local LLM."""
    from homellm.cli.output import err_console
    from homellm.settings import config_warnings, get_settings

    get_settings()  # a config file that cannot be read is one line now, whatever the command
    for warning in config_warnings():
        err_console.print(_("warning: {text}").format(text=warning), style="yellow", soft_wrap=True, markup=False)
