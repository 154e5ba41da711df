"""A synthetic, verifier-checked arithmetic stream for the pretraining mixture (built-in source
``synthetic_arithmetic``, domain ``math``).

Why it exists: the built-in text (Python docs, stdlib code, READMEs, licences) holds almost no arithmetic,
so a base model pretrained on it has nothing for SFT and GRPO to build on in the task they are measured on,
and pretraining would not matter to them. Real pipelines mix verified task data into pretraining at a
recorded share (the mixture's ``domain_weights`` for ``math``); this is the smallest honest version of that.

Every problem comes from the TRAINING part of the arithmetic hash split of the profile's task space
(``evals.benchmarks.arithmetic_split``): no dev or test item is ever written, and the ``math`` filter
recipe (blocks.ArithmeticVerifier) re-checks each line's answer and split before a document is kept.
The lines have the plain format the base model is evaluated in: ``What is a + b? c``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from pipeline_assets.tasks.arithmetic import training_problems

DOCUMENTS = 400
PROBLEMS_PER_DOCUMENT = 16
SEED = "llmdag-synthetic-arithmetic-v1"


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def problem_line(a: int, op: str, b: int) -> str:
    return f"What is {a} {op} {b}? {_apply(a, op, b)}"


def arithmetic_documents(operand_max: int, operators: tuple[str, ...],
                         documents: int = DOCUMENTS) -> Iterator[tuple[str, str]]:
    """(id, text) pairs: ``documents`` texts of ``PROBLEMS_PER_DOCUMENT`` training-split problems each."""
    pool = training_problems(operand_max, operators)
    if not pool:
        raise ValueError(f"no training-split problems with operands 0..{operand_max} and {operators}")
    rng = random.Random(f"{SEED}:{operand_max}:{''.join(operators)}")
    for i in range(documents):
        lines = [problem_line(*rng.choice(pool)) for _ in range(PROBLEMS_PER_DOCUMENT)]
        yield f"arith-{i:05d}", "\n".join(lines) + "\n"
