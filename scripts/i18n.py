"""Keep the message catalogs current: extract every user-facing string, merge it into the Japanese
catalog, and compile it. Run from the repository root after changing messages:

    python scripts/i18n.py            # extract + update + compile
    python scripts/i18n.py --check    # exit 1 if the template or the compiled catalog is stale, or a
                                      # message has no Japanese translation (what tests/i18n checks too)

Messages are the arguments of ``_()``, ``N_()`` and ``ngettext()`` in src/homellm, and the help of every
command (its docstring), which the CLI passes through ``_()`` when it registers the command.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "homellm"
I18N = PACKAGE / "i18n"
POT = I18N / "homellm.pot"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


def command_docstrings() -> list[str]:
    """The help texts of every command and group, as the CLI registers them."""
    sys.path.insert(0, str(ROOT / "src"))
    from homellm.cli.reference import help_texts

    return help_texts()


def template() -> Catalog:
    catalog = Catalog(project="homellm", fuzzy=False)
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(PACKAGE), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        catalog.add(message, locations=[(filename, lineno)])
    for text in command_docstrings():
        catalog.add(text, locations=[("<command help>", 0)])
    return catalog


def po_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_po(out, catalog, omit_header=True, no_location=True, sort_output=True, width=120)
    return out.getvalue()


def mo_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


def load(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as fh:
        return read_po(fh, locale=locale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report staleness and missing translations")
    args = parser.parse_args()
    pot = template()
    problems: list[str] = []
    for po_path in sorted(I18N.glob("locale/*/LC_MESSAGES/homellm.po")):
        locale = po_path.parts[-3]
        po = load(po_path, locale)
        po.update(pot, no_fuzzy_matching=True)
        missing = [m.id for m in po if m.id and (not m.string or m.fuzzy)]
        problems += [f"{locale}: no translation for {m!r}" for m in missing]
        mo_path = po_path.with_suffix(".mo")
        if args.check:
            if po_bytes(po) != po_path.read_bytes():
                problems.append(f"{po_path.relative_to(ROOT)} is not up to date: run python scripts/i18n.py")
            if not mo_path.exists() or mo_bytes(po) != mo_path.read_bytes():
                problems.append(f"{mo_path.relative_to(ROOT)} is not compiled: run python scripts/i18n.py")
        else:
            po_path.write_bytes(po_bytes(po))
            mo_path.write_bytes(mo_bytes(po))
    if args.check and (not POT.exists() or po_bytes(pot) != POT.read_bytes()):
        problems.append(f"{POT.relative_to(ROOT)} is stale: run python scripts/i18n.py")
    elif not args.check:
        POT.write_bytes(po_bytes(pot))
    for p in problems:
        print(p)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
