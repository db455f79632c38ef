"""Metric definitions on exact timestamps; answer extraction on real model outputs; the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homellm.bench import grading
from homellm.bench.metrics import RequestTiming, percentile, summarize
from homellm.bench.quality import wilson
from homellm.bench.sandbox import run_program

CAPTURED = json.loads((Path(__file__).parent / "captured_smollm2_outputs.json").read_text())


def test_metric_definitions_on_exact_timestamps() -> None:
    # sent at 10.0; role-only chunk not recorded; content at 10.5, 10.6, 10.7, 10.9; done at 11.0
    t = RequestTiming(start=10.0, end=11.0, content_times=[10.5, 10.6, 10.7, 10.9], completion_tokens=4)
    assert t.ttft == pytest.approx(0.5)
    assert t.itl == pytest.approx([0.1, 0.1, 0.2])
    assert t.tpot == pytest.approx((10.9 - 10.5) / 3)  # the first token is excluded
    assert t.e2e == pytest.approx(1.0)
    assert t.client_decode_tps == pytest.approx(3 / 0.4)


def test_server_counts_win_over_chunk_counts() -> None:
    t = RequestTiming(start=0, end=2, content_times=[1.0, 1.5], completion_tokens=6)
    assert t.tokens == 6 and t.tpot == pytest.approx(0.5 / 5)
    u = RequestTiming(start=0, end=2, content_times=[1.0, 1.5])
    assert u.tokens == 2 and u.tpot == pytest.approx(0.5)


def test_summary_percentiles_errors_and_throughput() -> None:
    ok = [RequestTiming(0, 1, [0.1 * (i + 1), 0.1 * (i + 1) + 0.05], 2) for i in range(10)]
    bad = RequestTiming(0, 1, [], error="boom")
    s = summarize(2, [*ok, bad], wall_s=2.0)
    assert s.requests == 11 and s.errors == 1
    assert s.ttft.p50 == pytest.approx(0.5) and s.ttft.p90 == pytest.approx(0.9) and s.ttft.p99 == pytest.approx(1.0)
    assert s.requests_per_s == pytest.approx(5.0) and s.output_tokens_per_s == pytest.approx(10.0)
    assert s.decode_server.p50 is None and s.server_counted_tokens
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0


def test_wilson_interval() -> None:
    assert wilson(0, 5)[0] == 0.0 and wilson(0, 5)[1] == pytest.approx(0.4345, abs=1e-3)
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 0) == (0.0, 0.0)


# expected extractions worked out by hand from SmolLM2's real responses
GSM8K_CASES = {
    "gsm8k-13": ("1", "1"),  # "... The answer is: 1"
    "gsm8k-24": (None, "23.876"),  # ends "#### 23.876 as an integer": no "The answer is"
    "gsm8k-27": ("3", "3"),  # "#### 4\nThe answer is: 3": the last statement wins
    "gsm8k-28": ("40", "40"),
    "gsm8k-12": (None, "18"),  # no final-answer line; the last number in the text
}


@pytest.mark.parametrize("case", sorted(GSM8K_CASES))
def test_gsm8k_extraction_on_real_outputs(case: str) -> None:
    response = next(r["response"] for r in CAPTURED["gsm8k"] if r["id"] == case)
    assert (grading.gsm8k_strict(response), grading.gsm8k_flexible(response)) == GSM8K_CASES[case]


def test_mmlu_extraction_on_real_outputs() -> None:
    # SmolLM2 answered "D) Saturn" and "A) 50" without the requested "Answer: X" line
    responses = [m["response"] for m in CAPTURED["mmlu"]]
    assert [grading.mmlu_strict(r) for r in responses] == [None, None]
    assert [grading.mmlu_flexible(r) for r in responses] == ["D", "A"]
    assert grading.mmlu_strict("Let me think.\n**Answer: C**") == "C"
    assert grading.mmlu_strict("answer: (b)") == "B"


@pytest.mark.parametrize(("text", "number"), [("1,280", "1280"), ("$18.00", "18"), ("-3.", "-3"), ("0.5", "0.5")])
def test_number_normalization(text: str, number: str) -> None:
    assert grading.normalize_number(text) == number


def test_code_extraction() -> None:
    prompt = 'import math\n\ndef f(x):\n    """doc"""\n'
    assert grading.extract_code("```python\ndef f(x):\n    return x\n```", prompt).startswith("import math")
    assert grading.extract_code("    return x + 1\n", prompt) == prompt + "    return x + 1\n"


@pytest.mark.parametrize(
    ("program", "status", "detail"),
    [
        ("def f(x):\n    return x + 1\nassert f(1) == 2\n", "passed", ""),
        ("assert 1 == 2\n", "failed", "AssertionError"),
        ("open('/tmp/homellm-escape.txt', 'w').write('x')\n", "refused", "writing outside its folder"),
        ("import os\nos.makedirs('/tmp/homellm-escape-dir')\n", "refused", "outside its folder"),
        ("import os\nos.remove('/etc/hostname')\n", "refused", "outside its folder"),
        ("import subprocess\nsubprocess.run(['true'])\n", "refused", "starting processes"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", "refused", "network access"),
        ("open('inside.txt', 'w').write('ok')\nassert open('inside.txt').read() == 'ok'\n", "passed", ""),
        ("while True:\n    pass\n", "timeout", ""),
        ("x = bytearray(8 * 1024 ** 3)\n", "failed", "MemoryError"),
    ],
)
def test_sandbox(program: str, status: str, detail: str) -> None:
    result = run_program(program, timeout=3)
    assert result.status == status, result
    assert detail in result.detail
    assert not Path("/tmp/homellm-escape.txt").exists() and not Path("/tmp/homellm-escape-dir").exists()
