"""The ``homellm`` entry point: pick the language, build the command tree in it, turn every
:class:`~homellm.errors.HomeLLMError` into one line and an exit code.

The language comes first because help texts are translated when the command modules are imported:
``--lang ja|en`` (before the command), else ``HOMELLM_LANG``, else the locale variables (``LANGUAGE``,
``LC_ALL``, ``LC_MESSAGES``, ``LANG``), else the system's locale (Windows sets no variable), else English.
"""

from __future__ import annotations

import os
import sys


def language_from_argv(argv: list[str]) -> str | None:
    """The value of a root ``--lang`` option (``--lang ja`` or ``--lang=ja``), if given before the command."""
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
        if not arg.startswith("-"):
            return None  # the command: options after it are the command's
    return None


def fold_help_tables() -> None:
    """Japanese has no spaces to wrap at, so Rich would cut a long help text at the panel's edge with
    "…"; make Typer's help tables (and the grids inside their cells) fold such text onto the next line."""
    import typer.rich_utils
    from rich.columns import Columns
    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table

    def fold(table: Table) -> Table:
        for column in table.columns:
            column.overflow = "fold"
        return table

    class FoldingTable(Table):
        def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
            return super().__rich_console__(console, options) if fold(self) else ()

    class FoldingColumns(Columns):
        def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
            for part in super().__rich_console__(console, options):
                yield fold(part) if isinstance(part, Table) else part

    # the module looks both names up when it renders
    typer.rich_utils.Table = FoldingTable  # type: ignore[attr-defined]
    typer.rich_utils.Columns = FoldingColumns  # type: ignore[attr-defined]


def main() -> None:
    import typer

    from homellm.errors import HomeLLMError
    from homellm.i18n import _, current_language, language_from_env, set_language, system_locale

    # the locale variables belong to the OS, read here as gettext itself would
    set_language(language_from_argv(sys.argv[1:]) or language_from_env(dict(os.environ), system_locale()))
    if current_language() == "ja":
        fold_help_tables()
    try:  # Typer 0.2x vendors Click; its exceptions are Typer's own classes
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover - a Typer on the public Click
        from click import exceptions as cx  # type: ignore[no-redef]
    try:
        from homellm.cli.app import app

        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except cx.NoArgsIsHelpError:
        pass  # Typer printed the help while raising this
    except cx.UsageError as exc:  # one line, not Click's box: what is wrong, and where the help is
        where = exc.ctx.command_path if exc.ctx else "homellm"
        _fail(_("{error} (see: {command} --help)").format(error=exc.format_message(), command=where), 2)
    except cx.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, EOFError):
        sys.stderr.write("\n")
        sys.exit(130)
    except HomeLLMError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.exit(130)
    except Exception as exc:
        if _debug():
            raise
        _fail(_("internal error: {kind}: {error} (set HOMELLM_DEBUG=1 for the traceback)").format(
            kind=type(exc).__name__, error=exc), 70)  # fmt: skip


def _debug() -> bool:
    try:
        from homellm.settings import get_settings

        return get_settings().debug
    except Exception:  # settings that cannot be read were already reported as such
        return False


def _fail(message: str, code: int) -> None:
    from rich.text import Text

    from homellm.cli.output import err_console
    from homellm.i18n import _

    # literally: a message may carry text from the network (a server's error), never read as markup
    err_console.print(Text.assemble((_("error:"), "bold red"), " ", message), soft_wrap=True)
    sys.exit(code)
