"""CPU model, cores and the ISA flags llama.cpp's CPU backend cares about."""

from __future__ import annotations

import platform
from pathlib import Path

from homellm.hardware.types import CpuInfo

# the flags that decide which llama.cpp CPU kernels run
RELEVANT_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_int8",
    "neon",
    "asimd",
    "sve",
)


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """Model name and relevant flags from Linux ``/proc/cpuinfo``."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return model, tuple(f for f in RELEVANT_FLAGS if f in flags)


def detect_cpu() -> CpuInfo:
    import psutil

    model, flags = "", tuple[str, ...]()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    return CpuInfo(
        model=model or platform.processor() or platform.machine() or "unknown CPU",
        cores=psutil.cpu_count(logical=False) or 1,
        threads=psutil.cpu_count(logical=True) or 1,
        flags=flags,
        arch=platform.machine(),
    )
