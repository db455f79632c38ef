"""The ``homellm`` command tree. Each command group lives in its own module; this one wires them
together. :mod:`homellm.cli.main` is the entry point that runs it."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import typer
from typer.models import CommandInfo

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


def commands(tree: typer.Typer) -> Iterator[CommandInfo]:
    """Every command of ``tree``, its groups' commands included."""
    yield from tree.registered_commands
    for group in tree.registered_groups:
        if group.typer_instance is not None:
            yield from commands(group.typer_instance)


def _translate_help(tree: typer.Typer) -> list[str]:
    """A command's help is its function's docstring (as Typer reads it); here each one goes through the
    catalog, once for the whole tree. Returns those docstrings: the message ids ``scripts/i18n.py`` extracts."""
    english = []
    for info in commands(tree):
        doc = inspect.getdoc(info.callback) if info.help is None and info.callback is not None else None
        if doc:
            english.append(doc)
            info.help = _(doc)
    return english


DOCSTRING_HELP = _translate_help(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(_("homellm {version}").format(version=__version__))
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
