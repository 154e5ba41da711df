"""The tool-use tasks: problems a tiny model cannot solve in its head but can with a tool, their split and grader.

    multiply    "What is 347 * 812?"                      -> calculator(expression="347 * 812")
    digit_sum   "What is the sum of the digits of 583920?" -> python(code='print(sum(map(int, "583920")))')

One hash over each problem decides its split (as tasks/arithmetic.py does), so datasets/tool_use trains only
on the train split and the tool_use eval reports on the test split, with no file between them to drift.
Docstring lookups split by module instead: training asks about the SFT modules, the eval about
HELDOUT_MODULES (tasks/heldout.py).
"""

from __future__ import annotations

import hashlib
import random
import re

MULTIPLY, DIGIT_SUM = "multiply", "digit_sum"
# 3-digit x 3-digit: 810,000 problems with 5-6 digit products; the tiny SFT model's in-head accuracy is ~0.
FACTOR_MIN, FACTOR_MAX = 100, 999
DIGIT_SUM_MIN, DIGIT_SUM_MAX = 100_000, 999_999
SALT = "llmdag-tool-use-heldout-v1"  # changing it moves the held-out boundary: don't
TEST_PERCENT, DEV_PERCENT = 10, 10


def _split(key: str) -> str:
    band = int.from_bytes(hashlib.sha256(f"{SALT}:{key}".encode()).digest()[:4], "big") % 100
    return "test" if band < TEST_PERCENT else "dev" if band < TEST_PERCENT + DEV_PERCENT else "train"


_PROMPT_KEYS = (
    (re.compile(r"What is (\d+) \* (\d+)\?"), lambda m: f"{m[1]}*{m[2]}"),
    (re.compile(r"What is the sum of the digits of (\d+)\?"), lambda m: f"ds{m[1]}"),
)


def problem_split(prompt: str) -> str | None:
    """The split of a tool problem's prompt ("test", "dev", "train"); None when it is not one."""
    for pattern, key in _PROMPT_KEYS:
        if m := pattern.fullmatch(prompt):
            return _split(key(m))
    return None


def multiply_prompt(a: int, b: int) -> str:
    return f"What is {a} * {b}?"


def digit_sum_prompt(n: int) -> str:
    return f"What is the sum of the digits of {n}?"


def answer_text(value: int | str) -> str:
    """The final reply after a tool result: graded by tasks.arithmetic.check_arithmetic (its last number)."""
    return f"The answer is {value}."


def problems(kind: str, split: str, n: int, seed: int) -> list[dict]:
    """`n` distinct problems of `kind` in `split`, drawn with `seed`: {"kind", "prompt", "answer", "tool",
    "arguments"} where `arguments` is the call that solves it."""
    if kind not in (MULTIPLY, DIGIT_SUM):
        raise ValueError(f"unknown tool problem kind {kind!r}; valid: {MULTIPLY}, {DIGIT_SUM}")
    rng = random.Random(f"{seed}:{kind}:{split}")
    out: dict[str, dict] = {}
    while len(out) < n:
        if kind == MULTIPLY:
            a, b = rng.randint(FACTOR_MIN, FACTOR_MAX), rng.randint(FACTOR_MIN, FACTOR_MAX)
            key, item = f"{a}*{b}", {"prompt": multiply_prompt(a, b), "answer": str(a * b), "tool": "calculator",
                                     "arguments": {"expression": f"{a} * {b}"}}
        else:
            m = rng.randint(DIGIT_SUM_MIN, DIGIT_SUM_MAX)
            key, item = f"ds{m}", {"prompt": digit_sum_prompt(m), "answer": str(sum(map(int, str(m)))),
                                   "tool": "python", "arguments": {"code": f'print(sum(map(int, "{m}")))'}}
        if _split(key) == split:
            out[key] = {"kind": kind, **item}
    return list(out.values())
