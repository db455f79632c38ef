"""The embedded engine as a backend: pick context and GPU layers with the advisor, then supervise it."""

from __future__ import annotations

import asyncio
import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from homellm.errors import GatewayError, UsageError
from homellm.i18n import N_, _
from homellm.serve.backends import BackendDown, ModelEntry, OpenAIBackend

if TYPE_CHECKING:
    from homellm.engine.supervisor import EngineModel, EngineSupervisor
    from homellm.engine.tokens import PromptCounter
    from homellm.hardware.types import HardwareProfile
    from homellm.plan.fit import FitResult
    from homellm.plan.gguf_file import GGUFModel

DEFAULT_CTX = 8192
MIN_CTX = 2048


def fit_for_engine(path: Path, requested_ctx: int | None, hw: HardwareProfile | None = None) -> tuple[str, FitResult]:
    """(alias, the advisor's fit): the context halves from the model's default until the model fits ``hw``
    (this machine, with any worker's devices in ``hw.remotes``), unless a context was asked for."""
    from homellm.catalog import load_catalog
    from homellm.hardware.detect import apply_overrides, detect_hardware
    from homellm.plan.fit import fit_model, resolve_model
    from homellm.plan.memory import ContextParams
    from homellm.settings import get_settings

    catalog = load_catalog()
    model = resolve_model(str(path), None, catalog)
    alias = next((m.id for m in catalog.models if m.architecture == model.arch), path.stem.lower())
    settings = get_settings()
    hw = hw or apply_overrides(detect_hardware(settings.models_path, catalog), catalog, ram_gib=settings.ram_gib)
    ctx = requested_ctx or min(model.arch.n_ctx_train, DEFAULT_CTX)
    while True:
        fit = fit_model(model, ContextParams(ctx=ctx), hw, catalog)
        if fit.fits or requested_ctx or ctx <= MIN_CTX:
            return alias, fit
        ctx //= 2


def plan_model(path: Path, requested_ctx: int | None) -> tuple[str, int, int]:
    """(alias, n_ctx, n_gpu_layers) so that the model fits this machine, per the advisor."""
    alias, fit = fit_for_engine(path, requested_ctx)
    if not fit.fits:
        raise UsageError(
            _(
                "{name} needs {gib:.1f} GiB at {ctx} tokens of context and does not fit this machine; "
                "see `homellm fit` for a smaller quantization"
            ).format(name=path.name, gib=fit.total_bytes / 1024**3, ctx=fit.params.ctx)
        )
    return alias, fit.params.ctx, fit.gpu_layers


def find_ggufs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(_("no such folder: {folder}").format(folder=folder))
    found = sorted(p for p in folder.rglob("*.gguf") if p.is_file() and "mmproj" not in p.name.lower())
    if not found:
        raise UsageError(_("no .gguf files in {folder}").format(folder=folder))
    return found


def parameter_size(n: int) -> str:
    """Ollama's way of writing a parameter count: 135M, 7.6B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


DEATH_CHECKS, DEATH_CHECK_S = 10, 0.02  # up to 0.2 s for a dying engine to be reaped


class EngineBackend(OpenAIBackend):
    label = N_("the embedded engine")
    managed = True
    stops_on_disconnect = False  # llama-cpp-python finishes a non-streamed generation whatever the client does
    answers_while_busy = False  # its server answers nothing else while it generates (one lock)

    def __init__(
        self,
        paths: list[Path],
        workdir: Path,
        ctx: int | None,
        port: int,
        idle_timeout: float,
        worker: str | None = None,
    ) -> None:
        from homellm.engine.supervisor import EngineModel, EngineSupervisor

        self.supervisor: EngineSupervisor
        if worker is not None:
            from homellm.split.serving import SplitSupervisor, plan_split_model

            if len(paths) != 1:
                raise UsageError(_("--with splits one model: give it with --model"))
            self.supervisor = SplitSupervisor(plan_split_model(paths[0], ctx, worker), workdir, port)
        else:
            models: list[EngineModel] = []
            for p in paths:
                alias, n_ctx, ngl = plan_model(p, ctx)
                if any(m.alias == alias for m in models):
                    alias = p.stem.lower()
                models.append(EngineModel(alias, p, n_ctx, ngl))
            self.supervisor = EngineSupervisor(models, workdir, port)
        self._counters: dict[str, PromptCounter] = {}
        super().__init__(self.supervisor.url, idle_timeout)

    async def start(self) -> None:
        await self.supervisor.start()
        await asyncio.to_thread(lambda: self._headers)  # read the GGUF headers off the event loop, once

    async def close(self) -> None:
        await self.supervisor.stop()
        await super().close()

    def ready(self) -> None:
        if self.supervisor.unavailable:
            raise BackendDown(503, self.supervisor.unavailable, headers={"Retry-After": "5"})
        if not self.supervisor.ready:
            raise BackendDown(
                503, _("the engine is starting or restarting; retry in a few seconds"), headers={"Retry-After": "5"}
            )

    async def failure(self, exc: BaseException) -> GatewayError:
        """A connection refused or cut because the engine just died is a restart in progress (503), not a 502.

        A killed process's sockets close before it can be reaped, so its exit is waited for a moment."""
        proc = self.supervisor.process
        for _wait in range(DEATH_CHECKS):
            if proc is None or proc.poll() is not None or self.supervisor.lost_worker():
                break
            await asyncio.sleep(DEATH_CHECK_S)
        gone = (proc is not None and proc.poll() is not None) or self.supervisor.lost_worker()
        if gone or not self.supervisor.ready:
            return BackendDown(503, self.supervisor.crash_message(), headers={"Retry-After": "5"})
        return await super().failure(exc)

    def _model(self, name: str) -> EngineModel | None:
        base = name.removesuffix(":latest")
        return next((m for m in self.supervisor.models if m.alias in (name, base)), None)

    @cached_property
    def _headers(self) -> dict[str, GGUFModel]:
        from homellm.plan.gguf_file import read_gguf

        return {m.alias: read_gguf(m.path) for m in self.supervisor.models}

    def _entry(self, m: EngineModel) -> ModelEntry:
        header = self._headers[m.alias]
        stat = m.path.stat()
        modified = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.UTC).isoformat().replace("+00:00", "Z")
        details = {
            "format": "gguf",
            "family": header.architecture.arch,
            "families": [header.architecture.arch],
            "parameter_size": parameter_size(header.n_params),
            "quantization_level": header.file_type,
        }
        return ModelEntry(m.alias, stat.st_size, details, "", modified)

    async def models(self) -> list[ModelEntry]:
        """The engine's models, described from their GGUF headers (size, family, parameters, quantization)."""
        return [self._entry(m) for m in self.supervisor.models]

    async def probe(self) -> tuple[list[ModelEntry], list[dict[str, Any]]]:
        """The supervisor's word: llama-cpp-python answers nothing else while it generates (one lock)."""
        self.ready()
        return await self.models(), await self.loaded()

    async def loaded(self) -> list[dict[str, Any]]:
        """The engine keeps every model it serves loaded."""
        out = []
        for m in self.supervisor.models:
            e = self._entry(m)
            n_layer = self._headers[m.alias].architecture.n_layer
            vram = e.size if m.n_gpu_layers > n_layer else int(e.size * m.n_gpu_layers / max(n_layer + 1, 1))
            out.append(
                {
                    "name": e.name,
                    "model": e.name,
                    "size": e.size,
                    "digest": e.digest,
                    "details": e.details,
                    "expires_at": "2318-01-01T00:00:00Z",
                    "size_vram": vram,
                    "context_length": m.n_ctx,
                }
            )
        return out

    async def show(self, name: str) -> dict[str, Any] | None:
        """``/api/show`` from the GGUF header."""
        m = self._model(name)
        if m is None:
            return None
        e, header = self._entry(m), self._headers[m.alias]
        a = header.architecture
        info = {
            "general.architecture": a.arch,
            "general.parameter_count": header.n_params,
            "general.file_type": header.file_type,
            f"{a.arch}.context_length": a.n_ctx_train,
            f"{a.arch}.embedding_length": a.n_embd,
            f"{a.arch}.block_count": a.n_layer,
            f"{a.arch}.attention.head_count": a.n_head,
            f"{a.arch}.attention.head_count_kv": a.n_head_kv,
        }
        return {
            "modelfile": "",
            "parameters": f"num_ctx {m.n_ctx}",
            "template": "",
            "details": e.details,
            "model_info": info,
            "capabilities": ["completion", "embedding"],
            "modified_at": e.modified_at,
        }

    async def prompt_tokens(self, body: dict[str, Any]) -> int | None:
        """The prompt's token count, counted like the engine counts it (it sends none in streams)."""
        from homellm.engine.tokens import PromptCounter

        m = self._model(str(body.get("model", "")))
        if m is None:
            return None
        counter = self._counters.setdefault(m.alias, PromptCounter(m.path))
        try:
            return await asyncio.to_thread(counter.count, body)
        except Exception:  # a template the formatter cannot render: no count rather than a failed answer
            return None

    def describe(self) -> str:
        split = self.supervisor.describe_split()
        if split:
            return split
        names = ", ".join(
            _("{alias} (ctx {ctx}, {ngl} GPU layers)").format(alias=m.alias, ctx=m.n_ctx, ngl=m.n_gpu_layers)
            for m in self.supervisor.models
        )
        restarts = self.supervisor.restarts
        crashed = _("; restarted {n} times after crashes").format(n=restarts) if restarts else ""
        return _("the embedded engine (llama.cpp) serving {names}{crashed}").format(names=names, crashed=crashed)
