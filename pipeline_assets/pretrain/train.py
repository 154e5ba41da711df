"""Pretraining loop: train a Llama-style decoder from token shards, resumable, single process or torchrun DDP.

    python -m pipeline_assets.pretrain.train --shards DIR --tokenizer DIR --run-dir DIR --out DIR [--profile P]
    torchrun --standalone --nproc_per_node=2 -m pipeline_assets.pretrain.train --shards DIR ... (gloo on CPU,
        nccl on CUDA; rank 0 logs and writes)

Re-running the same command after a crash or kill -9 resumes from `latest_checkpoint(run_dir)`. Library entry:
`train(cfg, shards_dir, tokenizer_dir, run_dir, out_dir, log=print) -> dict` (the asset calls this).

Why a plain torch loop (nanoGPT/nanochat style) and not transformers.Trainer: (1) exact resume: the data
order is a 3-int loader state, the lr is a pure function of the step and every RNG is restored, so an
interrupted CPU run ends with bit-identical weights (tests/test_pretrain_stage.py); Trainer resumes by
re-iterating the dataloader and skipping batches, and its lr/RNG handling is not ours to pin down.
(2) throughput: fused AdamW, compile of the bare module, bf16 autocast, no per-step callbacks or host syncs
(losses are fetched once per log window); bench/pretrain_mfu.py measures it against a bare HF loop.

What would break bit-identical resume, and how it is handled here:
- data order: loader state (seed, epoch, cursor) in meta.json; the order is recomputed, never replayed.
- lr: `lr_at(step)` is recomputed from the step (no chained scheduler whose float state drifts); changing
  max_steps changes the cosine, so interruptions use `stop_after_steps` and keep max_steps.
- dropout / any RNG: python, numpy, torch CPU and CUDA states per rank in rng_rank{r}.pt, restored after the
  model is built (building a model consumes RNG).
- optimizer: fp32 moments and step counts saved as-is; master weights fp32 in safetensors (bf16 is autocast
  only).
- CPU kernels: same thread count (num_threads) on both runs; a different count changes reduction order.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from pipeline_assets import faults
from pipeline_assets.config_flags import add_config_flags, add_profile_flag, config_from_args
from pipeline_assets.finite import NonFiniteError, assert_finite_weights, check_scalar
from pipeline_assets.pipes_rank0 import rank0_pipes
from pipeline_assets.pretrain import sharding
from pipeline_assets.pretrain.checkpoint import (
    latest_checkpoint,
    load_optimizer_state,
    load_rng_state,
    read_meta,
    restore_rng,
    save_checkpoint,
)
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.pretrain.data import TokenWindows, TrainLoader, read_index, unigram_val_loss, val_batches
from pipeline_assets.pretrain.model import (
    build_model,
    build_model_config,
    count_params,
    expert_params,
    flops_per_token,
    peak_bf16_flops,
)
from pipeline_assets.summary import write_summary

# Changing these between a checkpoint and its resume makes the saved state meaningless (or the data order
# different): refuse and ask for a new run_dir.
_RESUME_STRICT = tuple(
    "d_model n_layers n_heads n_kv_heads intermediate_size seq_len tie_embeddings rope_theta "
    "vocab_multiple_of batch_size seed parallelism".split()  # parallelism: the optimizer state's layout
)
# Changing these is allowed (e.g. a longer schedule, another GPU), but the run stops being identical to a
# straight one: warn loudly. Everything else (logging, checkpoint cadence, samples, stop_after_steps) is free.
_RESUME_WARN = tuple(
    "grad_accum max_steps lr min_lr_ratio warmup_steps weight_decay betas grad_clip dropout "
    "device dtype compile attn_implementation num_threads".split()
)


# --- Distributed ------------------------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(
        rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=world
    )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        info.initialized_here = True
    return info


def _all_reduce_sum(t: torch.Tensor, d: DistInfo) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)  # gloo has no AVG: sum, then divide by the caller
    return t


# --- Schedule and optimizer -------------------------------------------------------------------------------
def lr_at(step: int, cfg: PretrainConfig) -> float:
    """LR for the optimizer step that follows `step` completed steps: linear warmup, then cosine to min_lr."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    min_lr = cfg.learning_rate * cfg.min_lr_ratio
    return min_lr + 0.5 * (cfg.learning_rate - min_lr) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, weight decay on matrices/embeddings (dim >= 2) only; fused kernel on CUDA."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=tuple(cfg.betas), fused=device.type == "cuda")


# --- Helpers ----------------------------------------------------------------------------------------------
def resolve_device(cfg: PretrainConfig, d: DistInfo) -> torch.device:
    kind = cfg.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device='cuda' but torch sees no GPU; use device='cpu' (and dtype='float32') or 'auto'"
        )
    if kind == "cpu" and cfg.dtype == "bfloat16":
        raise ValueError(
            "dtype='bfloat16' needs CUDA and this run resolved to CPU; set dtype='float32' "
            "or use the tiny profile on a CPU-only machine"
        )
    return torch.device(f"cuda:{d.local_rank}") if kind == "cuda" else torch.device("cpu")


def _autocast(device: torch.device, cfg: PretrainConfig) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda" and cfg.dtype == "bfloat16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """CUDA's allocator peak for this training; None on CPU, where the only peak the OS keeps (ru_maxrss) is
    the whole process's: in a Dagster run every earlier step's memory too (1.6 GB for both pretraining variants
    of the default run, whatever their size). train_state_mb is the comparable figure there."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None


def _fmt_duration(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def _warn_block(log: Callable[[str], None], lines: list[str]) -> None:
    log("!" * 80)
    for line in lines:
        log(f"! {line}")
    log("!" * 80)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: list[torch.Tensor],
    device: torch.device,
    cfg: PretrainConfig,
    d: DistInfo,
    lockstep: bool = False,
) -> float:
    """Mean val loss in nats/token over the fixed val batches of all ranks.

    ``lockstep`` (FSDP2: every forward gathers from every rank): a rank with fewer batches runs throwaway
    forwards until each has run as many as the rank with the most.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    if lockstep:
        most = torch.tensor([len(batches)], device=device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        for _ in range(int(most.item()) - len(batches)):
            with torch.no_grad(), _autocast(device, cfg):
                model(input_ids=torch.zeros((1, cfg.seq_len), dtype=torch.long, device=device), use_cache=False)
    for batch in batches:
        batch = batch.to(device, non_blocking=True)
        with _autocast(device, cfg):
            logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total[0] += loss.double()
        total[1] += batch[:, 1:].numel()
    _all_reduce_sum(total, d)
    model.train(was_training)
    return float(total[0] / total[1])


@torch.no_grad()
def generate_samples(
    model: torch.nn.Module, tokenizer: Any, cfg: PretrainConfig, device: torch.device, eos_id: int
) -> list[dict[str, str]]:
    """Greedy continuations of cfg.sample_prompts (deterministic, so they can be compared across runs)."""
    was_training = model.training
    model.eval()
    out = []
    for prompt in cfg.sample_prompts:
        # In the shards every document follows an eos, so eos is the "start of document" context it learnt.
        ids = [eos_id] + tokenizer.encode(prompt, add_special_tokens=False)
        new = max(0, min(cfg.sample_max_new_tokens, cfg.seq_len - len(ids)))
        inp = torch.tensor([ids], device=device)
        with _autocast(device, cfg):
            gen = model.generate(
                inp,
                attention_mask=torch.ones_like(inp),
                max_new_tokens=new,
                do_sample=False,
                eos_token_id=eos_id,
                pad_token_id=eos_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id,
            )
        out.append(
            {"prompt": prompt, "completion": tokenizer.decode(gen[0, len(ids) :], skip_special_tokens=True)}
        )
    model.train(was_training)
    return out


def _check_resume(
    old: dict[str, Any],
    cfg: PretrainConfig,
    old_world: int,
    world: int,
    log: Callable[[str], None],
    ckpt: Path,
) -> None:
    new = json.loads(json.dumps(cfg.to_dict()))  # compare as stored in meta.json (tuples become lists)
    strict = [k for k in _RESUME_STRICT if k in old and old[k] != new[k]]
    if strict:
        raise ValueError(
            f"cannot resume {ckpt}: {', '.join(f'{k} {old[k]!r} -> {new[k]!r}' for k in strict)} "
            f"changed; restore those values or point run_dir at a new directory"
        )
    changed = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in _RESUME_WARN if k in old and old[k] != new[k]]
    if old_world != world:
        changed.append(f"world_size: {old_world} -> {world} (global batch and per-rank RNG change)")
    if changed:
        _warn_block(
            log,
            [
                f"resuming {ckpt.name} with changed settings; the result will NOT match a straight run:",
                *changed,
            ],
        )


def _index_digest(shards_dir: Path) -> str:
    return hashlib.sha256((Path(shards_dir) / "index.json").read_bytes()).hexdigest()[:16]


# --- Inputs and model -------------------------------------------------------------------------------------
@dataclass
class _Data:
    tokenizer: Any
    vocab_size: int
    eos_id: int
    bos_id: int
    pad_id: int
    train_windows: TokenWindows
    val_windows: TokenWindows
    loader: TrainLoader
    val_local: list[torch.Tensor]  # this rank's share of the fixed val batches
    val_all: list[torch.Tensor]  # all of them (unigram baseline, counts)
    unigram: float
    val_info: dict[str, Any]

    def bpb(self, loss_nats: float) -> float | None:
        """Bits per byte = loss * val_tokens / (val_bytes * ln 2), with index.json's val counts."""
        n_bytes = int(self.val_info.get("bytes", 0))
        return loss_nats * int(self.val_info["tokens"]) / (n_bytes * math.log(2)) if n_bytes else None


def _prepare_data(cfg: PretrainConfig, shards_dir: Path, tokenizer_dir: Path, d: DistInfo) -> _Data:
    from transformers import AutoTokenizer

    index = read_index(shards_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab_size, eos_id, bos_id = int(index["vocab_size"]), int(index["eos_id"]), int(index["bos_id"])
    if len(tokenizer) > vocab_size or tokenizer.eos_token_id != eos_id:
        raise ValueError(
            f"tokenizer {tokenizer_dir} (len {len(tokenizer)}, eos {tokenizer.eos_token_id}) does not "
            f"match the shards' index.json (vocab_size {vocab_size}, eos {eos_id}); pass the tokenizer "
            f"dir the shards were made with ({index.get('tokenizer_dir')})"
        )
    train_windows = TokenWindows(shards_dir, index, "train", cfg.seq_len)
    val_windows = TokenWindows(shards_dir, index, "val", cfg.seq_len)
    val_all = val_batches(val_windows, cfg.batch_size, cfg.eval_batches)
    return _Data(
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        eos_id=eos_id,
        bos_id=bos_id,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id,
        train_windows=train_windows,
        val_windows=val_windows,
        loader=_with_passkeys(TrainLoader(train_windows, cfg.batch_size, cfg.seed, d.rank, d.world_size), cfg,
                              tokenizer),
        val_local=val_batches(val_windows, cfg.batch_size, cfg.eval_batches, d.rank, d.world_size),
        val_all=val_all,
        unigram=unigram_val_loss(train_windows, val_all, vocab_size),
        val_info=index["splits"]["val"],
    )


class PasskeyLoader:
    """A TrainLoader whose rows are each, with probability cfg.passkey_fraction, replaced by a passkey-retrieval
    row built on that row's own text (pretrain/passkey.py). The draw is seeded by the loader's position, which a
    resume restores, so a resumed run sees exactly the rows a straight one does."""

    def __init__(self, loader: TrainLoader, fraction: float, seed: int, encode: Callable[[str], list[int]]) -> None:
        self.loader, self.fraction, self.seed, self.encode = loader, fraction, seed, encode
        self.rows_replaced = 0

    def next_batch(self) -> torch.Tensor:
        from pipeline_assets.pretrain.passkey import passkey_row

        rng = np.random.default_rng([self.seed, 0x9A55, self.loader.windows_consumed, self.loader.rank])
        batch = self.loader.next_batch()
        for row in np.flatnonzero(rng.random(len(batch)) < self.fraction):
            batch[row] = torch.from_numpy(passkey_row(batch[row].numpy(), rng, batch.shape[1], self.encode))
            self.rows_replaced += 1
        return batch

    def __getattr__(self, name: str) -> Any:  # state_dict, load_state_dict, consumed: the wrapped loader's
        return getattr(self.loader, name)


def _with_passkeys(loader: TrainLoader, cfg: PretrainConfig, tokenizer: Any) -> Any:
    if not cfg.passkey_fraction:
        return loader
    return PasskeyLoader(loader, cfg.passkey_fraction, cfg.seed,
                         lambda text: tokenizer.encode(text, add_special_tokens=False))


def _init_model(cfg: PretrainConfig, data: _Data, ckpt: Path | None) -> torch.nn.Module:
    """Fresh fp32 model from cfg.seed, or the checkpoint's weights (bit-exact) in the model cfg describes (a
    resume point, or the model a continued pretraining starts from: its RoPE may be extended, its shapes not)."""
    from transformers import AutoModelForCausalLM

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    if ckpt is None:
        return build_model(cfg, data.vocab_size, data.bos_id, data.eos_id, data.pad_id)
    # config= pins attention kernel and dropout to the current cfg; the weights come from safetensors.
    model_config = build_model_config(cfg, data.vocab_size, data.bos_id, data.eos_id, data.pad_id)
    model, info = AutoModelForCausalLM.from_pretrained(
        ckpt, config=model_config, dtype=torch.float32, output_loading_info=True
    )
    # from_pretrained only warns and re-initialises missing or mis-shaped weights; a resume must refuse.
    bad = {k: v for k, v in info.items() if v}  # missing/unexpected/mismatched keys, error_msgs
    if bad:
        raise ValueError(f"{ckpt} does not fit the configured model: {bad}; use a new run_dir")
    return model


def _train_step(
    train_model: torch.nn.Module,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: TrainLoader,
    cfg: PretrainConfig,
    device: torch.device,
    d: DistInfo,
) -> torch.Tensor:
    """One optimizer step over cfg.grad_accum micro-batches: ``[mean loss, pre-clip grad norm, mean router aux
    loss]`` on device (aux 0 for a dense model; the loss is the LM loss alone, comparable across both).

    They stay on device (no host sync); the flush checks them finite before any checkpoint is written.
    """
    loss_sum = torch.zeros((), device=device)
    aux_sum = torch.zeros((), device=device)
    router = {"output_router_logits": True} if cfg.moe else {}
    for micro in range(cfg.grad_accum):
        batch = loader.next_batch()
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        # Reduce gradients across ranks only on the last micro-batch of the step (DDP no_sync; FSDP2's switch).
        last = micro == cfg.grad_accum - 1
        no_sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if hasattr(train_model, "set_requires_gradient_sync"):
            train_model.set_requires_gradient_sync(last)
        elif d.enabled and not last:
            no_sync = train_model.no_sync()  # type: ignore[operator]
        with no_sync:
            with _autocast(device, cfg):
                out = train_model(input_ids=batch[:, :-1], use_cache=False, **router)
            logits = out.logits
            # fp32 log-softmax: bf16 (8 mantissa bits) is too coarse for a softmax over the whole vocab.
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
            objective = loss + cfg.moe_aux_loss_coef * out.aux_loss if cfg.moe else loss
            (objective / cfg.grad_accum).backward()
        loss_sum += loss.detach()
        if cfg.moe:
            aux_sum += out.aux_loss.detach().float()
    if cfg.grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor (the norm over every rank's shards)
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return torch.stack([loss_sum / cfg.grad_accum, grad_norm.to(loss_sum.device, loss_sum.dtype),
                        aux_sum / cfg.grad_accum])


def _checked_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, fsdp: bool, d: DistInfo,
                   device: torch.device, where: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The weights (and optimizer state) to write, checked finite, on every rank together.

    DDP / one process: (None, None), the model writes its own state. FSDP2: the full state gathered to rank 0
    (every rank calls this); rank 0 checks it and every rank raises if it is not finite.
    """
    if not fsdp:
        assert_finite_weights(model.state_dict(), where=where)
        return None, None
    weights = sharding.full_model_state(model)
    optim = sharding.full_optimizer_state(model, optimizer) if optimizer is not None else None
    error: NonFiniteError | None = None
    if d.rank == 0:
        try:
            assert_finite_weights(weights, where=where)
        except NonFiniteError as e:
            error = e
    if not sharding.all_agree(error is None, device):
        raise error or NonFiniteError(f"non-finite weights in {where} (rank 0's error names them)")
    return weights, optim


# --- Training ---------------------------------------------------------------------------------------------
def train(
    cfg: PretrainConfig,
    shards_dir: Path,
    tokenizer_dir: Path,
    run_dir: Path,
    out_dir: Path,
    log: Callable[[str], None] = print,
    init_dir: Path | None = None,
) -> dict[str, Any]:
    """Train (or resume) to cfg.max_steps (or cfg.stop_after_steps); export HF model + tokenizer to out_dir.

    `init_dir`: an HF checkpoint of the same shape to continue pretraining from (models/long_context from
    models/base) instead of cfg.seed's random init; a resume still starts from run_dir's newest checkpoint.

    Returns JSON-able metadata with the snake_case keys of the `result` dict at the end of `_train`
    (num_params, tokens_seen, val_loss, val_bpb, loss_history, samples, data_consumed, ...). Under torchrun
    every rank calls this; only rank 0 logs, writes tensorboard and the export; all ranks join checkpoint
    saves (each writes its RNG state).
    """
    from transformers.utils import logging as hf_logging

    cfg.validate()
    t_invocation = time.time()
    shards_dir, tokenizer_dir, run_dir, out_dir = map(Path, (shards_dir, tokenizer_dir, run_dir, out_dir))
    hf_logging.disable_progress_bar()  # tqdm bars in save/load freeze Dagster's log view; we log lines
    wants_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    d = init_distributed("cuda" if wants_cuda else "cpu")
    try:
        return _train(cfg, shards_dir, tokenizer_dir, run_dir, out_dir, log, d, t_invocation, init_dir)
    finally:
        if d.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    cfg: PretrainConfig,
    shards_dir: Path,
    tokenizer_dir: Path,
    run_dir: Path,
    out_dir: Path,
    log: Callable[[str], None],
    d: DistInfo,
    t_invocation: float,
    init_dir: Path | None = None,
) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    log0: Callable[[str], None] = log if d.rank == 0 else (lambda _msg: None)
    device = resolve_device(cfg, d)
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    else:
        torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)  # peak_memory_mb: this training's, not the process's
        torch.set_float32_matmul_precision("high")  # TF32 for any fp32 matmul left outside autocast
        torch.backends.cudnn.allow_tf32 = True
    data = _prepare_data(cfg, shards_dir, tokenizer_dir, d)
    loader = data.loader

    # --- model, optimizer and loop state: fresh or from the newest complete checkpoint
    ckpt = latest_checkpoint(run_dir)
    meta: dict[str, Any] = read_meta(ckpt) if ckpt else {}
    if ckpt:  # refuse an incompatible checkpoint before touching any weights
        _check_resume(meta["config"], cfg, int(meta.get("world_size", 1)), d.world_size, log0, ckpt)
    model = _init_model(cfg, data, ckpt or init_dir).to(device)
    model.train()
    num_params = count_params(model)
    fsdp = d.enabled and cfg.parallelism == "fsdp2"
    if fsdp:
        sharding.shard(model)  # before the optimizer: it must hold the sharded parameters
    optimizer = build_optimizer(model, cfg, device)
    fpt = flops_per_token(cfg, data.vocab_size)
    peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    global_tokens_per_step = cfg.tokens_per_step * d.world_size
    loop: dict[str, Any] = {"loss_history": [], "val_history": [], "tokens_seen": 0, "elapsed_s": 0.0}
    loop.update(train_time_s=0.0, tokens_per_s=None)
    start_step = 0
    if ckpt is None:
        torch.manual_seed(cfg.seed + d.rank)  # per-rank dropout streams
        log0(
            f"fresh run in {run_dir}: {num_params:,} params, {global_tokens_per_step:,} tokens/step, "
            f"{len(data.train_windows):,} train windows of {cfg.seq_len + 1} tokens"
        )
    else:
        if meta.get("index_digest") != _index_digest(shards_dir):
            _warn_block(log0, [f"{shards_dir}/index.json differs from the one {ckpt.name} was trained on"])
        if fsdp:
            sharding.load_full_optimizer_state(model, optimizer, load_optimizer_state(ckpt, "cpu"))
        else:
            optimizer.load_state_dict(load_optimizer_state(ckpt, device))
        loader.load_state_dict(meta["dataloader_state"])
        loop.update(meta["loop_state"])
        start_step = int(meta["step"])
        rng = load_rng_state(ckpt, d.rank)
        if rng is None:
            _warn_block(
                log0, [f"{ckpt.name} has no RNG state for rank {d.rank}; reseeding (new dropout masks)"]
            )
            torch.manual_seed(cfg.seed + d.rank + start_step)
        else:
            restore_rng(rng)  # last: building the model above consumed RNG
        log0(f"resumed from {ckpt} at step {start_step} ({loop['tokens_seen']:,} tokens seen)")

    train_model: torch.nn.Module = model
    if cfg.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    if d.enabled and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)
    # purge_step drops events a killed run logged after its last checkpoint, so curves do not double back.
    writer = (
        SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if ckpt else None)
        if d.rank == 0
        else None
    )
    elapsed_before = float(loop["elapsed_s"])
    step, lr, last_ckpt = start_step, lr_at(start_step, cfg), ckpt
    stop_at = cfg.stop_after_steps or cfg.max_steps
    width = max(5, len(str(cfg.max_steps)))

    def checkpoint_meta() -> dict[str, Any]:
        loop["elapsed_s"] = elapsed_before + (time.time() - t_invocation)
        return {
            "config": cfg.to_dict(),
            "world_size": d.world_size,
            "num_params": num_params,
            "scheduler": {
                "kind": "linear_warmup_cosine",
                "last_lr": lr,
                "next_lr": lr_at(step, cfg),
                "warmup_steps": cfg.warmup_steps,
                "max_steps": cfg.max_steps,
                "min_lr_ratio": cfg.min_lr_ratio,
            },
            "dataloader_state": loader.state_dict(),
            "loop_state": loop,
            "index_digest": _index_digest(shards_dir),
            "lineage": {
                "tokenizer_dir": str(tokenizer_dir),
                "shards_dir": str(shards_dir),
                "data_consumed": loader.consumed(),
            },
            "versions": {"torch": torch.__version__, "transformers": _transformers_version()},
        }

    try:
        pending: list[tuple[int, torch.Tensor]] = []  # losses still on device, fetched at the next flush
        window_losses: list[float] = []
        steady_tokens, steady_time = 0, 0.0  # throughput without each invocation's first step (compile)
        first_flush = True
        _sync(device)
        t_mark = time.perf_counter()
        while step < stop_at:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pending.append((step + 1, _train_step(train_model, model, optimizer, loader, cfg, device, d)))
            step += 1
            faults.at("pretrain.after_step", step)  # kill-test hook; a no-op unless LLMDAG_FAULT_AT is set
            is_last = step == stop_at
            do_log = step % cfg.log_every == 0 or is_last
            do_eval = (cfg.eval_every is not None and step % cfg.eval_every == 0) or is_last
            do_ckpt = (cfg.checkpoint_every is not None and step % cfg.checkpoint_every == 0) or is_last
            if not (do_log or do_eval or do_ckpt or first_flush):
                continue

            # --- flush: one host sync for all losses since the last one
            pairs = (_all_reduce_sum(torch.stack([v for _, v in pending]), d) / d.world_size).tolist()
            for (s, _), (v, g, _aux) in zip(pending, pairs, strict=True):
                check_scalar("train loss", v, s, f"lower lr (now {cfg.learning_rate}), raise warmup_steps, or check "
                                                 f"the shards for garbage tokens")
                check_scalar("grad norm", g, s, f"lower lr (now {cfg.learning_rate}) or set grad_clip")
            values = [v for v, _, _ in pairs]
            if cfg.moe:
                loop.setdefault("aux_loss_history", []).extend([s, round(a, 6)] for (s, _), (_, _, a)
                                                               in zip(pending, pairs, strict=True))
            _sync(device)
            dt, n_steps = time.perf_counter() - t_mark, len(pending)
            loop["train_time_s"] += dt
            loop["tokens_seen"] += n_steps * global_tokens_per_step
            if not first_flush:
                steady_tokens += n_steps * global_tokens_per_step
                steady_time += dt
                loop["tokens_per_s"] = steady_tokens / steady_time
            first_flush = False
            for (s, _), v in zip(pending, values, strict=True):
                loop["loss_history"].append([s, round(v, 6)])
                if writer:
                    writer.add_scalar("train/loss", v, s)
            window_losses.extend(values)
            pending.clear()
            tok_s = n_steps * global_tokens_per_step / dt
            if do_log:
                # Mean over the log window: on tiny, consecutive steps' losses differ by ~0.19 on average.
                line = f"step {step:0{width}d}/{cfg.max_steps:0{width}d} | loss "
                line += f"{sum(window_losses) / len(window_losses):.4f} | lr {lr:.1e} | tok/s {tok_s:,.0f}"
                if cfg.moe:
                    line += f" | aux {loop['aux_loss_history'][-1][1]:.3f} (balanced ~{cfg.moe_top_k})"
                if peak:
                    line += f" | mfu {100 * tok_s * fpt / (peak * d.world_size):.1f}%"
                log0(line + f" | eta {_fmt_duration((stop_at - step) * dt / n_steps)}")
                window_losses.clear()
                if writer:
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/tokens_per_s", tok_s, step)
            if do_eval:
                val_loss = evaluate(model, data.val_local, device, cfg, d, lockstep=fsdp)
                check_scalar("val loss", val_loss, step, "the weights are broken; no checkpoint of this step "
                                                         "is written, the last one stays the resume point")
                bpb = data.bpb(val_loss)
                loop["val_history"].append([step, round(val_loss, 6), None if bpb is None else round(bpb, 6)])
                log0(
                    f"step {step:0{width}d}/{cfg.max_steps:0{width}d} | val loss {val_loss:.4f} | val bpb "
                    f"{'n/a' if bpb is None else f'{bpb:.4f}'} | unigram {data.unigram:.4f}"
                )
                if writer:
                    writer.add_scalar("val/loss", val_loss, step)
                    if bpb is not None:
                        writer.add_scalar("val/bpb", bpb, step)
            if do_ckpt:
                weights, optim = _checked_state(model, optimizer, fsdp, d, device, f"the model at step {step}")
                last_ckpt = save_checkpoint(
                    run_dir,
                    step,
                    model,
                    data.tokenizer,
                    optimizer,
                    checkpoint_meta(),
                    rank=d.rank,
                    keep_last=cfg.keep_last,
                    barrier=d.barrier,
                    model_state=weights,
                    optimizer_state=optim,
                )
                log0(f"saved {last_ckpt}")
            _sync(device)
            t_mark = time.perf_counter()  # eval and checkpoint time is not training time

        # --- final numbers (the eval at this step when there was one), samples, export
        if loop["val_history"] and loop["val_history"][-1][0] == step:
            val_loss = loop["val_history"][-1][1]
        else:
            val_loss = evaluate(model, data.val_local, device, cfg, d, lockstep=fsdp)
        check_scalar("val loss", val_loss, step, "the weights are broken; nothing is exported")
        # Under FSDP2 every rank generates (same greedy tokens, so the same forwards) and rank 0 keeps them.
        samples = generate_samples(model, data.tokenizer, cfg, device, data.eos_id) if d.rank == 0 or fsdp else []
    finally:
        if writer:
            writer.close()

    bpb = data.bpb(val_loss)
    tokens_per_s = loop["tokens_per_s"]
    mfu = 100 * tokens_per_s * fpt / (peak * d.world_size) if (peak and tokens_per_s) else None
    wall = elapsed_before + (time.time() - t_invocation)
    result: dict[str, Any] = {
        "num_params": num_params,
        # per token: the embedding lookup is free, so the dense count less the experts a token skips
        "active_params": num_params - (cfg.moe_num_experts - cfg.moe_top_k) * expert_params(cfg) * cfg.n_layers
        if cfg.moe else num_params,
        # fp32 weights + grads + AdamW's two moments, the training state every step holds (16 bytes/param)
        "train_state_mb": round(16 * num_params / 2**20, 2),
        "peak_memory_mb": peak_memory_mb(device),
        "router_aux_loss_final": (round(sum(a for _, a in loop["aux_loss_history"][-10:])
                                        / len(loop["aux_loss_history"][-10:]), 6)
                                  if loop.get("aux_loss_history") else None),
        "tokens_seen": int(loop["tokens_seen"]),
        "tokens_per_param": round(loop["tokens_seen"] / num_params, 4),
        "train_loss_first": loop["loss_history"][0][1] if loop["loss_history"] else None,
        "train_loss_final": loop["loss_history"][-1][1] if loop["loss_history"] else None,
        # Over the eval_batches fixed val windows, bytes from the split's average bytes per token: the in-training
        # estimate. evals/base scores the whole val split on exact bytes as val_loss / val_bpb.
        "window_val_loss": round(float(val_loss), 6),
        "window_val_bpb": None if bpb is None else round(bpb, 6),
        "window_unigram_val_loss": round(data.unigram, 6),
        "wall_time_s": round(wall, 3),  # every invocation up to the last checkpoint, + this one to the end
        "train_time_s": round(float(loop["train_time_s"]), 3),  # optimizer steps only
        "tokens_per_s": None if tokens_per_s is None else round(tokens_per_s, 1),
        "mfu_pct": None if mfu is None else round(mfu, 2),
        "flops_per_token": fpt,
        "steps": step,
        "max_steps": cfg.max_steps,
        "complete": step >= cfg.max_steps,
        "resumed_from_step": start_step if ckpt else None,
        "world_size": d.world_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "checkpoint_dir": str(last_ckpt) if last_ckpt else None,
        "init_from": str(init_dir) if init_dir else None,
        # this invocation's (a resume counts from its checkpoint on)
        "passkey_rows": getattr(loader, "rows_replaced", 0),
        "loss_history": loop["loss_history"],
        "aux_loss_history": loop.get("aux_loss_history", []),
        "val_history": loop["val_history"],
        "samples": samples,
        "data_consumed": {
            "tokenizer_dir": str(tokenizer_dir),
            "shards_dir": str(shards_dir),
            **loader.consumed(),
            "val": {
                "windows": len(data.val_windows),
                "windows_evaluated": sum(len(b) for b in data.val_all),
                "tokens": int(data.val_info["tokens"]),
                "bytes": int(data.val_info.get("bytes", 0)),
            },
        },
        "config": cfg.to_dict(),
    }
    weights, _ = _checked_state(model, None, fsdp, d, device, f"the model at step {step}")
    if d.rank == 0:
        for s in samples:
            log0(f"sample | {s['prompt']!r} -> {s['completion']!r}")
        out_dir.mkdir(parents=True, exist_ok=True)
        model.generation_config.pad_token_id = data.pad_id
        model.save_pretrained(out_dir, **({"state_dict": weights} if weights is not None else {}))
        data.tokenizer.save_pretrained(out_dir)
        write_summary(out_dir, result)
        log0(
            f"exported {out_dir} | window val loss {result['window_val_loss']:.4f} (unigram {data.unigram:.4f}) | "
            f"window val bpb {result['window_val_bpb']} | {result['tokens_seen']:,} tokens | {_fmt_duration(wall)}"
        )
    d.barrier()  # other ranks return only once the export exists
    return result


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# --- CLI ----------------------------------------------------------------------------------------------------
# Every PretrainConfig field as a --kebab-case flag, grouped as in nanochat's scripts, with its help text.
_CLI_FLAGS: dict[str, dict[str, str]] = {
    "Model": {
        "d_model": "hidden size",
        "n_layers": "transformer blocks",
        "n_heads": "attention heads",
        "n_kv_heads": "key/value heads (< n_heads = GQA)",
        "intermediate_size": "SwiGLU MLP width",
        "seq_len": "tokens per training sequence",
        "tie_embeddings": "share input embedding and LM head",
        "rope_theta": "RoPE base",
        "rope_type": "default | linear | yarn | llama3 | dynamic (context extension)",
        "rope_factor": "context extension factor",
        "rope_original_max_position": "context the weights were trained at (required with rope_type)",
        "dropout": "attention dropout",
        "vocab_multiple_of": "pad embedding rows to this",
        "init_std": "weight init std",
        "moe_num_experts": "experts per FFN (0 = dense; >= 2 = Mixtral MoE)",
        "moe_top_k": "experts each token is routed to",
        "moe_aux_loss_coef": "weight of the router's load-balancing loss",
        "passkey_fraction": "share of training rows replaced by passkey-retrieval rows",
    },
    "Optimization": {
        "batch_size": "sequences per micro-batch per rank",
        "grad_accum": "micro-batches per optimizer step",
        "max_steps": "optimizer steps (length of the lr schedule)",
        "learning_rate": "peak learning rate",
        "min_lr_ratio": "final lr as a fraction of lr",
        "warmup_steps": "linear warmup steps",
        "weight_decay": "AdamW weight decay on matrices",
        "betas": "AdamW betas (two floats)",
        "grad_clip": "max grad norm ('none' = off)",
    },
    "Runtime": {
        "device": "auto | cpu | cuda",
        "dtype": "float32 | bfloat16",
        "compile": "torch.compile the model",
        "parallelism": "under torchrun: ddp, or fsdp2 (weights, grads, optimizer state sharded per layer)",
        "attn_implementation": "sdpa | eager | flash_attention_2 | ...",
        "num_threads": "torch CPU threads per process",
        "seed": "init, data order and dropout seed",
        "stop_after_steps": "stop with a checkpoint after this step; the schedule stays ('none' = end)",
    },
    "Checkpointing": {
        "checkpoint_every": "steps between checkpoints ('none' = last step only)",
        "keep_last": "complete checkpoints kept ('none' = all)",
    },
    "Logging": {
        "log_every": "steps between progress lines",
        "eval_every": "steps between val evaluations ('none' = end only)",
        "eval_batches": "val batches per evaluation",
        "sample_prompts": "prompts for the greedy samples at the end",
        "sample_max_new_tokens": "tokens generated per sample",
    },
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Pretrain a Llama-style model on llmdag token shards (resumable)."
    )
    # Paths
    p.add_argument("--shards", type=Path, required=True, help="token shards dir (index.json + *.npy)")
    p.add_argument("--tokenizer", type=Path, required=True, help="HF tokenizer dir the shards were made with")
    p.add_argument("--run-dir", type=Path, required=True, help="checkpoints + tensorboard; re-run to resume")
    p.add_argument("--out", type=Path, required=True, help="final HF model + tokenizer export dir")
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue pretraining from this HF checkpoint instead of a random init")
    p.add_argument("--config-json", type=Path, default=None,
                   help="a PretrainConfig as JSON (what the asset launches with); the config flags are then ignored")
    add_profile_flag(p)
    listed = {n for group in _CLI_FLAGS.values() for n in group}
    missing = {f.name for f in fields(PretrainConfig)} ^ listed
    assert not missing, f"add {missing} to _CLI_FLAGS in train.py (group + help)"
    add_config_flags(p, PretrainConfig, _CLI_FLAGS)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    cfg = (PretrainConfig.from_dict(json.loads(args.config_json.read_text())).validate() if args.config_json
           else config_from_args(PretrainConfig, "pretrain", args))
    with rank0_pipes() as report:  # launched through Dagster Pipes: rank 0 logs into the run and reports back
        result = train(cfg, args.shards, args.tokenizer, args.run_dir, args.out, log=report.log,
                       init_dir=args.init_from)
        report.result(summary=str(args.out / "summary.json"), steps=result["steps"], complete=result["complete"],
                      world_size=result.get("world_size", 1), window_val_loss=result["window_val_loss"])
    if int(os.environ.get("RANK", "0")) == 0:
        skip = ("loss_history", "val_history", "config", "data_consumed")
        print(json.dumps({k: v for k, v in result.items() if k not in skip}, indent=1))
    return result


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the hub
    main()
