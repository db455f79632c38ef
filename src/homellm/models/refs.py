"""What the user typed (``qwen2.5:14b``, ``qwen2.5:14b:Q6_K``, ``llama3.2:1b-instruct-q8_0``,
``hf.co/ORG/REPO:Q4_K_M``) as a reference to one file in one source."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from homellm.catalog import Catalog
from homellm.errors import NotFoundError, UsageError
from homellm.i18n import _

HF_HOSTS = ("hf.co/", "huggingface.co/")
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}$")  # Ollama's name grammar (types/model/name.go)


@dataclass(frozen=True)
class ModelRef:
    source: Literal["ollama", "huggingface"]
    name: str  # canonical: what `models --local` shows and `rm` takes
    repo: str  # Ollama: namespace/model; Hugging Face: ORG/REPO
    tag: str  # Ollama: the tag; Hugging Face: the quantization asked for ("" = the default choice)
    catalog_id: str | None = None
    quant: str | None = None  # the catalog quantization asked for, if any


def ollama_quant(quant: str) -> str:
    """A llama.cpp quantization as Ollama spells it in tags: q4_K_M, q8_0, fp16."""
    upper = quant.upper()
    if upper in ("F16", "FP16"):
        return "fp16"
    if upper == "BF16":
        return "bf16"
    return upper[0].lower() + upper[1:] if upper.startswith("Q") else upper.lower()


def parse_ref(text: str, catalog: Catalog) -> ModelRef:
    raw = text.strip()
    if not raw:
        raise UsageError(_("give a model: a catalog id (qwen2.5:14b), an Ollama tag or hf.co/ORG/REPO:QUANT"))
    lowered = raw.lower()
    for host in HF_HOSTS:
        if lowered.startswith(host):
            return _hf_ref(raw[len(host) :], raw)
    return _ollama_ref(raw, catalog)


def _hf_ref(rest: str, raw: str) -> ModelRef:
    repo, _sep, quant = rest.partition(":")
    parts = repo.split("/")
    if len(parts) != 2 or not all(_PART.match(p) for p in parts):
        raise UsageError(_("{ref!r} is not hf.co/ORG/REPO[:QUANT]").format(ref=raw))
    if quant and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,40}", quant):
        raise UsageError(_("{quant!r} is not a quantization name").format(quant=quant))
    name = f"hf.co/{repo}" + (f":{quant}" if quant else "")
    return ModelRef("huggingface", name, repo, quant.upper() if quant else "")


def _ollama_ref(raw: str, catalog: Catalog) -> ModelRef:
    head, _sep, tail = raw.rpartition(":") if raw.count(":") >= 2 else (raw, "", "")
    if tail:  # catalog-id:QUANT
        spec = catalog.model(head)
        mix = catalog.mix(tail)
        if mix.name not in {catalog.mix(q).name for q in spec.quants}:
            raise NotFoundError(_("quantization of {model}").format(model=spec.id), tail, spec.quants)
        if not spec.ollama_quant_tag:
            raise UsageError(_("{model} is published in one quantization only; pull {model}").format(model=spec.id))
        family = spec.id.split(":")[0]
        return ModelRef(
            "ollama", f"{spec.id}:{mix.name}", f"library/{family}",
            spec.ollama_quant_tag.format(q=ollama_quant(mix.name)), spec.id, mix.name,
        )  # fmt: skip
    path, _sep, tag = raw.partition(":")
    tag = tag or "latest"
    parts = path.split("/")
    if len(parts) == 1:
        parts = ["library", *parts]
    if len(parts) != 2 or not all(_PART.match(p) for p in [*parts, tag]):
        raise UsageError(_("{ref!r} is not a model name (MODEL[:TAG], NAMESPACE/MODEL[:TAG] or hf.co/ORG/REPO)").format(
            ref=raw))  # fmt: skip
    repo = "/".join(parts)
    short = repo.removeprefix("library/")
    catalog_id = next((m.id for m in catalog.models if m.id == f"{short}:{tag}"), None)
    return ModelRef("ollama", f"{short}:{tag}", repo, tag, catalog_id)
