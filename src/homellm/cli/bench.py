"""``homellm bench speed | quality | report``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from homellm.cli.output import console, print_json
from homellm.i18n import N_, _

if TYPE_CHECKING:
    from homellm.bench.speed import SpeedRun
    from homellm.bench.target import Target

app = typer.Typer(help=_("Measure speed and quality of a server (a profile, homellm's gateway or any URL)."),
                  no_args_is_help=True)  # fmt: skip
TargetArg = typer.Argument(None, help=_("A saved connection or a URL (default: the last connection)."))
KeyStdinOpt = typer.Option(
    False,
    "--key-stdin",
    help=_(
        "Read the API key for a URL target from standard input "
        "(or set HOMELLM_KEY). Keys are never taken on the command line."
    ),
)
CacertOpt = typer.Option(
    None, "--cacert", help=_("Pin a URL target's TLS certificate (PEM), e.g. HOMELLM_HOME/tls/cert.pem.")
)
LocalOpt = typer.Option(
    False, "--local", help=_("Bench the gateway on this machine (its own certificate, a one-hour key).")
)


def _runs_dir() -> Path:
    from homellm.settings import get_settings

    return get_settings().home / "bench" / "runs"


@contextlib.contextmanager
def _target(spec: str | None, key_stdin: bool, cacert: Path | None, local: bool) -> Iterator[Target]:
    """The server to measure: --local, a profile, or a URL (its key from HOMELLM_KEY or standard input)."""
    import sys

    from homellm.bench.target import local_gateway, resolve
    from homellm.errors import UsageError
    from homellm.settings import get_settings

    if local:
        if spec or cacert or key_stdin:
            raise UsageError(_("--local measures this machine's gateway: give no target, --cacert or --key-stdin"))
        with local_gateway() as t:
            yield t
        return
    key = sys.stdin.readline().strip() if key_stdin else get_settings().key_value
    yield resolve(spec, key, cacert)


def _int_list(text: str) -> list[int]:
    from homellm.errors import UsageError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(_("--concurrency takes numbers like 1,2,4,8, not {text!r}").format(text=text)) from None
    if not values or any(v < 1 or v > 512 for v in values):
        raise UsageError(_("--concurrency levels must be between 1 and 512"))
    return values


@app.command("speed")
def speed(
    target: str | None = TargetArg,
    model: str = typer.Option(..., "--model", "-m", help=_("Model to measure.")),
    concurrency: str = typer.Option("1,2,4", "--concurrency", help=_("Concurrency levels, e.g. 1,2,4,8.")),
    prompt_tokens: int = typer.Option(256, "--prompt-tokens", help=_("Prompt length (calibrated on the server).")),
    max_tokens: int = typer.Option(128, "--max-tokens", help=_("Tokens to generate per request.")),
    requests: int | None = typer.Option(None, "--requests", help=_("Requests per level (default 4 x concurrency).")),
    duration: float | None = typer.Option(None, "--duration", help=_("Seconds per level instead of a count.")),
    key_stdin: bool = KeyStdinOpt,
    cacert: Path | None = CacertOpt,
    local: bool = LocalOpt,
    json_out: bool = typer.Option(False, "--json", help=_("Print the results as JSON.")),
    csv_file: Path | None = typer.Option(None, "--csv", help=_("Write one row per level to this CSV file.")),
    plot: Path | None = typer.Option(None, "--plot", help=_("Write a PNG of throughput and latency vs concurrency.")),
) -> None:
    """TTFT, TPOT, ITL, decode tokens/s (client and server), latency and throughput per concurrency level."""
    import asyncio
    import json
    from dataclasses import asdict

    from rich.progress import Progress

    from homellm.bench.speed import SpeedConfig, run_speed
    from homellm.errors import UsageError

    if prompt_tokens < 1 or max_tokens < 1 or (requests is not None and requests < 1):
        raise UsageError(_("--prompt-tokens, --max-tokens and --requests must be positive"))
    levels = _int_list(concurrency)
    cfg = SpeedConfig(model, levels, prompt_tokens, max_tokens, requests, duration)
    total = None if duration else sum(requests or 4 * c for c in levels)
    with (
        _target(target, key_stdin, cacert, local) as t,
        Progress(console=console, transient=True, disable=json_out) as progress,
    ):
        task = progress.add_task(f"bench {model}", total=total)
        run = asyncio.run(run_speed(t, cfg, lambda: progress.advance(task)))
    data = {"kind": "speed", **asdict(run)}
    _runs_dir().mkdir(parents=True, exist_ok=True)
    (_runs_dir() / f"speed-{int(run.started_at)}.json").write_text(json.dumps(data, indent=2))
    if csv_file:
        _write_csv(run, csv_file)
    if plot:
        _plot(run, plot)
    if json_out:
        print_json(data)
        return
    _print_speed(run)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def _print_speed(run: SpeedRun) -> None:
    from rich.table import Table

    pt = run.calibrated_prompt_tokens
    console.print(
        _("[bold]{model}[/] on {server}: prompts of {length}, up to {max_tokens} new tokens").format(
            model=run.model,
            server=run.server,
            length=_("{n} tokens (server count)").format(n=pt)
            if pt
            else _("unknown length (the server reports no counts)"),
            max_tokens=run.config.max_tokens,
        )
    )
    table = Table(title_justify="left")
    for col in (N_("conc."), N_("req"), N_("err"), N_("TTFT p50/p90/p99 ms"), N_("TPOT p50 ms"),
                N_("ITL p50/p99 ms"), N_("e2e p50 s"), N_("decode tok/s client"), N_("decode tok/s server"),
                N_("req/s"), N_("out tok/s")):  # fmt: skip
        table.add_column(_(col), justify="right")
    for lv in run.levels:
        server = f"{lv.decode_server.p50:.1f}" if lv.decode_server.p50 else _("not reported")
        table.add_row(str(lv.concurrency), str(lv.requests), str(lv.errors),
                      f"{_ms(lv.ttft.p50)}/{_ms(lv.ttft.p90)}/{_ms(lv.ttft.p99)}", _ms(lv.tpot.p50),
                      f"{_ms(lv.itl.p50)}/{_ms(lv.itl.p99)}", f"{lv.e2e.p50:.2f}" if lv.e2e.p50 else "-",
                      f"{lv.decode_client.p50:.1f}" if lv.decode_client.p50 else "-", server,
                      f"{lv.requests_per_s:.2f}", f"{lv.output_tokens_per_s:.1f}")  # fmt: skip
    console.print(table)
    if not all(lv.server_counted_tokens for lv in run.levels):
        console.print(
            _("[dim]the server did not report completion token counts; they were counted as content chunks[/]")
        )
    console.print(_("[dim]definitions: docs/bench.md. Saved; compare runs with: homellm bench report[/]"))


def _write_csv(run: SpeedRun, path: Path) -> None:
    import csv

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["concurrency", "requests", "errors", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s",
                    "itl_p50_s", "itl_p99_s", "e2e_p50_s", "decode_client_p50", "decode_server_p50",
                    "requests_per_s", "output_tokens_per_s", "prompt_tokens"])  # fmt: skip
        for lv in run.levels:
            w.writerow([lv.concurrency, lv.requests, lv.errors, lv.ttft.p50, lv.ttft.p90, lv.ttft.p99, lv.tpot.p50,
                        lv.itl.p50, lv.itl.p99, lv.e2e.p50, lv.decode_client.p50, lv.decode_server.p50,
                        lv.requests_per_s, lv.output_tokens_per_s, lv.prompt_tokens])  # fmt: skip


def _plot(run: SpeedRun, path: Path) -> None:
    """The chart's labels stay English: matplotlib's default fonts have no Japanese glyphs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = [lv.concurrency for lv in run.levels]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(c, [lv.output_tokens_per_s for lv in run.levels], marker="o", label="output tokens/s")
    a.set_xlabel("concurrency")
    a.set_ylabel("tokens/s")
    a.set_title("Throughput")
    a.legend()
    b.plot(c, [1000 * (lv.ttft.p50 or 0) for lv in run.levels], marker="o", label="TTFT p50")
    b.plot(c, [1000 * (lv.e2e.p50 or 0) for lv in run.levels], marker="s", label="end-to-end p50")
    b.set_xlabel("concurrency")
    b.set_ylabel("ms")
    b.set_title("Latency")
    b.legend()
    for ax in (a, b):
        ax.set_xticks(c)
    fig.suptitle(f"{run.model} on {run.server}"[:90])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@app.command("quality")
def quality(
    target: str | None = TargetArg,
    model: str = typer.Option(..., "--model", "-m", help=_("Model to evaluate.")),
    suite: str = typer.Option(..., "--suite", help=_("gsm8k, mmlu or humaneval.")),
    limit: int | None = typer.Option(None, "--limit", help=_("Evaluate a seeded random subset of this size.")),
    seed: int = typer.Option(0, "--seed", help=_("Subset and sampling seed.")),
    data: Path | None = typer.Option(None, "--data", help=_("A local copy of the dataset (JSONL, or MMLU CSVs).")),
    concurrency: int = typer.Option(2, "--concurrency", help=_("Questions in flight.")),
    key_stdin: bool = KeyStdinOpt,
    cacert: Path | None = CacertOpt,
    local: bool = LocalOpt,
    json_out: bool = typer.Option(False, "--json", help=_("Print the result as JSON.")),
) -> None:
    """Accuracy with a 95% confidence interval, beside the model's published score. Resumable."""
    import asyncio
    import json

    from rich.progress import Progress

    from homellm.bench.datasets import load
    from homellm.bench.quality import run_quality
    from homellm.errors import UsageError
    from homellm.settings import get_settings

    if (limit is not None and limit < 1) or concurrency < 1:
        raise UsageError(_("--limit and --concurrency must be positive"))
    home = get_settings().home
    items, source = load(suite, data, home / "datasets", limit, seed)
    with (
        _target(target, key_stdin, cacert, local) as t,
        Progress(console=console, transient=True, disable=json_out) as progress,
    ):
        task = progress.add_task(f"{suite} on {model}", total=len(items))
        run = asyncio.run(run_quality(t, model, suite, items, source, limit, seed, home / "bench" / "quality",
                                      concurrency, lambda g: progress.advance(task)))  # fmt: skip
    result = run.to_json()
    _runs_dir().mkdir(parents=True, exist_ok=True)
    (_runs_dir() / f"quality-{run.run_id}.json").write_text(json.dumps(result, indent=2))
    if json_out:
        print_json(result)
        return
    lo, hi = result["ci95"]
    metric = "pass@1" if suite == "humaneval" else "accuracy (strict)"
    console.print(
        _("[bold]{model}[/] {suite}, {n} questions from {source} on {server}").format(
            model=model, suite=suite, n=run.n, source=source, server=run.server
        )
    )
    console.print(
        _("  {metric}: [bold]{pct:.1f}%[/]  (95% CI {lo:.1f}-{hi:.1f}%)").format(
            metric=metric, pct=100 * run.accuracy, lo=100 * lo, hi=100 * hi
        )
    )
    if suite != "humaneval":
        console.print(_("  flexible extraction: {pct:.1f}%").format(pct=100 * run.flexible_accuracy))
    if run.errors:
        console.print(_("  [red]{errors} requests failed[/] (run again to retry them)").format(errors=run.errors))
    for p in run.published:
        console.print(
            _("  published: {score:g}% ({setting}; {source})").format(
                score=p["score"], setting=p.get("setting") or _("as published"), source=p["source"]
            ),
            soft_wrap=True,
        )
    console.print(_("  [dim]ours: {method}[/]").format(method=run.method))


@app.command("report")
def report(
    runs: list[str] = typer.Argument(None, help=_("Saved runs (file names or parts of them; default: all).")),
    fmt: str = typer.Option("md", "--format", help=_("md or html.")),
    output: Path | None = typer.Option(None, "--output", "-o", help=_("Write to this file instead of the screen.")),
) -> None:
    """Saved runs as one table: your models x metrics, next to the published scores."""
    import sys

    from homellm.bench.report import load_runs, markdown, to_html
    from homellm.errors import UsageError

    if fmt not in ("md", "html"):
        raise UsageError(_("--format must be md or html"))
    loaded: list[dict[str, Any]] = load_runs(_runs_dir(), runs or [])
    if not loaded:
        raise UsageError(_("no saved runs yet: run `homellm bench speed` or `homellm bench quality` first"))
    text = markdown(loaded) if fmt == "md" else to_html(loaded)
    if output:
        output.write_text(text)
        console.print(_("wrote {output}").format(output=output))
    else:
        sys.stdout.write(text)
