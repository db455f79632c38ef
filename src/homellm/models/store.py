"""The models folder (``HOMELLM_HOME/models``): GGUF files and an index of what was pulled from where."""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from homellm.errors import NotFoundError
from homellm.i18n import _

INDEX = "index.json"
_SAFE = re.compile(r"[^A-Za-z0-9._\-]")


@dataclass(frozen=True)
class LocalModel:
    name: str  # what the user pulled: qwen2.5:14b, hf.co/ORG/REPO:Q4_K_M
    file: str  # relative to the models folder
    size: int
    sha256: str
    source: str  # ollama | huggingface | file (found in the folder, not pulled)
    quant: str
    pulled_at: str


def safe_relative(path: str) -> str:
    """A relative path made of safe names only (registry-supplied names are untrusted)."""
    parts = [_SAFE.sub("_", p) for p in path.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(p for p in parts if p.strip("._")) or "model.gguf"


class ModelStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _read(self) -> list[LocalModel]:
        try:
            rows = json.loads((self.folder / INDEX).read_text(encoding="utf-8")).get("models", [])
        except (FileNotFoundError, ValueError, AttributeError):
            return []
        out = []
        for row in rows:
            with contextlib.suppress(TypeError):
                out.append(LocalModel(**row))
        return out

    def _write(self, models: list[LocalModel]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{INDEX}.tmp"
        tmp.write_text(json.dumps({"models": [asdict(m) for m in models]}, indent=2), encoding="utf-8")
        os.replace(tmp, self.folder / INDEX)

    def path(self, model: LocalModel) -> Path:
        return self.folder / model.file

    def pulled(self) -> list[LocalModel]:
        """Index entries whose file is still there."""
        return [m for m in self._read() if self.path(m).is_file()]

    def listing(self) -> list[LocalModel]:
        """Everything the engine can load: pulled models, then other .gguf files in the folder."""
        pulled = self.pulled()
        known = {self.path(m).resolve() for m in pulled}
        others = []
        if self.folder.is_dir():
            for p in sorted(self.folder.rglob("*.gguf")):
                if p.is_file() and p.resolve() not in known and "mmproj" not in p.name.lower():
                    rel = p.relative_to(self.folder).as_posix()
                    others.append(LocalModel(rel, rel, p.stat().st_size, "", "file", "", ""))
        return [*pulled, *others]

    def find(self, name: str) -> LocalModel | None:
        key = name.strip().lower()
        return next((m for m in self.listing() if m.name.lower() == key), None)

    def add(self, name: str, file: Path, sha256: str, source: str, quant: str) -> LocalModel:
        entry = LocalModel(
            name, file.relative_to(self.folder).as_posix(), file.stat().st_size, sha256, source, quant,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )  # fmt: skip
        self._write([m for m in self._read() if m.name != name] + [entry])
        return entry

    def remove(self, name: str) -> LocalModel:
        found = self.find(name)
        if found is None:
            raise NotFoundError(_("local model"), name, [m.name for m in self.listing()])
        still_used = any(m.file == found.file and m.name != found.name for m in self._read())
        if not still_used:
            self.path(found).unlink(missing_ok=True)
            for stale in self.path(found).parent.glob(f"{self.path(found).name}.*.partial"):
                stale.unlink(missing_ok=True)
        self._write([m for m in self._read() if m.name != found.name])
        return found
