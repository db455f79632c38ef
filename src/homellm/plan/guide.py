"""``homellm guide``: every claim of the Japanese local-LLM guide, recomputed or checked against sources.

The claims are data (``catalog/data/guide_claims.toml``): the guide's section, the original Japanese,
an English gloss, and either the checks to recompute (:mod:`homellm.plan.guide_checks`) or a
judgement with its source. The guide file itself is never read at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homellm.catalog import Catalog
from homellm.catalog.claim_refs import claim_gpus
from homellm.catalog.schema import (
    BenchmarkCheck,
    BudgetCheck,
    Check,
    CompareCheck,
    DecodeCheck,
    GuideClaim,
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
    Verdict,
)
from homellm.plan import guide_checks as checks
from homellm.plan.guide_checks import Finding

VERDICTS: tuple[Verdict, ...] = ("ok", "wrong", "misleading", "unverifiable")


@dataclass(frozen=True)
class ClaimAudit:
    claim: GuideClaim
    section_en: str
    verdict: Verdict
    figure: str
    basis: str
    correction: str
    gpus: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        return {
            "id": c.id, "section": c.section, "section_en": self.section_en, "row": c.row, "column": c.column,
            "ja": c.ja, "en": c.en, "verdict": self.verdict, "figure": self.figure, "basis": self.basis,
            "correction": self.correction, "gpus": list(self.gpus),
        }  # fmt: skip


def _run(check: Check, catalog: Catalog, focus: str | None) -> Finding:
    match check:
        case NeedsCheck():
            return checks.needs(check, catalog)
        case SizeCheck():
            return checks.size(check, catalog)
        case RunsCheck():
            return checks.runs(check, catalog, focus)
        case RamCheck():
            return checks.ram(check, catalog, focus)
        case QuantFitCheck():
            return checks.quant_fit(check, catalog, focus)
        case MinGpuCheck():
            return checks.min_gpu(check, catalog)
        case DecodeCheck():
            return checks.decode(check, catalog)
        case RelativeCheck():
            return checks.relative(check, catalog)
        case SpecCheck():
            return checks.spec(check, catalog)
        case BenchmarkCheck():
            return checks.benchmark(check, catalog)
        case CompareCheck():
            return checks.compare(check, catalog)
        case ParamsCheck():
            return checks.params(check, catalog)
        case QuantsCheck():
            return checks.quants(check, catalog)
        case BudgetCheck():
            return checks.budget(check, catalog)
    raise AssertionError(check)


def audit_claim(claim: GuideClaim, catalog: Catalog, focus_gpu: str | None = None) -> ClaimAudit:
    """Recompute one claim; ``focus_gpu`` judges 'A / B' alternatives on that GPU alone."""
    if claim.judged is not None:
        j = claim.judged
        finding = Finding(j.verdict, j.figure, j.source, j.correction)
    else:
        finding = checks.join_findings([_run(c, catalog, focus_gpu) for c in claim.checks])
    correction = " ".join(x for x in (finding.correction, claim.note) if x)
    section = catalog.sections.get(claim.section)
    return ClaimAudit(
        claim, section.en if section else "", finding.verdict, finding.figure, finding.basis, correction,
        tuple(claim_gpus(claim, catalog)),
    )  # fmt: skip


def audit_guide(catalog: Catalog, gpu: str | None = None) -> list[ClaimAudit]:
    """Every claim in the guide's order; with ``gpu``, only the claims about that GPU."""
    name = catalog.gpu(gpu).name if gpu else None
    selected = [c for c in catalog.claims if name is None or name in claim_gpus(c, catalog)]
    return [audit_claim(c, catalog, name) for c in selected]


def summary(audits: list[ClaimAudit]) -> dict[str, int]:
    return {v: sum(a.verdict == v for a in audits) for v in VERDICTS}
