"""``homellm plan --measure``: measure this machine's CPU inference speed and cache it.

Two measurements, combined into the speed model's terms (:class:`~homellm.hardware.types.CpuCalibration`):

* a memory bandwidth probe (all cores reading a 512 MiB array), always;
* when the embedded engine is installed, a short real llama.cpp run on the demo model (SmolLM2-135M):
  its decode time per token, less the bytes it read over the probed bandwidth, is llama.cpp's fixed
  cost per layer and token; its prompt speed gives the CPU's effective FLOP/s.

Published GPU measurements stay the calibration for GPUs (:mod:`homellm.plan.speed`).
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

from homellm.catalog import Catalog
from homellm.engine.speed_probe import (
    DECODE_TOKENS,
    PROMPT_TOKENS,
    EngineSpeed,
    engine_threads,
    measure_engine_speed,
)
from homellm.hardware.calibration import save_calibration
from homellm.hardware.membench import memory_bandwidth_gbs
from homellm.hardware.types import CpuCalibration, CpuInfo, HardwareProfile
from homellm.i18n import _
from homellm.plan.fit import fit_model, from_gguf
from homellm.plan.memory import ContextParams
from homellm.plan.speed import active_params


def engine_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def calibrate(
    home: Path, models_dir: Path, cpu: CpuInfo, catalog: Catalog, engine_speed: EngineSpeed | None = None
) -> CpuCalibration:
    """Measure, save to ``home`` and return this machine's CPU calibration.

    ``engine_speed`` is a llama.cpp timing of the demo model already taken (the tests take one run set and
    split it); without it the engine is timed here.
    """
    threads = engine_threads()[0]
    bandwidth = memory_bandwidth_gbs(threads=threads)  # what the decoding threads can read
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if not engine_installed():
        result = CpuCalibration(bandwidth, 0.0, None, "probe", threads, threads, cpu.model, now,
                                _("memory bandwidth probe; the llama.cpp engine is not installed"))  # fmt: skip
        save_calibration(home, result)
        return result
    from homellm.engine.demo import demo_model
    from homellm.plan.gguf_file import read_gguf

    path = demo_model(models_dir)
    speed = engine_speed or measure_engine_speed(path)
    model = from_gguf(read_gguf(path), "SmolLM2-135M")
    # the bytes one decoded token read: weights plus the KV cache at the run's mean position
    cpu_only = HardwareProfile((), cpu, 1 << 40, None, None, "", "")
    fit = fit_model(model, ContextParams(ctx=PROMPT_TOKENS + DECODE_TOKENS // 2), cpu_only, catalog, gpu_layers=0)
    device = fit.devices[-1]
    read = device.active_weight_bytes + device.kv_read_bytes
    per_token = 1 / speed.decode_tokens_per_s
    # llama.cpp read `read` bytes per token in `per_token` seconds, so memory delivers at least that much
    # (a probe that ran while another process held the core can say less)
    bandwidth = max(bandwidth, read / per_token / 1e9)
    overhead = max(0.0, per_token - read / (bandwidth * 1e9)) / model.arch.n_layer
    flops = 2 * active_params(model) * speed.prefill_tokens_per_s
    reference = _(
        "llama.cpp on {model} {quant} with {dt} thread(s): decode {decode:.1f} tok/s, prefill {prefill:.0f} tok/s, "
        "medians of 5 runs"
    ).format(model=model.label, quant=model.quant, decode=speed.decode_tokens_per_s, dt=speed.decode_threads,
             prefill=speed.prefill_tokens_per_s, pt=speed.prefill_threads)  # fmt: skip
    result = CpuCalibration(bandwidth, overhead, flops, "llama.cpp", speed.decode_threads, speed.prefill_threads,
                            cpu.model, now, reference)  # fmt: skip
    save_calibration(home, result)
    return result
