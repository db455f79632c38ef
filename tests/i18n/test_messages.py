"""Every user-facing string goes through the gettext catalog, and every message has a Japanese translation.

The first test reads the source (ast): a string with letters in a place a user reads (printed, raised as
an error, a help text, a table header or cell, a note, a doctor finding) must be the argument of ``_()``/``N_()``. The
others check the catalog: every message extracted from the code is translated into Japanese, and the
compiled catalog that ships is the current one (``python scripts/i18n.py`` fixes both).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "homellm"
# modules whose text is not shown to users: test and benchmark support, catalog data loaders, and the
# gateway's HTTP client, whose exceptions Backend.failure (serve/backends.py) turns into translated messages
NOT_USER_FACING = {"testing", "catalog/data", "serve/upstream.py"}

# calls whose first (or named) argument a user reads
PRINTERS = {"print", "echo", "write", "say", "confirm", "prompt"}
ERRORS = re.compile(r"(Error|Failed|Mismatch|Refused|Exit|Down|BadParameter)$")
FIELD_ARGS = {"help", "title", "detail", "fix", "message", "what"}
# calls whose every argument is a table cell or a label a user reads
CELLS = {"add_row"}
# lists of lines that are printed later: notes.append("..."), problems.append("...")
SHOWN_LISTS = {"notes", "problems", "warnings"}
LETTERS = re.compile(r"[A-Za-z]{2,}")
# Rich markup tags ([dim], [bold red], [/]) are styling, not words
MARKUP = re.compile(r"\[/?[a-z #0-9.,_-]*\]")
# units and their symbols read the same in every language
UNITS = re.compile(r"\b(GiB|MiB|GB|tok/s|tokens/s|ms)\b")


def strip_markup(text: str) -> str:
    """The words of ``text``: Rich markup and units removed."""
    return UNITS.sub("", MARKUP.sub("", text))


def _literal_text(node: ast.expr) -> str | None:
    """The constant text of a str or f-string node (placeholders removed), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return None


def _func_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


def _user_facing_arguments(call: ast.Call) -> Iterator[ast.expr]:
    name = _func_name(call)
    if name in CELLS:
        yield from call.args
    f = call.func
    if (
        name == "append"
        and isinstance(f, ast.Attribute)
        and isinstance(f.value, ast.Name)
        and f.value.id in SHOWN_LISTS
    ):
        yield from call.args
    if name in PRINTERS or ERRORS.search(name) or name in ("Finding", "Step", "Col", "add_column", "_print_table"):
        if call.args and name != "Finding":  # a Finding's first argument is its verdict code (ok, warn, wrong)
            yield call.args[0]
        if name in ("GatewayError",) and len(call.args) > 1:
            yield call.args[1]
        if name in ("Finding", "Step"):
            yield from call.args[1:]
    for kw in call.keywords:
        if kw.arg in FIELD_ARGS:
            yield kw.value


def untranslated(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _func_name(node) in ("_", "N_", "ngettext"):
            continue
        for arg in _user_facing_arguments(node):
            text = _literal_text(arg)
            if text is not None and LETTERS.search(strip_markup(text)):
                found.append(f"{path.relative_to(ROOT)}:{arg.lineno}: {text[:70]!r}")
    return found


def _sources() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if not any(part in str(p.relative_to(PACKAGE)) for part in NOT_USER_FACING)]  # fmt: skip


def test_no_user_facing_string_bypasses_the_catalog() -> None:
    problems = [line for p in _sources() for line in untranslated(p)]
    assert not problems, f"{len(problems)} strings a user reads are not in the catalog:\n" + "\n".join(problems)


def test_the_lint_finds_what_it_should() -> None:
    """The check above cannot pass vacuously: it flags the shapes it is meant to flag."""
    sample = ROOT / "tests" / "i18n" / "_sample.py"
    sample.write_text(
        "from homellm.i18n import _\n"
        'console.print("hello there")\n'
        'raise UsageError(f"no such file: {p}")\n'
        'x = typer.Option(None, help="Some help.")\n'
        'console.print(_("fine"))\n'
        'console.print(f"  {url}")\n'
        'console.print(f"[red]{error}[/]")\n'
        'table.add_row(f"{used:.1f} GiB", "whole Mac")\n'
        'notes.append("no GPU detected")\n'
        'lines.append("ollama serve")\n'
        'found = Finding("ok", "gateway port", _("port {port} answers").format(port=port))\n'
    )
    try:
        found = untranslated(sample)
    finally:
        sample.unlink()
    assert [f.split(": ", 1)[1] for f in found] == [
        "'hello there'",
        "'no such file: '",
        "'Some help.'",
        "'whole Mac'",
        "'no GPU detected'",
        "'gateway port'",
    ]


@pytest.mark.xfail(strict=False, reason="translation in progress")
def test_every_message_has_a_japanese_translation_and_the_catalog_is_compiled() -> None:
    pytest.importorskip("babel")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "i18n.py"), "--check"], capture_output=True,
                       text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def _homellm(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    exe = str(Path(sys.executable).with_name("homellm"))
    # the locale variables of this shell would decide the language: only those given here count
    base = {k: v for k, v in os.environ.items() if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")}
    full = {**base, "HOMELLM_HOME": str(home), "COLUMNS": "200", **env}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=full)


def test_the_cli_speaks_the_language_of_lang_and_of_the_lang_option(tmp_path: Path) -> None:
    """LANG=ja translates option help (a message already in the Japanese catalog); ``--lang en`` wins
    over LANG; ``--lang ja`` wins over an English LANG."""
    ja_help = "QR コードも表示する"
    assert ja_help in _homellm(["pair", "--help"], tmp_path, LANG="ja_JP.UTF-8").stdout
    r = _homellm(["--lang", "en", "pair", "--help"], tmp_path, LANG="ja_JP.UTF-8")
    assert "Also print a QR code" in r.stdout and ja_help not in r.stdout
    assert ja_help in _homellm(["--lang", "ja", "pair", "--help"], tmp_path, LANG="en_US.UTF-8").stdout


@pytest.mark.xfail(strict=False, reason="translation in progress: 'error:' and the root help are not translated yet")
def test_japanese_is_what_the_cli_speaks_when_asked(tmp_path: Path) -> None:
    r = _homellm(["keys", "revoke", "nobody"], tmp_path, LANG="ja_JP.UTF-8")
    assert r.returncode == 2 and "エラー" in r.stderr, r.stderr
    r = _homellm(["--lang", "en", "keys", "revoke", "nobody"], tmp_path, LANG="ja_JP.UTF-8")
    assert "error:" in r.stderr
    helped = _homellm(["--lang", "ja", "--help"], tmp_path, LANG="ja_JP.UTF-8").stdout
    assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", helped)
