"""Is splitting a model over two machines worth it? The split, this machine alone, a smaller quant alone.

A split buys memory, not speed: every token crosses the link once each way (:mod:`homellm.plan.link`), and
one slow device sets the pace for all. So the advice always puts the split beside what this machine can
do by itself: the same model, or, when that does not fit, the largest quantization of it that does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from homellm.catalog import Catalog
from homellm.hardware.types import HardwareProfile
from homellm.i18n import _
from homellm.plan.fit import OFFLOAD_KINDS, FitResult, ResolvedModel, fit_model, resolve_model
from homellm.plan.memory import ContextParams


@dataclass
class SplitAdvice:
    split: FitResult  # with the worker's devices
    alone: FitResult  # the same model and quantization on this machine alone
    smaller: FitResult | None  # the largest quantization that fits here alone, when the model does not
    verdict: str  # split | alone | smaller | none
    summary: str

    def to_json(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "split_decode_tokens_per_s": _round(self.split.decode_tokens_per_s),
            "alone_fits": self.alone.fits,
            "alone_decode_tokens_per_s": _round(self.alone.decode_tokens_per_s) if self.alone.fits else None,
            "smaller": (
                {"quant": self.smaller.model.quant, "decode_tokens_per_s": _round(self.smaller.decode_tokens_per_s)}
                if self.smaller
                else None
            ),
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def tensor_split(fit: FitResult) -> tuple[float, ...] | None:
    """llama.cpp's ``tensor_split`` that reproduces the plan: layers per offload device, in device order."""
    shares = [float(len(d.layers) + d.holds_output) for d in fit.devices if d.kind in OFFLOAD_KINDS]
    total: float = sum(shares)
    return tuple(shares) if len(shares) > 1 and total > 0 else None


def _speed(fit: FitResult | None) -> float:
    return (fit.decode_tokens_per_s or 0.0) if fit is not None else 0.0


def _smaller_alone(
    model: ResolvedModel, params: ContextParams, hw: HardwareProfile, catalog: Catalog
) -> FitResult | None:
    spec = model.spec
    if spec is None:
        return None
    current = model.weights_bytes
    options = [resolve_model(spec.id, q, catalog) for q in spec.quants]
    for option in sorted((o for o in options if o.weights_bytes < current), key=lambda o: -o.weights_bytes):
        fit = fit_model(option, params, hw, catalog)
        if fit.fits:
            return fit
    return None


def advise_split(model: ResolvedModel, params: ContextParams, hw: HardwareProfile, catalog: Catalog) -> SplitAdvice:
    """Place ``model`` over this machine and ``hw.remotes``, and say whether that beats this machine alone."""
    split = fit_model(model, params, hw, catalog)
    local = replace(hw, remotes=())
    alone = fit_model(model, params, local, catalog)
    smaller = None if alone.fits else _smaller_alone(model, params, local, catalog)
    s, a, m = _speed(split), _speed(alone), _speed(smaller)
    name = f"{model.label} {model.quant}"
    workers = ", ".join(dict.fromkeys(r.worker for r in hw.remotes))
    if not split.fits:
        verdict = "none" if not alone.fits else "alone"
        summary = _("{model} does not fit even with {workers}").format(model=name, workers=workers)
        if alone.fits:
            summary += _("; it fits on this machine alone (~{a:.1f} tok/s)").format(a=a)
        elif smaller is not None:
            verdict = "smaller"
            summary += _("; {quant} fits on this machine alone (~{m:.1f} tok/s)").format(quant=smaller.model.quant, m=m)
    elif alone.fits and a >= s:
        verdict = "alone"
        summary = _(
            "Splitting is not worth it: {model} fits on this machine alone and runs there at ~{a:.1f} tok/s, against "
            "~{s:.1f} tok/s split with {workers}"
        ).format(model=name, a=a, s=s, workers=workers)
    elif alone.fits:
        verdict = "split"
        summary = _("Splitting is worth it: ~{s:.1f} tok/s split with {workers}, against ~{a:.1f} tok/s on this "
                    "machine alone").format(s=s, a=a, workers=workers)  # fmt: skip
    elif smaller is not None and m > s:
        verdict = "smaller"
        summary = _(
            "Splitting buys room, not speed: {model} runs at ~{s:.1f} tok/s split with {workers}, while {quant} fits "
            "on this machine alone and runs at ~{m:.1f} tok/s (a smaller quantization loses some quality)"
        ).format(model=name, s=s, workers=workers, quant=smaller.model.quant, m=m)
    else:
        verdict = "split"
        summary = _("Splitting is the way to run {model} here: ~{s:.1f} tok/s with {workers}").format(
            model=name, s=s, workers=workers
        )
        if smaller is not None:
            summary += _("; the largest quantization that fits alone, {quant}, runs at ~{m:.1f} tok/s").format(
                quant=smaller.model.quant, m=m
            )
        else:
            summary += _("; it does not fit on this machine alone")
    return SplitAdvice(split, alone, smaller, verdict, summary)
