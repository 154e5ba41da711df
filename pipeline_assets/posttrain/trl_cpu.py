"""Make TRL's fused LM head score only the label positions on CPU, as it already does on CUDA.

TRL 1.16 computes every trainer's per-token log-probs (SFT, DPO, GRPO, RLOO, distillation) with a chunked
LM-head kernel (``trl.kernels.chunked_logprob``). On devices without Triton it projects *every* position
through the LM head, prompt and padding included, so that tile shapes stay fixed for backends that recompile
per shape (Neuron). Eager CPU recompiles nothing, and on the tiny model the LM head is most of a step: the
all-positions path was ~2/3 of a tiny SFT step (cProfile), and scoring the label positions only cut 30 SFT
steps from 31.0 s to 17.1 s with the same loss. TRL has no option for it, hence this switch: it changes
which rows enter the kernel, never the kernel (tests/test_trl_cpu.py checks log-probs and gradients match).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

# The TRL modules whose ``compact = _use_triton(device)`` decides whether only label positions are scored.
# In both, the name is used for that decision alone (the kernels keep their own copy to pick Triton).
COMPACTING_MODULES = ("trl.trainer.utils", "trl.trainer.distillation_trainer")


def _compact_on_cpu(original: Callable[[torch.device], bool]) -> Callable[[torch.device], bool]:
    def compact(device: torch.device) -> bool:
        return device.type == "cpu" or original(device)

    compact.llmdag_cpu_compact = True  # type: ignore[attr-defined]
    return compact


def compact_lm_head_on_cpu() -> list[str]:
    """Idempotent; returns the modules switched. A TRL without ``_use_triton`` there is left alone (slower
    on CPU, still correct), and tests/test_trl_cpu.py fails so the pin bump gets looked at."""
    switched = []
    for name in COMPACTING_MODULES:
        module = importlib.import_module(name)
        original = getattr(module, "_use_triton", None)
        if original is None:
            continue
        if not getattr(original, "llmdag_cpu_compact", False):
            module._use_triton = _compact_on_cpu(original)
        switched.append(name)
    return switched
