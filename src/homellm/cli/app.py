"""The ``homellm`` command. Each command group lives in its own module; this one wires them
together and turns every :class:`~homellm.errors.HomeLLMError` into one line and an exit code."""

from __future__ import annotations

import sys

import typer

from homellm import __version__
from homellm.cli import advisor, bench, connect, gateway, host, keys, usage

app = typer.Typer(
    name="homellm",
    help="Run your own LLM at home and share it safely with every device in the house.",
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"homellm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Plan, serve, connect to and benchmark a local LLM."""


def main() -> None:
    """Entry point: Typer reports its own usage errors; homellm's errors become one line."""
    from homellm.errors import HomeLLMError

    try:
        app()
    except HomeLLMError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        from homellm.settings import get_settings

        if get_settings().debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set HOMELLM_DEBUG=1 for the traceback)", 70)


def _fail(message: str, code: int) -> None:
    from rich.text import Text

    from homellm.cli.output import err_console

    # literally: a message may carry text from the network (a server's error), never read as markup
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    sys.exit(code)
