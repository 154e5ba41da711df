"""A model stage as a newcomer adds one: this module (a config dataclass and a trainer) plus one ModelStage
entry (tests/test_stage_registry.py registers it). The "training" copies the parent checkpoint and records
a loss curve, so the generated asset really materializes in seconds."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_assets.model_io import find_model_dir
from pipeline_assets.stages import StageInputs


@dataclass(frozen=True)
class ToyConfig:
    max_steps: int = 3
    learning_rate: float = 1e-3

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps} must be >= 1")


def train(cfg: ToyConfig, inputs: StageInputs, work: Path, checkpoint_dir: Path | None,
          log: Callable[[str], None]) -> dict[str, Any]:
    shutil.copytree(find_model_dir(inputs("models/base")), work, dirs_exist_ok=True)
    losses = [[step, 1.0 / step] for step in range(1, cfg.max_steps + 1)]
    log(f"toy | {cfg.max_steps} steps")
    return {"loss_history": losses, "steps": cfg.max_steps, "resumable": checkpoint_dir is not None}
