"""Names inside the guide's claim records: ``model@QUANT`` and the catalog entries checks refer to.

The catalog validates them when it loads, so a typo in ``guide.toml`` fails every test at once
rather than one audit at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from homellm.catalog.schema import (
    BenchmarkCheck,
    BudgetCheck,
    CompareCheck,
    DecodeCheck,
    GuideClaim,
    Hardware,
    MinGpuCheck,
    NeedsCheck,
    ParamsCheck,
    QuantFitCheck,
    QuantsCheck,
    RamCheck,
    RelativeCheck,
    RunsCheck,
    SizeCheck,
    SpecCheck,
)
from homellm.errors import CatalogError, HomeLLMError
from homellm.i18n import _

if TYPE_CHECKING:
    from homellm.catalog import Catalog


def split_model_ref(ref: str) -> tuple[str, str | None]:
    """``"llama3.3:70b@Q4_K_M"`` -> ``("llama3.3:70b", "Q4_K_M")``; no ``@``: the model's default quant."""
    model, _at, quant = ref.partition("@")
    return model, (quant or None)


def _model_refs(claim: GuideClaim) -> list[str]:
    out: list[str] = []
    for c in claim.checks:
        if isinstance(c, NeedsCheck | RunsCheck | RamCheck | MinGpuCheck):
            out += c.models
        elif isinstance(c, SizeCheck | DecodeCheck | QuantFitCheck | ParamsCheck | QuantsCheck):
            out.append(c.model)
    return out


def _gpu_refs(claim: GuideClaim) -> list[str]:
    out = list(claim.gpus)
    for c in claim.checks:
        hardware: Hardware | None = getattr(c, "hardware", None)
        if hardware is not None:
            out += hardware.gpus
        if isinstance(c, DecodeCheck | SpecCheck):
            out.append(c.gpu)
        elif isinstance(c, RelativeCheck):
            out += [c.gpu, c.baseline]
        elif isinstance(c, MinGpuCheck):
            out += [*c.series, c.claimed]
    return out


def claim_gpus(claim: GuideClaim, catalog: Catalog) -> list[str]:
    """Catalog names of every GPU the claim is about (``plan --gpu X`` shows the claims about X)."""
    names: list[str] = []
    for g in _gpu_refs(claim):
        name = catalog.gpu(g).name
        if name not in names:
            names.append(name)
    return names


def check_claim_references(claim: GuideClaim, catalog: Catalog) -> None:
    try:
        for ref in _model_refs(claim):
            model, quant = split_model_ref(ref)
            spec = catalog.model(model)
            catalog.mix(quant or spec.default_quant)
        claim_gpus(claim, catalog)
        for c in claim.checks:
            benchmarks = (
                [c] if isinstance(c, BenchmarkCheck) else [c.left, c.right] if isinstance(c, CompareCheck) else []
            )
            for b in benchmarks:
                if catalog.scores(b.model) is None:
                    raise CatalogError(_("unknown model {model!r}").format(model=b.model))
            if isinstance(c, BudgetCheck) and not any(b.name == c.build for b in catalog.builds):
                raise CatalogError(_("unknown build {build!r}").format(build=c.build))
    except HomeLLMError as exc:
        raise CatalogError(_("guide claim {id}: {exc}").format(id=claim.id, exc=exc)) from exc
