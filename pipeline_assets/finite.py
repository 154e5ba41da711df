"""Non-finite guards shared by every trainer: a NaN/inf loss, gradient norm or weight never gets published.

``NonFiniteError`` names what went non-finite and at which step; ``assert_finite_weights`` checks a model
dir (every ``*.safetensors`` under it, tensor by tensor, so memory stays one tensor) or a state dict before
a checkpoint is saved or a version is published (``pipeline_assets/publishing.py::finish``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class NonFiniteError(FloatingPointError):
    """Training produced NaN/inf; the run stops and the previously published version stays current."""


def check_scalar(name: str, value: Any, step: int | None, hint: str = "") -> None:
    """Raise ``NonFiniteError`` if ``value`` (a float or 0-d tensor) is NaN or inf."""
    v = float(value)
    if not math.isfinite(v):
        at = f" at step {step}" if step is not None else ""
        raise NonFiniteError(f"{name} is {v}{at}; training stopped, nothing from this run is published"
                             f"{'; ' + hint if hint else ''}")


def _bad_tensors(items: Any) -> list[str]:
    import torch

    bad = []
    for key, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not bool(
                torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            bad.append(f"{key} ({n}/{t.numel()} non-finite)")
    return bad


def assert_finite_weights(weights: Path | str | Mapping[str, Any], where: str = "") -> int:
    """Raise ``NonFiniteError`` naming the tensors with NaN/inf; returns how many tensors were checked.

    ``weights``: a state dict, or a dir whose ``*.safetensors`` files (recursively) are read one tensor at
    a time. Integer tensors (quantized weights) are skipped; their float scales are checked.
    """
    label = f" in {where}" if where else ""
    if isinstance(weights, Mapping):
        bad, checked = _bad_tensors(weights.items()), len(weights)
    else:
        from safetensors import safe_open

        bad, checked = [], 0
        for f in sorted(Path(weights).rglob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    bad += _bad_tensors([(f"{f.name}:{key}", st.get_tensor(key))])
                    checked += 1
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(f"non-finite weights{label}: {shown}; refusing to save or publish them")
    return checked
