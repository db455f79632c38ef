"""``homellm plan``: the best model x quantization for each use on this hardware, and why."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from homellm.catalog import Catalog
from homellm.catalog.schema import ModelSpec, UseCase
from homellm.hardware.types import GIB, HardwareProfile
from homellm.i18n import N_, _
from homellm.plan.fit import OFFLOAD_KINDS, FitResult, fit_model, resolve_model
from homellm.plan.memory import ContextParams

USE_BENCHMARKS: dict[str, tuple[str, ...]] = {
    "chat": ("MMLU-Pro", "MMLU", "MT-Bench"),
    "code": ("HumanEval", "SWE-Bench"),
    "math": ("GSM8K", "AIME 2025"),
    "japanese": ("MMLU-Pro", "MMLU"),
}
HEADROOM = 0.10  # keep 10% of each GPU (or of RAM, CPU-only) free for the desktop and other apps
MIN_TOKENS_PER_S = {"gpu": 10.0, "cpu": 4.0}
COMFORTABLE_TOKENS_PER_S = 15.0  # reading speed; slower answers cost quality points


@dataclass
class Candidate:
    spec: ModelSpec
    fit: FitResult
    quality: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class Advice:
    use_case: UseCase
    best: Candidate | None
    runners_up: list[Candidate]
    rejected: int
    short_context: list[str] = field(default_factory=list)  # trained on fewer tokens than asked


JAPANESE_LEVELS = {"good": N_("good"), "fair": N_("fair"), "none": N_("none")}  # the catalog's words, shown


def quant_penalty(quant: str, catalog: Catalog) -> float:
    """Size doublings a quantization costs: its measured KL divergence from the 16-bit model (llama.cpp's
    perplexity tool) over what one doubling of parameters is worth in the same unit (catalog size_quality)."""
    return catalog.mix(quant).kld / catalog.size_quality.nats_per_doubling


def quality(spec: ModelSpec, quant: str, use: UseCase, catalog: Catalog, tokens_per_s: float | None = None) -> float:
    """Bigger is better: log2 of the effective size, less the quantization's measured loss, plus use fit.

    An answer slower than reading speed loses half a point per halving of speed (unknown speed: no change).
    """
    effective = math.sqrt(spec.params_total * spec.params_active)  # MoE rule of thumb
    score = math.log2(effective / 1e9) - quant_penalty(quant, catalog)
    if tokens_per_s:
        score -= 0.5 * max(0.0, math.log2(COMFORTABLE_TOKENS_PER_S / tokens_per_s))
    if use not in spec.uses:
        score -= 2.0
    if use == "japanese":
        score += {"good": 0.0, "fair": -1.5, "none": -10.0}[spec.japanese]
    return score


def published(spec: ModelSpec, use: UseCase) -> str:
    """The first published score that speaks to this use, and the weights it was measured on."""
    for name in USE_BENCHMARKS[use]:
        for b in spec.benchmarks:
            if b.benchmark == name:
                return _("published {benchmark} {score:g} ({precision})").format(
                    benchmark=name, score=b.score, precision=spec.published_precision
                )
    return ""


def penalty_note(spec: ModelSpec, quant: str, catalog: Catalog) -> str:
    """What the chosen quantization costs against the published weights, in words."""
    mix = catalog.mix(quant)
    if mix.kld == 0 or mix.name == spec.published_precision:
        return _("{quant}: no loss against the published weights").format(quant=mix.name)
    smaller = 1 - 2 ** -quant_penalty(quant, catalog)
    return _("{quant}: KL divergence {kld:.3f} from BF16, a loss worth about {pct:.0%} fewer parameters").format(
        quant=mix.name, kld=mix.kld, pct=smaller
    )


def _headroom_ok(fit: FitResult) -> bool:
    on_gpu = any(d.kind == "gpu" for d in fit.devices)
    checked = [d for d in fit.devices if d.kind in OFFLOAD_KINDS or not on_gpu]
    return all(d.used_bytes <= d.capacity_bytes * (1 - HEADROOM) for d in checked)


def advise(hw: HardwareProfile, use: UseCase, params: ContextParams, catalog: Catalog, limit: int = 3) -> Advice:
    on_gpu = bool(hw.gpus)
    floor = MIN_TOKENS_PER_S["gpu" if on_gpu else "cpu"]
    memory = (sum(g.usable_bytes for g in hw.gpus) if on_gpu else hw.ram_bytes) + sum(
        r.offered_bytes for r in hw.remotes
    )
    candidates: list[Candidate] = []
    rejected = 0
    short: list[str] = []
    for spec in catalog.models:
        if not spec.recommend or (use == "japanese" and spec.japanese == "none"):
            continue
        if spec.architecture.n_ctx_train < params.ctx:
            short.append(spec.id)  # would need RoPE scaling; not recommended for this context
            continue
        best_for_model: Candidate | None = None
        for quant in spec.quants:
            fit = _fit(spec.id, quant, params.ctx, params, hw, catalog, memory)
            ok = fit is not None and fit.fits and (fit.fully_offloaded or not on_gpu) and _headroom_ok(fit)
            speed = fit.decode_tokens_per_s if fit is not None else None
            if fit is None or not ok or (speed is not None and speed < floor):
                rejected += 1
                continue
            c = Candidate(spec, fit, quality(spec, fit.model.quant, use, catalog, speed))
            if best_for_model is None or c.quality > best_for_model.quality:
                best_for_model = c
        if best_for_model:
            candidates.append(best_for_model)
    candidates.sort(key=lambda c: c.quality, reverse=True)
    for c in candidates:
        c.reasons = _reasons(c, use, catalog)
    return Advice(use, candidates[0] if candidates else None, candidates[1 : 1 + limit], rejected, short)


_FITS: dict[tuple[object, ...], FitResult | None] = {}


def _fit(
    model_id: str,
    quant: str,
    ctx: int,
    params: ContextParams,
    hw: HardwareProfile,
    catalog: Catalog,
    memory: int,
) -> FitResult | None:
    """Fit once per model, quant and context (plan asks again for every use case); None if hopeless."""
    key = (model_id, quant, ctx, params, hw)
    if key not in _FITS:
        model = resolve_model(model_id, quant, catalog)
        if model.weights_bytes > memory:
            _FITS[key] = None
        else:
            p = ContextParams(ctx=ctx, flash_attn=params.flash_attn, kv_type=params.kv_type, parallel=params.parallel)
            _FITS[key] = fit_model(model, p, hw, catalog)
    return _FITS[key]


def _reasons(c: Candidate, use: UseCase, catalog: Catalog) -> list[str]:
    fit = c.fit
    gpus = [d for d in fit.devices if d.kind == "gpu" and d.layers]
    remote = [d for d in fit.devices if d.kind == "remote" and (d.layers or d.holds_output)]
    if remote:
        here = fit.model.arch.n_layer - sum(len(d.layers) for d in remote)
        where = _("split: {here} layers here, {there} on {devices}").format(
            here=here, there=sum(len(d.layers) for d in remote), devices=", ".join(d.name for d in remote)
        )
    elif gpus:
        where = _("all {n} layers on {gpus}").format(n=fit.model.arch.n_layer, gpus=", ".join(d.name for d in gpus))
    else:
        where = _("runs on the CPU")
    free = sum(d.capacity_bytes - d.used_bytes for d in (gpus or fit.devices[-1:]))
    out = [_("{where}, {free:.1f} GiB to spare").format(where=where, free=free / GIB)]
    if fit.decode_tokens_per_s:
        out.append(_("~{speed:.0f} tok/s").format(speed=fit.decode_tokens_per_s))
    else:
        out.append(_("speed unknown (name the GPU with --gpu)"))
    score = published(c.spec, use)
    if score:
        out.append(score)
    out.append(penalty_note(c.spec, fit.model.quant, catalog))
    if use == "japanese":
        out.append(_("Japanese: {level}").format(level=_(JAPANESE_LEVELS[c.spec.japanese])))
    if c.spec.params_active < c.spec.params_total:
        out.append(
            _("MoE: {active:.0f}B of {total:.0f}B active").format(
                active=c.spec.params_active / 1e9, total=c.spec.params_total / 1e9
            )
        )
    return out
