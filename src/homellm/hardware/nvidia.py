"""NVIDIA GPUs through NVML (nvidia-ml-py), with ``nvidia-smi`` as a fallback."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from homellm.hardware.types import GpuDevice

MIB = 1024 * 1024
NVSMI_QUERY = ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"]


def detect_nvml(nvml: Any = None) -> list[GpuDevice]:
    """Every NVIDIA GPU NVML reports; [] when there is no driver."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return []
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return []
    try:
        devices = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode()
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                GpuDevice(name=str(name), vendor="nvidia", memory_bytes=int(mem.total), free_bytes=int(mem.free))
            )
        return devices
    finally:
        nvml.nvmlShutdown()


def parse_nvidia_smi(output: str) -> list[GpuDevice]:
    """Parse ``nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits``."""
    devices = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        name, total, free = parts
        devices.append(
            GpuDevice(
                name=name,
                vendor="nvidia",
                memory_bytes=int(total) * MIB,
                free_bytes=int(free) * MIB if free.isdigit() else None,
            )
        )
    return devices


def detect_nvidia_smi() -> list[GpuDevice]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(NVSMI_QUERY, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def detect_nvidia() -> list[GpuDevice]:
    return detect_nvml() or detect_nvidia_smi()


@dataclass(frozen=True)
class GpuUsage:
    """One GPU now: memory in bytes, utilization in percent (None where it cannot be read)."""

    name: str
    memory_total: int
    memory_used: int
    memory_free: int
    utilization: int | None


def gpu_usage(nvml: Any = None) -> list[GpuUsage]:
    """What every NVIDIA GPU is doing now (NVML; the nvidia-smi fallback has no utilization); [] without one."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            pynvml = None
        nvml = pynvml
    if nvml is not None:
        try:
            nvml.nvmlInit()
        except Exception:  # no driver: NVML cannot say anything
            nvml = None
    if nvml is None:
        return [
            GpuUsage(d.name, d.memory_bytes, d.memory_bytes - (d.free_bytes or 0), d.free_bytes or 0, None)
            for d in detect_nvidia_smi()
        ]
    try:
        out = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:  # not supported on this device
                utilization = None
            out.append(GpuUsage(name.decode() if isinstance(name, bytes) else str(name), int(mem.total),
                                int(mem.used), int(mem.free), utilization))  # fmt: skip
        return out
    finally:
        nvml.nvmlShutdown()
