"""The arithmetic task: problem space, its test/dev/train split, the prompt and the grader.

One hash over every (a, op, b) decides its split, independent of any seed or file, so the benchmark
builder (evals), every training-data builder (SFT, GRPO, preferences, pretraining's synthetic blocks) and
every grader agree on what is held out and what counts as right.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

OPERAND_MAX = 99  # the default problem space; a profile may use a smaller one
OPERATORS: tuple[str, ...] = ("+", "-")
# Hash bands of every (a, op, b): [0, 10) is the test split the benchmark reports on, [10, 20) the dev split
# for tuning recipes (SFT's and GRPO's in-training curves), the rest is for training.
TEST_PERCENT = 10
HELDOUT_PERCENT = 20
# Changing the salt moves the held-out boundary and silently leaks old eval items into training: don't.
SALT = "llmdag-arithmetic-heldout-v1"
SPLITS = ("test", "dev", "train")


def _band(a: int, op: str, b: int) -> int:
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r}; valid: {', '.join(OPERATORS)}")
    digest = hashlib.sha256(f"{SALT}:{a}{op}{b}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def is_heldout_arithmetic(a: int, op: str, b: int) -> bool:
    """True for the ~20% of (a, op, b) problems reserved for evaluation (test + dev); builders skip them.

    Works for any ints, not just 0-99. For a word problem, test its first step.
    """
    return _band(a, op, b) < HELDOUT_PERCENT


def arithmetic_split(a: int, op: str, b: int) -> str:
    """"test" (reported), "dev" (recipe tuning, in-training curves) or "train"."""
    band = _band(a, op, b)
    return "test" if band < TEST_PERCENT else "dev" if band < HELDOUT_PERCENT else "train"


@lru_cache(maxsize=16)  # ~20k hashes for 0..99 +/-: built once per space and split
def split_problems(operand_max: int, operators: tuple[str, ...], split: str) -> tuple[tuple[int, str, int], ...]:
    """Every (a, op, b) of the space with operands 0..operand_max that falls in ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    span = range(operand_max + 1)
    return tuple((a, op, b) for op in operators for a in span for b in span if arithmetic_split(a, op, b) == split)


def training_problems(operand_max: int, operators: tuple[str, ...]) -> tuple[tuple[int, str, int], ...]:
    """Every (a, op, b) of the space that no eval split holds: what SFT, GRPO and pretraining may train on."""
    return split_problems(operand_max, tuple(operators), "train")


def apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y


def arithmetic_prompt(a: int, op: str, b: int) -> str:
    # One phrasing for eval and training: a tiny model does not generalise across phrasings within a few
    # hundred steps, and the answer is what is measured, not robustness to rewording.
    return f"What is {a} {op} {b}?"


# Last integer in the text (optionally signed, with thousands commas or a decimal part). The lookbehind
# keeps the hyphen in "5-3" and digits glued to words ("step2") from being read as part of a number.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?")
NUMBER_PATTERN = _NUMBER.pattern  # lm_eval_tasks.py's regex filter grades with the same pattern


def check_arithmetic(completion: str, answer: str) -> bool:
    """Grade a completion: the LAST number in it must equal the integer `answer`.

    Expected completion format: free text that ends with the result, e.g. "The answer is 42.",
    "40 + 2 = 42", "#### -3". Signs ("-3", unicode minus), thousands commas ("1,024") and an exactly
    integral decimal ("42.0") are accepted; a completion with no number is wrong.
    """
    numbers = _NUMBER.findall(completion.replace("\u2212", "-"))
    if not numbers:
        return False
    last = numbers[-1].replace(",", "")
    value = float(last) if "." in last else int(last)
    return value == int(answer)
