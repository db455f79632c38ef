"""``homellm plan``: the best model x quantization for each use on this hardware, and why."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from homellm.catalog import Catalog
from homellm.catalog.schema import ModelSpec, UseCase
from homellm.hardware.types import GIB, HardwareProfile
from homellm.plan.fit import FitResult, fit_model, resolve_model
from homellm.plan.memory import ContextParams

# Quality lost to quantization, in the same log2-parameter units as model size
# (perplexity studies put Q4_K_M about as far below F16 as a model ~15% smaller).
QUANT_PENALTY = {
    "F16": 0.0, "BF16": 0.0, "F32": 0.0, "Q8_0": 0.0, "Q6_K": 0.02, "Q5_K_M": 0.05, "Q5_0": 0.08,
    "Q4_K_M": 0.2, "MXFP4": 0.0, "Q4_1": 0.25, "Q4_0": 0.3, "IQ4_XS": 0.25, "Q3_K_M": 0.7,
    "Q2_K": 1.6, "IQ2_XXS": 1.8,
}  # fmt: skip
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


def quality(spec: ModelSpec, quant: str, use: UseCase, tokens_per_s: float | None = None) -> float:
    """Bigger is better: log2 of the effective size, less the quantization loss, plus use fit.

    An answer slower than reading speed loses half a point per halving of speed.
    """
    effective = math.sqrt(spec.params_total * spec.params_active)  # MoE rule of thumb
    score = math.log2(effective / 1e9) - QUANT_PENALTY.get(quant, 0.3)
    if tokens_per_s:
        score -= 0.5 * max(0.0, math.log2(COMFORTABLE_TOKENS_PER_S / tokens_per_s))
    if use not in spec.uses:
        score -= 2.0
    if use == "japanese":
        score += {"good": 0.0, "fair": -1.5, "none": -10.0}[spec.japanese]
    return score


def _published(spec: ModelSpec, use: UseCase) -> str:
    for name in USE_BENCHMARKS[use]:
        for b in spec.benchmarks:
            if b.benchmark == name:
                return f"published {name} {b.score:g}"
    return ""


def _headroom_ok(fit: FitResult) -> bool:
    on_gpu = any(d.kind == "gpu" for d in fit.devices)
    checked = [d for d in fit.devices if d.kind == "gpu" or not on_gpu]
    return all(d.used_bytes <= d.capacity_bytes * (1 - HEADROOM) for d in checked)


def advise(hw: HardwareProfile, use: UseCase, params: ContextParams, catalog: Catalog, limit: int = 3) -> Advice:
    on_gpu = bool(hw.gpus)
    floor = MIN_TOKENS_PER_S["gpu" if on_gpu else "cpu"]
    memory = sum(g.usable_bytes for g in hw.gpus) if on_gpu else hw.ram_bytes
    candidates: list[Candidate] = []
    rejected = 0
    for spec in catalog.models:
        if use == "japanese" and spec.japanese == "none":
            continue
        ctx = min(params.ctx, spec.architecture.n_ctx_train)
        best_for_model: Candidate | None = None
        for quant in spec.quants:
            fit = _fit(spec.id, quant, ctx, params, hw, catalog, memory)
            speed = (fit.decode_tokens_per_s or 0.0) if fit else 0.0
            ok = fit is not None and fit.fits and (fit.fully_offloaded or not on_gpu) and _headroom_ok(fit)
            if fit is None or not ok or speed < floor:
                rejected += 1
                continue
            c = Candidate(spec, fit, quality(spec, fit.model.quant, use, speed))
            if best_for_model is None or c.quality > best_for_model.quality:
                best_for_model = c
        if best_for_model:
            candidates.append(best_for_model)
    candidates.sort(key=lambda c: c.quality, reverse=True)
    for c in candidates:
        c.reasons = _reasons(c, use)
    return Advice(use, candidates[0] if candidates else None, candidates[1 : 1 + limit], rejected)


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


def _reasons(c: Candidate, use: UseCase) -> list[str]:
    fit = c.fit
    gpus = [d for d in fit.devices if d.kind == "gpu" and d.layers]
    where = f"all {fit.model.arch.n_layer} layers on {', '.join(d.name for d in gpus)}" if gpus else "runs on the CPU"
    free = sum(d.capacity_bytes - d.used_bytes for d in (gpus or fit.devices[-1:]))
    out = [f"{where}, {free / GIB:.1f} GiB to spare"]
    if fit.decode_tokens_per_s:
        out.append(f"~{fit.decode_tokens_per_s:.0f} tok/s")
    published = _published(c.spec, use)
    if published:
        out.append(published)
    if use == "japanese":
        out.append(f"Japanese: {c.spec.japanese}")
    if c.spec.params_active < c.spec.params_total:
        out.append(f"MoE: {c.spec.params_active / 1e9:.0f}B of {c.spec.params_total / 1e9:.0f}B active")
    return out


@dataclass
class ClaimCheck:
    claim: str
    verdict: str  # ok | wrong | tight
    detail: str


def check_claims(hw: HardwareProfile, params: ContextParams, catalog: Catalog) -> list[ClaimCheck]:
    """Recompute the guide's per-GPU recommendations and PC tiers for the GPUs in ``hw``."""
    names = {g.catalog_name for g in hw.gpus if g.catalog_name}
    claims = [
        (c.claim, c.model, c.quant, c.claimed_vram_gib) for c in catalog.claims if catalog.gpu(c.gpu).name in names
    ]
    for tier in catalog.tiers:
        if any(catalog.gpu(g).name in names for g in tier.example_gpus):
            label = f"{tier.name} tier: {tier.guide_claim} (e.g. {tier.representative})"
            claims.append((label, tier.representative, "Q4_K_M", tier.vram_gib))
    out = []
    for label, model_id, quant, claimed_gib in claims:
        fit = fit_model(resolve_model(model_id, quant, catalog), params, hw, catalog)
        gpu_need = fit.weights_bytes + fit.kv_cache_bytes + fit.compute_bytes
        detail = f"needs {gpu_need / GIB:.1f} GiB for weights, KV and compute at {params.ctx:,} tokens"
        if claimed_gib and gpu_need > claimed_gib * GIB * 1.25:
            out.append(ClaimCheck(label, "wrong", f"the guide says {claimed_gib:g} GB; it {detail}"))
        elif not fit.fully_offloaded:
            layers = f"{max(fit.gpu_layers - 1, 0)} of {fit.model.arch.n_layer} layers"
            out.append(ClaimCheck(label, "wrong", f"does not fit in VRAM, only {layers} offload; it {detail}"))
        elif not _headroom_ok(fit):
            out.append(ClaimCheck(label, "tight", f"fits with under {HEADROOM:.0%} to spare; it {detail}"))
        else:
            out.append(ClaimCheck(label, "ok", f"fits; it {detail}, ~{fit.decode_tokens_per_s or 0:.0f} tok/s"))
    return out
