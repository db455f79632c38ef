"""Decode and prefill speed: bytes (or FLOPs) per token over what each device delivers.

Decode is memory-bound: every token reads the active weights (for MoE only the
experts in use) and the KV cache once. Time per token is the sum over devices
of ``bytes / (bandwidth * efficiency)``, so a partial offload costs the GPU part
plus the CPU part. The efficiencies are calibrated per vendor on the published
llama.cpp measurements in the catalog (``measurements`` in gpus.toml).

Prefill is compute-bound: ``2 * active parameters`` FLOPs per token, shared
between devices like the weights, over each device's FP16 throughput times a
calibrated efficiency.
"""

from __future__ import annotations

import statistics
from functools import cache
from typing import TYPE_CHECKING

from homellm.catalog import Catalog
from homellm.hardware.types import GIB, HardwareProfile
from homellm.i18n import _
from homellm.plan.memory import ContextParams

if TYPE_CHECKING:
    from homellm.plan.fit import DeviceUse, ResolvedModel

# CPU inference: dual-channel DDR4-3200 reads 51.2 GB/s and DDR5-5600 89.6 GB/s on paper;
# without a way to read the DIMM speed we assume a typical desktop in between.
DEFAULT_CPU_BANDWIDTH_GBS = 64.0
CPU_DECODE_EFFICIENCY = 0.6
CPU_TFLOPS_PER_CORE = 0.05  # what llama.cpp's AVX2 matmuls reach per core at ~3 GHz
# With a GPU present, llama.cpp runs large batches of CPU-resident layers on the GPU
# (op_offload), streaming their weights over PCIe once per micro-batch.
PCIE_GBS = 25.0


@cache
def calibration(catalog: Catalog) -> dict[str, tuple[float, float]]:
    """Per vendor: (decode efficiency, prefill efficiency), medians over the published measurements."""
    by_vendor: dict[str, tuple[list[float], list[float]]] = {}
    for m in catalog.measurements:
        gpu = catalog.gpu(m.gpu)
        tg_eff = m.tg_tokens_per_s * m.model_size_gib * GIB / (gpu.bandwidth_gbs * 1e9)
        pp_eff = m.pp_tokens_per_s * 2 * m.params_b * 1e9 / (gpu.fp16_tflops * 1e12)
        tg, pp = by_vendor.setdefault(gpu.vendor, ([], []))
        tg.append(tg_eff)
        pp.append(pp_eff)
    return {v: (statistics.median(tg), statistics.median(pp)) for v, (tg, pp) in by_vendor.items()}


def _cpu_basis(hw: HardwareProfile) -> str:
    measured = hw.cpu_calibration
    if measured is None:
        return _(
            "CPU speed assumes a typical desktop ({bw:g} GB/s of RAM bandwidth); `homellm plan --measure` measures "
            "this machine"
        ).format(bw=DEFAULT_CPU_BANDWIDTH_GBS)
    if measured.method == "probe":
        return _("CPU speed uses this machine's measured memory bandwidth ({bw:.1f} GB/s, {date})").format(
            bw=measured.bandwidth_gbs, date=measured.measured_at[:10]
        )
    return _(
        "CPU speed calibrated on this machine ({date}): {bw:.1f} GB/s measured, {ms:.3f} ms per layer and token, "
        "from {reference}"
    ).format(date=measured.measured_at[:10], bw=measured.bandwidth_gbs, ms=measured.overhead_s_per_layer * 1e3,
             reference=measured.reference)  # fmt: skip


def active_params(model: ResolvedModel) -> float:
    """Parameters used per token: the catalog's figure, or from the file's architecture."""
    if model.spec is not None:
        return model.spec.params_active
    from homellm.plan.layout import tensor_layout

    arch = model.arch
    share = arch.n_expert_used / arch.n_expert if arch.n_expert else 1.0
    return float(sum(t.n_elements * (share if t.is_expert else 1.0) for t in tensor_layout(arch)))


def estimate_speed(
    model: ResolvedModel,
    params: ContextParams,
    hw: HardwareProfile,
    devices: list[DeviceUse],
    catalog: Catalog,
) -> tuple[float | None, float | None, list[str]]:
    """(decode tokens/s at a full context, prefill tokens/s, notes); None where it can't be estimated."""
    cal = calibration(catalog)
    gpus = {g.name: g for g in hw.gpus}
    flops_per_token = 2 * active_params(model)
    total_active = sum(d.active_weight_bytes for d in devices) or 1.0
    decode_s = prefill_s = 0.0
    notes: list[str] = []
    for d in devices:
        read = d.active_weight_bytes + d.kv_read_bytes
        if read <= 0:
            continue
        flops = flops_per_token * d.active_weight_bytes / total_active
        if d.kind == "gpu":
            g = gpus[d.name]
            if g.bandwidth_gbs is None or g.fp16_tflops is None:
                notes.append(_("{gpu} is not in the catalog: no speed estimate (pass --gpu NAME)").format(gpu=g.name))
                return None, None, notes
            tg_eff, pp_eff = cal.get(g.vendor) or cal["nvidia"]
            decode_s += read / (g.bandwidth_gbs * 1e9 * tg_eff)
            prefill_s += flops / (g.fp16_tflops * 1e12 * pp_eff)
        else:
            measured = hw.cpu_calibration
            if measured is not None:
                decode_s += read / (measured.bandwidth_gbs * 1e9) + measured.overhead_s_per_layer * len(d.layers)
            else:
                decode_s += read / (DEFAULT_CPU_BANDWIDTH_GBS * 1e9 * CPU_DECODE_EFFICIENCY)
            if measured is not None and measured.flops:
                cpu_s = flops / measured.flops
            else:
                cpu_s = flops / (max(hw.cpu.cores, 1) * CPU_TFLOPS_PER_CORE * 1e12)
            fastest = max((g for g in hw.gpus if g.fp16_tflops), key=lambda g: g.fp16_tflops or 0, default=None)
            if fastest is not None and fastest.fp16_tflops:
                streamed = d.active_weight_bytes / (PCIE_GBS * 1e9) / params.n_ubatch
                cpu_s = min(
                    cpu_s,
                    streamed + flops / (fastest.fp16_tflops * 1e12 * (cal.get(fastest.vendor) or cal["nvidia"])[1]),
                )
            prefill_s += cpu_s
            if d.layers and len(devices) > 1:
                notes.append(
                    _("{n} of {layers} layers run on the CPU: they dominate the time per token").format(
                        n=len(d.layers), layers=model.arch.n_layer
                    )
                )
    if decode_s <= 0:
        return None, None, notes
    notes.append(_("decode speed is at a full {ctx:,}-token context; short chats run faster").format(ctx=params.ctx))
    if any(d.kind == "cpu" and d.layers for d in devices):
        notes.append(_cpu_basis(hw))
    return 1.0 / decode_s, 1.0 / prefill_s, notes
