"""Read a model's architecture and tensor table from a GGUF file's header.

``gguf.GGUFReader`` memory-maps the file and parses only the header and the
tensor infos; the weights themselves are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homellm.catalog.schema import Architecture
from homellm.errors import GGUFError
from homellm.i18n import _

# llama.cpp's default SWA pattern per architecture when the file has no pattern key
_DEFAULT_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "gpt-oss": 2, "cohere2": 4}


@dataclass(frozen=True)
class FileTensor:
    name: str
    shape: tuple[int, ...]
    type_name: str
    n_bytes: int


@dataclass(frozen=True)
class GGUFModel:
    path: Path
    name: str
    file_type: str
    architecture: Architecture
    tensors: list[FileTensor]

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        total = 0
        for t in self.tensors:
            n = 1
            for d in t.shape:
                n *= d
            total += n
        return total


def read_gguf(path: Path) -> GGUFModel:
    """Parse ``path``; raise :class:`GGUFError` with a one-line reason if it is not a usable GGUF model."""
    if not path.exists():
        raise GGUFError(_("no such file: {path}").format(path=path))
    if not path.is_file():
        raise GGUFError(_("not a file: {path}").format(path=path))
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise GGUFError(_("cannot read {path}: {strerror}").format(path=path, strerror=exc.strerror)) from exc
    if magic != b"GGUF":
        raise GGUFError(_("{name} is not a GGUF file (it does not start with the GGUF magic)").format(name=path.name))
    try:
        import gguf

        reader = gguf.GGUFReader(path)
        fields = {
            key: field.contents() for key, field in reader.fields.items() if not key.startswith("tokenizer.ggml.t")
        }
        n_tokens = len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else 0
        tensors = [
            FileTensor(t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_bytes))
            for t in reader.tensors
        ]
    except GGUFError:
        raise
    except Exception as exc:  # the gguf package raises bare ValueError/IndexError on corrupt files
        raise GGUFError(
            _("{name} is a corrupt or truncated GGUF file ({kind}: {exc})").format(
                name=path.name, kind=type(exc).__name__, exc=exc
            )
        ) from exc
    arch = _architecture(fields, tensors, n_tokens, path)
    file_type = _file_type_name(fields.get("general.file_type"))
    return GGUFModel(path, str(fields.get("general.name", path.stem)), file_type, arch, tensors)


def _file_type_name(value: Any) -> str:
    if value is None:
        return "unknown"
    import gguf

    try:
        return str(gguf.LlamaFileType(int(value)).name.removeprefix("MOSTLY_"))
    except ValueError:
        return f"type {value}"


def _first(value: Any) -> int:
    """Per-layer arrays (head counts, FFN widths) are summarised by their largest entry."""
    if isinstance(value, list):
        return int(max(value)) if value else 0
    return int(value)


def _architecture(fields: dict[str, Any], tensors: list[FileTensor], n_tokens: int, path: Path) -> Architecture:
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        raise GGUFError(_("{name} has no general.architecture key; is it a model file?").format(name=path.name))
    names = {t.name for t in tensors}

    def get(key: str, default: Any = None) -> Any:
        return fields.get(f"{arch}.{key}", default)

    try:
        n_layer = int(get("block_count"))
        n_embd = int(get("embedding_length"))
        n_head = _first(get("attention.head_count"))
    except TypeError:
        raise GGUFError(
            _("{name} lacks the block_count/embedding_length/head_count keys of {arch}").format(
                name=path.name, arch=arch
            )
        ) from None
    n_head_kv = _first(get("attention.head_count_kv", n_head))
    head_dim_k = int(get("attention.key_length", n_embd // n_head))
    head_dim_v = int(get("attention.value_length", n_embd // n_head))
    sliding_window = int(get("attention.sliding_window", 0) or 0)
    pattern_value = get("attention.sliding_window_pattern")
    swa_pattern = _DEFAULT_SWA_PATTERN.get(arch, 0) if sliding_window else 0
    if isinstance(pattern_value, int):
        swa_pattern = pattern_value
    elif isinstance(pattern_value, list) and pattern_value:
        # explicit per-layer flags; the period is the distance between global layers
        globals_ = [i for i, is_swa in enumerate(pattern_value) if not is_swa]
        swa_pattern = globals_[0] + 1 if globals_ else 0
    vocab = int(get("vocab_size", 0) or n_tokens)
    if not vocab:
        embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
        vocab = embd.shape[1] if embd else 0
    kv_lora = int(get("attention.kv_lora_rank", 0) or 0)
    key_mla = int(get("attention.key_length_mla", 0) or 0)
    value_mla = int(get("attention.value_length_mla", 0) or 0)
    rope_dim = int(get("rope.dimension_count", 0) or 0)
    # llama.cpp caches MLA's latent only when the file has the *_mla lengths (converted since April 2025);
    # older DeepSeek GGUFs cache n_head_kv full heads of key_length / value_length (much larger)
    mla_cache = bool(kv_lora and key_mla and value_mla)
    if kv_lora and not mla_cache:
        key_mla, value_mla = head_dim_k, head_dim_v
    try:
        return Architecture(
            arch=arch,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim_k=head_dim_k,
            head_dim_v=head_dim_v,
            n_ff=_first(get("feed_forward_length", 0)),
            n_vocab=vocab,
            n_ctx_train=int(get("context_length", 4096)),
            tied_embeddings="output.weight" not in names,
            attn_bias="blk.0.attn_q.bias" in names,
            qk_norm="blk.0.attn_q_norm.weight" in names,
            sliding_window=sliding_window,
            swa_pattern=swa_pattern,
            n_kv_shared_layers=int(get("attention.shared_kv_layers", 0) or 0),
            per_layer_embd=int(get("embedding_length_per_layer_input", 0) or 0),
            kv_lora_rank=kv_lora,
            mla_cache=mla_cache or not kv_lora,
            q_lora_rank=int(get("attention.q_lora_rank", 0) or 0),
            qk_rope_dim=rope_dim if kv_lora else 0,
            qk_nope_dim=(key_mla - rope_dim) if kv_lora and key_mla else 0,
            v_head_dim_mla=value_mla if kv_lora else 0,
            n_expert=int(get("expert_count", 0) or 0),
            n_expert_used=int(get("expert_used_count", 0) or 0),
            n_ff_expert=int(get("expert_feed_forward_length", 0) or 0),
            n_expert_shared=int(get("expert_shared_count", 0) or 0),
            n_dense_lead=int(get("leading_dense_block_count", 0) or 0),
        )
    except ValueError as exc:
        raise GGUFError(
            _("{name}: inconsistent {arch} hyper-parameters ({exc})").format(name=path.name, arch=arch, exc=exc)
        ) from exc
