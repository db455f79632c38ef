"""Hardware detection. GPUs and NVML cannot exist here, so their *outputs* are captured and parsed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from homellm.catalog import Catalog
from homellm.errors import NotFoundError, UsageError
from homellm.hardware.apple import apple_hardware, parse_sysctl
from homellm.hardware.cpu import parse_cpuinfo
from homellm.hardware.detect import apply_overrides, detect_hardware, match_catalog
from homellm.hardware.nvidia import GpuUsage, detect_nvml, gpu_usage, parse_nvidia_smi
from homellm.hardware.types import GIB

CAPTURED = Path(__file__).parent / "captured"


def test_parses_nvidia_smi_for_two_gpus(catalog: Catalog) -> None:
    gpus = parse_nvidia_smi((CAPTURED / "nvidia-smi-two-gpus.csv").read_text())
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090"]
    assert gpus[0].memory_bytes == 24564 * 1024 * 1024
    matched = [match_catalog(g, catalog) for g in gpus]
    assert [g.catalog_name for g in matched] == ["RTX 4090", "RTX 3090"]
    assert matched[0].bandwidth_gbs == 1008


class FakeNVML:
    """Stands in for pynvml (no NVIDIA driver here), answering like NVML does for two cards."""

    def __init__(self, cards: list[tuple[bytes, int, int]], busy: list[int] | None = None) -> None:
        self.cards = cards
        self.busy = busy  # percent per card; None: the device does not report utilization (NVML raises)
        self.shut = False

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return self.cards[h][0]

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(total=self.cards[h][1], free=self.cards[h][2], used=self.cards[h][1] - self.cards[h][2])

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        if self.busy is None:
            raise RuntimeError("NVMLError_NotSupported")
        return SimpleNamespace(gpu=self.busy[h], memory=0)


def test_nvml_reports_every_gpu() -> None:
    nvml = FakeNVML(
        [(b"NVIDIA GeForce RTX 5090", 32 * GIB, 30 * GIB), (b"NVIDIA GeForce RTX 5090", 32 * GIB, 31 * GIB)]
    )
    gpus = detect_nvml(nvml)
    assert len(gpus) == 2 and gpus[1].free_bytes == 31 * GIB and nvml.shut


def test_gpu_usage_reads_memory_and_utilization() -> None:
    nvml = FakeNVML([(b"NVIDIA GeForce RTX 4090", 24 * GIB, 15 * GIB), (b"Tesla P40", 24 * GIB, 24 * GIB)], [37, 0])
    assert gpu_usage(nvml) == [
        GpuUsage("NVIDIA GeForce RTX 4090", 24 * GIB, 9 * GIB, 15 * GIB, 37),
        GpuUsage("Tesla P40", 24 * GIB, 0, 24 * GIB, 0),
    ]
    assert nvml.shut
    unsupported = FakeNVML([(b"GRID K1", 4 * GIB, 4 * GIB)])
    assert gpu_usage(unsupported)[0].utilization is None


def test_nvml_without_a_driver_is_no_gpu() -> None:
    class NoDriver(FakeNVML):
        def nvmlInit(self) -> None:
            raise RuntimeError("NVML Shared Library Not Found")

    assert detect_nvml(NoDriver([])) == []


def test_apple_silicon_unified_memory(catalog: Catalog) -> None:
    cpu, gpu, ram = apple_hardware(parse_sysctl((CAPTURED / "sysctl-m2-max.txt").read_text()))
    assert cpu.model == "Apple M2 Max" and cpu.cores == 12 and ram == 64 * GIB
    assert gpu is not None and gpu.unified and gpu.usable_bytes == int(64 * GIB * 0.75)


def test_apple_wired_limit_raises_usable_memory() -> None:
    values = parse_sysctl((CAPTURED / "sysctl-m2-max.txt").read_text())
    values["iogpu.wired_limit_mb"] = str(56 * 1024)
    _, gpu, _ = apple_hardware(values)
    assert gpu is not None and gpu.usable_bytes == 56 * GIB


def test_cpuinfo_flags() -> None:
    model, flags = parse_cpuinfo((CAPTURED / "proc-cpuinfo-epyc.txt").read_text())
    assert model == "AMD EPYC"
    assert "avx2" in flags and "fma" in flags


def test_detection_on_this_machine_degrades_gracefully(catalog: Catalog, tmp_path: Path) -> None:
    hw = detect_hardware(tmp_path / "missing" / "models", catalog)
    assert hw.ram_bytes > 0 and hw.cpu.cores >= 1
    assert hw.disk_free_bytes is not None  # measured on the nearest existing parent


def test_overrides(catalog: Catalog, tmp_path: Path) -> None:
    hw = detect_hardware(tmp_path, catalog)
    two = apply_overrides(hw, catalog, ["RTX 5070 Ti", "rtx 5070ti"], None, 32)
    assert [g.name for g in two.gpus] == ["RTX 5070 Ti", "RTX 5070 Ti"] and two.ram_bytes == 32 * GIB
    custom = apply_overrides(hw, catalog, None, 12, None)
    assert custom.gpus[-1].memory_bytes == 12 * GIB
    with pytest.raises(NotFoundError, match="RTX 5070"):
        apply_overrides(hw, catalog, ["RTX 5071"], None, None)
    with pytest.raises(UsageError):
        apply_overrides(hw, catalog, None, -1, None)
