"""What every post-training stage shares: offline/CPU-safe TRL arguments, loss capture, resumable training,
LoRA configs, the stage summary file and the stage CLI (model loading and generation: pipeline_assets/model_io.py).

Every stage takes an HF checkpoint dir (model + tokenizer with the ChatML template from
``pipeline_assets/tokenizer``) and writes one: ``save_pretrained`` (safetensors) + tokenizer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from pipeline_assets import faults
from pipeline_assets.model_io import device_for
from pipeline_assets.posttrain.trl_cpu import compact_lm_head_on_cpu

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

Log = Callable[[str], None]


def set_threads(device: str, num_threads: int) -> str:
    dev = device_for(device)
    if dev == "cpu":
        torch.set_num_threads(num_threads)  # 1 thread: 10-40x steadier on 2 shared cores (notes/trl.md)
    return dev


def save_interval(max_steps: int, save_every: int = 0) -> int:
    """Steps between resume checkpoints: ``save_every``, or with 0 every quarter of the run but at least 50
    steps, so a tiny run spends its time training rather than writing optimizer state."""
    return save_every if save_every > 0 else max(50, max_steps // 4)


def trl_args(output_dir: Path, *, max_steps: int, learning_rate: float, batch_size: int, seed: int = 0,
             device: str = "auto", num_threads: int = 1, checkpoint_dir: Path | None = None,
             save_every: int = 0, **extra) -> dict:
    """Keyword arguments valid for every TRL config (SFT/Reward/DPO/GRPO/RLOO/...).

    TRL defaults to bf16 and gradient checkpointing, both wrong on CPU, and its fused LM head scores every
    position on CPU (``trl_cpu``: switched to label positions only); 1 torch thread is 10-40x
    steadier for tiny models on 2 shared cores (../shared/notes/trl.md). The published model is ours to
    save (``save_checkpoint``). Without ``checkpoint_dir`` the trainer saves nothing; with it, it saves full
    resume points there (optimizer, scheduler and RNG state too, ``save_only_model=False``) every
    ``save_interval`` steps and at the end, which ``train_resumable`` picks up after a kill. Only the newest
    is kept: HF deletes the older one only once the new one is complete (``Trainer._save_checkpoint``).
    ``batch_size`` is the global batch: under ``accelerate launch`` each of WORLD_SIZE processes takes its share,
    so a config means the same optimization however many processes run it.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))  # processes of an accelerate launch (1 in the step's process)
    if batch_size % world:
        raise ValueError(f"batch_size={batch_size} is the global batch: it must divide over the {world} processes "
                         "of this launch")
    dev = device_for(device)
    if dev == "cpu":
        torch.set_num_threads(num_threads)
        compact_lm_head_on_cpu()
    saving: dict[str, Any] = dict(save_strategy="no") if checkpoint_dir is None else dict(
        save_strategy="steps", save_steps=save_interval(max_steps, save_every), save_total_limit=1,
        save_only_model=False)
    return dict(
        output_dir=str(checkpoint_dir if checkpoint_dir is not None else output_dir), max_steps=max_steps,
        learning_rate=learning_rate, per_device_train_batch_size=batch_size // world, seed=seed, data_seed=seed,
        bf16=dev == "cuda" and torch.cuda.is_bf16_supported(), use_cpu=dev == "cpu",
        activation_checkpointing=False, report_to="none", dataloader_pin_memory=False,
        logging_steps=1, disable_tqdm=True, weight_decay=0.0, logging_nan_inf_filter=False, **saving, **extra,
    )


class LossHistory(TrainerCallback):
    """Collects ``[step, loss]`` (and any reward/margin logs) and forwards a progress line to ``log``.

    Every stage uses it, so it is also the stages' finite guard: a NaN/inf loss or grad_norm raises
    ``NonFiniteError`` naming the step (``guards.check_logs``) before it is recorded.
    """

    def __init__(self, log: Callable[[str], None] = print, every: int = 10, keys: tuple[str, ...] = ()) -> None:
        self.log, self.every, self.keys = log, every, keys
        self.loss: list[list[float]] = []
        self.metrics: dict[str, list[list[float]]] = {k: [] for k in keys}
        self.start = time.time()

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run starts from the checkpoint's state, whose log_history holds the steps before the
        # kill: the curve then covers the whole run, not only the part after the resume.
        self.loss = [[e["step"], float(e["loss"])] for e in state.log_history if "loss" in e]
        self.metrics = {k: [[e["step"], float(e[k])] for e in state.log_history if k in e] for k in self.keys}

    def on_log(self, args, state, control, logs=None, **kwargs):
        from pipeline_assets.posttrain.guards import check_logs

        logs = logs or {}
        check_logs(state.global_step, logs)
        if "loss" in logs:
            self.loss.append([state.global_step, float(logs["loss"])])
        for k in self.keys:
            if k in logs:
                self.metrics[k].append([state.global_step, float(logs[k])])
        if state.global_step % self.every == 0 and "loss" in logs:
            elapsed = time.time() - self.start
            eta = elapsed / max(state.global_step, 1) * (state.max_steps - state.global_step)
            self.log(f"step {state.global_step:05d}/{state.max_steps:05d} | loss {logs['loss']:.4f} | "
                     f"elapsed {elapsed:.0f}s | eta {eta:.0f}s")


def lora_config(r: int, alpha: int, target_modules: Sequence[str], task_type: str, dropout: float = 0.0) -> Any:
    """A peft LoraConfig; ``("all-linear",)`` is peft's every-Linear-but-the-output-head shorthand. With
    ``task_type="SEQ_CLS"`` peft trains the new score head in full (its modules_to_save)."""
    from peft import LoraConfig

    targets: str | list[str] = "all-linear" if tuple(target_modules) == ("all-linear",) else list(target_modules)
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task_type)


def quiet_progress() -> None:
    """No tqdm bars from datasets/transformers: they freeze Dagster's log view; LossHistory logs lines instead."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


# HF writes checkpoint-N in place: weights, then optimizer/scheduler/RNG, then trainer_state.json last
# (Trainer._save_checkpoint), and rotates the previous checkpoint out only after that. So trainer_state.json
# is the completion marker: a dir without it is what a kill mid-save leaves (weights of step N, maybe no
# optimizer state, no step count), and resuming from it would silently train a different run.
CHECKPOINT_COMPLETE = "trainer_state.json"


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` the trainer finished writing; half-written ones are removed, so the rerun
    rewrites step N from scratch and HF's rotation never counts a broken dir as the one to keep. Safe to
    delete: the assets' work dir is locked by one live run, so a dir without its marker is a dead run's."""
    import shutil

    if not Path(checkpoint_dir).is_dir():
        return None
    complete: list[tuple[int, Path]] = []
    for d in Path(checkpoint_dir).glob("checkpoint-*"):
        step = d.name.removeprefix("checkpoint-")
        if not (d.is_dir() and step.isdigit()):
            continue
        if (d / CHECKPOINT_COMPLETE).is_file():
            complete.append((int(step), d))
        else:
            shutil.rmtree(d, ignore_errors=True)
    return max(complete)[1] if complete else None


class _KillPoints(TrainerCallback):
    """Kill-test hook (pipeline_assets/faults.py): ``posttrain.after_step:N`` fires when step N's update is
    done, before that step's checkpoint (if any) is saved. A no-op unless LLMDAG_FAULT_AT is set."""

    def on_step_end(self, args, state, control, **kwargs):
        faults.at("posttrain.after_step", state.global_step)


def train_resumable(trainer: Any, checkpoint_dir: Path | None = None, log: Log = print) -> int | None:
    """``trainer.train()``, resumed from the newest complete checkpoint in ``checkpoint_dir`` if there is one
    (the trainer must have been built with ``trl_args(checkpoint_dir=...)``); returns that step, or None for a
    fresh start. Also drops the per-step log dicts that disable_tqdm=True makes the Trainer print."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_KillPoints())
    if faults.armed("posttrain.mid_checkpoint"):
        # Kill-test hook: between the RNG state and trainer_state.json, i.e. a checkpoint with weights and
        # optimizer state but no completion marker. Patched only when armed: production never pays for it.
        save_rng_state = trainer._save_rng_state

        def save_rng_state_then_maybe_die(output_dir: str) -> None:
            save_rng_state(output_dir)
            faults.at("posttrain.mid_checkpoint", trainer.state.global_step)

        trainer._save_rng_state = save_rng_state_then_maybe_die
    last = last_complete_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    resumed = int(last.name.removeprefix("checkpoint-")) if last is not None else None
    if last is not None:
        log(f"resuming from {last} (step {resumed}): optimizer, scheduler, RNG and data position restored")
    trainer.train(resume_from_checkpoint=str(last) if last is not None else None)
    return resumed


def config_dict(cfg: Any) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
