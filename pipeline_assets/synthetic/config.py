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
    # The arithmetic prompts' space: training-split problems of 0..operand_max (None: SFT's task space, where
    # the teacher is measured). On tiny the problems no SFT row holds are the 399 the preference stages hold
    # out from SFT; GRPO trained on 309 of them (its prompts span the whole training split), so its students
    # gain no access to anything the teacher's lineage had not seen. A wider band is for teachers that
    # generalise past their training space: the tiny SFT model answered 0 of 300 problems of 50..59 even
    # with 8 samples each.
    operand_max: int | None = None
    operators: tuple[str, ...] | None = None
    # Rejection sampling (as in STaR / RFT): a greedy answer first, then up to samples_per_prompt - 1 sampled
    # ones at `temperature` for prompts whose answers all failed verification so far; the first that passes
    # is kept.
    samples_per_prompt: int = 4
    temperature: float = 1.0
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
        for name in ("max_new_tokens", "long_max_new_tokens", "dedup_ngrams", "num_threads", "samples_per_prompt"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic_data.{name}={getattr(self, name)} must be >= 1")
        if self.operand_max is not None and self.operand_max < 1:
            raise ValueError(f"synthetic_data.operand_max={self.operand_max} must be >= 1 or None (SFT's space)")
        if self.operators is not None and (not self.operators or set(self.operators) - set(OPERATORS)):
            raise ValueError(f"synthetic_data.operators={self.operators!r}: each must be one of {OPERATORS}")
        if self.temperature <= 0:
            raise ValueError(f"synthetic_data.temperature={self.temperature} must be > 0")
        if not 0.0 < self.docstring_min_f1 <= 1.0:
            raise ValueError(f"synthetic_data.docstring_min_f1={self.docstring_min_f1} must be in (0, 1]")
        return self
