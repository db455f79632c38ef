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
from homellm.hardware.types import GIB, CpuCalibration, GpuDevice, HardwareProfile
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


def _cpu_decode_s(read: float, n_layers: int, measured: CpuCalibration | None) -> float:
    if measured is not None:
        return read / (measured.bandwidth_gbs * 1e9) + measured.overhead_s_per_layer * n_layers
    return read / (DEFAULT_CPU_BANDWIDTH_GBS * 1e9 * CPU_DECODE_EFFICIENCY)


def _cpu_flops(measured: CpuCalibration | None, cores: int) -> float:
    if measured is not None and measured.flops:
        return measured.flops
    return max(cores, 1) * CPU_TFLOPS_PER_CORE * 1e12


def _gpu_seconds(g: GpuDevice, read: float, flops: float, catalog: Catalog) -> tuple[float, float]:
    assert g.bandwidth_gbs is not None and g.fp16_tflops is not None
    cal = calibration(catalog)
    tg_eff, pp_eff = cal.get(g.vendor) or cal["nvidia"]
    return read / (g.bandwidth_gbs * 1e9 * tg_eff), flops / (g.fp16_tflops * 1e12 * pp_eff)


def estimate_speed(
    model: ResolvedModel,
    params: ContextParams,
    hw: HardwareProfile,
    devices: list[DeviceUse],
    catalog: Catalog,
) -> tuple[float | None, float | None, list[str]]:
    """(decode tokens/s at a full context, prefill tokens/s, notes); None where it can't be estimated.

    A worker's device (``remote``) is timed like a local device of its kind, from what the worker reported
    (its GPU, or its CPU calibration), plus the link's cost per token (:mod:`homellm.plan.link`).
    """
    from homellm.plan.link import link_cost

    cal = calibration(catalog)
    gpus = {g.name: g for g in hw.gpus}
    remotes = {r.label: r for r in hw.remotes}
    flops_per_token = 2 * active_params(model)
    total_active = sum(d.active_weight_bytes for d in devices) or 1.0
    decode_s = prefill_s = 0.0
    notes: list[str] = []
    for d in devices:
        read = d.active_weight_bytes + d.kv_read_bytes
        if read <= 0:
            continue
        flops = flops_per_token * d.active_weight_bytes / total_active
        if d.kind == "remote":
            r = remotes[d.name]
            if r.gpu is not None and r.gpu.bandwidth_gbs and r.gpu.fp16_tflops:
                tg, pp = _gpu_seconds(r.gpu, read, flops, catalog)
            elif r.kind == "gpu":
                notes.append(_("{device} is not in the catalog: no speed estimate").format(device=r.description))
                return None, None, notes
            else:
                tg = _cpu_decode_s(read, len(d.layers), r.cpu_calibration)
                pp = flops / _cpu_flops(r.cpu_calibration, r.cpu.cores if r.cpu else 1)
            cost = link_cost(model.arch, params.ctx, d.holds_output, r.worker, r.link)
            batch = params.n_ubatch
            per_batch = link_cost(model.arch, params.ctx, d.holds_output, r.worker, r.link, n_tokens=batch)
            decode_s += tg + cost.seconds
            prefill_s += pp + per_batch.seconds / batch
            notes.append(
                _("the link to {worker} adds {ms:.1f} ms per token: {rtt:.1f} ms round trip, {up:.1f} KiB up, "
                  "{down:.1f} KiB down (measured {date})").format(
                    worker=r.worker, ms=cost.seconds * 1e3, rtt=r.link.rtt_s * 1e3, up=cost.up_bytes / 1024,
                    down=cost.down_bytes / 1024, date=r.link.measured_at[:10])
            )  # fmt: skip
        elif d.kind == "gpu":
            g = gpus[d.name]
            if g.bandwidth_gbs is None or g.fp16_tflops is None:
                notes.append(_("{gpu} is not in the catalog: no speed estimate (pass --gpu NAME)").format(gpu=g.name))
                return None, None, notes
            tg, pp = _gpu_seconds(g, read, flops, catalog)
            decode_s += tg
            prefill_s += pp
        else:
            measured = hw.cpu_calibration
            decode_s += _cpu_decode_s(read, len(d.layers), measured)
            cpu_s = flops / _cpu_flops(measured, hw.cpu.cores)
            fastest = max((g for g in hw.gpus if g.fp16_tflops), key=lambda g: g.fp16_tflops or 0, default=None)
            if fastest is not None and fastest.fp16_tflops:
                streamed = d.active_weight_bytes / (PCIE_GBS * 1e9) / params.n_ubatch
                cpu_s = min(
                    cpu_s,
                    streamed + flops / (fastest.fp16_tflops * 1e12 * (cal.get(fastest.vendor) or cal["nvidia"])[1]),
                )
            prefill_s += cpu_s
            if d.layers and hw.gpus:
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
