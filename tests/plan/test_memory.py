"""KV-cache sizing rules and placement, table-driven against hand-computed values."""

from __future__ import annotations

import pytest

from homellm.catalog import Catalog
from homellm.catalog.schema import Architecture
from homellm.plan.memory import ContextParams, check_kv_type, kv_cache_layers, pad

MIB = 1024 * 1024
LLAMA = Architecture(arch="llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, head_dim_k=128,
                     head_dim_v=128, n_ff=14336, n_vocab=128256, n_ctx_train=131072)  # fmt: skip


@pytest.mark.parametrize(
    ("params", "cells"),
    [
        (ContextParams(ctx=4096), 4096),
        (ContextParams(ctx=4000), 4096),  # padded to 256
        (ContextParams(ctx=4096, parallel=3), 3 * 1536),  # 4096/3 = 1365 -> padded to 1536 per sequence
        (ContextParams(ctx=4096, parallel=3, kv_unified=True), 4096),
    ],
)
def test_context_padding(params: ContextParams, cells: int) -> None:
    assert params.n_ctx == cells


def test_llama3_8b_kv_cache_is_the_textbook_value(catalog: Catalog) -> None:
    # 32 layers x 2 (K,V) x 8 heads x 128 dims x 8192 cells x 2 bytes = 1 GiB
    total = sum(layer.total for layer in kv_cache_layers(LLAMA, ContextParams(ctx=8192), catalog))
    assert total == 1024 * MIB


@pytest.mark.parametrize(("kv_type", "bytes_per_64_values"), [("f16", 128), ("q8_0", 68), ("q4_0", 36)])
def test_quantized_cache_types(catalog: Catalog, kv_type: str, bytes_per_64_values: int) -> None:
    layers = kv_cache_layers(LLAMA, ContextParams(ctx=256, kv_type=kv_type), catalog)
    assert layers[0].k_bytes == 8 * 128 // 64 * bytes_per_64_values * 256


def test_sliding_window_layers_hold_window_plus_ubatch(catalog: Catalog) -> None:
    gemma = Architecture(arch="gemma3", n_layer=12, n_embd=3840, n_head=16, n_head_kv=8, head_dim_k=256,
                         head_dim_v=256, n_ff=15360, n_vocab=262208, n_ctx_train=131072, sliding_window=1024,
                         swa_pattern=6)  # fmt: skip
    layers = kv_cache_layers(gemma, ContextParams(ctx=32768), catalog)
    assert [layer.cells for layer in layers] == [1536] * 5 + [32768] + [1536] * 5 + [32768]
    full = kv_cache_layers(gemma, ContextParams(ctx=32768, swa_full=True), catalog)
    assert {layer.cells for layer in full} == {32768}
    short = kv_cache_layers(gemma, ContextParams(ctx=1024), catalog)
    assert {layer.cells for layer in short} == {1024}  # never more than the context


def test_mla_caches_only_the_latent(catalog: Catalog) -> None:
    r1 = catalog.model("deepseek-r1:671b").architecture
    layers = kv_cache_layers(r1, ContextParams(ctx=4096), catalog)
    assert all(layer.v_bytes == 0 for layer in layers)
    assert layers[0].k_bytes == 576 * 2 * 4096


def test_shared_kv_layers_have_no_cache_of_their_own(catalog: Catalog) -> None:
    e4b = catalog.model("gemma3n:e4b").architecture
    assert len(kv_cache_layers(e4b, ContextParams(ctx=4096), catalog)) == 35 - 15


def test_parallel_sequences_multiply_sliding_window_cells(catalog: Catalog) -> None:
    oss = catalog.model("gpt-oss:20b").architecture
    one = kv_cache_layers(oss, ContextParams(ctx=16384), catalog)
    four = kv_cache_layers(oss, ContextParams(ctx=16384, parallel=4), catalog)
    assert one[0].cells == pad(128 + 512, 256)  # layer 0 slides
    assert four[0].total == 4 * one[0].total  # one SWA window per sequence stream
    assert sum(layer.total for layer in four[1::2]) == sum(layer.total for layer in one[1::2])  # global layers


@pytest.mark.parametrize(
    ("kv_type", "flash", "ok"),
    [("f16", False, True), ("q8_0", True, True), ("q8_0", False, False), ("q3_k", True, False)],
)
def test_kv_type_rules(kv_type: str, flash: bool, ok: bool) -> None:
    assert (check_kv_type(kv_type, flash) is None) == ok
