"""Memory llama.cpp allocates besides the weights: KV cache, compute and output buffers.

The KV cache is exact: it follows llama.cpp's sizing rules (src/llama-context.cpp,
src/llama-kv-cache*.cpp) cell for cell. The compute buffer is the peak of ggml's
graph allocator; we model the peak as the larger of two stages of the worst-case
(prompt-processing) graph, with coefficients checked against llama.cpp's own
reports for every architecture in the test suite:

* the output stage: the f32 logits of ``n_ubatch`` outputs plus two activations;
* the attention stage: without flash attention, the f32 ``KQ`` scores of every
  head over the whole cache, the f32 mask, and the q/k/v activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from homellm.catalog import Catalog
from homellm.catalog.schema import Architecture
from homellm.i18n import _

F32 = 4
F16 = 2
KV_TYPES = ("f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")


def pad(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


@dataclass(frozen=True)
class ContextParams:
    """llama-server's context settings (``-c``, ``-b``, ``-ub``, ``-fa``, ``-ctk/-ctv``, ``-np``)."""

    ctx: int = 4096
    batch: int = 2048
    ubatch: int = 512
    flash_attn: bool = True
    kv_type: str = "f16"
    parallel: int = 1
    swa_full: bool = False
    kv_unified: bool = False
    yarn_orig_ctx: int = 0  # > 0: the context is stretched beyond training with YaRN RoPE scaling

    @property
    def n_ctx(self) -> int:
        """Total cache cells: llama.cpp pads the context to 256 (per sequence when not unified)."""
        n_ctx = pad(self.ctx, 256)
        if self.kv_unified:
            return n_ctx
        return pad(n_ctx // self.parallel, 256) * self.parallel

    @property
    def n_streams(self) -> int:
        return 1 if self.kv_unified else self.parallel

    @property
    def n_ubatch(self) -> int:
        # n_batch is clamped to the *requested* context before it is padded
        return min(self.ubatch, min(self.ctx, self.batch))


@dataclass(frozen=True)
class LayerKV:
    layer: int
    cells: int  # per stream
    k_bytes: int
    v_bytes: int

    @property
    def total(self) -> int:
        return self.k_bytes + self.v_bytes


def kv_cache_layers(arch: Architecture, p: ContextParams, catalog: Catalog) -> list[LayerKV]:
    """The K and V tensors llama.cpp creates, layer by layer."""
    kv_type = catalog.ggml_type(p.kv_type)
    streams = p.n_streams
    base_cells = p.n_ctx // streams
    swa_cells = base_cells
    if arch.sliding_window and not p.swa_full:
        window = arch.sliding_window * (p.parallel if p.kv_unified else 1) + p.n_ubatch
        swa_cells = pad(min(base_cells, window), 256)
    v_width_max = max(arch.n_head_kv * arch.head_dim_v, 1)
    out = []
    for il in range(arch.n_layer):
        if not arch.has_own_kv(il):
            continue  # reuses an earlier layer's cache
        cells = swa_cells if arch.is_swa_layer(il) else base_cells
        k = kv_type.row_bytes(arch.n_head_kv * arch.head_dim_k) * cells * streams
        # MLA caches only the compressed latent (K); V is a view of it
        v = 0 if arch.is_mla else kv_type.row_bytes(v_width_max) * cells * streams
        out.append(LayerKV(il, cells, k, v))
    return out


def check_kv_type(kv_type: str, flash_attn: bool) -> str | None:
    """Why llama.cpp would refuse this cache type, or None."""
    if kv_type not in KV_TYPES:
        return _("unknown KV cache type {kv_type!r}; use one of {types}").format(
            kv_type=kv_type, types=", ".join(KV_TYPES)
        )
    if kv_type not in ("f16", "bf16", "f32") and not flash_attn:
        return _("a {kv_type} V cache needs flash attention (drop --no-flash-attn or use --kv-type f16)").format(
            kv_type=kv_type
        )
    return None


def output_buffer_bytes(arch: Architecture, p: ContextParams) -> int:
    """Host buffer for the logits of one output per sequence (llama_context::output_reserve)."""
    return arch.n_vocab * p.parallel * F32


@dataclass(frozen=True)
class ComputeStages:
    output: int
    attention: int

    @property
    def peak(self) -> int:
        return max(self.output, self.attention)


def compute_stages(arch: Architecture, p: ContextParams, kv: list[LayerKV]) -> ComputeStages:
    """Peak memory of the worst-case graph llama.cpp reserves (n_ubatch tokens, n_ubatch outputs)."""
    ub = p.n_ubatch
    act = ub * F32  # one f32 activation column per token
    n_out = min(ub, p.batch)
    output = arch.n_vocab * n_out * F32 + 2 * arch.n_embd * act

    n_kv = max((layer.cells for layer in kv), default=0) * p.n_streams
    q_dim = arch.n_head * arch.head_dim_k
    kv_dim = arch.n_head_kv * (arch.head_dim_k + arch.head_dim_v)
    if p.flash_attn:
        scores = n_kv * ub * F16  # only the f16 mask is as large as the cache
    else:
        scores = n_kv * ub * arch.n_head * F32 + n_kv * ub * F32  # KQ and the f32 mask
        if arch.is_mla:
            scores += n_kv * arch.kv_lora_rank * F32  # V is a transposed copy of the latent cache
    attention = scores + (3 * arch.n_embd + 2 * q_dim + kv_dim) * act
    return ComputeStages(output=output, attention=attention)
