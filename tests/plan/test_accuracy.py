"""homellm's estimates against what the real llama.cpp allocates and writes.

Target (issue 2): every buffer within 2% or 16 MiB of llama.cpp, whichever is larger.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from homellm.catalog import Catalog
from homellm.catalog.schema import Architecture
from homellm.engine.buffers import measure_buffers
from homellm.plan.fit import resolve_model
from homellm.plan.gguf_file import read_gguf
from homellm.plan.layout import tensor_layout
from homellm.plan.memory import ContextParams, compute_stages, kv_cache_layers, output_buffer_bytes
from homellm.plan.quantmix import assign_types
from homellm.testing.ggufs import SAMPLE_ARCHITECTURES, quantize, write_gguf

pytestmark = pytest.mark.engine
MIB = 1024 * 1024

SETTINGS = [
    pytest.param(ContextParams(ctx=512), id="ctx512"),
    pytest.param(ContextParams(ctx=300), id="ctx300-unpadded"),
    pytest.param(ContextParams(ctx=4096, flash_attn=False), id="ctx4096-nofa"),
    pytest.param(ContextParams(ctx=16384, flash_attn=False), id="ctx16k-nofa"),
    pytest.param(ContextParams(ctx=8192, kv_type="q8_0"), id="ctx8k-q8_0"),
    pytest.param(ContextParams(ctx=4096, kv_type="q4_0"), id="ctx4k-q4_0"),
    pytest.param(ContextParams(ctx=4096, parallel=4), id="ctx4k-parallel4"),
    pytest.param(ContextParams(ctx=2048, ubatch=256, flash_attn=False), id="ctx2k-ubatch256-nofa"),
]


def _within_target(estimate: int, actual: int) -> bool:
    return abs(estimate - actual) <= max(0.02 * actual, 16 * MIB)


def _compare(path: Path, params: ContextParams, catalog: Catalog) -> dict[str, tuple[int, int]]:
    model = resolve_model(str(path), None, catalog)
    kv = kv_cache_layers(model.arch, params, catalog)
    measured = measure_buffers(path, params)
    return {
        "model": (model.weights_bytes, measured.model),
        "kv": (sum(layer.total for layer in kv), measured.kv),
        "output": (output_buffer_bytes(model.arch, params), measured.output),
        "compute": (compute_stages(model.arch, params, kv).peak, measured.compute),
    }


def _assert_all_within(results: dict[str, tuple[int, int]]) -> None:
    for buffer, (estimate, actual) in results.items():
        assert actual > 0 or buffer == "output", f"llama.cpp reported no {buffer} buffer"
        assert _within_target(estimate, actual), (
            f"{buffer}: estimated {estimate / MIB:.2f} MiB, llama.cpp {actual / MIB:.2f} MiB"
        )


@pytest.mark.parametrize("params", SETTINGS)
def test_smollm2_buffers_match_llama_cpp(smollm2: Path, params: ContextParams, catalog: Catalog) -> None:
    _assert_all_within(_compare(smollm2, params, catalog))


@pytest.mark.parametrize("params", [SETTINGS[0], SETTINGS[3], SETTINGS[4], SETTINGS[6]])
@pytest.mark.parametrize("arch", list(SAMPLE_ARCHITECTURES))
def test_sample_architecture_buffers_match_llama_cpp(
    sample_ggufs: dict[str, Path], arch: str, params: ContextParams, catalog: Catalog
) -> None:
    _assert_all_within(_compare(sample_ggufs[arch], params, catalog))


def test_kv_cache_is_exact_for_sliding_window_and_mla(sample_ggufs: dict[str, Path], catalog: Catalog) -> None:
    # the KV cache is not an estimate: it must match to llama.cpp's printed precision (0.01 MiB)
    for arch in ("gemma3-swa", "deepseek2-mla", "deepseek2-mha"):
        params = ContextParams(ctx=16384)
        estimate, actual = _compare(sample_ggufs[arch], params, catalog)["kv"]
        assert abs(estimate - actual) <= 0.01 * MIB, arch


@pytest.mark.parametrize("arch", list(SAMPLE_ARCHITECTURES))
def test_layout_matches_the_file_llama_cpp_loaded(sample_ggufs: dict[str, Path], arch: str, catalog: Catalog) -> None:
    """Weights from the architecture alone (the catalog path) equal the real file's tensor table."""
    spec = SAMPLE_ARCHITECTURES[arch]
    typed = assign_types(tensor_layout(spec), catalog.mix("F16"), spec, catalog)
    from_file = read_gguf(sample_ggufs[arch])
    assert from_file.architecture == spec
    assert sum(t.n_bytes for t in typed) == from_file.weights_bytes


QUANT_CASES = [
    ("llama-gqa", "Q4_K_M"), ("llama-gqa", "Q5_K_M"), ("llama-gqa", "Q3_K_M"), ("llama-gqa", "Q2_K"),
    ("llama-gqa", "Q8_0"), ("llama-gqa", "IQ4_XS"), ("llama-gqa", "Q4_0"), ("qwen2", "Q4_K_M"),
    ("gemma3-swa", "Q4_K_M"), ("qwen3moe", "Q4_K_M"), ("qwen3moe", "Q3_K_M"), ("deepseek2-mla", "Q4_K_M"),
    ("gpt-oss-swa-moe", "MXFP4_MOE"), ("gpt-oss-swa-moe", "Q4_K_M"),
]  # fmt: skip


@pytest.mark.parametrize(("arch", "mix"), QUANT_CASES)
def test_quant_mix_predicts_every_tensor_type(
    sample_ggufs: dict[str, Path], arch: str, mix: str, catalog: Catalog, tmp_path: Path
) -> None:
    """llama.cpp quantizes the file; our mix rules must predict the type of every tensor."""
    quantized = read_gguf(quantize(sample_ggufs[arch], tmp_path / f"{arch}-{mix}.gguf", mix))
    spec = SAMPLE_ARCHITECTURES[arch]
    predicted = {t.spec.name: t.type.name for t in assign_types(tensor_layout(spec), catalog.mix(mix), spec, catalog)}
    actual = {t.name: t.type_name for t in quantized.tensors}
    wrong = {name: (predicted.get(name), actual[name]) for name in actual if predicted.get(name) != actual[name]}
    assert not wrong, f"predicted vs llama.cpp: {wrong}"
    estimate = resolve_model(str(sample_ggufs[arch]), None, catalog)
    assert estimate.weights_bytes > quantized.weights_bytes  # F16 source is larger than any quant


def test_old_deepseek_files_cache_every_kv_head(sample_ggufs: dict[str, Path], catalog: Catalog) -> None:
    """A DeepSeek GGUF without key_length_mla caches n_head_kv full K/V heads, not the 576-wide latent."""
    params = ContextParams(ctx=4096)
    mha = resolve_model(str(sample_ggufs["deepseek2-mha"]), None, catalog).arch
    mla = resolve_model(str(sample_ggufs["deepseek2-mla"]), None, catalog).arch
    assert not mha.is_mla and mha.has_mla_weights and mla.is_mla
    mha_kv = sum(layer.total for layer in kv_cache_layers(mha, params, catalog))
    mla_kv = sum(layer.total for layer in kv_cache_layers(mla, params, catalog))
    assert mha_kv == 4 * 4096 * 8 * (192 + 128) * 2 and mla_kv == 4 * 4096 * 320 * 2


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q3_K_M"])
def test_80_layer_qwen2_gets_llamas_70b_attn_v_bump(smollm2: Path, mix: str, catalog: Catalog, tmp_path: Path) -> None:
    """llama.cpp types an 80-layer Qwen2 (Qwen2.5-72B) as 70B, so attn_v moves up to Q5_K like Llama 70B."""
    spec = Architecture(arch="qwen2", n_layer=80, n_embd=256, n_head=4, n_head_kv=1, head_dim_k=64, head_dim_v=64,
                        n_ff=512, n_vocab=49152, n_ctx_train=4096, attn_bias=True)  # fmt: skip
    source = write_gguf(spec, tmp_path / "qwen2-80.gguf", smollm2)
    quantized = read_gguf(quantize(source, tmp_path / f"qwen2-80-{mix}.gguf", mix))
    predicted = {t.spec.name: t.type.name for t in assign_types(tensor_layout(spec), catalog.mix(mix), spec, catalog)}
    actual = {t.name: t.type_name for t in quantized.tensors}
    assert {actual[f"blk.{i}.attn_v.weight"] for i in range(2, 78)} >= {"Q5_K"}
    assert predicted == actual
