"""Types of the shipped catalog. Every number carries a ``source``."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from homellm.i18n import _

JapaneseAbility = Literal["none", "fair", "good"]
UseCase = Literal["chat", "code", "math", "japanese"]
GpuVendor = Literal["nvidia", "amd", "apple", "intel", "cpu"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(Strict):
    """A model as llama.cpp sees it (the GGUF hyper-parameters)."""

    arch: str = Field(description="llama.cpp architecture name, e.g. llama, qwen2, gemma3, deepseek2")
    n_layer: int = Field(gt=0)
    n_embd: int = Field(gt=0)
    n_head: int = Field(gt=0)
    n_head_kv: int = Field(gt=0)
    head_dim_k: int = Field(gt=0, description="key head size (for MLA: kv_lora_rank + rope dims)")
    head_dim_v: int = Field(gt=0, description="value head size (for MLA: kv_lora_rank)")
    n_ff: int = Field(ge=0, description="dense FFN width (0 for all-MoE models)")
    n_vocab: int = Field(gt=0)
    n_ctx_train: int = Field(gt=0)
    tied_embeddings: bool = False
    attn_bias: bool = Field(False, description="q/k/v projections carry biases (Qwen2)")
    qk_norm: bool = Field(False, description="per-head RMS norm on q and k (Qwen3, Gemma 3)")
    # sliding-window attention
    sliding_window: int = Field(0, ge=0, description="window of the SWA layers; 0 = none")
    swa_pattern: int = Field(
        0, ge=0, description="every n-th layer is global, the rest slide (llama.cpp set_swa_pattern)"
    )
    n_kv_shared_layers: int = Field(0, ge=0, description="last layers that reuse earlier layers' KV (Gemma 3n)")
    per_layer_embd: int = Field(
        0, ge=0, description="Gemma 3n per-layer embedding width: a second input table, kept in RAM like token_embd"
    )
    # multi-head latent attention (DeepSeek)
    kv_lora_rank: int = Field(0, ge=0)
    mla_cache: bool = Field(
        True,
        description="MLA models: the cache holds the compressed latent (GGUFs with key_length_mla, converted "
        "by llama.cpp since April 2025); False for older GGUFs that cache n_head_kv full K/V heads",
    )
    q_lora_rank: int = Field(0, ge=0)
    qk_rope_dim: int = Field(0, ge=0)
    qk_nope_dim: int = Field(0, ge=0)
    v_head_dim_mla: int = Field(0, ge=0)
    # mixture of experts
    n_expert: int = Field(0, ge=0)
    n_expert_used: int = Field(0, ge=0)
    n_ff_expert: int = Field(0, ge=0)
    n_expert_shared: int = Field(0, ge=0)
    n_dense_lead: int = Field(0, ge=0, description="leading layers with a dense FFN before the MoE layers")
    extra_params: float = Field(
        0,
        ge=0,
        description="weights outside the standard stack (Gemma 3n AltUp, LAuReL, per-layer projections)",
    )

    @property
    def has_mla_weights(self) -> bool:
        """The attention is DeepSeek's multi-head latent attention (compressed KV projections)."""
        return self.kv_lora_rank > 0

    @property
    def is_mla(self) -> bool:
        """The KV cache holds MLA's compressed latent (one 'head' of kv_lora_rank + rope dims, K only)."""
        return self.kv_lora_rank > 0 and self.mla_cache

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    def is_swa_layer(self, il: int) -> bool:
        if not self.sliding_window:
            return False
        if self.swa_pattern == 0:
            return True
        return il % self.swa_pattern < self.swa_pattern - 1

    def has_own_kv(self, il: int) -> bool:
        return il < self.n_layer - self.n_kv_shared_layers

    def is_moe_layer(self, il: int) -> bool:
        return self.is_moe and il >= self.n_dense_lead

    @model_validator(mode="after")
    def _consistent(self) -> Architecture:
        if self.n_expert and not (0 < self.n_expert_used <= self.n_expert and self.n_ff_expert):
            raise ValueError(_("MoE models need 0 < n_expert_used <= n_expert and n_ff_expert"))
        if self.is_mla and self.head_dim_k != self.kv_lora_rank + self.qk_rope_dim:
            raise ValueError(_("MLA models cache kv_lora_rank + qk_rope_dim per token (head_dim_k)"))
        if self.has_mla_weights and not self.mla_cache and self.head_dim_k != self.qk_nope_dim + self.qk_rope_dim:
            raise ValueError(_("MLA weights with a per-head cache: head_dim_k is qk_nope_dim + qk_rope_dim"))
        if self.sliding_window and self.swa_pattern == 1:
            raise ValueError(_("swa_pattern 1 would make every layer global; use 0 for all-SWA"))
        return self


Benchmark = Literal["MMLU", "MMLU-Pro", "MMLU-Redux", "HumanEval", "MT-Bench", "GSM8K", "AIME 2025", "SWE-Bench"]


class BenchmarkScore(Strict):
    benchmark: Benchmark
    score: float
    setting: str = Field("", description="shots / CoT / thinking, as the source states")
    source: str


class ModelSpec(Strict):
    id: str = Field(description="the Ollama tag, e.g. qwen2.5:14b")
    name: str
    family: str
    params_total: float = Field(gt=0, description="parameters, all experts counted")
    params_active: float = Field(gt=0, description="parameters used per token")
    architecture: Architecture
    quants: list[str] = Field(min_length=1, description="quantizations published for it (Ollama / GGUF repos)")
    default_quant: str
    license: str
    japanese: JapaneseAbility
    uses: list[UseCase]
    hf_repo: str
    ollama_quant_tag: str = Field(
        "", description="the Ollama tag of a quantization, {q} standing for its spelling there (q4_K_M, fp16)"
    )
    recommend: bool = Field(True, description="False for reference models `plan` never recommends")
    published_precision: str = Field("BF16", description="the weights the published benchmark scores were run on")
    source: str
    benchmarks: list[BenchmarkScore] = []
    notes: str = ""

    @model_validator(mode="after")
    def _quants(self) -> ModelSpec:
        if self.default_quant not in self.quants:
            raise ValueError(
                _("default_quant {default_quant} is not among {quants}").format(
                    default_quant=self.default_quant, quants=self.quants
                )
            )
        if self.params_active > self.params_total:
            raise ValueError(_("params_active exceeds params_total"))
        return self


class GgmlType(Strict):
    """A ggml tensor type: ``block_size`` weights stored in ``type_size`` bytes."""

    name: str
    block_size: int = Field(gt=0)
    type_size: int = Field(gt=0)
    source: str

    def row_bytes(self, n: int) -> int:
        return (n // self.block_size) * self.type_size


class MixRule(Strict):
    """One line of llama.cpp's llama_tensor_get_type_impl for a file type."""

    tensor: Literal["attn_v", "attn_k", "attn_output", "attn_qkv", "ffn_down", "output", "token_embd"]
    type: str
    when: Literal[
        "always",
        "more_bits",
        "first_eighth",
        "first_sixteenth",
        "first_two",
        "gqa_ge_4",
        "gqa_or_experts_ge_4",
        "experts_eq_8",
    ] = "always"


class QuantMix(Strict):
    """A llama.cpp file type (``llama-quantize`` target) and which tensors get which type."""

    name: str
    kld: float = Field(ge=0, description="mean KL divergence from the 16-bit model, as llama.cpp measures it")
    kld_source: str
    base: str = Field(description="the type most 2-D weight tensors get")
    output: str = Field(description="type of output.weight (and of tied token embeddings)")
    token_embd: str = Field("", description="type of token_embd.weight when it is not tied; empty = base")
    experts: str = Field("", description="type of 3-D expert tensors; empty = the per-category rules")
    rules: list[MixRule] = []
    aliases: list[str] = []
    source: str


class GpuSpec(Strict):
    name: str
    vendor: GpuVendor
    vram_gib: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0, description="memory bandwidth, GB/s")
    fp16_tflops: float = Field(gt=0, description="dense FP16 tensor throughput")
    cuda_cores: int = Field(0, ge=0, description="shader cores as the vendor counts them (0: not recorded)")
    tdp_w: int = Field(gt=0)
    price_usd: int | None = Field(None, gt=0, description="None where no list price could be verified")
    price_jpy: int | None = Field(None, gt=0)
    price_date: date
    price_note: str = Field(description="launch MSRP, street price, ...")
    unified_memory: bool = False
    usable_fraction: float = Field(1.0, gt=0, le=1, description="share of memory the GPU may use (Apple: wired limit)")
    aliases: list[str] = []
    source: str

    @property
    def usable_bytes(self) -> int:
        return int(self.vram_gib * self.usable_fraction * 1024**3)


class SpeedMeasurement(Strict):
    """A published llama.cpp measurement used to calibrate the speed model."""

    gpu: str
    model: str
    model_size_gib: float
    params_b: float
    tg_tokens_per_s: float = Field(description="llama-bench tg128")
    pp_tokens_per_s: float = Field(description="llama-bench pp512")
    source: str


class Build(Strict):
    """A PC build from the guide's budget table."""

    name: str
    budget_jpy: int
    gpus: list[str]
    ram_gib: int
    platform_price_jpy: int = Field(description="everything but the GPUs: CPU, board, RAM, PSU, case, SSD")
    platform_price_usd: int
    target: str
    source: str


# ---- the guide's claims ------------------------------------------------------------------------------
# Each claim of the guide is a record: where it is (section, table row and column), its original Japanese
# text, an English gloss, and either the checks homellm recomputes or, for statements no formula decides,
# a judgement with its source. "model@QUANT" names a catalog model at a quantization.

Verdict = Literal["ok", "wrong", "misleading", "unverifiable"]


class Judgement(Strict):
    verdict: Verdict
    figure: str = Field("", description="what the sources say instead (or in support)")
    correction: str = ""
    source: str


class Hardware(Strict):
    """The hardware a claim names: catalog GPUs installed together, or generic cards of a size."""

    gpus: list[str] = []
    vram_gib: float = Field(0, ge=0, description="a generic card of this size when no GPU is named")
    cards: int = Field(1, ge=1, description="how many generic cards ('48 GB over several GPUs': 2 x 24)")
    ram_gib: float = Field(64, gt=0, description="the RAM the claim names (64 GiB when it names none)")
    either: bool = Field(False, description="the GPUs are alternatives ('RTX 5070 Ti / RTX 5080'), not a set")


class NeedsCheck(Strict):
    """'N GB or more' for a model: is N enough to hold it on the GPU at a 4,096-token context?"""

    kind: Literal["needs"]
    models: list[str]
    claimed_gib: float = Field(gt=0)


class SizeCheck(Strict):
    """'About N GB' for a model at a quantization: its weights (the guide adds the KV cache separately)."""

    kind: Literal["size"]
    model: str
    claimed_gib: float = Field(gt=0)


class RunsCheck(Strict):
    """A recommendation: do these models run entirely on the named hardware, and how fast?"""

    kind: Literal["runs"]
    models: list[str]
    hardware: Hardware


class RamCheck(Strict):
    """'RAM: N GB' for models on the named GPUs: does N hold what does not fit in VRAM?"""

    kind: Literal["ram"]
    models: list[str]
    hardware: Hardware
    claimed_gib: float = Field(gt=0)


class QuantFitCheck(Strict):
    """'Runs with quantization': the best quantization that fits the named hardware, and what it costs."""

    kind: Literal["quant_fit"]
    model: str
    hardware: Hardware


class MinGpuCheck(Strict):
    """'RTX 5080 or better' / 'RTX 5090 only': the smallest card of a series that holds each model."""

    kind: Literal["min_gpu"]
    models: list[str]
    series: list[str]
    claimed: str
    only: bool = False


class DecodeCheck(Strict):
    """A tokens/s figure: single-stream decode ceiling and estimate, and the batched aggregate reading."""

    kind: Literal["decode"]
    model: str
    gpu: str
    claimed_tokens_per_s: float = Field(gt=0)


class RelativeCheck(Strict):
    """'+N% over GPU B': the decode (bandwidth) and prefill (compute) ratios of the two GPUs."""

    kind: Literal["relative"]
    gpu: str
    baseline: str
    claimed_pct: float


class SpecCheck(Strict):
    """A GPU's catalog figure: memory, bandwidth, power, cores or price."""

    kind: Literal["spec"]
    gpu: str
    field: Literal["vram_gib", "bandwidth_gbs", "tdp_w", "cuda_cores", "price_usd", "price_jpy"]
    claimed: float
    count: int = Field(1, ge=1, description="cards in the claim (memory adds up)")


class BenchmarkCheck(Strict):
    """A benchmark score against the catalog's primary-source scores."""

    kind: Literal["benchmark"]
    model: str = Field(description="catalog id or reference model name")
    benchmark: Benchmark
    claimed: float
    claimed_text: str = Field("", description="the score as the guide writes it when it is not a percentage")


class CompareCheck(Strict):
    """'A scores above / below / close to B' on a benchmark."""

    kind: Literal["compare"]
    left: BenchmarkCheck
    right: BenchmarkCheck
    relation: Literal["above", "below", "close"]


class ParamsCheck(Strict):
    kind: Literal["params"]
    model: str
    total_b: float = Field(gt=0)
    active_b: float = Field(0, ge=0)


class QuantsCheck(Strict):
    """'Supports Q4_K_M, Q8_0': quantizations published for the model."""

    kind: Literal["quants"]
    model: str
    claimed: list[str]


class BudgetCheck(Strict):
    """A build's budget: the catalog's GPU prices plus its platform estimate."""

    kind: Literal["budget"]
    build: str
    min_jpy: int = Field(ge=0)
    max_jpy: int = Field(0, ge=0, description="0: open-ended ('120万円以上')")


Check = Annotated[
    NeedsCheck
    | SizeCheck
    | RunsCheck
    | RamCheck
    | QuantFitCheck
    | MinGpuCheck
    | DecodeCheck
    | RelativeCheck
    | SpecCheck
    | BenchmarkCheck
    | CompareCheck
    | ParamsCheck
    | QuantsCheck
    | BudgetCheck,
    Field(discriminator="kind"),
]


class GuideClaim(Strict):
    """One claim of the guide: a table cell, a list item, a line or a heading with a figure."""

    id: str
    section: str = Field(description="the guide's heading above the claim, as written")
    row: str = Field("", description="a table row's first cell")
    column: str = Field("", description="a table cell's column header")
    ja: str = Field(description="the original Japanese text")
    en: str = Field(description="an English gloss")
    gpus: list[str] = Field([], description="GPUs the claim is about besides those its checks name")
    checks: list[Check] = []
    judged: Judgement | None = None
    note: str = Field("", description="added to the correction")

    @model_validator(mode="after")
    def _one_basis(self) -> GuideClaim:
        if bool(self.checks) == (self.judged is not None):
            raise ValueError(_("a claim needs either checks or a judgement, not both"))
        return self


class GuideSection(Strict):
    ja: str
    en: str


class ReferenceModel(Strict):
    """A model the guide scores that is not in the catalog proper: cloud models, old or non-existent ones."""

    name: str
    kind: Literal["cloud", "local"]
    exists: bool = True
    note: str = ""
    aliases: list[str] = []
    scores: list[BenchmarkScore] = []
    source: str


class SizeQuality(Strict):
    """Two sizes of one model family measured by llama.cpp: how much a doubling of parameters is worth."""

    small_params_b: float = Field(gt=0)
    small_ppl: float = Field(gt=0)
    large_params_b: float = Field(gt=0)
    large_ppl: float = Field(gt=0)
    source: str

    @property
    def nats_per_doubling(self) -> float:
        """Drop in mean log-perplexity (nats per token) per doubling of the parameter count."""
        import math

        return math.log(self.small_ppl / self.large_ppl) / math.log2(self.large_params_b / self.small_params_b)
