"""Turn the MODEL of ``homellm up MODEL`` / ``serve --model MODEL`` into a GGUF file, pulling it if asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from homellm.catalog import Catalog
from homellm.errors import UsageError
from homellm.i18n import _
from homellm.models.refs import parse_ref
from homellm.models.store import ModelStore


def is_file_argument(arg: str) -> bool:
    return arg.lower().endswith(".gguf") or "\\" in arg or Path(arg).expanduser().exists()


def gguf_path_for(
    arg: str,
    *,
    catalog: Catalog,
    models_dir: Path,
    confirm: Callable[[str], bool],
    pull: Callable[[str], Path],
) -> Path:
    """A path as given, a model already in the models folder, or one pulled after ``confirm`` says yes."""
    if is_file_argument(arg):
        return Path(arg).expanduser()
    ref = parse_ref(arg, catalog)
    local = ModelStore(models_dir).find(ref.name)
    if local is not None:
        return models_dir / local.file
    question = _("{name} is not downloaded yet. Download it into {folder} now?").format(
        name=ref.name, folder=models_dir
    )
    if not confirm(question):
        raise UsageError(_("{name} is not downloaded; run `homellm pull {name}` first").format(name=ref.name))
    return pull(arg)
