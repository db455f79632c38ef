"""Put the machine together from every probe, match it to the catalog, apply the user's overrides."""

from __future__ import annotations

import platform
import shutil
from dataclasses import replace
from pathlib import Path

from homellm.catalog import Catalog, normalize
from homellm.catalog.schema import GpuSpec
from homellm.errors import UsageError
from homellm.hardware.types import GIB, GpuDevice, HardwareProfile
from homellm.i18n import N_, _

# notes of detect(), matched again (in the same language) when --gpu or --vram replaces what was detected
NO_GPU = N_("no GPU detected (NVML and sysctl found none): estimates assume CPU-only inference")
NOT_IN_CATALOG = N_("{gpu} is not in the catalog: speed estimates for it are unavailable")


def match_catalog(gpu: GpuDevice, catalog: Catalog) -> GpuDevice:
    """Fill bandwidth and FLOPS from the catalog entry whose name the device's name contains."""
    key = normalize(gpu.name)
    best = None
    for spec in catalog.gpus:
        for candidate in (spec.name, *spec.aliases):
            c = normalize(candidate)
            longer = best is None or len(c) > len(normalize(best.name))
            # the memory size must agree too (RTX 4060 Ti 8GB vs 16GB)
            same_memory = abs(spec.vram_gib * GIB - gpu.memory_bytes) < 4 * GIB or gpu.unified
            if c and c in key and longer and same_memory:
                best = spec
    if best is None:
        return gpu
    fraction = gpu.usable_fraction if gpu.unified else best.usable_fraction
    return replace(
        gpu,
        bandwidth_gbs=best.bandwidth_gbs,
        fp16_tflops=best.fp16_tflops,
        catalog_name=best.name,
        usable_fraction=fraction,
    )


def device_from_spec(spec: GpuSpec, origin: str, name: str | None = None) -> GpuDevice:
    """A device as the catalog describes it (for --gpu and for shopping)."""
    return GpuDevice(
        name=name or spec.name,
        vendor=spec.vendor,
        memory_bytes=int(spec.vram_gib * GIB),
        bandwidth_gbs=spec.bandwidth_gbs,
        fp16_tflops=spec.fp16_tflops,
        unified=spec.unified_memory,
        usable_fraction=spec.usable_fraction,
        catalog_name=spec.name,
        origin=origin,
    )


def _disk_free(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None


def detect_hardware(models_dir: Path, catalog: Catalog, home: Path | None = None) -> HardwareProfile:
    """Probe this machine. Every probe degrades to 'not found' rather than failing.

    With ``home``, a CPU calibration measured there on this CPU (``homellm plan --measure``) is attached.
    """
    import psutil

    from homellm.hardware.apple import detect_apple
    from homellm.hardware.cpu import detect_cpu
    from homellm.hardware.nvidia import detect_nvidia

    notes: list[str] = []
    vm = psutil.virtual_memory()
    ram, available = int(vm.total), int(vm.available)
    gpus: list[GpuDevice] = []
    apple = detect_apple()
    if apple:
        cpu, apple_gpu, ram = apple
        if apple_gpu:
            gpus.append(apple_gpu)
    else:
        cpu = detect_cpu()
        gpus.extend(detect_nvidia())
    if not gpus:
        notes.append(_(NO_GPU))
    matched = []
    for gpu in gpus:
        m = match_catalog(gpu, catalog)
        if m.catalog_name is None:
            notes.append(_(NOT_IN_CATALOG).format(gpu=gpu.name))
        matched.append(m)
    from homellm.hardware.calibration import load_calibration

    return HardwareProfile(
        gpus=tuple(matched),
        cpu=cpu,
        cpu_calibration=load_calibration(home, cpu) if home is not None else None,
        ram_bytes=ram,
        ram_available_bytes=available,
        disk_free_bytes=_disk_free(models_dir),
        models_dir=str(models_dir),
        os=f"{platform.system()} {platform.release()}",
        notes=tuple(notes),
    )


def apply_overrides(
    hw: HardwareProfile,
    catalog: Catalog,
    gpu_names: list[str] | None = None,
    vram_gib: float | None = None,
    ram_gib: float | None = None,
) -> HardwareProfile:
    """``--gpu NAME`` (repeatable) replaces the detected GPUs; ``--vram``/``--ram`` set sizes in GiB."""
    gpus = list(hw.gpus)
    notes = list(hw.notes)
    if gpu_names:
        gpus = [device_from_spec(catalog.gpu(name), origin="--gpu") for name in gpu_names]
        detected = {_(NO_GPU), *(_(NOT_IN_CATALOG).format(gpu=g.name) for g in hw.gpus)}
        notes = [n for n in notes if n not in detected]
    if vram_gib is not None:
        if vram_gib <= 0:
            raise UsageError(_("--vram must be a positive number of GiB"))
        if gpus:
            gpus = [replace(g, memory_bytes=int(vram_gib * GIB), free_bytes=None, origin="--vram") for g in gpus]
        else:
            gpus = [
                GpuDevice(
                    name=_("GPU with {gib:g} GiB").format(gib=vram_gib),
                    vendor="nvidia",
                    memory_bytes=int(vram_gib * GIB),
                    origin="--vram",
                )
            ]
            notes = [n for n in notes if n != _(NO_GPU)]
            notes.append(_("--vram without --gpu: memory fit only; add --gpu NAME for speed estimates"))
    ram = hw.ram_bytes
    available = hw.ram_available_bytes
    if ram_gib is not None:
        if ram_gib <= 0:
            raise UsageError(_("--ram must be a positive number of GiB"))
        ram, available = int(ram_gib * GIB), None
    unified = [g for g in gpus if g.unified]
    if unified and gpu_names:
        # unified memory: the chosen Mac's memory *is* the RAM
        ram, available = unified[0].memory_bytes, None
        if ram_gib is not None:
            notes.append(_("--ram is ignored with {gpu}: its unified memory is the RAM").format(gpu=unified[0].name))
    return replace(hw, gpus=tuple(gpus), ram_bytes=ram, ram_available_bytes=available, notes=tuple(notes))
