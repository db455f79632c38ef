from __future__ import annotations

from typing import Any

import gguf
import pytest

from homellm.catalog import Catalog
from homellm.errors import CatalogError, NotFoundError
from homellm.plan.layout import layout_params

GUIDE_MODELS = [
    "phi4:14b", "llama3.3:70b", "llama3.1:8b", "qwen2.5:14b", "qwen2.5:32b", "qwen2.5:72b",
    "qwen3:235b-a22b", "deepseek-r1:671b", "gemma3n:e4b", "gpt-oss:20b",
]  # fmt: skip
GUIDE_GPUS = [
    "RTX 5070", "RTX 5070 Ti", "RTX 5080", "RTX 5090", "RTX 4060 Ti 16GB", "RTX 4070", "RTX 4080", "RTX 4090",
    "RTX 3060 12GB", "RTX 3090", "RTX PRO 5000 Blackwell", "RTX PRO 6000 Blackwell", "RX 7900 XTX", "A100", "H100",
    "H200", "M4 Pro", "M4 Max", "M3 Ultra",
]  # fmt: skip
ISSUE_QUANTS = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0", "IQ4_XS", "Q3_K_M",
                "Q2_K", "IQ2_XXS", "MXFP4", "INT8", "INT4"]  # fmt: skip


@pytest.mark.parametrize("model_id", GUIDE_MODELS)
def test_the_guides_models_are_in_the_catalog(catalog: Catalog, model_id: str) -> None:
    assert catalog.model(model_id).id == model_id


@pytest.mark.parametrize("name", GUIDE_GPUS)
def test_the_guides_gpus_are_in_the_catalog(catalog: Catalog, name: str) -> None:
    spec = catalog.gpu(name)
    assert spec.vram_gib > 0 and spec.price_jpy > 0 and spec.price_usd > 0


@pytest.mark.parametrize("name", ISSUE_QUANTS)
def test_every_quantization_named_in_the_issue_resolves(catalog: Catalog, name: str) -> None:
    assert catalog.mix(name).base


def test_ggml_type_sizes_agree_with_the_gguf_package(catalog: Catalog) -> None:
    for t in catalog.ggml_types:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.name]]
        assert (t.block_size, t.type_size) == (block, size), t.name


def test_every_model_layout_adds_up_to_its_published_parameter_count(catalog: Catalog) -> None:
    for m in catalog.models:
        ratio = layout_params(m.architecture) / m.params_total
        assert 0.97 < ratio < 1.03, f"{m.id}: layout has {ratio:.3f}x the published parameters"


def test_every_number_carries_a_source(catalog: Catalog) -> None:
    records: list[Any] = [*catalog.models, *catalog.gpus, *catalog.ggml_types, *catalog.mixes, *catalog.measurements,
                          *catalog.builds, *catalog.references, catalog.size_quality]  # fmt: skip
    records += [b for m in catalog.models for b in m.benchmarks]
    records += [s for r in catalog.references for s in r.scores]
    records += [c.judged for c in catalog.claims if c.judged is not None]
    assert all(r.source.strip() for r in records)
    assert all(m.kld_source.strip() for m in catalog.mixes)


def test_catalog_errors_of_issue_12_are_fixed(catalog: Catalog) -> None:
    assert catalog.model("gemma3n:e4b").architecture.n_vocab == 262400  # both embedding tables are padded
    assert catalog.gpu("RTX PRO 6000 Blackwell").fp16_tflops == 503.8  # full-rate FP32 accumulate
    assert catalog.gpu("RTX PRO 5000 Blackwell").fp16_tflops == 258.0
    assert catalog.gpu("RTX PRO 5000 72GB").vram_gib == 72
    assert catalog.gpu("RTX 5060 Ti").vram_gib == 16 and catalog.gpu("RTX 5060 Ti 8GB").vram_gib == 8
    gpt4o = {(s.benchmark, s.score): s for s in catalog.cloud_scores["GPT-4o"]}
    assert gpt4o[("MMLU-Pro", 72.6)].source.startswith("https://arxiv.org/abs/2406.01574")  # not simple-evals
    claude = [s for s in catalog.cloud_scores["Claude 3.5 Sonnet"] if s.benchmark == "MMLU"]
    assert {(s.score, s.setting) for s in claude} == {(88.7, "5-shot"), (90.4, "0-shot CoT")}
    assert "key_length_mla" in catalog.model("deepseek-r1:671b").notes  # which KV layout the entry assumes


def test_quantization_loss_is_measured_and_ordered(catalog: Catalog) -> None:
    kld = {m.name: m.kld for m in catalog.mixes}
    assert kld["Q8_0"] < kld["Q6_K"] < kld["Q5_K_M"] < kld["Q4_K_M"] < kld["Q4_0"] < kld["Q3_K_M"] < kld["Q2_K"]
    assert catalog.mix("INT4").name == "Q4_0" and catalog.mix("INT8").name == "Q8_0"
    assert 0.1 < catalog.size_quality.nats_per_doubling < 0.15


def test_moe_and_mla_models_record_their_structure(catalog: Catalog) -> None:
    r1 = catalog.model("deepseek-r1:671b")
    assert r1.architecture.is_mla and r1.architecture.head_dim_k == 576
    assert r1.params_total == 671e9 and r1.params_active == 37e9
    assert catalog.model("gpt-oss:20b").architecture.sliding_window == 128
    assert catalog.model("gemma3n:e4b").architecture.n_kv_shared_layers == 15


def test_bare_family_name_means_the_first_tag_like_ollama(catalog: Catalog) -> None:
    assert catalog.model("phi4").id == "phi4:14b"


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("model", "qwen2.5:13b", "qwen2.5:14b"),
        ("model", "lama3.1:8b", "llama3.1:8b"),
        ("quant", "Q4_K", "Q4_K_M"),
        ("gpu", "RTX 5071", "RTX 5070"),
    ],
)
def test_unknown_names_suggest_the_nearest(catalog: Catalog, kind: str, name: str, expected: str) -> None:
    lookup = {"model": catalog.model, "quant": catalog.mix, "gpu": catalog.gpu}[kind]
    with pytest.raises(NotFoundError) as info:
        lookup(name)
    assert expected in info.value.suggestions
    assert "did you mean" in str(info.value)


def test_invalid_catalog_data_is_rejected_with_its_location() -> None:
    bad = {"gpus": [{"name": "Broken", "vendor": "nvidia", "vram_gib": -1}]}
    with pytest.raises(CatalogError, match="gpus entry Broken"):
        Catalog(bad)  # type: ignore[arg-type]
