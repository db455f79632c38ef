"""The embedded engine as a backend: pick context and GPU layers with the advisor, then supervise it."""

from __future__ import annotations

from pathlib import Path

from homellm.errors import GatewayError, UsageError
from homellm.serve.backends import OpenAIBackend

DEFAULT_CTX = 8192
MIN_CTX = 2048


def plan_model(path: Path, requested_ctx: int | None) -> tuple[str, int, int]:
    """(alias, n_ctx, n_gpu_layers) so that the model fits this machine, per the advisor."""
    from homellm.catalog import load_catalog
    from homellm.hardware.detect import detect_hardware
    from homellm.plan.fit import fit_model, resolve_model
    from homellm.plan.memory import ContextParams
    from homellm.settings import get_settings

    catalog = load_catalog()
    model = resolve_model(str(path), None, catalog)
    alias = next((m.id for m in catalog.models if m.architecture == model.arch), path.stem.lower())
    hw = detect_hardware(get_settings().models_path, catalog)
    ctx = requested_ctx or min(model.arch.n_ctx_train, DEFAULT_CTX)
    while True:
        fit = fit_model(model, ContextParams(ctx=ctx), hw, catalog)
        if fit.fits or requested_ctx or ctx <= MIN_CTX:
            break
        ctx //= 2
    if not fit.fits:
        raise UsageError(
            f"{path.name} needs {fit.total_bytes / 1024**3:.1f} GiB at {ctx} tokens of context and does not fit "
            "this machine; see `homellm fit` for a smaller quantization"
        )
    return alias, ctx, fit.gpu_layers


def find_ggufs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"no such folder: {folder}")
    found = sorted(p for p in folder.rglob("*.gguf") if p.is_file() and "mmproj" not in p.name.lower())
    if not found:
        raise UsageError(f"no .gguf files in {folder}")
    return found


class EngineBackend(OpenAIBackend):
    label = "the embedded engine"
    managed = True

    def __init__(self, paths: list[Path], workdir: Path, ctx: int | None, port: int, idle_timeout: float) -> None:
        from homellm.engine.supervisor import EngineModel, EngineSupervisor

        models: list[EngineModel] = []
        for p in paths:
            alias, n_ctx, ngl = plan_model(p, ctx)
            if any(m.alias == alias for m in models):
                alias = p.stem.lower()
            models.append(EngineModel(alias, p, n_ctx, ngl))
        self.supervisor = EngineSupervisor(models, workdir, port)
        super().__init__(self.supervisor.url, idle_timeout)

    async def start(self) -> None:
        await self.supervisor.start()

    async def close(self) -> None:
        await self.supervisor.stop()
        await super().close()

    def ready(self) -> None:
        if not self.supervisor.ready:
            raise GatewayError(503, "the engine is starting or restarting; retry in a few seconds",
                               headers={"Retry-After": "5"})  # fmt: skip

    def describe(self) -> str:
        names = ", ".join(f"{m.alias} (ctx {m.n_ctx}, {m.n_gpu_layers} GPU layers)" for m in self.supervisor.models)
        restarts = self.supervisor.restarts
        crashed = f"; restarted {restarts} time{'s' if restarts != 1 else ''} after crashes" if restarts else ""
        return f"the embedded engine (llama.cpp) serving {names}{crashed}"
