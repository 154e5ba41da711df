"""What an eval of one checkpoint runs: `EvalConfig` and its per-profile defaults. No torch, no Dagster.

Kept apart from harness.py (which imports torch) so that the profiles and the Launchpad configs built
from them load without the training stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline_assets.evals.sets import REGISTRY

# The eval sets registered in evals/sets.py that run by default (all but the opt-in ones), in run order.
SETS: tuple[str, ...] = tuple(name for name, spec in REGISTRY.items() if not spec.opt_in)

# Fixed prompts: the same for every checkpoint, so samples and win rates compare like with like. None of
# them is a benchmark item (benchmarks are never shown to a judge or trained on through this list).
SAMPLE_PROMPTS: tuple[str, ...] = (
    "What is 12 + 30?",
    "Write a Python function that returns the square of a number.",
    "Explain what a Python dictionary is in one sentence.",
    "How do I read a text file line by line in Python?",
)
INSTRUCTION_PROMPTS: tuple[str, ...] = (
    "Explain what a list comprehension is in Python.",
    "Give me three tips for writing readable code.",
    "What is the difference between a tuple and a list?",
    "Write a short docstring for a function that adds two numbers.",
    "Summarize what a virtual environment is for.",
    "How do I sort a list of dictionaries by a key?",
    "What does the `with` statement do?",
    "Explain recursion to a beginner.",
    "Write a haiku about debugging.",
    "What is a unit test?",
    "How can I make a Python script run faster?",
    "What is the purpose of `__init__.py`?",
    "Describe what an exception is.",
    "Suggest a name for a function that removes duplicates from a list.",
    "What is the difference between `==` and `is`?",
    "Explain what JSON is used for.",
)


@dataclass(frozen=True)
class EvalConfig:
    """Used by: evals/<stage>. Limits cap items per set (None = the whole set); `sets` picks what runs."""

    # Default: every set registered when the config is built but the opt-in ones (evals/sets.py), so a newly
    # registered set runs without a profile edit; list names to run fewer (they still run in registry order).
    sets: tuple[str, ...] = field(default_factory=lambda: tuple(n for n, s in REGISTRY.items() if not s.opt_in))
    qa_limit: int | None = 32
    multiple_choice_limit: int | None = 48
    arithmetic_limit: int | None = 48
    safety_limit: int | None = 48  # half harmful, half benign
    adversarial_per_prompt: int = 1  # jailbreak rephrasings per harmful prompt; 0 = none
    preference_limit: int | None = None  # held-out preference pairs (datasets/preferences test.jsonl)
    win_rate_limit: int = 16  # first N of INSTRUCTION_PROMPTS (where no held-out preference prompts exist)
    # With datasets/preferences: the judge (models/reward) scores both sides on the first N held-out preference
    # prompts (prompts no SFT row used: what RLHF optimizes on), n >= 100 for a win rate worth reading.
    win_rate_test_limit: int | None = 200
    val_batches: int = 8
    val_seq_len: int = 256  # clipped to the model's max_position_embeddings
    # Base models only (evals/long_context.py): passkey prompts per length (1x, 2x, 4x the base context) and
    # val windows of 4x the base context for the loss by position.
    passkey_per_length: int = 40
    # Tool-use stages only (evals/tool_use.py): held-out multiplication problems answered with and without the
    # tools (the paired target); a third as many digit-sum, lookup and no-tool prompts for the call metrics.
    tool_use_limit: int = 120
    long_context_windows: int = 48
    max_new_tokens: int = 64  # QA, safety, win rate, samples
    arithmetic_max_new_tokens: int = 24
    batch_size: int = 16
    mc_format: str = "plain"  # "plain": eos + "Question: q\nAnswer:" (works for base models); "chat": template
    # "chat": the question through the chat template (chat models); "plain": few-shot "question answer" lines
    # (the base model, which never saw the template). evals/base uses "plain" whatever is set here.
    arithmetic_format: str = "chat"
    device: str = "auto"
    num_threads: int | None = None  # torch CPU threads; None = leave torch's setting alone
    sample_prompts: tuple[str, ...] = SAMPLE_PROMPTS

    def validate(self) -> None:
        # The live registry, not SETS: a set registered after import (a plugin, a test) is valid too.
        unknown = sorted(set(self.sets) - set(REGISTRY))
        if unknown:
            raise ValueError(f"EvalConfig.sets has unknown names {unknown}; valid: {', '.join(REGISTRY)}")
        for name, spec in REGISTRY.items():
            if spec.limit is not None and not hasattr(self, spec.limit):
                raise ValueError(f"eval set {name!r} is sized by EvalConfig.{spec.limit}, which does not exist; "
                                 "add the field or fix the registration in evals/sets.py")
        for name in ("qa_limit", "multiple_choice_limit", "arithmetic_limit", "safety_limit", "preference_limit",
                     "win_rate_test_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"EvalConfig.{name}={value!r} must be a positive int, or None for the whole set")
        for name in ("win_rate_limit", "val_batches", "val_seq_len", "passkey_per_length", "long_context_windows",
                     "tool_use_limit", "max_new_tokens",
                     "arithmetic_max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalConfig.{name}={getattr(self, name)!r} must be >= 1")
        if self.win_rate_limit > len(INSTRUCTION_PROMPTS):
            raise ValueError(f"EvalConfig.win_rate_limit={self.win_rate_limit} exceeds the "
                             f"{len(INSTRUCTION_PROMPTS)} INSTRUCTION_PROMPTS; lower it")
        if self.adversarial_per_prompt < 0:
            raise ValueError(f"EvalConfig.adversarial_per_prompt={self.adversarial_per_prompt} must be >= 0")
        if self.arithmetic_format not in ("plain", "chat"):
            raise ValueError(f"EvalConfig.arithmetic_format={self.arithmetic_format!r}; choose 'plain' or 'chat'")
        if self.mc_format not in ("plain", "chat"):
            raise ValueError(f"EvalConfig.mc_format={self.mc_format!r}; choose 'plain' or 'chat'")
        if self.device not in ("auto", "cpu") and not self.device.startswith(("cuda", "mps")):
            raise ValueError(f"EvalConfig.device={self.device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"EvalConfig.num_threads={self.num_threads} must be >= 1 or None")
