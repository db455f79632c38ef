"""The guide audit: every claim of the guide has a record, and the verdicts follow the rules of issue 12."""

from __future__ import annotations

from pathlib import Path

import pytest

from homellm.catalog import Catalog
from homellm.catalog.schema import BenchmarkCheck, Hardware, RunsCheck
from homellm.plan import guide_checks
from homellm.plan.guide import audit_guide
from homellm.testing.guide_units import clean, guide_units

GUIDE = Path(__file__).resolve().parents[3] / "shared" / "seed" / "guide-ja-2025-12.md"


@pytest.fixture(scope="module")
def guide_text() -> str:
    if not GUIDE.is_file():
        pytest.skip(f"the guide is not in this checkout ({GUIDE}); it lives in the project's shared folder")
    return GUIDE.read_text(encoding="utf-8")


def test_every_claim_in_the_guide_has_a_record(guide_text: str, catalog: Catalog) -> None:
    units = guide_units(guide_text)
    assert len(units) > 300  # the parser found the tables, lists, lines and figure headings
    records = {(c.section, c.row, c.column, c.ja) for c in catalog.claims}
    missing = [u for u in units if u.key not in records]
    assert not missing, f"{len(missing)} claims of the guide have no record, e.g. {missing[:3]}"


def test_every_record_quotes_the_guide_exactly(guide_text: str, catalog: Catalog) -> None:
    units = {u.key for u in guide_units(guide_text)}
    orphans = [c.id for c in catalog.claims if (c.section, c.row, c.column, c.ja) not in units]
    assert not orphans, f"records whose text is not in the guide: {orphans[:5]}"
    assert len({c.id for c in catalog.claims}) == len(catalog.claims)


def test_the_parser_reads_table_cells_lists_code_and_figure_headings() -> None:
    text = "## T\n### RTX 5070（12GB VRAM）推奨構成\n- **RAM**: 32GB以上\n| a | b |\n|---|---|\n| **x** | 1<br>2 |\n"
    text += "```\nollama pull m\n```\n- [link](https://x)\n"
    keys = [(u.row, u.column, u.text) for u in guide_units(text)]
    assert keys == [("", "", "RTX 5070（12GB VRAM）推奨構成"), ("", "", "RAM: 32GB以上"), ("x", "b", "1"),
                    ("x", "b", "2"), ("", "", "ollama pull m")]  # fmt: skip
    assert clean(" **bold** ") == "bold"


def test_each_claim_has_a_verdict_figure_and_source(catalog: Catalog) -> None:
    audits = audit_guide(catalog)
    assert len(audits) == len(catalog.claims)
    for a in audits:
        assert a.verdict in ("ok", "wrong", "misleading", "unverifiable")
        assert a.basis, a.claim.id
        assert a.claim.en and a.claim.ja
        if a.verdict in ("wrong", "misleading"):
            assert a.correction, f"{a.claim.id}: a {a.verdict} claim needs a correction"
    verdicts = {a.verdict for a in audits}
    assert verdicts == {"ok", "wrong", "misleading", "unverifiable"}


def _section(catalog: Catalog, gpu: str, section: str) -> dict[str, str]:
    return {a.claim.ja: a.verdict for a in audit_guide(catalog, gpu) if a.claim.section == section}


@pytest.mark.parametrize(
    ("gpu", "section", "expected"),
    [
        ("RTX 5070", "RTX 5070（12GB VRAM）推奨構成",
         {"Llama 3.1 8B（Q4_K_M）": "ok", "Qwen2.5 14B（Q4_K_M）": "ok", "Phi-4（Q4_K_M）": "ok"}),
        ("RTX 5070 Ti", "RTX 5070 Ti / RTX 5080（16GB VRAM）推奨構成",
         {"Qwen2.5 14B（Q8_0）": "ok", "Qwen2.5 32B（Q4_K_M）": "misleading", "Llama 3.3 70B（Q4_K_M）": "wrong",
          "DeepSeek R1（Q4_K_M）": "wrong"}),
        ("RTX 5080", "RTX 5070 Ti / RTX 5080（16GB VRAM）推奨構成",
         {"Qwen2.5 14B（Q8_0）": "ok", "Qwen2.5 32B（Q4_K_M）": "misleading", "Llama 3.3 70B（Q4_K_M）": "wrong",
          "DeepSeek R1（Q4_K_M）": "wrong"}),
        ("RTX 5090", "RTX 5090（32GB VRAM）推奨構成",
         {"Qwen2.5 72B（Q8_0）": "wrong", "Llama 3.3 70B（FP16）": "wrong", "Qwen3-235B-A22B（Q8_0）": "wrong",
          "DeepSeek R1（Q8_0）": "wrong"}),
    ],
)  # fmt: skip
def test_the_per_gpu_sections(catalog: Catalog, gpu: str, section: str, expected: dict[str, str]) -> None:
    verdicts = _section(catalog, gpu, section)
    assert {k: verdicts[k] for k in expected} == expected
    assert any(k.startswith("RAM:") for k in verdicts) and any(k.startswith("CPU:") for k in verdicts)


def test_memory_claims_are_judged_on_the_hardware_they_name(catalog: Catalog) -> None:
    """70B at Q4_K_M holds on two 24 GB cards, and not on the one 32 GB card of an RTX 5090."""
    model = ["llama3.3:70b@Q4_K_M"]
    two = guide_checks.runs(RunsCheck(kind="runs", models=model, hardware=Hardware(vram_gib=24, cards=2)), catalog)
    one = guide_checks.runs(RunsCheck(kind="runs", models=model, hardware=Hardware(gpus=["RTX 5090"])), catalog)
    assert two.verdict == "ok" and "24 GB GPU #1 + 24 GB GPU #2" in two.figure
    assert one.verdict != "ok"


def test_tokens_per_s_claims_name_both_readings(catalog: Catalog) -> None:
    (claim,) = [a for a in audit_guide(catalog, "RTX 5090") if a.claim.column == "推論速度（7Bモデル）"]
    assert claim.verdict == "misleading"  # true only as a batched total, never for one stream
    assert "one stream" in claim.figure and "batched" in claim.figure and "simultaneous requests" in claim.correction


def test_benchmarks_without_a_primary_source_are_unverifiable(catalog: Catalog) -> None:
    for a in audit_guide(catalog):
        checks = [c for c in a.claim.checks if isinstance(c, BenchmarkCheck)]
        for check in checks:
            found = catalog.scores(check.model)
            ref = catalog.reference(check.model)
            has_score = found is not None and any(s.benchmark == check.benchmark for s in found[1])
            if not has_score and (ref is None or ref.exists):
                assert a.verdict == "unverifiable", a.claim.id


def test_the_issues_examples(catalog: Catalog) -> None:
    by_text = {(a.claim.row, a.claim.ja): a for a in audit_guide(catalog)}
    assert by_text[("Qwen3-235B-A22B-Thinking", "93.8%")].verdict == "wrong"  # MMLU-Redux, not MMLU-Pro
    assert by_text[("Llama 3.3 8B", "70%")].verdict == "wrong"  # no such model
    assert by_text[("RTX 5090", "+50%")].verdict == "ok"
    assert by_text[("RTX 5080", "+30%")].verdict == "wrong"
