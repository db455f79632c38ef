"""Which ggml type each tensor gets under a quantization mix, as ``llama-quantize`` decides.

A port of llama.cpp's ``llama_tensor_get_type`` (src/llama-quant.cpp): the mix's
per-tensor rules come from the catalog (``quants.toml``), the mechanics (what is
quantizable, the layer counters, the block-size fallback) live here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from homellm.catalog import Catalog
from homellm.catalog.schema import Architecture, GgmlType, MixRule, QuantMix
from homellm.plan.layout import TensorSpec

# llama-quant.cpp tensor_type_fallback: a 256-block type on a row that is not a multiple of 256
_FALLBACK = {
    "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ4_XS": "IQ4_NL",
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}  # fmt: skip
_FLOAT = {"F32", "F16", "BF16"}


@dataclass(frozen=True)
class TypedTensor:
    spec: TensorSpec
    type: GgmlType

    @property
    def n_bytes(self) -> int:
        rows = self.spec.n_elements // self.spec.shape[0]
        return rows * self.type.row_bytes(self.spec.shape[0])


def is_quantizable(t: TensorSpec) -> bool:
    """Whether llama-quantize would change this tensor's type (2-D+ weights, not norms or the router)."""
    name = t.name
    return (
        len(t.shape) >= 2
        and name.endswith("weight")
        and "_norm.weight" not in name
        and "ffn_gate_inp.weight" not in name
    )


def _category(name: str, tied: bool) -> str:
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for needle, category in (
        ("attn_qkv.weight", "attn_v"),  # category_is_attn_v: qkv and kv_b count as attn_v
        ("attn_kv_b.weight", "attn_v"),
        ("attn_v.weight", "attn_v"),
        ("attn_k.weight", "attn_k"),
        ("attn_output.weight", "attn_output"),
        ("ffn_down", "ffn_down"),
    ):
        if needle in name:
            return category
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _applies(rule: MixRule, i: int, n: int, arch: Architecture) -> bool:
    match rule.when:
        case "always":
            return True
        case "more_bits":
            return _use_more_bits(i, n)
        case "first_eighth":
            return i < n // 8
        case "first_sixteenth":
            return i < n // 16
        case "first_two":
            return i < 2
        case "gqa_ge_4":
            return arch.n_head // arch.n_head_kv >= 4
        case "gqa_or_experts_ge_4":
            return arch.n_head // arch.n_head_kv >= 4 or arch.n_expert >= 4
        case "experts_eq_8":
            return arch.n_expert == 8
    raise AssertionError(rule.when)


def assign_types(tensors: list[TensorSpec], mix: QuantMix, arch: Architecture, catalog: Catalog) -> list[TypedTensor]:
    """The type of every tensor of a file quantized (or converted) with ``mix``."""
    f32 = catalog.ggml_type("F32")
    categories = [_category(t.name, arch.tied_embeddings) for t in tensors]
    totals = Counter(categories)
    seen: Counter[str] = Counter()
    out: list[TypedTensor] = []
    for t, category in zip(tensors, categories, strict=True):
        if not is_quantizable(t):
            out.append(TypedTensor(t, f32))
            continue
        if mix.base in _FLOAT:
            out.append(TypedTensor(t, catalog.ggml_type(mix.base)))
            continue
        i, n = seen[category], totals[category]
        seen[category] += 1
        if category == "ffn_down":
            n = arch.n_layer  # llama-quant sets n_ffn_down to the layer count, not the tensor count
            if arch.is_moe:
                i = t.layer  # and parses the layer from the name for MoE models
        name = _choose(t, category, i, n, mix, arch)
        out.append(TypedTensor(t, catalog.ggml_type(_fallback(name, t.shape[0], catalog))))
    return out


def _choose(t: TensorSpec, category: str, i: int, n: int, mix: QuantMix, arch: Architecture) -> str:
    if category == "output":
        return mix.output
    if mix.experts:
        return mix.experts if len(t.shape) == 3 and t.shape[2] > 1 else mix.base
    if category == "token_embd":
        return mix.token_embd or mix.base
    for rule in mix.rules:
        if rule.tensor == category and _applies(rule, i, n, arch):
            chosen = rule.type
            break
    else:
        chosen = mix.base
    if category == "attn_v" and is_type_70b(arch) and chosen in ("Q3_K", "Q4_K"):
        chosen = "Q5_K"  # llama-quant: "In the 70B model we have 8 heads sharing the same attn_v weights"
    return chosen


# Layer counts llama.cpp's load_hparams maps to LLM_TYPE_70B, per architecture (src/models/*.cpp);
# llama-quant bumps attn_v for that model type. Llama with as many KV heads as heads is "65B" instead.
_TYPE_70B_LAYERS = {"llama": 80, "qwen2": 80, "deci": 80, "olmo": 80, "jais2": 68}


def is_type_70b(arch: Architecture) -> bool:
    if _TYPE_70B_LAYERS.get(arch.arch) != arch.n_layer:
        return False
    return arch.arch != "llama" or arch.n_head != arch.n_head_kv


def _fallback(name: str, row: int, catalog: Catalog) -> str:
    if row % catalog.ggml_type(name).block_size == 0:
        return name
    alt = _FALLBACK.get(name, name)
    if row % catalog.ggml_type(alt).block_size == 0:
        return alt
    return "F16"
