"""Typer's help in the user's language: its own words (panel titles, "[default: …]", the --help
option's help) through our catalog, and tables that fold Japanese text instead of cutting it.

Typer keeps those words in module constants read when help is rendered, and Click's help option is
made lazily by one decorator: both are replaced here, once, before the command tree is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homellm.i18n import _


def localize_help() -> None:
    import typer.rich_utils

    words = typer.rich_utils
    words.ARGUMENTS_PANEL_TITLE = _("Arguments")
    words.OPTIONS_PANEL_TITLE = _("Options")
    words.COMMANDS_PANEL_TITLE = _("Commands")
    words.DEFAULT_STRING = _("[default: {}]")
    words.REQUIRED_LONG_STRING = _("[required]")
    words.ENVVAR_STRING = _("[env var: {}]")
    _translate_help_option()
    fold_help_tables()


def _translate_help_option() -> None:
    """Click's --help option says "Show this message and exit." in English, from a lazy decorator."""
    try:
        from typer._click import decorators
    except ImportError:  # pragma: no cover - a Typer that no longer vendors Click: its help stays English
        return
    make = decorators.help_option

    def help_option(names: list[str]) -> Callable[[Any], Any]:
        add = make(names)

        def apply(command: Any) -> Any:
            command = add(command)
            command.params[-1].help = _("Show this message and exit.")
            return command

        return apply

    decorators.help_option = help_option  # type: ignore[assignment]


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
