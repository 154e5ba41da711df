"""Verifiers of teacher answers: each prompt carries what its answer is checked against.

    arithmetic   {"answer": "19"}                        exact: the reply is the integer and nothing else
    docstring    {"reference": "Return the sum ..."}      token F1 vs the grounding document's own sentence
    code         {"tests": "assert solve() == 19"}       the code runs with its tests in the bubblewrap sandbox

A verdict is (accepted, score, reason); the reason of a rejected row says which check failed. ``verify`` is
the one entry point: generation calls it, and the asset's check calls it again on every accepted row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline_assets.posttrain.sandbox import SandboxLimits, extract_code, run_tests
from pipeline_assets.tasks.arithmetic import check_arithmetic
from pipeline_assets.tasks.docstrings import token_f1

VERIFIER_OF = {"arithmetic": "exact_answer", "docstring": "reference_f1", "code": "sandbox_tests"}
# Code answers are tiny functions: a second of wall clock and 128 MB are plenty; the sandbox's own defaults
# (5 s, 256 MB) would let one looping answer stall generation five times longer.
CODE_LIMITS = SandboxLimits(timeout_s=2.0, memory_mb=128, cpu_s=2)
_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    score: float
    reason: str  # "ok", or why the answer was rejected


def verify_arithmetic(reply: str, answer: str) -> Verdict:
    """The reply must be the bare integer: "19" passes, "19 or 20" and "The answer is 19." do not (the rows
    teach the format the evals read, so an answer the grader accepts but the format does not is rejected)."""
    text = reply.strip()
    if not _INTEGER.fullmatch(text):
        return Verdict(False, 0.0, "not_an_integer")
    return Verdict(True, 1.0, "ok") if check_arithmetic(text, answer) else Verdict(False, 0.0, "wrong_answer")


def verify_docstring(reply: str, reference: str, min_f1: float) -> Verdict:
    f1 = round(token_f1(reply, reference), 4)
    return Verdict(True, f1, "ok") if f1 >= min_f1 else Verdict(False, f1, "below_reference_f1")


def verify_code(reply: str, tests: str) -> Verdict:
    code = extract_code(reply).strip()
    if not code:
        return Verdict(False, 0.0, "no_code")
    result = run_tests(code, tests, CODE_LIMITS)
    if result.passed:
        return Verdict(True, 1.0, "ok")
    if result.reason:  # timeout, output flood, sandbox unavailable: not a plain assertion failure
        return Verdict(False, 0.0, "sandbox_" + re.sub(r"\W+", "_", result.reason.split(":")[0]).strip("_"))
    return Verdict(False, 0.0, "tests_failed")


def verify(item: dict, reply: str, min_f1: float) -> Verdict:
    """The verdict on ``reply`` to the prompt record ``item`` (kinds: synthetic/config.py KINDS)."""
    kind = item["kind"]
    if kind == "arithmetic":
        return verify_arithmetic(reply, item["answer"])
    if kind == "docstring":
        return verify_docstring(reply, item["reference"], min_f1)
    if kind == "code":
        return verify_code(reply, item["tests"])
    raise ValueError(f"unknown synthetic prompt kind {kind!r}; valid: {', '.join(VERIFIER_OF)}")
