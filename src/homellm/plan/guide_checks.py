"""Recompute one kind of claim of the guide: memory, speed, benchmark, spec, price.

Every function takes a check record from the catalog (``guide_claims.toml``) and returns a
:class:`Finding`: a verdict, the recomputed figure, the formula or source behind it, and a
correction. Memory claims are judged on the hardware the claim names, at a 4,096-token context
(``plan``'s default); tokens/s claims at a short 512-token chat, against both the single-stream
decode ceiling and the batched aggregate the figure could mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from homellm.catalog import Catalog
from homellm.catalog.claim_refs import split_model_ref
from homellm.catalog.schema import (
    BenchmarkCheck,
    BenchmarkScore,
    BudgetCheck,
    CompareCheck,
    DecodeCheck,
    Hardware,
    MinGpuCheck,
    NeedsCheck,
    ParamsCheck,
    QuantFitCheck,
    QuantsCheck,
    RamCheck,
    RelativeCheck,
    RunsCheck,
    SizeCheck,
    SpecCheck,
    Verdict,
)
from homellm.hardware.detect import device_from_spec
from homellm.hardware.types import GIB, CpuInfo, GpuDevice, HardwareProfile
from homellm.i18n import N_, _
from homellm.plan.fit import OS_RESERVE, FitResult, ResolvedModel, fit_model, resolve_model
from homellm.plan.memory import ContextParams
from homellm.plan.speed import calibration

CTX = 4096  # memory claims: plan's default context
SPEED_CTX = 512  # tokens/s claims: a short chat
USABLE_TOKENS_PER_S = 5.0  # below this a partly offloaded recommendation is not a usable one
SEVERITY: dict[Verdict, int] = {"ok": 0, "unverifiable": 1, "misleading": 2, "wrong": 3}
_DESKTOP_CPU = CpuInfo(model="desktop CPU", cores=8, threads=16)


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    figure: str
    basis: str
    correction: str = ""


def worst(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: SEVERITY[v]) if verdicts else "unverifiable"


def over_range(verdicts: list[Verdict]) -> Verdict:
    """A claim over a range of models ('30B-70B', 'Q4_K_M for 7B and 70B'): right for some, wrong for others
    is misleading; otherwise the worst."""
    if "ok" in verdicts and "wrong" in verdicts:
        return "misleading"
    return worst(verdicts)


def join_findings(findings: list[Finding], verdict: Verdict | None = None, over_models: bool = False) -> Finding:
    verdicts = [f.verdict for f in findings]
    return Finding(
        verdict or (over_range(verdicts) if over_models else worst(verdicts)),
        "; ".join(f.figure for f in findings if f.figure),
        "; ".join(dict.fromkeys(f.basis for f in findings if f.basis)),
        " ".join(dict.fromkeys(f.correction for f in findings if f.correction)),
    )


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _tps(speed: float) -> str:
    return f"{speed:.1f}" if speed < 10 else f"{speed:.0f}"


# ---- hardware and fits ---------------------------------------------------------------------------------


def profile(hw: Hardware, catalog: Catalog, gpus: tuple[str, ...] | None = None) -> HardwareProfile:
    """The machine a claim names: its GPUs (or generic cards of a size) and its RAM."""
    names = list(gpus if gpus is not None else hw.gpus)
    devices: list[GpuDevice] = []
    for i, name in enumerate(names):
        spec = catalog.gpu(name)
        label = spec.name if names.count(name) == 1 else f"{spec.name} #{i + 1}"
        devices.append(device_from_spec(spec, origin="guide", name=label))
    if not names and hw.vram_gib:
        for i in range(hw.cards):
            label = f"{hw.vram_gib:g} GB GPU" + (f" #{i + 1}" if hw.cards > 1 else "")
            devices.append(GpuDevice(name=label, vendor="nvidia", memory_bytes=int(hw.vram_gib * GIB), origin="guide"))
    return HardwareProfile(tuple(devices), _DESKTOP_CPU, int(hw.ram_gib * GIB), None, None, "", "")


def _label(ref: str, catalog: Catalog) -> str:
    model_id, quant = split_model_ref(ref)
    spec = catalog.model(model_id)
    return f"{spec.name} {catalog.mix(quant or spec.default_quant).name}"


@cache
def _resolved(ref: str, catalog: Catalog) -> ResolvedModel:
    model_id, quant = split_model_ref(ref)
    return resolve_model(model_id, quant, catalog)


@cache
def _fit(ref: str, hw: HardwareProfile, catalog: Catalog, ctx: int = CTX, gpu_layers: int | None = None) -> FitResult:
    return fit_model(_resolved(ref, catalog), ContextParams(ctx=ctx), hw, catalog, gpu_layers)


def _fits_on_gpus(ref: str, hw: HardwareProfile, catalog: Catalog) -> bool:
    """Every layer on the GPUs (one placement, not a search)."""
    model_id, _quant = split_model_ref(ref)
    n_layer = catalog.model(model_id).architecture.n_layer
    fit = _fit(ref, hw, catalog, CTX, n_layer + 1)
    return all(d.fits for d in fit.devices if d.kind == "gpu")


def gpu_need(ref: str, catalog: Catalog, ctx: int = CTX) -> FitResult:
    """The model fully on one GPU large enough: the GPU's part is what 'needs N GB' is about."""
    big = HardwareProfile(
        (GpuDevice(name="GPU", vendor="nvidia", memory_bytes=1 << 50, origin="guide"),),
        _DESKTOP_CPU,
        1 << 50,
        None,
        None,
        "",
        "",
    )
    model_id, _quant = split_model_ref(ref)
    n_layer = catalog.model(model_id).architecture.n_layer
    return _fit(ref, big, catalog, ctx, n_layer + 1)


def _need_text(fit: FitResult) -> str:
    gpu = fit.devices[0]
    return _("{total} on the GPU: weights {w}, KV cache {kv} at {ctx:,} tokens, compute {c}, CUDA runtime {o}").format(
        total=_gib(gpu.used_bytes),
        w=_gib(gpu.weights_bytes),
        kv=_gib(gpu.kv_bytes),
        ctx=fit.params.ctx,
        c=_gib(gpu.compute_bytes),
        o=_gib(gpu.overhead_bytes),
    )


FIT_BASIS = N_("homellm fit: llama.cpp's buffers at a 4,096-token context, f16 KV cache, flash attention")


# ---- memory --------------------------------------------------------------------------------------------


def needs(c: NeedsCheck, catalog: Catalog) -> Finding:
    """'N GB or more': enough to hold the model on the GPU? (GB read as GiB, as cards are sold.)"""
    findings = []
    for ref in c.models:
        fit = gpu_need(ref, catalog)
        need = fit.devices[0].used_bytes
        claimed = c.claimed_gib * GIB
        verdict: Verdict = "ok" if need <= claimed else "misleading" if need <= 1.15 * claimed else "wrong"
        figure = f"{_label(ref, catalog)}: {_need_text(fit)}"
        fix = (
            ""
            if verdict == "ok"
            else _("{model} needs {need}, not {claimed:g} GB.").format(
                model=_label(ref, catalog), need=_gib(need), claimed=c.claimed_gib
            )
        )
        findings.append(Finding(verdict, figure, _(FIT_BASIS), fix))
    return join_findings(findings, over_models=True)


def size(c: SizeCheck, catalog: Catalog) -> Finding:
    """'About N GB' at a quantization: the weights (the guide adds the KV cache in its note)."""
    w = _resolved(c.model, catalog).weights_bytes
    ratio = w / (c.claimed_gib * GIB)
    verdict: Verdict = "ok" if abs(ratio - 1) <= 0.15 else "misleading" if abs(ratio - 1) <= 0.3 else "wrong"
    figure = _("{model}: weights {gib} ({gb:.1f} GB)").format(model=_label(c.model, catalog), gib=_gib(w), gb=w / 1e9)
    fix = "" if verdict == "ok" else _("The weights are {gib}.").format(gib=_gib(w))
    return Finding(verdict, figure, _("tensor table of the architecture under llama-quantize's type rules"), fix)


def _alternatives(hw: Hardware, focus: str | None, catalog: Catalog) -> list[tuple[str, ...]]:
    if not hw.either:
        return [tuple(hw.gpus)]
    names = [catalog.gpu(g).name for g in hw.gpus]
    if focus in names:
        return [(focus,)]
    return [(g,) for g in names]


def _run_one(ref: str, machine: HardwareProfile, catalog: Catalog) -> Finding:
    fit = _fit(ref, machine, catalog)
    gpus = [d for d in fit.devices if d.kind == "gpu"]
    where = " + ".join(g.name for g in gpus) or _("the CPU")
    ram = machine.ram_bytes
    speed = fit.decode_tokens_per_s
    speed_text = _(", ~{speed} tok/s").format(speed=_tps(speed)) if speed else ""
    label = _label(ref, catalog)
    if not fit.fits:
        return Finding(
            "wrong",
            _("{model}: {total} do not fit {where} and {ram} of RAM").format(
                model=label, total=_gib(fit.total_bytes), where=where, ram=_gib(ram)
            ),
            _(FIT_BASIS),
            _("{model} needs {total}; it does not run on {where} with {ram} of RAM.").format(
                model=label, total=_gib(fit.total_bytes), where=where, ram=_gib(ram)
            ),
        )
    if fit.fully_offloaded:
        free = sum(g.capacity_bytes - g.used_bytes for g in gpus)
        return Finding(
            "ok",
            _("{model}: all {n} layers on {where}, {free} free{speed}").format(
                model=label, n=fit.model.arch.n_layer, where=where, free=_gib(free), speed=speed_text
            ),
            _(FIT_BASIS),
        )
    on_gpu = max(fit.gpu_layers - 1, 0)
    verdict: Verdict = "misleading" if speed is None or speed >= USABLE_TOKENS_PER_S else "wrong"
    figure = _("{model}: only {k} of {n} layers fit {where}, the rest run from RAM{speed}").format(
        model=label, k=on_gpu, n=fit.model.arch.n_layer, where=where, speed=speed_text
    )
    fix = _("{model} ({weights} of weights) does not fit {where}; it runs partly on the CPU{speed}.").format(
        model=label, weights=_gib(fit.model.weights_bytes), where=where, speed=speed_text
    )
    return Finding(verdict, figure, _(FIT_BASIS), fix)


def runs(c: RunsCheck, catalog: Catalog, focus: str | None = None) -> Finding:
    findings = []
    for gpus in _alternatives(c.hardware, focus, catalog):
        machine = profile(c.hardware, catalog, gpus)
        findings += [_run_one(ref, machine, catalog) for ref in c.models]
    return join_findings(findings, over_models=True)


def ram(c: RamCheck, catalog: Catalog, focus: str | None = None) -> Finding:
    """RAM for what does not fit in VRAM (plus the OS), with the GPUs the claim names."""
    findings = []
    claimed = c.claimed_gib * GIB
    for gpus in _alternatives(c.hardware, focus, catalog):
        big_ram = c.hardware.model_copy(update={"ram_gib": 1 << 20})
        machine = profile(big_ram, catalog, gpus)
        for ref in c.models:
            fit = _fit(ref, machine, catalog)
            need = fit.devices[-1].used_bytes + OS_RESERVE
            verdict: Verdict = "ok" if need <= claimed else "misleading" if need <= 1.15 * claimed else "wrong"
            findings.append(
                Finding(
                    verdict,
                    _("{model}: {need} of RAM ({layers} layers in RAM + {os} for the OS)").format(
                        model=_label(ref, catalog),
                        need=_gib(need),
                        layers=len(fit.devices[-1].layers),
                        os=_gib(OS_RESERVE),
                    ),
                    _(FIT_BASIS),
                    ""
                    if verdict == "ok"
                    else _("{model} needs {need} of RAM next to the GPU.").format(
                        model=_label(ref, catalog), need=_gib(need)
                    ),
                )
            )
    return join_findings(findings, over_models=True)


def quant_fit(c: QuantFitCheck, catalog: Catalog, focus: str | None = None) -> Finding:
    """The least lossy published quantization that runs entirely on the named GPU."""
    from homellm.plan.advisor import penalty_note

    spec = catalog.model(c.model)
    reference = catalog.mix("Q4_K_M").kld
    findings = []
    for gpus in _alternatives(c.hardware, focus, catalog):
        machine = profile(c.hardware, catalog, gpus)
        for quant in sorted(spec.quants, key=lambda q: catalog.mix(q).kld):
            if _fits_on_gpus(f"{spec.id}@{quant}", machine, catalog):
                mix = catalog.mix(quant)
                verdict: Verdict = "ok" if mix.kld <= reference else "misleading"
                fix = (
                    ""
                    if verdict == "ok"
                    else _("Only {quant} fits; Q4_K_M ({weights}) runs partly on the CPU.").format(
                        quant=mix.name, weights=_gib(_resolved(f"{spec.id}@Q4_K_M", catalog).weights_bytes)
                    )
                )
                findings.append(
                    Finding(
                        verdict,
                        _("{model}: the best quantization that fits {gpus} is {quant} ({weights}); {cost}").format(
                            model=spec.name,
                            gpus=" + ".join(gpus),
                            quant=mix.name,
                            weights=_gib(_resolved(f"{spec.id}@{quant}", catalog).weights_bytes),
                            cost=penalty_note(spec, quant, catalog),
                        ),
                        _(FIT_BASIS) + _("; loss: llama.cpp KL divergence"),
                        fix,
                    )
                )
                break
        else:
            findings.append(
                Finding(
                    "wrong",
                    _("{model}: no published quantization fits {gpus}").format(model=spec.name, gpus=" + ".join(gpus)),
                    _(FIT_BASIS),
                )
            )
    return join_findings(findings)


def min_gpu(c: MinGpuCheck, catalog: Catalog) -> Finding:
    """'RTX 5080 or better': the smallest card of the series that holds each model."""
    series = sorted((catalog.gpu(g) for g in c.series), key=lambda g: g.vram_gib)
    claimed = catalog.gpu(c.claimed)
    findings = []
    for ref in c.models:
        smallest = None
        for g in series:
            if _fits_on_gpus(ref, profile(Hardware(gpus=[g.name]), catalog), catalog):
                smallest = g
                break
        label = _label(ref, catalog)
        if smallest is None:
            findings.append(
                Finding(
                    "wrong",
                    _("{model}: fits none of {series}").format(model=label, series=", ".join(g.name for g in series)),
                    _(FIT_BASIS),
                    _("{model} fits no single card of the series.").format(model=label),
                )
            )
        elif smallest.vram_gib == claimed.vram_gib:
            findings.append(
                Finding("ok", _("{model}: smallest card {gpu}").format(model=label, gpu=smallest.name), _(FIT_BASIS))
            )
        else:
            verdict: Verdict = "misleading" if smallest.vram_gib < claimed.vram_gib else "wrong"
            findings.append(
                Finding(
                    verdict,
                    _("{model}: smallest card {gpu}").format(model=label, gpu=smallest.name),
                    _(FIT_BASIS),
                    _("{model} already fits {gpu}.").format(model=label, gpu=smallest.name)
                    if verdict == "misleading"
                    else _("{model} needs at least {gpu}.").format(model=label, gpu=smallest.name),
                )
            )
    return join_findings(findings, over_models=True)


# ---- speed ---------------------------------------------------------------------------------------------


def decode(c: DecodeCheck, catalog: Catalog) -> Finding:
    """Single-stream decode (bandwidth / bytes per token) vs the batched aggregate (compute-bound)."""
    gpu = catalog.gpu(c.gpu)
    machine = profile(Hardware(gpus=[gpu.name]), catalog)
    fit = _fit(c.model, machine, catalog, SPEED_CTX)
    device = fit.devices[0]
    per_token = device.active_weight_bytes + device.kv_read_bytes
    ceiling = gpu.bandwidth_gbs * 1e9 / per_token
    single = fit.decode_tokens_per_s or 0.0
    tg_eff, pp_eff = calibration(catalog)[gpu.vendor]
    model_id, _quant = split_model_ref(c.model)
    flops = 2 * catalog.model(model_id).params_active
    aggregate_max = gpu.fp16_tflops * 1e12 * pp_eff / flops
    step = per_token / (gpu.bandwidth_gbs * 1e9 * tg_eff)  # one batched step reads the weights once
    streams = next(
        (
            b
            for b in range(1, 4097)
            if b / max(step, b * flops / (gpu.fp16_tflops * 1e12 * pp_eff)) >= c.claimed_tokens_per_s
        ),
        None,
    )
    label = _label(c.model, catalog)
    figure = _(
        "{model} on {gpu}: one stream ~{single:.0f} tok/s (ceiling {bw:g} GB/s / {mb:.0f} MB per token = "
        "{ceiling:.0f}); batched, up to ~{agg:,.0f} tok/s in total"
    ).format(
        model=label,
        gpu=gpu.name,
        single=single,
        bw=gpu.bandwidth_gbs,
        mb=per_token / 1e6,
        ceiling=ceiling,
        agg=aggregate_max,
    )
    basis = _(
        "decode reads the weights and KV cache once per token (calibrated on published llama.cpp runs); batching "
        "shares each read among streams until FP16 compute ({tflops:g} TFLOPS) limits"
    ).format(tflops=gpu.fp16_tflops)
    if c.claimed_tokens_per_s <= 1.2 * single:
        return Finding("ok", figure, basis)
    if streams is not None and c.claimed_tokens_per_s <= aggregate_max:
        return Finding(
            "misleading",
            figure,
            basis,
            _(
                "{claimed:,.0f} tok/s is only a total over about {n} simultaneous requests (or prompt processing); "
                "one chat decodes at ~{single:.0f} tok/s."
            ).format(claimed=c.claimed_tokens_per_s, n=streams, single=single),
        )
    return Finding(
        "wrong",
        figure,
        basis,
        _("{claimed:,.0f} tok/s exceeds even the batched limit of ~{agg:,.0f} tok/s.").format(
            claimed=c.claimed_tokens_per_s, agg=aggregate_max
        ),
    )


def relative(c: RelativeCheck, catalog: Catalog) -> Finding:
    gpu, base = catalog.gpu(c.gpu), catalog.gpu(c.baseline)
    dec = (gpu.bandwidth_gbs / base.bandwidth_gbs - 1) * 100
    pre = (gpu.fp16_tflops / base.fp16_tflops - 1) * 100
    lo, hi = min(dec, pre), max(dec, pre)
    figure = _("{gpu} vs {base}: decode {dec:+.0f}% (memory bandwidth), prefill {pre:+.0f}% (FP16 compute)").format(
        gpu=gpu.name, base=base.name, dec=dec, pre=pre
    )
    basis = _("decode scales with memory bandwidth, prefill with tensor throughput (catalog spec sheets)")
    if lo - 5 <= c.claimed_pct <= hi + 5:
        return Finding("ok", figure, basis)
    if (c.claimed_pct > 0 and hi < 0) or (c.claimed_pct < 0 and lo > 0):
        return Finding(
            "wrong",
            figure,
            basis,
            _("{gpu} is slower than {base} for LLMs, not faster.").format(gpu=gpu.name, base=base.name),
        )
    return Finding(
        "misleading", figure, basis, _("Expect decode {dec:+.0f}%, prefill {pre:+.0f}%.").format(dec=dec, pre=pre)
    )


# ---- specs, prices, budgets ----------------------------------------------------------------------------

_SPEC_UNITS = {
    "vram_gib": "GB",
    "bandwidth_gbs": "GB/s",
    "tdp_w": "W",
    "cuda_cores": "",
    "price_usd": "USD",
    "price_jpy": "JPY",
}


def spec(c: SpecCheck, catalog: Catalog) -> Finding:
    g = catalog.gpu(c.gpu)
    value = getattr(g, c.field)
    if not value:
        return Finding(
            "unverifiable", _("{gpu}: no verified {field} in the catalog").format(gpu=g.name, field=c.field), g.source
        )
    value = float(value) * (c.count if c.field == "vram_gib" else 1)
    unit = _SPEC_UNITS[c.field]
    figure = (
        _("{gpu}: {value:,g} {unit}")
        .format(gpu=(f"{c.count} x " if c.count > 1 else "") + g.name, value=value, unit=unit)
        .rstrip()
    )
    if c.field == "price_jpy":
        figure += _(" ({note}, {date})").format(note=g.price_note, date=g.price_date)
    off = abs(c.claimed / value - 1)
    loose = c.field == "price_jpy"
    verdict: Verdict = "ok" if off <= (0.10 if loose else 0.01) else "misleading" if loose and off <= 0.30 else "wrong"
    fix = "" if verdict == "ok" else _("The catalog has {value:,g} {unit}.").format(value=value, unit=unit).rstrip()
    return Finding(verdict, figure, g.source, fix)


def budget(c: BudgetCheck, catalog: Catalog) -> Finding:
    build = next(b for b in catalog.builds if b.name == c.build)
    gpus = [catalog.gpu(g) for g in build.gpus]
    if any(g.price_jpy is None for g in gpus):
        return Finding("unverifiable", _("a GPU of the build has no verified price"), build.source)
    gpu_price = sum(g.price_jpy or 0 for g in gpus)
    total = gpu_price + build.platform_price_jpy
    figure = _(
        "GPUs ¥{gpus:,} (launch prices) + the other parts ~¥{platform:,} (homellm estimate) = ~¥{total:,}"
    ).format(gpus=gpu_price, platform=build.platform_price_jpy, total=total)
    low, high = c.min_jpy, c.max_jpy or math.inf
    if low <= total <= high:
        return Finding("ok", figure, build.source)
    margin = 0.15
    verdict: Verdict = "misleading" if low * (1 - margin) <= total <= high * (1 + margin) else "wrong"
    return Finding(verdict, figure, build.source, _("Budget about ¥{total:,}.").format(total=total))


# ---- benchmarks ----------------------------------------------------------------------------------------


def _tolerances(benchmark: str) -> tuple[float, float]:
    return (0.1, 0.3) if benchmark == "MT-Bench" else (1.0, 3.0)


def _closest(scores: list[BenchmarkScore], benchmark: str, claimed: float) -> BenchmarkScore | None:
    same = [s for s in scores if s.benchmark == benchmark]
    return min(same, key=lambda s: abs(s.score - claimed)) if same else None


def benchmark(c: BenchmarkCheck, catalog: Catalog) -> Finding:
    ref = catalog.reference(c.model)
    found = catalog.scores(c.model)
    assert found is not None  # the catalog validated the name
    name, scores = found
    shown = c.claimed_text or f"{c.claimed:g}"
    if ref is not None and not ref.exists:
        return Finding("wrong", _("{model} does not exist").format(model=name), ref.source, ref.note)
    best = _closest(scores, c.benchmark, c.claimed)
    note = ref.note if ref is not None else ""
    if c.claimed_text.endswith("/60") and c.benchmark == "AIME 2025":
        note = (note + " " if note else "") + _("AIME 2025 has 30 problems (AIME I and II); 'N/60' is not its score.")
    if best is None:
        published = ", ".join(f"{s.benchmark} {s.score:g}" for s in scores) or _("none")
        return Finding(
            "unverifiable",
            _("{model}: no primary-source {benchmark} score (catalog has: {published})").format(
                model=name, benchmark=c.benchmark, published=published
            ),
            _("catalog scores with their sources (homellm models --scores --json)"),
            note,
        )
    ok_tol, mis_tol = _tolerances(c.benchmark)
    diff = abs(best.score - c.claimed)
    verdict: Verdict = "ok" if diff <= ok_tol else "misleading" if diff <= mis_tol else "wrong"
    setting = f" ({best.setting})" if best.setting else ""
    figure = _("{model} {benchmark}: {score:g}{setting}; the guide says {shown}").format(
        model=name, benchmark=c.benchmark, score=best.score, setting=setting, shown=shown
    )
    fix = (
        ""
        if verdict == "ok"
        else _("{benchmark} is {score:g}{setting}.").format(benchmark=c.benchmark, score=best.score, setting=setting)
    )
    return Finding(verdict, figure, best.source, " ".join(x for x in (fix, note) if x))


def compare(c: CompareCheck, catalog: Catalog) -> Finding:
    left, right = benchmark(c.left, catalog), benchmark(c.right, catalog)
    parts = [left, right]
    scores: list[float] = []
    for side in (c.left, c.right):
        found = catalog.scores(side.model)
        best = _closest(found[1], side.benchmark, side.claimed) if found else None
        if best is None:
            return join_findings(parts, "unverifiable")
        scores.append(best.score)
    a, b = scores
    holds = {"above": a > b, "below": a < b, "close": abs(a - b) <= 2.0}[c.relation]
    if not holds:
        return Finding(
            "wrong",
            join_findings(parts).figure,
            join_findings(parts).basis,
            _("On the published scores it is {a:g} vs {b:g}.").format(a=a, b=b),
        )
    numbers_ok = all(p.verdict == "ok" for p in parts)
    return join_findings(parts, "ok" if numbers_ok else "misleading")


def params(c: ParamsCheck, catalog: Catalog) -> Finding:
    s = catalog.model(c.model)
    total, active = s.params_total / 1e9, s.params_active / 1e9
    off = [abs(c.total_b / total - 1)] + ([abs(c.active_b / active - 1)] if c.active_b else [])
    verdict: Verdict = "ok" if max(off) <= 0.10 else "misleading" if max(off) <= 0.30 else "wrong"
    figure = _("{model}: {total:.1f}B parameters, {active:.1f}B active").format(
        model=s.name, total=total, active=active
    )
    return Finding(verdict, figure, s.source)


def quants(c: QuantsCheck, catalog: Catalog) -> Finding:
    s = catalog.model(c.model)
    published = {catalog.mix(q).name for q in s.quants}
    missing = [q for q in c.claimed if catalog.mix(q).name not in published]
    figure = _("{model}: published as {quants}").format(model=s.name, quants=", ".join(s.quants))
    if not missing:
        return Finding("ok", figure, s.source)
    return Finding(
        "misleading",
        figure,
        s.source,
        _("No {quants} build is published in the Ollama library.").format(quants=", ".join(missing)),
    )
