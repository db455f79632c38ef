"""``homellm bench report``: saved runs as one comparison table, next to published scores."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from homellm.errors import UsageError
from homellm.i18n import _


def load_runs(folder: Path, names: list[str]) -> list[dict[str, Any]]:
    files = sorted(folder.glob("*.json"))
    if names:
        files = [f for f in files if any(n in f.stem for n in names)]
        if not files:
            raise UsageError(
                _("no saved run matches {names}; see {folder}").format(names=", ".join(names), folder=folder)
            )
    return [json.loads(f.read_text()) | {"file": f.stem} for f in files]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """(speed header, speed rows, quality header, quality rows)."""
    speed_h = ["model", "server", "concurrency", "prompt tok", "TTFT p50 (ms)", "TPOT p50 (ms)",
               "decode tok/s (client)", "decode tok/s (server)", "output tok/s", "errors"]  # fmt: skip
    quality_h = ["model", "suite", "ours (95% CI)", "flexible", "n", "published", "server"]
    speed, quality = [], []
    for r in runs:
        if r.get("kind") == "speed":
            for lv in r["levels"]:
                srv = lv["decode_server"]["p50"]
                speed.append([r["model"], r["server"], str(lv["concurrency"]),
                              str(lv["prompt_tokens"] or r.get("calibrated_prompt_tokens") or "n/a"),
                              f"{1000 * lv['ttft']['p50']:.0f}" if lv["ttft"]["p50"] else "-",
                              f"{1000 * lv['tpot']['p50']:.1f}" if lv["tpot"]["p50"] else "-",
                              f"{lv['decode_client']['p50']:.1f}" if lv["decode_client"]["p50"] else "-",
                              f"{srv:.1f}" if srv else "not reported",
                              f"{lv['output_tokens_per_s']:.1f}", str(lv["errors"])])  # fmt: skip
        elif r.get("kind") == "quality":
            lo, hi = r["ci95"]
            pub = "; ".join(f"{p['score']:g} ({p.get('setting') or 'as published'})" for p in r["published"]) or "-"
            quality.append([r["model"], r["suite"], f"{_pct(r['accuracy'])} ({_pct(lo)}-{_pct(hi)})",
                            _pct(r["flexible_accuracy"]), str(r["n"]), pub, r["server"]])  # fmt: skip
    return speed_h, speed, quality_h, quality


def markdown(runs: list[dict[str, Any]]) -> str:
    sh, sr, qh, qr = rows(runs)
    out = []
    for title, head, body in (("Speed", sh, sr), ("Quality", qh, qr)):
        if body:
            out += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
            out.append("")
    if qr:
        out.append(
            "Ours: generative, zero-shot, temperature 0, through the chat API; published scores often use "
            "few-shot prompts or log-likelihood scoring, so differences of a few points are expected."
        )
    return "\n".join(out) + "\n"


def to_html(runs: list[dict[str, Any]]) -> str:
    sh, sr, qh, qr = rows(runs)
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
    )
    parts = ["<!doctype html><meta charset='utf-8'><title>homellm bench report</title>", f"<style>{style}</style>"]
    for title, head, body in (("Speed", sh, sr), ("Quality", qh, qr)):
        if body:
            header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
            parts.append(f"<h2>{title}</h2><table><tr>{header}</tr>")
            for row in body:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
    return "\n".join(parts) + "\n"
