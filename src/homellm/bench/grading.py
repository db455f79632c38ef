"""Prompts and answer extraction, as lm-evaluation-harness and simple-evals do them.

GSM8K (zero-shot chain of thought): the model is asked to end with "The answer is: N".
  strict: the number after "The answer is" (lm-eval's ``strict-match``);
  flexible: the last number anywhere in the response (lm-eval's ``flexible-extract``).
MMLU (simple-evals' multiple-choice template): the model ends with "Answer: X".
  strict: the letter after "Answer:"; flexible: the last standalone A-D letter.
HumanEval: the model returns the function in a code block; pass@1 runs the tests in a sandbox.
"""

from __future__ import annotations

import re

GSM8K_PROMPT = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    '"The answer is: $ANSWER" where $ANSWER is the final number.\n\n{question}'
)
MMLU_PROMPT = (
    "Answer the following multiple choice question. The last line of your response should be of the following "
    "format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by step before "
    "answering.\n\n{question}\n\nA) {a}\nB) {b}\nC) {c}\nD) {d}"
)
HUMANEVAL_PROMPT = (
    "Complete the following Python function. Reply with the complete function (signature included) in one "
    "```python code block.\n\n```python\n{prompt}```"
)

_STRICT_NUMBER = re.compile(r"The answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_STRICT_LETTER = re.compile(r"(?i)Answer\s*:\s*\**\s*\(?([A-D])\b")
_ANY_LETTER = re.compile(r"\b([A-D])\b")
_CODE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def normalize_number(text: str) -> str:
    n = text.replace(",", "").replace("$", "").strip().rstrip(".")
    if re.fullmatch(r"-?\d+\.0+", n):
        n = n.split(".")[0]
    return n


def gsm8k_strict(response: str) -> str | None:
    m = _STRICT_NUMBER.findall(response)
    return normalize_number(m[-1]) if m else None


def gsm8k_flexible(response: str) -> str | None:
    m = _ANY_NUMBER.findall(response)
    return normalize_number(m[-1]) if m else None


def mmlu_strict(response: str) -> str | None:
    m = _STRICT_LETTER.findall(response)
    return m[-1].upper() if m else None


def mmlu_flexible(response: str) -> str | None:
    m = _ANY_LETTER.findall(response)
    return m[-1] if m else None


def extract_code(response: str, prompt: str) -> str:
    """The program to test: the last code block (or the whole reply); the prompt is prepended when the
    model returned only the body."""
    blocks = _CODE.findall(response)
    code = blocks[-1] if blocks else response
    if "def " not in code:
        return prompt + code
    # keep the prompt's imports and helpers when the model restated only the function
    return prompt + "\n" + code if not code.lstrip().startswith(("import", "from")) else code
