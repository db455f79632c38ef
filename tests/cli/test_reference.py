from __future__ import annotations

from pathlib import Path

from homellm.cli.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_the_cli_reference_is_current() -> None:
    """docs/cli.md is generated from every command's --help; regenerate it when a command changes."""
    assert DOC.read_text() == render(), "docs/cli.md is stale: run  python -m homellm.cli.reference > docs/cli.md"


def test_the_reference_covers_every_command() -> None:
    text = render()
    for command in ("plan", "fit", "buy", "serve", "up", "keys create", "usage", "discover", "pair", "connect",
                    "bridge", "firewall", "doctor", "service install", "bench speed", "bench quality"):  # fmt: skip
        assert f"## `homellm {command}`" in text
