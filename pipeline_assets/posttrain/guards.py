"""FiniteGuard: stop any TRL/transformers trainer at the first non-finite loss or gradient norm.

transformers' ``logging_nan_inf_filter`` (on by default) replaces a NaN/inf step loss with the running
mean of the window, so a run that is NaN at every step logs a loss of 0.0 and looks healthy. ``trl_args``
(common.py) turns the filter off, so ``logs["loss"]`` is the raw mean loss of the logging window
(``logging_steps=1``: the step itself) and ``logs["grad_norm"]`` the raw pre-clip norm; this callback
raises ``NonFiniteError`` naming the step. The raise propagates out of ``trainer.train()``, so the stage
function never writes its model and the asset's draft is dropped: the published version stays current.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from pipeline_assets.finite import NonFiniteError, check_scalar

GUARDED_KEYS = ("loss", "grad_norm")


def check_logs(step: int, logs: dict[str, Any] | None, stage: str = "training") -> None:
    for key in GUARDED_KEYS:
        if logs and logs.get(key) is not None:
            check_scalar(f"{stage} {key}", logs[key], step,
                         "lower the learning rate, check the data for empty/garbage examples, or the "
                         "input model's weights")


class FiniteGuard(TrainerCallback):
    """Raise ``NonFiniteError`` from ``on_log`` when loss or grad_norm is NaN/inf (needs logging_steps=1)."""

    def __init__(self, stage: str = "training") -> None:
        self.stage = stage

    def on_log(self, args, state, control, logs=None, **kwargs):
        check_logs(state.global_step, logs, self.stage)


__all__ = ["FiniteGuard", "NonFiniteError", "check_logs"]
