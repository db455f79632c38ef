"""The tensors llama.cpp loads for an architecture: names and shapes.

This is the single description of a model's weights. The estimator applies a
quantization mix to it (:mod:`homellm.plan.quantmix`), and the test suite writes
it out as a real GGUF file that llama.cpp must accept, which keeps the shapes
honest. Shapes are ggml ``ne`` order: ``ne[0]`` is the row length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from homellm.catalog.schema import Architecture


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    layer: int = -1  # -1 for tensors outside the blocks

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def is_expert(self) -> bool:
        return len(self.shape) == 3 and "_exps" in self.name


def _blk(il: int, name: str, *shape: int) -> TensorSpec:
    return TensorSpec(f"blk.{il}.{name}", tuple(shape), il)


def _attention(a: Architecture, il: int) -> list[TensorSpec]:
    q_dim, k_dim, v_dim = a.n_head * a.head_dim_k, a.n_head_kv * a.head_dim_k, a.n_head_kv * a.head_dim_v
    if a.has_mla_weights:
        out = [_blk(il, "attn_kv_a_norm.weight", a.kv_lora_rank)]
        if a.q_lora_rank:
            out += [
                _blk(il, "attn_q_a_norm.weight", a.q_lora_rank),
                _blk(il, "attn_q_a.weight", a.n_embd, a.q_lora_rank),
                _blk(il, "attn_q_b.weight", a.q_lora_rank, a.n_head * (a.qk_nope_dim + a.qk_rope_dim)),
            ]
        else:
            out.append(_blk(il, "attn_q.weight", a.n_embd, a.n_head * (a.qk_nope_dim + a.qk_rope_dim)))
        out.append(_blk(il, "attn_kv_a_mqa.weight", a.n_embd, a.kv_lora_rank + a.qk_rope_dim))
        if a.mla_cache:  # split k_b/v_b: the absorbed MLA path
            out += [
                _blk(il, "attn_k_b.weight", a.qk_nope_dim, a.kv_lora_rank, a.n_head),
                _blk(il, "attn_v_b.weight", a.kv_lora_rank, a.v_head_dim_mla, a.n_head),
            ]
        else:  # older GGUFs: one kv_b that decompresses K and V for every head (llama.cpp's MHA path)
            out.append(_blk(il, "attn_kv_b.weight", a.kv_lora_rank, a.n_head * (a.qk_nope_dim + a.v_head_dim_mla)))
        return [*out, _blk(il, "attn_output.weight", a.n_head * a.v_head_dim_mla, a.n_embd)]
    if a.arch == "phi3":
        return [
            _blk(il, "attn_qkv.weight", a.n_embd, q_dim + k_dim + v_dim),
            _blk(il, "attn_output.weight", a.n_head * a.head_dim_v, a.n_embd),
        ]
    out = [
        _blk(il, "attn_q.weight", a.n_embd, q_dim),
        _blk(il, "attn_k.weight", a.n_embd, k_dim),
        _blk(il, "attn_v.weight", a.n_embd, v_dim),
        _blk(il, "attn_output.weight", a.n_head * a.head_dim_v, a.n_embd),
    ]
    if a.attn_bias:
        out += [
            _blk(il, "attn_q.bias", q_dim),
            _blk(il, "attn_k.bias", k_dim),
            _blk(il, "attn_v.bias", v_dim),
        ]
    if a.arch == "gpt-oss":
        out += [_blk(il, "attn_output.bias", a.n_embd), _blk(il, "attn_sinks.weight", a.n_head)]
    if a.qk_norm:
        out += [_blk(il, "attn_q_norm.weight", a.head_dim_k), _blk(il, "attn_k_norm.weight", a.head_dim_k)]
    return out


def _ffn(a: Architecture, il: int) -> list[TensorSpec]:
    if not a.is_moe_layer(il):
        if a.arch == "phi3":
            return [
                _blk(il, "ffn_up.weight", a.n_embd, 2 * a.n_ff),
                _blk(il, "ffn_down.weight", a.n_ff, a.n_embd),
            ]
        return [
            _blk(il, "ffn_gate.weight", a.n_embd, a.n_ff),
            _blk(il, "ffn_up.weight", a.n_embd, a.n_ff),
            _blk(il, "ffn_down.weight", a.n_ff, a.n_embd),
        ]
    e, f = a.n_expert, a.n_ff_expert
    out = [
        _blk(il, "ffn_gate_inp.weight", a.n_embd, e),
        _blk(il, "ffn_gate_exps.weight", a.n_embd, f, e),
        _blk(il, "ffn_up_exps.weight", a.n_embd, f, e),
        _blk(il, "ffn_down_exps.weight", f, a.n_embd, e),
    ]
    if a.arch == "gpt-oss":
        out += [
            _blk(il, "ffn_gate_inp.bias", e),
            _blk(il, "ffn_gate_exps.bias", f, e),
            _blk(il, "ffn_up_exps.bias", f, e),
            _blk(il, "ffn_down_exps.bias", a.n_embd, e),
        ]
    if a.arch == "deepseek2":
        out.append(_blk(il, "exp_probs_b.bias", e))
    if a.n_expert_shared:
        s = f * a.n_expert_shared
        out += [
            _blk(il, "ffn_gate_shexp.weight", a.n_embd, s),
            _blk(il, "ffn_up_shexp.weight", a.n_embd, s),
            _blk(il, "ffn_down_shexp.weight", s, a.n_embd),
        ]
    return out


def tensor_layout(a: Architecture) -> list[TensorSpec]:
    """Every weight tensor of ``a`` in GGUF order, as llama.cpp's loader expects them."""
    tensors = [TensorSpec("token_embd.weight", (a.n_embd, a.n_vocab))]
    for il in range(a.n_layer):
        tensors.append(_blk(il, "attn_norm.weight", a.n_embd))
        tensors += _attention(a, il)
        if a.arch in ("gemma3", "gemma3n", "gpt-oss"):
            tensors.append(_blk(il, "post_attention_norm.weight", a.n_embd))
        if a.arch != "gpt-oss":
            tensors.append(_blk(il, "ffn_norm.weight", a.n_embd))
        tensors += _ffn(a, il)
        if a.arch in ("gemma3", "gemma3n"):
            tensors.append(_blk(il, "post_ffw_norm.weight", a.n_embd))
    tensors.append(TensorSpec("output_norm.weight", (a.n_embd,)))
    if not a.tied_embeddings:
        tensors.append(TensorSpec("output.weight", (a.n_embd, a.n_vocab)))
    if a.per_layer_embd:
        tensors.append(TensorSpec("per_layer_token_embd.weight", (a.n_layer * a.per_layer_embd, a.n_vocab)))
    if a.extra_params:
        # Parameters outside the standard stack (Gemma 3n's AltUp, LAuReL and per-layer projections),
        # sized in one lump; they quantize like the other 2-D weights.
        tensors.append(TensorSpec("extra.weight", (256, int(a.extra_params) // 256)))
    return tensors


def layout_params(a: Architecture) -> int:
    return sum(t.n_elements for t in tensor_layout(a))
