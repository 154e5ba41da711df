"""Resumable pretraining checkpoints: `run_dir/step_{step:06d}/`, written atomically, `meta.json` last.

One checkpoint (after OLMo-core's train/checkpoint.py: temp dir, completion marker, latest_checkpoint):
    config.json, model.safetensors, generation_config.json  HF format: AutoModelForCausalLM.from_pretrained
    tokenizer.json, tokenizer_config.json, ...              tokenizer copy, so the dir is self-contained
    optimizer.pt                                            AdamW state_dict (fp32 moments, step counts)
    rng_rank{r}.pt                                          python/numpy/torch-CPU/CUDA RNG of each rank
    meta.json                                               step, config, scheduler, dataloader + loop state
Everything is written to `step_NNNNNN-tmp/` and fsynced, then meta.json is written and the dir is
`os.replace`d into place: a dir without meta.json (a crash mid-save) is never a checkpoint.
Used by train.py; no command of its own.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline_assets import faults

CHECKPOINT_FORMAT = "llmdag-pretrain-checkpoint/1"
META_FILE = "meta.json"
_STEP_RE = re.compile(r"^step_(\d{6,})$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"step_{step:06d}"


def is_checkpoint(path: Path) -> bool:
    """A dir is a checkpoint only when its completion marker exists."""
    return _STEP_RE.match(Path(path).name) is not None and (Path(path) / META_FILE).is_file()


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first; `-tmp` and marker-less dirs are skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    out = []
    for p in run_dir.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and is_checkpoint(p):
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Newest complete checkpoint dir, or None when run_dir has none (a fresh run)."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def read_meta(path: Path) -> dict[str, Any]:
    meta = json.loads((Path(path) / META_FILE).read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path}/{META_FILE}: format {meta.get('format')!r} is not {CHECKPOINT_FORMAT!r}; "
            f"this run_dir was written by another tool or version, start a new run_dir"
        )
    return meta


# --- RNG ------------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Every RNG a step can touch: dropout uses torch's; python/numpy in case user code draws from them."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's key array is stored as a tensor so torch.load(weights_only=True) can read it back.
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "pos": int(np_state["state"]["pos"]),
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch_cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


# --- Save -----------------------------------------------------------------------------------------------
def _fsync_tree(root: Path) -> None:
    """Flush every file so a power loss after the rename cannot leave a marker over empty files."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    *,
    rank: int = 0,
    keep_last: int | None = None,
    barrier: Callable[[], None] | None = None,
    model_state: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write step_{step:06d} atomically; every rank must call it (each saves its RNG), rank 0 writes the rest.

    `model_state` / `optimizer_state`: the full state to write instead of the model's and optimizer's own
    (FSDP2 gathers them to rank 0 first: pretrain/sharding.py).

    `meta` holds the JSON-able state (config, scheduler, dataloader_state, loop_state, ...); `format`, `step`
    and `saved_at` are added. Raises FileExistsError if that step is already a complete checkpoint.
    """
    run_dir = Path(run_dir)
    final = step_dir(run_dir, step)
    tmp = final.with_name(final.name + "-tmp")
    sync = barrier or (lambda: None)
    if rank == 0:
        if is_checkpoint(final):
            raise FileExistsError(
                f"{final} is already a complete checkpoint; resume from it or use a new run_dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        # Leftovers of a crash mid-save or mid-prune are never trusted: clear them (one writer per run_dir).
        for junk in [*run_dir.glob("step_*-tmp"), *run_dir.glob("step_*-deleting")]:
            shutil.rmtree(junk, ignore_errors=True)
        tmp.mkdir()
    sync()
    torch.save(capture_rng(), tmp / f"rng_rank{rank}.pt")
    sync()
    if rank == 0:
        model.save_pretrained(tmp, **({"state_dict": model_state} if model_state is not None else {}))  # fp32
        faults.at("checkpoint.mid_write", step)  # kill-test hook: a -tmp dir without meta.json is left
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt")
        _fsync_tree(tmp)
        full_meta = {"format": CHECKPOINT_FORMAT, "step": step, "saved_at": time.time(), **meta}
        with open(tmp / META_FILE, "w") as f:  # the completion marker, written last
            json.dump(full_meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # a marker-less leftover with the same name is not a checkpoint: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        if keep_last is not None:
            prune_checkpoints(run_dir, keep_last)
    sync()
    return final


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints; returns what was removed."""
    if keep_last < 1:
        raise ValueError(f"keep_last={keep_last} would delete the checkpoint resume needs; use >= 1")
    doomed = [p for _, p in list_checkpoints(run_dir)[:-keep_last]]
    for p in doomed:
        # Rename first so a crash mid-delete leaves a marker-less dir instead of a half-deleted "checkpoint".
        trash = p.with_name(p.name + "-deleting")
        os.replace(p, trash)
        shutil.rmtree(trash)
    return doomed


# --- Load -----------------------------------------------------------------------------------------------
def load_optimizer_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only: a checkpoint dir is data, never code (pickle would run anything in it).
    return torch.load(Path(path) / "optimizer.pt", map_location=map_location, weights_only=True)


def load_rng_state(path: Path, rank: int) -> dict[str, Any] | None:
    """This rank's RNG state, or None when the checkpoint was written with fewer ranks."""
    f = Path(path) / f"rng_rank{rank}.pt"
    return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None
