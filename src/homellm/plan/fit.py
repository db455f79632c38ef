"""``homellm fit``: will this model run here, how is it placed, and how fast?

The pipeline: resolve the model (catalog id or .gguf file) to its tensors, size
every buffer llama.cpp allocates (:mod:`homellm.plan.memory`), place layers on
the GPUs and the CPU the way ``-ngl`` and ``--tensor-split`` do, then estimate
speed from the bytes each device reads per token (:mod:`homellm.plan.speed`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from homellm.catalog import Catalog
from homellm.catalog.schema import Architecture, ModelSpec
from homellm.errors import UsageError
from homellm.hardware.types import GIB, HardwareProfile
from homellm.i18n import _
from homellm.plan import memory as mem
from homellm.plan.layout import tensor_layout
from homellm.plan.quantmix import assign_types

if TYPE_CHECKING:
    from homellm.plan.gguf_file import GGUFModel

MIB = 1024 * 1024
# Stated overheads (not buffers llama.cpp reports): the CUDA/ROCm context, cuBLAS
# workspace and driver reserve per discrete GPU, and the host process (binary,
# vocabulary, graph metadata). Ollama budgets GPU overhead the same way.
GPU_RUNTIME_OVERHEAD = 512 * MIB
HOST_OVERHEAD = 256 * MIB
# RAM the OS and other programs keep; the CPU device's capacity is total RAM minus this.
OS_RESERVE = 2 * GIB
OFFLOAD_KINDS = frozenset({"gpu", "remote"})  # devices -ngl offloads to (a worker's device counts as a GPU)

_BLK = re.compile(r"^blk\.(\d+)\.")
# Tables llama.cpp assigns to the input layer (kept in RAM, read one row per token)
INPUT_TENSORS = frozenset({"token_embd.weight", "per_layer_token_embd.weight"})


@dataclass(frozen=True)
class WeightTensor:
    name: str
    layer: int  # -1: outside the blocks
    n_bytes: int
    expert: bool


@dataclass(frozen=True)
class ResolvedModel:
    """A model reduced to what the estimator needs."""

    label: str
    quant: str
    arch: Architecture
    tensors: tuple[WeightTensor, ...]
    spec: ModelSpec | None = None
    path: Path | None = None

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def _layer_of(name: str) -> int:
    m = _BLK.match(name)
    return int(m.group(1)) if m else -1


def from_gguf(g: GGUFModel, label: str | None = None) -> ResolvedModel:
    """A model as its GGUF header describes it (the file's own tensors, types and head counts)."""
    tensors = tuple(
        WeightTensor(t.name, _layer_of(t.name), t.n_bytes, len(t.shape) == 3 and "_exps" in t.name) for t in g.tensors
    )
    return ResolvedModel(label or g.name, g.file_type, g.architecture, tensors, path=g.path)


def resolve_model(model: str, quant: str | None, catalog: Catalog) -> ResolvedModel:
    """A catalog id (``qwen2.5:14b``) or a path to a ``.gguf`` file."""
    if model.lower().endswith(".gguf") or "/" in model or "\\" in model:
        from homellm.plan.gguf_file import read_gguf

        if quant:
            raise UsageError(_("--quant applies to catalog models; a .gguf file already has its quantization"))
        return from_gguf(read_gguf(Path(model).expanduser()))
    spec = catalog.model(model)
    mix = catalog.mix(quant or spec.default_quant)
    typed = assign_types(tensor_layout(spec.architecture), mix, spec.architecture, catalog)
    tensors = tuple(WeightTensor(t.spec.name, t.spec.layer, t.n_bytes, t.spec.is_expert) for t in typed)
    return ResolvedModel(spec.id, mix.name, spec.architecture, tensors, spec=spec)


def context_problem(model: ResolvedModel, params: mem.ContextParams) -> str | None:
    """Why llama.cpp would need RoPE scaling for this context, or None when the model was trained for it."""
    trained = model.arch.n_ctx_train
    if params.ctx <= trained or params.yarn_orig_ctx:
        return None
    return _(
        "{model} was trained on {trained:,} tokens; --ctx {ctx} needs RoPE scaling (llama-server --rope-scaling "
        "yarn --rope-scale {scale:g} --yarn-orig-ctx {trained}), which degrades its answers. Use --ctx {trained} or "
        "less, or add --rope-scaling to plan it anyway"
    ).format(model=model.label, trained=trained, ctx=params.ctx, scale=rope_scale(model, params))


def rope_scale(model: ResolvedModel, params: mem.ContextParams) -> float:
    return math.ceil(params.ctx / model.arch.n_ctx_train * 100) / 100


@dataclass
class DeviceUse:
    name: str
    kind: str  # gpu | cpu | remote (a worker's device, over RPC)
    capacity_bytes: int
    weights_bytes: int = 0
    kv_bytes: int = 0
    compute_bytes: int = 0
    output_bytes: int = 0
    overhead_bytes: int = 0
    layers: list[int] = field(default_factory=list)
    active_weight_bytes: float = 0.0  # weights read per decoded token (only the experts in use)
    kv_read_bytes: float = 0.0  # KV cache read per decoded token at a full context
    holds_output: bool = False  # the output layer (and so the logits) is computed here

    @property
    def used_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.output_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.used_bytes <= self.capacity_bytes


@dataclass
class FitResult:
    model: ResolvedModel
    params: mem.ContextParams
    hardware: HardwareProfile
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    output_bytes: int
    overhead_bytes: int
    gpu_layers: int
    devices: list[DeviceUse]
    output_on_gpu: bool
    decode_tokens_per_s: float | None
    prefill_tokens_per_s: float | None
    speed_notes: list[str]

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.output_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    @property
    def fully_offloaded(self) -> bool:
        return self.gpu_layers > self.model.arch.n_layer

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model.label,
            "quant": self.model.quant,
            "ctx": self.params.n_ctx,
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "compute_bytes": self.compute_bytes,
            "output_bytes": self.output_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
            "n_layers": self.model.arch.n_layer,
            "gpu_layers": self.gpu_layers,
            "devices": [
                {
                    "name": d.name,
                    "kind": d.kind,
                    "layers": len(d.layers),
                    "output": d.holds_output,
                    "used_bytes": d.used_bytes,
                    "capacity_bytes": d.capacity_bytes,
                }
                for d in self.devices
            ],
            "fits": self.fits,
            "decode_tokens_per_s": _round(self.decode_tokens_per_s),
            "prefill_tokens_per_s": _round(self.prefill_tokens_per_s),
            "kv_type": self.params.kv_type,
            "flash_attn": self.params.flash_attn,
            "parallel": self.params.parallel,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _assign_layers(n_layer: int, ngl: int, capacities: list[int]) -> tuple[list[int], int]:
    """Device index (-1 = CPU) of each block, and of the output layer, as llama.cpp splits them.

    The last ``ngl`` of the ``n_layer + 1`` layers (the output layer counts) go to the offload devices
    (remote devices first, then the GPUs, llama.cpp's order), split in proportion to each one's memory
    (llama.cpp's default ``--tensor-split``).
    """
    placement = [-1] * (n_layer + 1)
    if not capacities or ngl <= 0:
        return placement[:n_layer], -1
    ngl = min(ngl, n_layer + 1)
    start = n_layer + 1 - ngl
    total = sum(capacities) or 1
    cumulative, acc = [], 0
    for w in capacities:
        acc += w
        cumulative.append(acc / total)
    for il in range(start, n_layer + 1):
        frac = (il - start) / ngl
        placement[il] = next(i for i, c in enumerate(cumulative) if frac < c)
    return placement[:n_layer], placement[n_layer]


def _place(
    model: ResolvedModel,
    p: mem.ContextParams,
    hw: HardwareProfile,
    kv_layers: list[mem.LayerKV],
    stages: mem.ComputeStages,
    output_buf: int,
    ngl: int,
) -> tuple[list[DeviceUse], bool]:
    arch = model.arch
    unified_gpu = next((g for g in hw.gpus if g.unified), None)
    cpu_capacity = max(hw.ram_bytes - OS_RESERVE, 0)
    if unified_gpu:
        cpu_capacity = max(hw.ram_bytes - unified_gpu.usable_bytes, 0)
    # the worker's own runtime is outside what it offers: a remote device carries no overhead here
    devices = [DeviceUse(r.label, "remote", r.usable_bytes) for r in hw.remotes]
    devices += [
        DeviceUse(g.name, "gpu", g.usable_bytes, overhead_bytes=0 if g.unified else GPU_RUNTIME_OVERHEAD)
        for g in hw.gpus
    ]
    cpu = DeviceUse("CPU (RAM)", "cpu", cpu_capacity, overhead_bytes=HOST_OVERHEAD, output_bytes=output_buf)
    layer_dev, out_dev = _assign_layers(arch.n_layer, ngl, [d.capacity_bytes for d in devices])

    def dev(i: int) -> DeviceUse:
        return cpu if i < 0 else devices[i]

    expert_share = arch.n_expert_used / arch.n_expert if arch.n_expert else 1.0
    for il, d in enumerate(layer_dev):
        dev(d).layers.append(il)
    for t in model.tensors:
        if t.name in INPUT_TENSORS:
            cpu.weights_bytes += t.n_bytes  # the input layer always stays on the CPU (one row read per token)
            if arch.tied_embeddings and t.name == "token_embd.weight":
                if out_dev >= 0:
                    devices[out_dev].weights_bytes += t.n_bytes  # duplicated for the output layer
                dev(out_dev).active_weight_bytes += t.n_bytes
            continue
        target = dev(layer_dev[t.layer] if 0 <= t.layer < arch.n_layer else out_dev)
        target.weights_bytes += t.n_bytes
        target.active_weight_bytes += t.n_bytes * (expert_share if t.expert else 1.0)
    for layer in kv_layers:
        holder = dev(layer_dev[layer.layer])
        holder.kv_bytes += layer.total
        cells = layer.cells * p.n_streams
        filled = min(p.ctx, arch.sliding_window) if arch.is_swa_layer(layer.layer) else p.ctx
        holder.kv_read_bytes += layer.total * min(filled, cells) / max(cells, 1)
    # the worst-case graph: every device with layers holds the attention stage; the device
    # with the output layer also needs the logits stage
    for i in {*layer_dev, out_dev}:
        holder = dev(i)
        holder.compute_bytes = max(holder.compute_bytes, stages.attention if holder.layers else 0)
    dev(out_dev).compute_bytes = max(dev(out_dev).compute_bytes, stages.output)
    dev(out_dev).holds_output = True
    if out_dev >= 0:
        # llama.cpp keeps a small host-side buffer for the graph inputs (tokens, positions, mask)
        cpu.compute_bytes = max(cpu.compute_bytes, 2 * arch.n_embd * p.n_ubatch * mem.F32)
    for gpu in devices:
        if not gpu.layers and not gpu.weights_bytes:
            gpu.overhead_bytes = 0  # an idle GPU gets no CUDA context
    return [*devices, cpu], out_dev >= 0


def fit_model(
    model: ResolvedModel,
    params: mem.ContextParams,
    hw: HardwareProfile,
    catalog: Catalog,
    gpu_layers: int | None = None,
) -> FitResult:
    """Size and place ``model`` on ``hw``; with ``gpu_layers=None``, offload as many layers as fit."""
    problem = mem.check_kv_type(params.kv_type, params.flash_attn)
    if problem:
        raise UsageError(problem)
    if params.ctx < 1 or params.parallel < 1 or params.ubatch < 1:
        raise UsageError(_("--ctx and --parallel must be positive"))
    arch = model.arch
    kv_layers = mem.kv_cache_layers(arch, params, catalog)
    stages = mem.compute_stages(arch, params, kv_layers)
    output_buf = mem.output_buffer_bytes(arch, params)

    def place(ngl: int) -> tuple[list[DeviceUse], bool]:
        return _place(model, params, hw, kv_layers, stages, output_buf, ngl)

    def gpus_fit(devices: list[DeviceUse]) -> bool:
        return all(d.fits for d in devices if d.kind in OFFLOAD_KINDS)

    if gpu_layers is not None:
        ngl = gpu_layers
        devices, output_on_gpu = place(ngl)
    else:
        # GPU memory grows with every offloaded layer: search for the most layers that fit
        # (-ngl 0 always fits; the GPUs then hold nothing)
        lo, hi = 0, arch.n_layer + 1 if hw.gpus or hw.remotes else 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if gpus_fit(place(mid)[0]):
                lo = mid
            else:
                hi = mid - 1
        ngl = lo
        devices, output_on_gpu = place(ngl)
    from homellm.plan.speed import estimate_speed

    decode, prefill, notes = estimate_speed(model, params, hw, devices, catalog)
    return FitResult(
        model=model,
        params=params,
        hardware=hw,
        weights_bytes=sum(d.weights_bytes for d in devices),  # a tied embedding offloaded counts twice
        kv_cache_bytes=sum(k.total for k in kv_layers),
        compute_bytes=sum(d.compute_bytes for d in devices),
        output_bytes=output_buf,
        overhead_bytes=sum(d.overhead_bytes for d in devices),
        gpu_layers=ngl,
        devices=devices,
        output_on_gpu=output_on_gpu,
        decode_tokens_per_s=decode,
        prefill_tokens_per_s=prefill,
        speed_notes=notes,
    )
