"""Render docs/cli.md from every command's real ``--help``; a test checks the file is current.

python -m homellm.cli.reference > docs/cli.md
"""

from __future__ import annotations

import os
import sys
from typing import Any

WIDTH = 100


def _commands(group: Any, prefix: list[str]) -> list[list[str]]:
    out = [prefix]
    sub = getattr(group, "commands", None) or {}
    for name in sorted(sub):
        out += _commands(sub[name], [*prefix, name])
    return out


def render() -> str:
    import typer
    from typer.testing import CliRunner

    from homellm.cli.app import app

    saved = {k: os.environ.get(k) for k in ("COLUMNS", "TERM", "NO_COLOR")}
    os.environ.update({"COLUMNS": str(WIDTH), "TERM": "dumb", "NO_COLOR": "1"})
    try:
        return _render(app, typer.main.get_command(app), CliRunner())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _render(app: Any, command: Any, runner: Any) -> str:
    parts = ["# Command reference", "", "Generated from the code by `python -m homellm.cli.reference > docs/cli.md`;",
             "a test fails when it is out of date.", ""]  # fmt: skip
    for path in _commands(command, []):
        result = runner.invoke(app, [*path, "--help"], prog_name="homellm", terminal_width=WIDTH)
        title = " ".join(["homellm", *path])
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        parts += [f"## `{title}`", "", "```text", text, "```", ""]
    return "\n".join(parts)


def help_texts() -> list[str]:
    """The help of every command that comes from its docstring, in English: the message ids that
    :mod:`homellm.cli.app` passes through ``_()`` when it builds the tree (``scripts/i18n.py`` extracts them)."""
    from homellm.cli.app import DOCSTRING_HELP

    return sorted(set(DOCSTRING_HELP))


if __name__ == "__main__":
    sys.stdout.write(render())
