"""``homellm models | gpus | fit | plan | buy``: the advisor's commands."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.cells import cell_len

from homellm.cli.output import GIB, console, err_console, gib, print_json
from homellm.i18n import N_, _

if TYPE_CHECKING:
    from homellm.catalog import Catalog
    from homellm.hardware.types import HardwareProfile
    from homellm.models.sources import RemoteFile
    from homellm.plan.advisor import Advice, Candidate
    from homellm.plan.fit import FitResult
    from homellm.plan.guide import ClaimAudit
    from homellm.plan.memory import ContextParams
    from homellm.plan.split import SplitAdvice

USE_CASES = ("chat", "code", "math", "japanese")

JsonOpt = typer.Option(False, "--json", help=_("Print a stable machine-readable JSON document."))
GpuOpt = typer.Option(None, "--gpu", help=_("Plan for this catalog GPU instead of the detected ones (repeatable)."))
VramOpt = typer.Option(None, "--vram", help=_("GPU memory in GiB (overrides detection)."))
RamOpt = typer.Option(None, "--ram", help=_("System RAM in GiB (overrides detection)."))
CtxOpt = typer.Option(4096, "--ctx", "-c", help=_("Context length in tokens."))
WithOpt = typer.Option(
    None, "--with", help=_("Plan with a paired worker's device too (one model split over two machines, llama.cpp RPC).")
)


def _catalog() -> Catalog:
    from homellm.catalog import load_catalog

    return load_catalog()


def _hardware(catalog: Catalog, gpu: list[str] | None, vram: float | None, ram: float | None) -> HardwareProfile:
    from homellm.hardware.detect import apply_overrides, detect_hardware
    from homellm.settings import get_settings

    settings = get_settings()
    hw = detect_hardware(settings.models_path, catalog, settings.home)
    return apply_overrides(hw, catalog, gpu, vram, ram)


def _params(ctx: int, kv_type: str, flash_attn: bool, parallel: int) -> ContextParams:
    from homellm.errors import UsageError
    from homellm.plan.memory import ContextParams

    if ctx < 1 or parallel < 1:
        raise UsageError(_("--ctx and --parallel must be positive"))
    return ContextParams(ctx=ctx, kv_type=kv_type.lower(), flash_attn=flash_attn, parallel=parallel)


BENCHMARKS = ("MMLU", "MMLU-Pro", "HumanEval", "MT-Bench", "GSM8K", "AIME 2025", "SWE-Bench")


def models(
    json_out: bool = JsonOpt,
    scores: bool = typer.Option(
        False, "--scores", help=_("Show the published benchmark table, cloud models included.")
    ),
    local: bool = typer.Option(False, "--local", help=_("List the models downloaded into HOMELLM_HOME/models.")),
    sources: bool = typer.Option(False, "--sources", help=_("Print where each model's numbers come from.")),
) -> None:
    """List the catalog's models: size, quantizations, Japanese ability and published scores."""
    if local:
        _print_local_models(json_out)
        return
    catalog = _catalog()
    if json_out:
        data: Any = [m.model_dump(mode="json") for m in catalog.models]
        if scores:
            data = {"models": data, "cloud": {n: [s.model_dump() for s in v] for n, v in catalog.cloud_scores.items()}}
        print_json(data)
        return
    if scores:
        rows = [(m.id, *_score_cells(m.benchmarks)) for m in catalog.models if m.benchmarks]
        rows += [(f"{name} (cloud)", *_score_cells(s)) for name, s in catalog.cloud_scores.items()]
        _print_table(_("Published scores (sources: homellm models --scores --json)"), (N_("model"), *BENCHMARKS), rows)
        return
    columns = (
        N_("id"),
        N_("params>"),
        N_("active>"),
        N_("context>"),
        N_("quants"),
        N_("日本語"),
        N_("uses"),
        N_("license"),
    )
    rows = [
        (
            m.id,
            f"{m.params_total / 1e9:.1f}B",
            f"{m.params_active / 1e9:.1f}B",
            f"{m.architecture.n_ctx_train // 1024}K",
            ", ".join(m.quants),
            m.japanese,
            ", ".join(m.uses),
            m.license,
        )
        for m in catalog.models
    ]
    _print_table(_("Models (id = Ollama tag)"), columns, rows, drop=("license", "active>", "uses", "context>"))
    if sources:
        _print_sources([(m.id, m.source) for m in catalog.models])


def _score_cells(scores: Sequence[Any]) -> list[str]:
    by_name = {s.benchmark: s for s in scores}
    return [f"{by_name[b].score:g}" if b in by_name else "" for b in BENCHMARKS]


def gpus(
    json_out: bool = JsonOpt,
    sources: bool = typer.Option(False, "--sources", help=_("Print where each GPU's numbers come from.")),
) -> None:
    """List the catalog's GPUs: memory, bandwidth, compute, power and price."""
    catalog = _catalog()
    if json_out:
        print_json([g.model_dump(mode="json") for g in catalog.gpus])
        return
    columns = (
        N_("name"),
        N_("memory>"),
        N_("GB/s>"),
        N_("FP16 TFLOPS>"),
        N_("TDP>"),
        N_("price (JPY)>"),
        N_("price (USD)>"),
        N_("as of>"),
    )
    rows = [
        (
            g.name,
            f"{g.vram_gib:g} GB"
            + (_(" unified ({usable:.0%} usable)").format(usable=g.usable_fraction) if g.unified_memory else ""),
            f"{g.bandwidth_gbs:g}",
            f"{g.fp16_tflops:g}",
            f"{g.tdp_w} W",
            f"¥{g.price_jpy:,}" if g.price_jpy else "-",
            f"${g.price_usd:,}" if g.price_usd else "-",
            str(g.price_date),
        )
        for g in catalog.gpus
    ]
    _print_table(_("GPUs"), columns, rows, drop=("as of>", "TDP>", "price (USD)>", "FP16 TFLOPS>"))
    if sources:
        _print_sources([(g.name, g.source) for g in catalog.gpus])


def _print_table(
    title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]], drop: tuple[str, ...] = ()
) -> None:
    """A table readable at 80 columns; a column name ending in '>' is right-aligned, and the columns in
    ``drop`` give way, in that order, when the terminal is too narrow for all of them. Column names are
    message ids (marked with ``N_``), translated here."""
    from homellm.cli.output import Col, narrow_table

    cols = [Col(_(c).rstrip(">"), right=c.endswith(">"), drop=drop.index(c) + 1 if c in drop else 0) for c in columns]
    console.print(narrow_table(cols, [list(r) for r in rows], title=title))


def _print_sources(sources: Sequence[tuple[str, str]]) -> None:
    console.print(_("\nSources"), style="bold")
    for name, source in sources:
        console.print(f"  {name}: {source}", soft_wrap=True, markup=False)


def fit(
    model: str = typer.Argument(..., help=_("A catalog id (qwen2.5:14b) or a path to a .gguf file.")),
    quant: str | None = typer.Option(None, "--quant", "-q", help=_("Quantization (catalog models only).")),
    ctx: int = CtxOpt,
    kv_type: str = typer.Option("f16", "--kv-type", help=_("KV cache type: f16, q8_0 or q4_0.")),
    flash_attn: bool = typer.Option(
        True, "--flash-attn/--no-flash-attn", help=_("Flash attention (llama-server -fa).")
    ),
    parallel: int = typer.Option(1, "--parallel", "-np", help=_("Parallel sequences (llama-server -np).")),
    rope_scaling: bool = typer.Option(
        False, "--rope-scaling", help=_("Allow a context beyond the model's training with YaRN RoPE scaling.")
    ),
    gpu: list[str] | None = GpuOpt,
    vram: float | None = VramOpt,
    ram: float | None = RamOpt,
    worker: str | None = WithOpt,
    measure: bool = typer.Option(
        False, "--measure", help=_("Measure this machine's CPU (and, with --with, the link) first, as plan --measure.")
    ),
    json_out: bool = JsonOpt,
) -> None:
    """Will MODEL fit here? Memory per buffer and device, speed, and the commands to run it.

    Exits with status 1 when it does not fit.
    """
    from dataclasses import replace

    from homellm.errors import UsageError
    from homellm.plan.fit import context_problem, fit_model, resolve_model

    catalog = _catalog()
    params = _params(ctx, kv_type, flash_attn, parallel)
    resolved = resolve_model(model, quant, catalog)
    problem = context_problem(resolved, params)
    if problem and not rope_scaling:
        raise UsageError(problem)
    if problem:
        params = replace(params, yarn_orig_ctx=resolved.arch.n_ctx_train)
    if measure:
        _measure(catalog, quiet=json_out)
    hw = _hardware(catalog, gpu, vram, ram)
    advice = None
    if worker:
        from homellm.plan.split import advise_split

        hw = _with_worker(hw, catalog, worker, measure)
        advice = advise_split(resolved, params, hw, catalog)
        result = advice.split
    else:
        result = fit_model(resolved, params, hw, catalog)
    if json_out:
        print_json(result.to_json() | ({"split": advice.to_json(), "link": _link_json(hw)} if advice else {}))
    else:
        if problem:
            err_console.print(
                _("[yellow]warning:[/] {model} was trained on {n:,} tokens; beyond that it runs with YaRN RoPE "
                  "scaling and answers degrade").format(model=resolved.label, n=resolved.arch.n_ctx_train),
                soft_wrap=True,
            )  # fmt: skip
        _print_fit(result)
        if advice is not None:
            console.print("\n" + advice.summary, soft_wrap=True, markup=False, style="bold")
    if not result.fits:
        raise typer.Exit(1)


def _with_worker(hw: HardwareProfile, catalog: Catalog, worker: str, measure: bool) -> HardwareProfile:
    from homellm.settings import get_settings
    from homellm.split.remote import with_worker

    return with_worker(hw, get_settings().home, worker, catalog, measure)


def _link_json(hw: HardwareProfile) -> list[dict[str, Any]]:
    return [{"worker": r.worker, "device": r.name, "offered_bytes": r.offered_bytes, **asdict(r.link)}
            for r in hw.remotes]  # fmt: skip


def _print_fit(r: FitResult) -> None:
    from rich.table import Table

    from homellm.plan.recipes import llama_server_command, ollama_commands

    verdict = _("[bold green]fits[/]") if r.fits else _("[bold red]does not fit[/]")
    where = ""
    if r.hardware.remotes:
        where = ", ".join(dict.fromkeys(x.worker for x in r.hardware.remotes)) + (" + GPU" if r.hardware.gpus else "")
    console.print(
        (
            _("[bold]{label}[/] {quant}, {n_ctx:,} tokens of context: {verdict} ({gpu_layers}/{layers} layers on GPU)")
            if not r.hardware.remotes
            else _(
                "[bold]{label}[/] {quant}, {n_ctx:,} tokens of context: {verdict} ({gpu_layers}/{layers} layers on "
                "{where})"
            )
        ).format(
            label=r.model.label,
            quant=r.model.quant,
            n_ctx=r.params.n_ctx,
            verdict=verdict,
            gpu_layers=r.gpu_layers,
            layers=r.model.arch.n_layer + 1,
            where=where,
        )
    )
    buffers = Table(title=_("Memory (as llama.cpp allocates it)"), title_justify="left")
    buffers.add_column(_("buffer"))
    buffers.add_column(_("size"), justify="right")
    buffers.add_column(_("how it is sized"))
    kv = r.params
    rows = [
        (N_("weights"), r.weights_bytes, _("tensor table of the file") if r.model.path
         else _("tensor table under {quant}").format(quant=r.model.quant)),
        (N_("KV cache"), r.kv_cache_bytes, _("{kv_type} K+V, {n_ctx:,} cells x {parallel} seq, exact").format(
            kv_type=kv.kv_type, n_ctx=kv.n_ctx, parallel=kv.parallel)),
        (N_("compute"), r.compute_bytes, _("worst-case graph, ubatch {ubatch}, flash-attn {on}").format(
            ubatch=kv.n_ubatch, on=_on(kv.flash_attn))),
        (N_("output"), r.output_bytes, _("logits of one token per sequence")),
        (N_("overhead"), r.overhead_bytes, _("stated: 512 MiB per discrete GPU runtime + 256 MiB host process")),
        (N_("total"), r.total_bytes, ""),
    ]  # fmt: skip
    for name, size, how in rows:
        buffers.add_row(_(name), gib(size), how)
    console.print(buffers)
    devices = Table(title=_("Placement"), title_justify="left")
    for col in (N_("device"), N_("layers"), N_("used"), N_("capacity"), ""):
        devices.add_column(_(col) if col else "", justify="right" if col in ("used", "capacity") else "left")
    for d in r.devices:
        if d.kind in ("gpu", "remote") and not d.layers and not d.weights_bytes:
            continue
        mark = _("[green]ok[/]") if d.fits else _("[red]over[/]")
        layers = f"{len(d.layers)}" + (_(" + output") if d.kind != "cpu" and d.holds_output else "")
        devices.add_row(d.name, layers, gib(d.used_bytes), gib(d.capacity_bytes), mark)
    console.print(devices)
    if r.decode_tokens_per_s:
        decode, prefill = r.decode_tokens_per_s, r.prefill_tokens_per_s or 0
        console.print(
            _("speed (estimate): decode ~{decode:.1f} tok/s, prefill ~{prefill:,.0f} tok/s").format(
                decode=decode, prefill=prefill
            )
        )
    for note in r.speed_notes:
        console.print(f"  [dim]{note}[/]")
    for note in r.hardware.notes:
        console.print(f"  [dim]{note}[/]")
    if r.hardware.remotes:
        if not r.fits:
            return  # the verdict below says what does fit
        workers = ",".join(dict.fromkeys(x.worker for x in r.hardware.remotes))
        model = str(r.model.path) if r.model.path else r.model.label
        console.print(_("\n[bold]Run it split[/] (Ollama cannot split a model over machines; llama-server --rpc "
                        "would expose llama.cpp's RPC port)"))  # fmt: skip
        command = shlex.join(["homellm", "serve", "--model", model, "--with", workers])
        console.print(f"  {command}", soft_wrap=True, markup=False)
        return
    console.print(_("\n[bold]Run it with Ollama[/]"))
    for line in ollama_commands(r):
        console.print(f"  {line}", soft_wrap=True)
    console.print(_("[bold]or llama.cpp[/]"))
    console.print(f"  {llama_server_command(r)}", soft_wrap=True)


def _on(flag: bool) -> str:
    return _("on") if flag else _("off")


def _hardware_json(hw: HardwareProfile) -> dict[str, Any]:
    return asdict(hw)


def _print_hardware(hw: HardwareProfile) -> None:
    gpus = ", ".join(
        f"{g.name} ({gib(g.memory_bytes)}{', unified' if g.unified else ''}"
        f"{'' if g.origin == 'detected' else ', ' + g.origin})"
        for g in hw.gpus
    )
    console.print(_("[bold]GPU[/]  {gpus}").format(gpus=gpus or _("none")))
    flags = " ".join(hw.cpu.flags)
    console.print(
        _("[bold]CPU[/]  {model}, {cores} cores / {threads} threads{flags}").format(
            model=hw.cpu.model, cores=hw.cpu.cores, threads=hw.cpu.threads, flags=f" ({flags})" if flags else ""
        )
    )
    console.print(_("[bold]RAM[/]  {ram_bytes}").format(ram_bytes=gib(hw.ram_bytes)))
    if hw.disk_free_bytes is not None:
        console.print(
            _("[bold]Disk[/] {disk_free_bytes} free in {models_dir}").format(
                disk_free_bytes=gib(hw.disk_free_bytes), models_dir=hw.models_dir
            ),
            soft_wrap=True,
        )
    for note in hw.notes:
        console.print(f"  [dim]{note}[/]")


def _candidate_json(c: Candidate) -> dict[str, Any]:
    return {
        "model": c.spec.id,
        "quant": c.fit.model.quant,
        "ctx": c.fit.params.n_ctx,
        "total_bytes": c.fit.total_bytes,
        "decode_tokens_per_s": round(c.fit.decode_tokens_per_s or 0, 1),
        "why": c.reasons,
    }


def plan(
    use_case: str | None = typer.Option(
        None, "--use-case", "-u", help=_("chat, code, math or japanese (default: all).")
    ),
    ctx: int = CtxOpt,
    kv_type: str = typer.Option("f16", "--kv-type", help=_("KV cache type: f16, q8_0 or q4_0.")),
    gpu: list[str] | None = GpuOpt,
    vram: float | None = VramOpt,
    ram: float | None = RamOpt,
    measure: bool = typer.Option(
        False,
        "--measure",
        help=_("Measure this machine's CPU speed first (llama.cpp run or bandwidth probe) and cache it."),
    ),
    worker: str | None = WithOpt,
    json_out: bool = JsonOpt,
) -> None:
    """What should I run? The best model x quantization per use on this (or the given) hardware.

    With a catalog GPU (--gpu or detected) it also shows what the Japanese guide claims about that GPU,
    recomputed (all the claims: homellm guide).
    """
    from homellm.errors import UsageError
    from homellm.plan.advisor import HEADROOM, advise

    uses = USE_CASES if use_case is None else (use_case.lower(),)
    if any(u not in USE_CASES for u in uses):
        raise UsageError(
            _("unknown use case {use!r}; use one of {uses}").format(use=use_case, uses=", ".join(USE_CASES))
        )
    catalog = _catalog()
    params = _params(ctx, kv_type, True, 1)
    if measure:
        _measure(catalog, quiet=json_out)
    hw = _hardware(catalog, gpu, vram, ram)
    if worker:
        hw = _with_worker(hw, catalog, worker, measure)
    advice = [advise(hw, u, params, catalog) for u in uses]  # type: ignore[arg-type]
    splits = _split_verdicts(advice, params, hw, catalog)
    audits = _guide_claims_about(hw, catalog)
    if json_out:
        print_json(
            {
                "hardware": _hardware_json(hw),
                "ctx": params.n_ctx,
                "recommendations": {
                    a.use_case: {
                        "best": _candidate_json(a.best) if a.best else None,
                        "runners_up": [_candidate_json(c) for c in a.runners_up],
                        "trained_on_less_context": a.short_context,
                        "split": splits[a.use_case].to_json() if a.use_case in splits else None,
                    }
                    for a in advice
                },
                "link": _link_json(hw),
                "guide_checks": [a.to_json() for a in audits],
            }
        )
        return
    _print_hardware(hw)
    for a in advice:
        console.print(f"\n[bold underline]{a.use_case}[/]")
        if a.best is None:
            console.print(
                _("  nothing in the catalog fits with headroom at a usable speed; try a smaller --ctx or `homellm buy`")
            )
        best = _("best")
        for rank, c in enumerate([a.best, *a.runners_up] if a.best else []):
            head = f"[bold green]{best}[/]  " if rank == 0 else " " * (cell_len(best) + 2)
            console.print(
                f"  {head}[bold]{c.spec.id}[/] {c.fit.model.quant}  {gib(c.fit.total_bytes)}  — {'; '.join(c.reasons)}"
            )
            if rank == 0 and a.use_case in splits:
                console.print(f"        {splits[a.use_case].summary}", soft_wrap=True, markup=False, style="bold")
        if a.short_context:
            console.print(
                _("  [dim]not considered, trained on fewer than {ctx:,} tokens (they would need RoPE scaling): "
                  "{models}[/]").format(ctx=params.ctx, models=", ".join(a.short_context)),
                soft_wrap=True,
            )  # fmt: skip
    if audits:
        names = ", ".join(dict.fromkeys(g.catalog_name for g in hw.gpus if g.catalog_name))
        console.print(_("\n[bold]What the guide claims about {gpus}, recomputed[/] (all claims: homellm guide)").format(
            gpus=names))  # fmt: skip
        _print_audits(audits)
    console.print(
        _("\n[dim]At {ctx:,} tokens of context, keeping {headroom:.0%} of memory free. Scores are published for the "
          "BF16 weights; the loss of each quantization is llama.cpp's measured KL divergence. "
          "Details: homellm fit MODEL -q QUANT[/]").format(ctx=params.n_ctx, headroom=HEADROOM),
        soft_wrap=True,
    )  # fmt: skip


def _split_verdicts(
    advice: Sequence[Advice], params: ContextParams, hw: HardwareProfile, catalog: Catalog
) -> dict[str, SplitAdvice]:
    """For each use whose best pick puts layers on a worker: is that split worth it?"""
    from homellm.plan.split import advise_split

    out: dict[str, SplitAdvice] = {}
    for a in advice:
        if a.best and any(d.kind == "remote" and (d.layers or d.holds_output) for d in a.best.fit.devices):
            out[a.use_case] = advise_split(a.best.fit.model, a.best.fit.params, hw, catalog)
    return out


def _measure(catalog: Catalog, quiet: bool) -> None:
    from homellm.hardware.cpu import detect_cpu
    from homellm.plan.calibrate import calibrate, engine_installed
    from homellm.settings import get_settings

    settings = get_settings()
    out = err_console if quiet else console
    how = _("a short llama.cpp run and a memory probe") if engine_installed() else _("a memory bandwidth probe")
    out.print(_("measuring this machine ({how}) ...").format(how=how))
    result = calibrate(settings.home, settings.models_path, detect_cpu(), catalog)
    out.print(
        _("memory bandwidth {bw:.1f} GB/s; {reference}; saved to {path}").format(
            bw=result.bandwidth_gbs, reference=result.reference, path=settings.home / "calibration.json"
        ),
        soft_wrap=True,
    )


def _guide_claims_about(hw: HardwareProfile, catalog: Catalog) -> list[ClaimAudit]:
    from homellm.plan.guide import audit_guide

    seen: dict[str, ClaimAudit] = {}
    for name in dict.fromkeys(g.catalog_name for g in hw.gpus if g.catalog_name):
        for a in audit_guide(catalog, name):
            seen.setdefault(a.claim.id, a)
    return list(seen.values())


VERDICT_STYLE = {"ok": "green", "wrong": "red", "misleading": "yellow", "unverifiable": "cyan"}


def _print_audits(audits: Sequence[ClaimAudit]) -> None:
    """Claims grouped by the guide's section: verdict, the original text, the gloss, the figure, the fix."""
    from rich.markup import escape

    section = None
    for a in audits:
        c = a.claim
        if c.section != section:
            section = c.section
            english = f"  [dim]{escape(a.section_en)}[/]" if a.section_en else ""
            console.print(f"\n[bold]{escape(c.section)}[/]{english}", soft_wrap=True)
        where = " / ".join(x for x in (c.row, c.column) if x)
        text = escape(c.ja.replace("\n", " ⏎ "))
        style = VERDICT_STYLE[a.verdict]
        console.print(f"  [{style}]{a.verdict:>12}[/]  " + (f"[dim]{escape(where)}:[/] " if where else "") + text,
                      soft_wrap=True)  # fmt: skip
        console.print(f"{'':16}[dim]{escape(c.en)}[/]", soft_wrap=True)
        if a.figure:
            console.print(f"{'':16}{escape(a.figure)}", soft_wrap=True)
        if a.correction:
            fix = _("fix:")
            console.print(f"{'':16}[{style}]{escape(fix)}[/] {escape(a.correction)}", soft_wrap=True)
        if a.basis:
            source = _("source:")
            console.print(f"{'':16}[dim]{escape(source)} {escape(a.basis)}[/]", soft_wrap=True)


def guide(
    gpu: str | None = typer.Option(None, "--gpu", help=_("Only the claims about this catalog GPU.")),
    verdict: str | None = typer.Option(None, "--verdict", help=_("Only claims with this verdict.")),
    json_out: bool = JsonOpt,
) -> None:
    """Every claim of the Japanese local-LLM guide (December 2025), recomputed or checked against sources.

    Each claim shows the guide's section, the original Japanese, an English gloss, a verdict (ok, wrong,
    misleading, unverifiable), the recomputed figure with its source or formula, and a correction.
    """
    from homellm.errors import UsageError
    from homellm.plan.guide import VERDICTS, audit_guide, summary

    if verdict is not None and verdict not in VERDICTS:
        raise UsageError(_("unknown verdict {v!r}; use one of {all}").format(v=verdict, all=", ".join(VERDICTS)))
    catalog = _catalog()
    audits = [a for a in audit_guide(catalog, gpu) if verdict is None or a.verdict == verdict]
    counts = summary(audits)
    if json_out:
        print_json({"claims": [a.to_json() for a in audits], "summary": counts})
        return
    console.print(
        _("[bold]The Japanese local-LLM guide (December 2025), claim by claim[/]: memory at a 4,096-token context on "
          "the hardware each claim names; tokens/s against one stream and the batched total; benchmarks against "
          "primary sources."), soft_wrap=True,
    )  # fmt: skip
    _print_audits(audits)
    console.print(
        "\n"
        + _("{n} claims: {ok} ok, {wrong} wrong, {misleading} misleading, {unverifiable} unverifiable").format(
            n=len(audits), **counts
        )
    )


def buy(
    model: str = typer.Argument(..., help=_("A catalog id (qwen2.5:32b).")),
    quant: str | None = typer.Option(None, "--quant", "-q", help=_("Quantization.")),
    ctx: int = CtxOpt,
    min_tokens_per_s: float = typer.Option(0.0, "--min-tokens-per-s", help=_("Required decode speed.")),
    budget: str | None = typer.Option(None, "--budget", help=_("Spending limit, e.g. 300000JPY or 2000USD.")),
    json_out: bool = JsonOpt,
) -> None:
    """What should I buy? The cheapest GPU (or pair) and build that runs MODEL at that speed."""
    from homellm.plan.buy import parse_money, shop
    from homellm.plan.fit import resolve_model

    catalog = _catalog()
    limit = parse_money(budget) if budget else None
    resolved = resolve_model(model, quant, catalog)
    params = _params(ctx, "f16", True, 1)
    options = shop(resolved, params, catalog, min_tokens_per_s, limit)
    if json_out:
        print_json(
            {
                "model": resolved.label,
                "quant": resolved.quant,
                "ctx": params.n_ctx,
                "options": [
                    {
                        "gpus": [g.name for g in o.gpus],
                        "price_jpy": o.price_jpy,
                        "price_usd": o.price_usd,
                        "build": o.build.name if o.build else None,
                        "vram_used_bytes": sum(d.used_bytes for d in o.fit.devices if d.kind == "gpu"),
                        "decode_tokens_per_s": round(o.fit.decode_tokens_per_s or 0, 1),
                    }
                    for o in options
                ],
            }
        )
        return
    need = resolved.weights_bytes / GIB
    console.print(
        _("[bold]{label}[/] {quant}: {need:.1f} GiB of weights, {n_ctx:,} tokens of context").format(
            label=resolved.label, quant=resolved.quant, need=need, n_ctx=params.n_ctx
        )
    )
    if not options:
        console.print(_("[red]nothing in the catalog runs it fully on the GPU within those limits[/]"))
        raise typer.Exit(1)
    from rich.table import Table

    table = Table(title_justify="left")
    for col in ("", N_("GPU"), N_("total price"), N_("VRAM used"), N_("decode"), N_("build")):
        table.add_column(
            _(col) if col else "", justify="right" if col in ("total price", "VRAM used", "decode") else "left"
        )
    for i, o in enumerate(options[:8]):
        vram_used = sum(d.used_bytes for d in o.fit.devices if d.kind == "gpu")
        capacity = sum(d.capacity_bytes for d in o.fit.devices if d.kind == "gpu")
        table.add_row(
            _("[bold green]cheapest[/]") if i == 0 else "",
            o.label,
            f"¥{o.price_jpy:,} / ${o.price_usd:,}",
            f"{vram_used / GIB:.1f}/{capacity / GIB:.0f} GiB",
            f"~{o.fit.decode_tokens_per_s or 0:.0f} tok/s",
            o.build.name if o.build else (_("whole Mac") if o.gpus[0].unified_memory else _("GPU + typical platform")),
        )
    console.print(table)
    console.print(_("[dim]Prices are reference points (see `homellm gpus` for their dates); speeds are estimates.[/]"))


def _models_dir() -> Path:
    from homellm.settings import get_settings

    return get_settings().models_path


def _print_local_models(json_out: bool) -> None:
    from homellm.models.store import ModelStore

    store = ModelStore(_models_dir())
    found = store.listing()
    if json_out:
        print_json([{**asdict(m), "path": str(store.path(m))} for m in found])
        return
    if not found:
        console.print(_("no models in {folder}; get one with: homellm pull qwen2.5:7b").format(folder=store.folder))
        return
    rows = [(m.name, m.quant or "-", gib(m.size), m.source, str(store.path(m))) for m in found]
    _print_table(
        _("Models in {folder}").format(folder=store.folder),
        (N_("name"), N_("quant"), N_("size>"), N_("from"), N_("file")),
        rows,
    )


class _DownloadBar:
    """Rich progress: size, speed and time left (homellm.models.transfer.Progress); shown once bytes flow."""

    def __init__(self, label: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )  # fmt: skip

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=console)  # fmt: skip
        self.task = self.bar.add_task(label, total=None)
        self.shown = False

    def start(self, total: int, completed: int) -> None:
        if not self.shown:
            self.bar.start()
            self.shown = True
        self.bar.update(self.task, total=total, completed=completed)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.shown:
            self.bar.stop()
            self.shown = False


def pull_model(
    model: str, force: bool = False, gpu: list[str] | None = None, vram: float | None = None, ram: float | None = None
) -> Path:
    """Download MODEL with a progress bar (used by `pull`, `up MODEL` and `serve --model MODEL`)."""
    from urllib.parse import urlsplit

    from homellm.models.pull import Registries, pull
    from homellm.settings import get_settings

    settings = get_settings()
    catalog = _catalog()
    hw = None if force else _hardware(catalog, gpu, vram, ram)
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    registries = Registries(settings.ollama_registry, settings.hf_endpoint, token)
    bar = _DownloadBar(model)

    def located(remote: RemoteFile, resumed: int) -> None:
        line = _("{name}: {size} from {host}").format(
            name=remote.ref.name, size=gib(remote.size), host=urlsplit(remote.url).netloc
        )
        if resumed:
            line += _(", resuming at {have}").format(have=gib(resumed))
        console.print(line, soft_wrap=True)

    try:
        result = pull(model, catalog=catalog, models_dir=settings.models_path, registries=registries, hardware=hw,
                      force=force, progress=bar, on_located=located)  # fmt: skip
    except KeyboardInterrupt:
        bar.close()
        err_console.print(_("interrupted: the partial download is kept; run the same command to resume"))
        raise typer.Exit(130) from None
    finally:
        bar.close()
    path = settings.models_path / result.model.file
    if result.remote is None:
        console.print(
            _("{name} is already downloaded: {path}").format(name=result.model.name, path=path), soft_wrap=True
        )
        return path
    console.print(
        _("{name} ({quant}, {size}) saved to {path}; sha256 verified").format(
            name=result.model.name, quant=result.model.quant or "?", size=gib(result.model.size), path=path
        ),
        soft_wrap=True,
    )
    if result.fit is not None:
        fit = result.fit
        speed = f", ~{fit.decode_tokens_per_s:.0f} tok/s" if fit.decode_tokens_per_s else ""
        console.print(_("fits this machine: {used} at {ctx:,} tokens of context{speed}").format(
            used=gib(fit.total_bytes), ctx=fit.params.n_ctx, speed=speed), soft_wrap=True)  # fmt: skip
    return path


def pull(
    model: str = typer.Argument(
        ...,
        help=_("A catalog id (qwen2.5:14b), id:QUANT (qwen2.5:14b:Q6_K), an Ollama tag, or hf.co/ORG/REPO[:QUANT]."),
    ),
    force: bool = typer.Option(False, "--force", help=_("Download even when the disk or the fit check says no.")),
    gpu: list[str] | None = GpuOpt,
    vram: float | None = VramOpt,
    ram: float | None = RamOpt,
) -> None:
    """Download a model for the embedded engine into HOMELLM_HOME/models (resumable, sha256-verified).

    From Ollama's registry by default (catalog ids are Ollama tags), or from Hugging Face with
    hf.co/ORG/REPO:QUANT (HF_ENDPOINT and HF_TOKEN are honoured). Checks the free disk and that the
    model fits this machine first; Ctrl-C keeps what was downloaded for the next run.
    """
    pull_model(model, force, gpu, vram, ram)


def rm(model: str = typer.Argument(..., help=_("A name from `homellm models --local`."))) -> None:
    """Delete a downloaded model from HOMELLM_HOME/models."""
    from homellm.models.store import ModelStore

    store = ModelStore(_models_dir())
    removed = store.remove(model)
    console.print(_("removed {name} ({size}, {path})").format(name=removed.name, size=gib(removed.size),
                                                              path=store.path(removed)), soft_wrap=True)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("gpus")(gpus)
    app.command("fit")(fit)
    app.command("plan")(plan)
    app.command("buy")(buy)
    app.command("guide")(guide)
    app.command("pull")(pull)
    app.command("rm")(rm)


__all__ = ["register"]
