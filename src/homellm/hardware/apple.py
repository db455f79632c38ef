"""Apple Silicon: unified memory read through ``sysctl``."""

from __future__ import annotations

import platform
import subprocess

from homellm.hardware.types import CpuInfo, GpuDevice

SYSCTL_KEYS = [
    "machdep.cpu.brand_string",
    "hw.memsize",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "iogpu.wired_limit_mb",
]
# macOS lets the GPU wire about 3/4 of unified memory by default (recommendedMaxWorkingSetSize);
# `sudo sysctl iogpu.wired_limit_mb=N` raises it.
DEFAULT_WIRED_FRACTION = 0.75


def parse_sysctl(output: str) -> dict[str, str]:
    """Parse ``sysctl KEY...`` output (``key: value`` lines)."""
    values = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def apple_hardware(values: dict[str, str]) -> tuple[CpuInfo, GpuDevice | None, int]:
    """CPU, the unified-memory GPU and RAM bytes from parsed sysctl values."""
    brand = values.get("machdep.cpu.brand_string", "Apple Silicon")
    mem = int(values.get("hw.memsize", "0") or 0)
    cpu = CpuInfo(
        model=brand,
        cores=int(values.get("hw.physicalcpu", "1") or 1),
        threads=int(values.get("hw.logicalcpu", "1") or 1),
        flags=("neon", "dotprod"),
        arch="arm64",
    )
    if not brand.startswith("Apple"):
        return cpu, None, mem
    wired_mb = int(values.get("iogpu.wired_limit_mb", "0") or 0)
    fraction = min(wired_mb * 1024 * 1024 / mem, 1.0) if wired_mb and mem else DEFAULT_WIRED_FRACTION
    gpu = GpuDevice(name=brand, vendor="apple", memory_bytes=mem, unified=True, usable_fraction=fraction)
    return cpu, gpu, mem


def detect_apple() -> tuple[CpuInfo, GpuDevice | None, int] | None:
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return None
    try:
        # without check: iogpu.wired_limit_mb is missing on older macOS, sysctl then exits 1 but prints the rest
        out = subprocess.run(["sysctl", *SYSCTL_KEYS], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return apple_hardware(parse_sysctl(out))
