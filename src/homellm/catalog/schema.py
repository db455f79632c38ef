"""Types of the shipped catalog. Every number carries a ``source``."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    # multi-head latent attention (DeepSeek)
    kv_lora_rank: int = Field(0, ge=0)
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
        description="weights outside the standard stack (Gemma 3n per-layer embeddings, AltUp, LAuReL)",
    )

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

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
            raise ValueError("MoE models need 0 < n_expert_used <= n_expert and n_ff_expert")
        if self.kv_lora_rank and self.head_dim_k != self.kv_lora_rank + self.qk_rope_dim:
            raise ValueError("MLA models cache kv_lora_rank + qk_rope_dim per token (head_dim_k)")
        if self.sliding_window and self.swa_pattern == 1:
            raise ValueError("swa_pattern 1 would make every layer global; use 0 for all-SWA")
        return self


class BenchmarkScore(Strict):
    benchmark: Literal["MMLU", "MMLU-Pro", "HumanEval", "MT-Bench", "GSM8K", "AIME 2025", "SWE-Bench"]
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
    source: str
    benchmarks: list[BenchmarkScore] = []
    notes: str = ""

    @model_validator(mode="after")
    def _quants(self) -> ModelSpec:
        if self.default_quant not in self.quants:
            raise ValueError(f"default_quant {self.default_quant} is not among {self.quants}")
        if self.params_active > self.params_total:
            raise ValueError("params_active exceeds params_total")
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
    tdp_w: int = Field(gt=0)
    price_usd: int = Field(gt=0)
    price_jpy: int = Field(gt=0)
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


class Tier(Strict):
    """The guide's PC tiers by model size."""

    name: str
    model_size: str
    vram_gib: float
    example_gpus: list[str]
    guide_claim: str
    representative: str = Field(description="catalog model id that stands for this size class")
    source: str


class GuideClaim(Strict):
    """A statement from the guide that ``homellm plan --gpu`` checks against its own computation."""

    gpu: str
    model: str
    quant: str
    claim: str
    claimed_vram_gib: float = 0
    source: str
