"""``homellm pull``: find the file, check the disk and the fit, download it resumably, verify, index it.

The fit check reads the model's own GGUF header (its first megabytes, which are also the start of
the download) so it sizes exactly the file that would be downloaded, whatever its source.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from homellm import __version__
from homellm.catalog import Catalog
from homellm.errors import GGUFError, HomeLLMError
from homellm.hardware.types import GIB, HardwareProfile
from homellm.i18n import _
from homellm.models.refs import parse_ref
from homellm.models.sources import RemoteFile, source_for
from homellm.models.store import LocalModel, ModelStore, safe_relative
from homellm.models.transfer import Progress, download, partial_path
from homellm.plan.fit import FitResult, fit_model, from_gguf
from homellm.plan.gguf_file import GGUFModel, read_gguf
from homellm.plan.memory import ContextParams

DISK_MARGIN = 512 * 1024 * 1024  # keep some room for the OS and the index
HEADER_BYTES = 16 * 1024 * 1024  # metadata + tokenizer + tensor table of most models
MAX_HEADER_BYTES = 128 * 1024 * 1024


class PullRefused(HomeLLMError):
    """The download would not fit the disk or the model would not run here (``--force`` overrides)."""


@dataclass(frozen=True)
class Registries:
    ollama: str
    hf_endpoint: str
    hf_token: str | None = None


@dataclass
class PullResult:
    model: LocalModel
    remote: RemoteFile | None  # None: it was already here
    fit: FitResult | None
    resumed_from: int = 0


def disk_free(path: Path) -> int:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


def _client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(30.0, read=120.0), headers={"User-Agent": f"homellm/{__version__}"})


def _read_header(partial: Path, size: int) -> GGUFModel:
    with tempfile.TemporaryDirectory(prefix="homellm-header-") as tmp:
        sparse = Path(tmp) / "header.gguf"
        with partial.open("rb") as src, sparse.open("wb") as out:
            shutil.copyfileobj(src, out)
            out.truncate(size)  # a sparse file as long as the model: the reader checks tensor offsets
        return read_gguf(sparse)


def check_fit(
    remote: RemoteFile, final: Path, hw: HardwareProfile, catalog: Catalog, client: httpx.Client
) -> FitResult:
    """Fetch the start of the file (kept for the download) until its header parses; fit it on ``hw``."""
    limit = HEADER_BYTES
    while True:
        download(remote, final, client, limit_bytes=limit)
        try:
            header = _read_header(partial_path(final, remote.sha256), remote.size)
            break
        except GGUFError as exc:
            if limit >= min(MAX_HEADER_BYTES, remote.size):
                raise PullRefused(
                    _(
                        "{name} is not a GGUF model homellm can read ({error}); pass --force to download it anyway"
                    ).format(name=remote.ref.name, error=exc)
                ) from None
            limit *= 2
    model = from_gguf(header, remote.ref.name)
    ctx = min(4096, header.architecture.n_ctx_train)
    return fit_model(model, ContextParams(ctx=ctx), hw, catalog)


def _refuse_fit(fit: FitResult, hw: HardwareProfile) -> PullRefused:
    gpus = ", ".join(f"{g.name} ({g.memory_bytes / GIB:.1f} GiB)" for g in hw.gpus) or _("no GPU")
    return PullRefused(
        _(
            "{name} ({quant}) does not fit this machine: it needs {total:.1f} GiB ({weights:.1f} GiB of weights, "
            "{kv:.2f} GiB of KV cache at {ctx:,} tokens) and this machine has {gpus} and {ram:.1f} GiB of RAM; "
            "pick a smaller model or quantization (homellm plan), or pass --force to download it anyway"
        ).format(
            name=fit.model.label,
            quant=fit.model.quant,
            total=fit.total_bytes / GIB,
            weights=fit.weights_bytes / GIB,
            kv=fit.kv_cache_bytes / GIB,
            ctx=fit.params.n_ctx,
            gpus=gpus,
            ram=hw.ram_bytes / GIB,
        )
    )


def pull(
    text: str,
    *,
    catalog: Catalog,
    models_dir: Path,
    registries: Registries,
    hardware: HardwareProfile | None,
    force: bool = False,
    progress: Progress | None = None,
    free_space: Callable[[Path], int] = disk_free,
    on_located: Callable[[RemoteFile, int], None] | None = None,
) -> PullResult:
    """Download ``text`` (a catalog id, an Ollama tag or hf.co/ORG/REPO:QUANT) into ``models_dir``."""
    store = ModelStore(models_dir)
    ref = parse_ref(text, catalog)
    existing = store.find(ref.name)
    if existing is not None and existing.source != "file":
        return PullResult(existing, None, None)
    with _client() as client:
        remote = source_for(ref, registries.ollama, registries.hf_endpoint, registries.hf_token).locate(ref, client)
        final = models_dir / safe_relative(remote.filename)
        partial = partial_path(final, remote.sha256)
        resumed = partial.stat().st_size if partial.exists() else 0
        if on_located is not None:
            on_located(remote, resumed)
        need = remote.size - resumed
        free = free_space(models_dir)
        if free < need + DISK_MARGIN and not force:
            raise PullRefused(
                _("{name} needs {need:.2f} GiB of free disk in {folder} ({total:.2f} GiB, {have:.2f} GiB already "
                  "downloaded) and {free:.2f} GiB are free; free some space or pass --force").format(
                    name=ref.name, need=(need + DISK_MARGIN) / GIB, folder=models_dir, total=remote.size / GIB,
                    have=resumed / GIB, free=free / GIB)
            )  # fmt: skip
        fit = None
        if hardware is not None and not force:
            fit = check_fit(remote, final, hardware, catalog, client)
            if not fit.fits:
                if not resumed:
                    partial.unlink(missing_ok=True)  # only the header was fetched; leave nothing behind
                raise _refuse_fit(fit, hardware)
        path = download(remote, final, client, progress)
    try:
        quant = read_gguf(path).file_type
    except GGUFError:
        quant = ""  # --force on a file that is not a GGUF model: kept, but the engine will refuse it
    entry = store.add(ref.name, path, remote.sha256, ref.source, quant)
    return PullResult(entry, remote, fit, resumed)
