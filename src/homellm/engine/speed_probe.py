"""Time the real llama.cpp on this machine: prompt processing and greedy decoding of a small model.

Runs in a child process (like :mod:`homellm.engine.buffers`) with the thread count homellm's embedded
engine decodes with (llama-cpp-python's server default: half the logical CPUs). Prompts are timed with
the same count: with every CPU busy in llama.cpp, its spinning threads make prompt speed erratic as soon
as another process holds a core (15 to 271 tok/s for SmolLM2 on a shared 2-core machine, against a
steady ~140 with one thread). Each figure is the median of a few timed runs after a warm-up.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from homellm.errors import EngineError
from homellm.i18n import _

PROMPT_TOKENS = 128
DECODE_TOKENS = 64
RUNS = 5
_TEXT = (
    "Local language models read every weight once per generated token, so memory bandwidth sets their speed. "
    "Prompt processing multiplies matrices instead and is limited by arithmetic. "
)


def engine_threads() -> tuple[int, int]:
    """(decode threads, prompt threads): llama_cpp.server's decode default, for both."""
    threads = max((os.cpu_count() or 1) // 2, 1)
    return threads, threads


@dataclass(frozen=True)
class EngineSpeed:
    prefill_tokens_per_s: float  # the median of the runs
    decode_tokens_per_s: float
    prompt_tokens: int
    decode_tokens: int
    decode_threads: int
    prefill_threads: int
    n_ctx: int
    runs: tuple[tuple[float, float], ...] = ()  # every timed run: (prefill, decode) tokens/s

    def subset(self, picked: slice) -> EngineSpeed:
        """The same measurement from some of its runs (e.g. every other one)."""
        runs = self.runs[picked]
        return replace(self, prefill_tokens_per_s=statistics.median(r[0] for r in runs),
                       decode_tokens_per_s=statistics.median(r[1] for r in runs), runs=runs)  # fmt: skip


def _child(model_path: str, runs: int, n_ctx: int) -> None:  # pragma: no cover - runs in the child
    import llama_cpp

    decode_threads, prefill_threads = engine_threads()
    llm = llama_cpp.Llama(
        model_path, n_ctx=n_ctx, n_threads=decode_threads, n_threads_batch=prefill_threads, n_gpu_layers=0,
        verbose=False,
    )  # fmt: skip
    prompt = llm.tokenize((_TEXT * 40).encode())[:PROMPT_TOKENS]

    def once() -> tuple[float, float]:
        llm.reset()  # type: ignore[no-untyped-call]
        start = time.perf_counter()
        llm.eval(prompt)
        prefill = len(prompt) / (time.perf_counter() - start)
        start = time.perf_counter()
        for _token in range(DECODE_TOKENS):
            llm.eval([llm.sample(top_k=1, temp=0.0)])
        return prefill, DECODE_TOKENS / (time.perf_counter() - start)

    once()  # warm-up: page the weights in, let the CPU clock up
    results = tuple(once() for _run in range(runs))
    speed = EngineSpeed(
        statistics.median(r[0] for r in results), statistics.median(r[1] for r in results), len(prompt),
        DECODE_TOKENS, decode_threads, prefill_threads, n_ctx, results,
    )  # fmt: skip
    print(json.dumps(asdict(speed)))


def measure_engine_speed(model_path: Path, runs: int = RUNS, n_ctx: int = 1024, timeout: float = 600.0) -> EngineSpeed:
    """Median prefill and decode tokens/s of ``model_path`` on the CPU with the embedded engine's threads."""
    args = json.dumps({"model": str(model_path), "runs": runs, "n_ctx": n_ctx})
    try:
        proc = subprocess.run([sys.executable, "-m", "homellm.engine.speed_probe", args], capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise EngineError(
            _("llama.cpp took longer than {timeout:.0f}s to time {model}").format(
                timeout=timeout, model=model_path.name
            )
        ) from exc
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EngineError(
            _("llama.cpp failed to run {model} (exit {code}): {line}").format(
                model=model_path.name, code=proc.returncode, line=tail[0]
            )
        )
    data = json.loads(lines[-1])
    data["runs"] = tuple(tuple(r) for r in data.get("runs", ()))
    return EngineSpeed(**data)


if __name__ == "__main__":  # pragma: no cover - the child entry point
    request = json.loads(sys.argv[1])
    _child(request["model"], request["runs"], request["n_ctx"])
