"""The ``synthetic_data`` profile section: what `datasets/synthetic` asks its teacher and how it filters."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_assets.tasks.arithmetic import OPERATORS

# Prompt kinds, each with its verifier (synthetic/verify.py): an exact answer where one is computable, the
# reference sentence of the document a question was drawn from, the code sandbox for code with tests.
KINDS = ("arithmetic", "docstring", "code")


@dataclass
class SyntheticDataConfig:
    """Used by: datasets/synthetic. Defaults = the tiny profile."""

    # The teacher: None = models/grpo, the release lineage's policy whose gates verified it; or the path of any
    # chat checkpoint with our tokenizer (a local copy of a hub model, an earlier release).
    teacher_path: str | None = None
    # New prompts asked per materialization and kind (rows accumulate across materializations).
    arithmetic_prompts: int = 400
    docstring_prompts: int = 48
    code_prompts: int = 8
    # The arithmetic prompts' space: training-split problems of 0..operand_max. The tiny task space (0..49) has
    # no problem left that neither SFT (1,600) nor the preference stages' held-out pairs (399) hold, so the
    # teacher is asked one band wider (0..59: 890 more training-split problems, none an eval item).
    operand_max: int = 59
    operators: tuple[str, ...] = ("+",)
    # Docstring answers: token F1 against the document's own first sentence (the eval's QA metric). 0.6 keeps
    # paraphrases ("Return the sum of x and y" vs "Return x plus y": 0.67) and drops topic-only answers.
    docstring_min_f1: float = 0.6
    max_new_tokens: int = 8  # arithmetic answers are <= 3 tokens + eos
    long_max_new_tokens: int = 48  # docstring and code answers
    # Near-duplicates (vs earlier accepted rows and the real training rows): word 3-grams, because chat rows are
    # short (an arithmetic row has 5 words: a 5-gram would give one shingle), numbers kept (they ARE the row).
    dedup_ngrams: int = 3
    seed: int = 0
    device: str = "auto"
    num_threads: int = 2

    def validate(self) -> SyntheticDataConfig:
        for name in ("arithmetic_prompts", "docstring_prompts", "code_prompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"synthetic_data.{name}={getattr(self, name)} must be >= 0")
        if self.arithmetic_prompts + self.docstring_prompts + self.code_prompts == 0:
            raise ValueError("synthetic_data: every *_prompts count is 0: nothing to generate")
        for name in ("operand_max", "max_new_tokens", "long_max_new_tokens", "dedup_ngrams", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic_data.{name}={getattr(self, name)} must be >= 1")
        unknown = sorted(set(self.operators) - set(OPERATORS))
        if unknown or not self.operators:
            raise ValueError(f"synthetic_data.operators={self.operators!r}: each must be one of {OPERATORS}")
        if not 0.0 < self.docstring_min_f1 <= 1.0:
            raise ValueError(f"synthetic_data.docstring_min_f1={self.docstring_min_f1} must be in (0, 1]")
        return self
