"""``homellm serve --model M --with WORKER``: plan the split, run it, and carry on when the worker goes.

Before the gateway starts, the worker is greeted (same llama.cpp build, or no start) and the link measured;
the advisor then places the layers over this machine and the worker's device(s) and sizes the context.
The engine process (:mod:`homellm.split.engine_child`) reaches the worker through the link.

When the worker goes (killed, unplugged, its link ended), the engine process exits at once, the request in
flight ends with an error that says so, and the supervisor restarts the engine without the worker: on this
machine alone when the model fits here (the same context), otherwise not at all, answering 503 with the
reason and greeting the worker every few seconds until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from homellm.engine.rpc import BuildId
from homellm.engine.supervisor import EngineModel, EngineSupervisor, EngineUnavailable
from homellm.errors import HomeLLMError
from homellm.i18n import _
from homellm.plan.split import SplitAdvice
from homellm.split.engine_child import LINK_LOST, SplitLink
from homellm.split.peers import WorkerRecord

REACH_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class SplitSetup:
    record: WorkerRecord
    link: SplitLink
    build: BuildId
    split: EngineModel
    alone: EngineModel | None  # the same model and context on this machine alone, when it fits
    advice: SplitAdvice


def plan_split_model(path: Path, requested_ctx: int | None, worker: str) -> SplitSetup:
    """Greet and measure the worker, then plan ``path`` over this machine and it."""
    from homellm.catalog import load_catalog
    from homellm.engine.rpc import build_id, require_rpc
    from homellm.errors import UsageError
    from homellm.hardware.detect import apply_overrides, detect_hardware
    from homellm.plan.split import advise_split, tensor_split
    from homellm.serve.engine_backend import fit_for_engine
    from homellm.settings import get_settings
    from homellm.split.remote import remote_devices, survey_worker

    require_rpc()
    settings = get_settings()
    catalog = load_catalog()
    record = survey_worker(settings.home, worker)
    here = apply_overrides(detect_hardware(settings.models_path, catalog, settings.home), catalog,
                           ram_gib=settings.ram_gib)  # fmt: skip
    hw = replace(here, remotes=remote_devices(record, catalog))
    alias, fit = fit_for_engine(path, requested_ctx, hw)
    advice = advise_split(fit.model, fit.params, hw, catalog)
    if not fit.fits:
        raise UsageError(
            _("{model} does not fit this machine and {worker} together at {ctx} tokens of context ({need:.1f} GiB); "
              "see `homellm fit {path} --with {worker}`").format(model=path.name, worker=worker, ctx=fit.params.ctx,
                                                                   need=fit.total_bytes / 1024**3, path=path)
        )  # fmt: skip
    split = EngineModel(alias, path, fit.params.ctx, fit.gpu_layers, tensor_split(fit), embedding=False)
    alone = EngineModel(alias, path, fit.params.ctx, advice.alone.gpu_layers) if advice.alone.fits else None
    marker = settings.home / "engine" / "link-lost"
    link = SplitLink(str(settings.home), record.name, record.host, record.port, record.cert_pem, str(marker))
    return SplitSetup(record, link, build_id(), split, alone, advice)


class SplitSupervisor(EngineSupervisor):
    """The engine supervisor of a split model: with the worker when it answers, else alone or not at all."""

    def __init__(self, setup: SplitSetup, workdir: Path, port: int = 0) -> None:
        super().__init__([setup.split], workdir, port)
        self.setup = setup
        self.mode = "split"  # split | alone | waiting
        self.why_alone = ""

    async def _reach(self) -> None:
        from homellm.pool.worker_link import main_link_identity
        from homellm.split.handshake import send_frame
        from homellm.split.peers import split_worker
        from homellm.split.remote import connect_worker

        home = Path(self.setup.link.home)
        split_worker(home, self.setup.record.name)  # still paired: `homellm workers revoke` ends the split here
        identity = main_link_identity(home)
        (_reader, writer), _facts = await connect_worker(self.setup.record, identity, self.setup.build, "probe")
        with contextlib.suppress(OSError):
            await send_frame(writer, b"Q")
        writer.close()

    async def prepare(self) -> None:
        try:
            await asyncio.wait_for(self._reach(), REACH_TIMEOUT_S)
        except (HomeLLMError, TimeoutError, OSError) as exc:
            error = str(exc) or _("no answer within {s:g} s").format(s=REACH_TIMEOUT_S)
            name = self.setup.record.name
            if self.setup.alone is None:
                self.mode = "waiting"
                raise EngineUnavailable(
                    _("worker {name} cannot be reached ({error}) and {model} does not fit on this machine alone; "
                      "retrying").format(name=name, error=error, model=self.setup.split.alias)
                ) from None  # fmt: skip
            self.mode = "alone"
            self.models = [self.setup.alone]
            self.why_alone = _("worker {name} cannot be reached ({error})").format(name=name, error=error)
            return
        self.mode = "split"
        self.models = [self.setup.split]

    def lost_worker(self) -> bool:
        return Path(self.setup.link.marker).exists()

    def command(self, config: Path) -> list[str]:
        Path(self.setup.link.marker).unlink(missing_ok=True)
        if self.mode != "split":
            return super().command(config)
        link = self.workdir / "link.json"
        link.write_text(self.setup.link.to_json(), encoding="utf-8")
        return [sys.executable, "-m", "homellm.split.engine_child", str(link), str(config)]

    def backoff_after(self, exit_code: int | None, backoff: float) -> float:
        return 0.1 if exit_code == LINK_LOST else backoff

    def crash_message(self) -> str:
        if self.last_exit == LINK_LOST or self.lost_worker():
            return _("the link to worker {name} ended mid-answer; the engine restarts (on this machine alone if the "
                     "model fits); retry in a few seconds").format(name=self.setup.record.name)  # fmt: skip
        return super().crash_message()

    def describe_split(self) -> str:
        m = self.setup.split
        fit = self.setup.advice.split
        if self.mode == "waiting" and self.unavailable:
            return _("the embedded engine (llama.cpp), waiting: {why}").format(why=self.unavailable)
        if self.mode == "alone" and self.setup.alone is not None:
            return _("the embedded engine (llama.cpp) serving {alias} (ctx {ctx}) on this machine alone: {why}").format(
                alias=m.alias, ctx=m.n_ctx, why=self.why_alone)  # fmt: skip
        here = sum(len(d.layers) for d in fit.devices if d.kind != "remote")
        parts = []
        for d in fit.devices:
            if d.kind == "remote" and (d.layers or d.holds_output):
                output = _(" + output") if d.holds_output else ""
                parts.append(_("{n}{output} on {device}").format(n=len(d.layers), output=output, device=d.name))
        link = self.setup.record.link or {}
        speed = min(float(link.get("down_bytes_per_s", 0)), float(link.get("up_bytes_per_s", 0))) * 8 / 1e6
        return _(
            "the embedded engine (llama.cpp) serving {alias} (ctx {ctx}) split over two machines: {here} layers here, "
            "{remote}; link to {worker} at {address}: pinned TLS, {rtt:.2f} ms round trip, {mbps:.0f} Mbit/s"
        ).format(alias=m.alias, ctx=m.n_ctx, here=here, remote=", ".join(parts), worker=self.setup.record.name,
                 address=self.setup.record.address, rtt=float(link.get("rtt_s", 0)) * 1e3, mbps=speed)  # fmt: skip
