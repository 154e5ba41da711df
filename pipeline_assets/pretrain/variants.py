"""A pretraining variant beside the dense base it is compared with (models/base_moe vs models/base), from the two
pretrain summaries (pretrain/train.py's result): what the comparison is fair on and what the variant costs."""

from __future__ import annotations

from typing import Any


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 4) if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def vs_dense(variant: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    """Active parameters per token and tokens (equal for a fair comparison), total parameters, training state,
    throughput and peak memory, each as the variant's value, the dense one and their ratio."""
    out: dict[str, Any] = {}
    for name, mine, theirs in (("active_params", variant.get("active_params"), dense.get("num_params")),
                               ("total_params", variant.get("num_params"), dense.get("num_params")),
                               ("tokens", variant.get("tokens_seen"), dense.get("tokens_seen")),
                               ("tokens_per_s", variant.get("tokens_per_s"), dense.get("tokens_per_s")),
                               ("train_state_mb", variant.get("train_state_mb"), dense.get("train_state_mb")),
                               ("peak_memory_mb", variant.get("peak_memory_mb"), dense.get("peak_memory_mb")),
                               ("window_val_bpb", variant.get("window_val_bpb"), dense.get("window_val_bpb"))):
        out[name] = mine
        out[f"dense_{name}"] = theirs
        out[f"{name}_ratio"] = _ratio(mine, theirs)
    return out
