"""Supervised fine-tuning (`models/sft`): TRL SFTTrainer on chat `messages`, full fine-tune or LoRA (peft).

    python -m pipeline_assets.posttrain.sft --models-base BASE --datasets-sft SFT_DATA \
        --tokenizer-tokenized-shards SHARDS --evals-benchmarks BENCH --out OUT    # the tiny profile's run
    python -m pipeline_assets.posttrain.sft ... --use-lora --learning-rate 3e-3  # --help: every field

`run_sft(cfg, base_dir, dataset_path, out_dir, merged_dir)` is what the asset calls; it returns JSON-able
metadata and also writes it to `out_dir/summary.json` (pipeline_assets/summary.py) (last, as a completion marker).

Loss is on assistant tokens only (`assistant_only_loss`): our ChatML template wraps each reply AND its
<|im_end|> in `{% generation %}`, so the model learns to answer and then stop on eos (the tokenizer's
`eos_token`, the same id generation stops on). Outputs:
    full fine-tune  out_dir = the model (safetensors + tokenizer), loadable with AutoModelForCausalLM
    LoRA            out_dir = the adapter (adapter_config.json + adapter_model.safetensors + tokenizer),
                    loadable with peft.AutoPeftModelForCausalLM / PeftModel.from_pretrained(base, out_dir);
                    merged_dir = base + adapter merged (merge_and_unload): a plain transformers model.

Measured numbers for the tiny profile (CPU, one thread) are in SFTStageConfig's docstring.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from pipeline_assets.asset_keys import BASE, BENCHMARKS, SFT_DATA, SHARDS
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.model_io import generate_replies, load_causal_lm, save_checkpoint
from pipeline_assets.pipes_rank0 import is_rank0
from pipeline_assets.posttrain.common import LossHistory, lora_config, train_resumable, trl_args
from pipeline_assets.posttrain.config import SFTStageConfig
from pipeline_assets.posttrain.data import DEV_FILE, SFT_FILE, SFT_VAL_FILE
from pipeline_assets.stage_cli import stage_main
from pipeline_assets.stages import StageInputs
from pipeline_assets.summary import write_summary
from pipeline_assets.tasks.arithmetic import check_arithmetic

# ---------------------------------------------------------------------------------------------------------
# Scoring (shared by grpo.py and distill.py); generation and loading live in common.py


def arithmetic_accuracy(model: Any, tok: Any, records: Sequence[dict], max_new_tokens: int = 8,
                        n_samples: int = 5) -> dict[str, Any]:
    """Greedy exact-answer accuracy (`check_arithmetic`) on records {"prompt", "answer"[, "kind"]}."""
    if not records:
        raise ValueError("records is empty; pass the benchmark's arithmetic records (load_benchmark(bench, "
                         "'arithmetic')) or the datasets/reasoning dev_arithmetic.jsonl rows")
    replies = generate_replies(model, tok, [r["prompt"] for r in records], max_new_tokens)
    hits = [check_arithmetic(text, r["answer"]) for (text, _), r in zip(replies, records, strict=True)]
    by_kind: dict[str, list[bool]] = {}
    for hit, r in zip(hits, records, strict=True):
        by_kind.setdefault(r.get("kind", "single"), []).append(hit)
    return {
        "accuracy": round(sum(hits) / len(hits), 4),
        "by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_kind.items())},
        "n": len(hits),
        "eos_rate": round(sum(stopped for _, stopped in replies) / len(replies), 4),
        "samples": [{"prompt": r["prompt"], "answer": r["answer"], "completion": text}
                    for (text, _), r in list(zip(replies, records, strict=True))[:n_samples]],
    }


def chat_format_rate(replies: Sequence[tuple[str, bool]]) -> float:
    """Share of replies that are non-empty and end with eos (the chat format the template teaches)."""
    return round(sum(bool(text) and stopped for text, stopped in replies) / max(len(replies), 1), 4)


def load_tokenizer(model_dir: Path, need_generation_markers: bool) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    template = tok.chat_template if isinstance(tok.chat_template, str) else ""
    if not template:
        raise ValueError(f"{model_dir}: the tokenizer has no chat template; build it with "
                         "pipeline_assets.tokenizer.train (ChatML) or set tokenizer.chat_template")
    if need_generation_markers and "{% generation %}" not in template.replace("{%- generation %}",
                                                                            "{% generation %}"):
        raise ValueError(f"{model_dir}: assistant_only_loss=True needs `{{% generation %}}` markers around the "
                         "assistant reply in the chat template; use our tokenizer or set assistant_only_loss=False")
    if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
        raise ValueError(f"{model_dir}: the tokenizer needs its own pad token (pad == eos teaches 'never stop')")
    return tok


# (model, tok, records, max_new_tokens) -> accuracy in [0, 1]: what a dev curve measures (default: greedy
# arithmetic_accuracy; models/tool_use scores answers through the tool loop).
DevScore = Callable[[Any, Any, Sequence[dict], int], float]


class ArithmeticCurve(TrainerCallback):
    """Greedy held-out arithmetic accuracy (or `score`) every `every` optimizer steps -> `curve` [[step, acc], ...].

    `stop_at`: end training at the first point whose accuracy reaches it (`stopped_at` = that step); pass
    dev-split records then, never the reported test split. `keep_best`: also keep a copy of the weights at the
    best point so far, for `restore_best` when the run ends without reaching `stop_at`.
    """

    def __init__(self, tok: Any, records: Sequence[dict], every: int, max_new_tokens: int,
                 log: Callable[[str], None], stop_at: float | None = None, keep_best: bool = False,
                 score: DevScore | None = None, every_near_stop: int | None = None) -> None:
        self.tok, self.records, self.every, self.max_new_tokens, self.log = tok, records, every, max_new_tokens, log
        self.stop_at, self.keep_best, self.every_near_stop = stop_at, keep_best, every_near_stop
        self.score = score or (lambda model, tok, records, n: arithmetic_accuracy(model, tok, records, n)["accuracy"])
        self.curve: list[list[float]] = []
        self.stopped_at: int | None = None
        self._best: tuple[float, int, dict[str, torch.Tensor]] | None = None  # (accuracy, step, weights)

    def restore_best(self, model: Any) -> int | None:
        """Load the best point's weights into `model` if training ended below `stop_at` and that point beat the
        last one; returns its step, else None. In memory only: after a resume it is the best since the resume."""
        if self.stopped_at is not None or self._best is None or not self.curve or self._best[0] <= self.curve[-1][1]:
            return None
        acc, step, weights = self._best
        model.load_state_dict(weights)
        self.log(f"dev accuracy never reached {self.stop_at}: keeping step {step} "
                 f"(dev {acc:.3f}) instead of the last one ({self.curve[-1][1]:.3f})")
        return step

    def interval(self) -> int:
        """Steps to the next check: `every_near_stop` once any point reached half of `stop_at` (the iterate swings:
        a fresh clone's dev went 0.36, 0.29, 0.13, 0.45 at steps 640-680)."""
        near = (self.every_near_stop is not None and self.stop_at is not None
                and any(acc >= self.stop_at / 2 for _, acc in self.curve))
        return self.every_near_stop if near else self.every

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None or state.global_step % self.interval():
            return
        acc = self.score(model, self.tok, self.records, self.max_new_tokens)
        model.train()  # generate() left it in eval mode
        self.curve.append([state.global_step, acc])
        self.log(f"step {state.global_step:05d} | held-out arithmetic {acc:.3f}")
        if self.keep_best and (self._best is None or acc > self._best[0]):
            self._best = (acc, state.global_step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if self.stop_at is not None and acc >= self.stop_at:
            self.stopped_at = state.global_step
            control.should_training_stop = True
            self.log(f"step {state.global_step:05d} | dev accuracy {acc:.3f} >= {self.stop_at}: stopping")


class BucketSampler(torch.utils.data.Sampler[int]):
    """Row order in which each consecutive block of `batch_size` rows comes from one bucket.

    Rows are shuffled within their bucket and the blocks are shuffled, with a fresh order every epoch.
    Remainders of all buckets are pooled into mixed blocks, so no row is ever skipped; the one partial
    block goes last, which keeps every other block aligned with the DataLoader's batches.
    `quotas` {bucket: k}: such a bucket is a pool of which each epoch takes the next k rows of one fixed
    shuffle (cyclically), so pretraining replay sees fresh windows every epoch at a fixed share of the rows.
    """

    def __init__(self, buckets: Sequence[Any], batch_size: int, seed: int,
                 quotas: dict[Any, int] | None = None) -> None:
        self.groups: dict[Any, list[int]] = {}
        for i, bucket in enumerate(buckets):
            self.groups.setdefault(bucket, []).append(i)
        self.quotas = {b: min(k, len(self.groups[b])) for b, k in (quotas or {}).items() if b in self.groups}
        pools = random.Random(f"{seed}:pools")
        for b in self.quotas:
            pools.shuffle(self.groups[b])
        self.n = len(buckets) - sum(len(self.groups[b]) - k for b, k in self.quotas.items())
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def __len__(self) -> int:
        return self.n

    def _rows(self, bucket: Any, rows: list[int]) -> list[int]:
        k = self.quotas.get(bucket)
        if k is None:
            return rows[:]
        start = self.epoch * k % len(rows)
        return (rows[start:] + rows[:start])[:k]

    def set_epoch(self, epoch: int) -> None:
        # The Trainer calls this before every epoch, also the first one of a resumed run: the order then
        # follows the epoch, not how often this particular object has been iterated.
        self.epoch = epoch

    def __iter__(self) -> Any:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        bs = self.batch_size
        blocks: list[list[int]] = []
        leftover: list[int] = []
        for bucket, pool in self.groups.items():
            rows = self._rows(bucket, pool)
            rng.shuffle(rows)
            full = len(rows) - len(rows) % bs
            blocks += [rows[j:j + bs] for j in range(0, full, bs)]
            leftover += rows[full:]
        rng.shuffle(leftover)
        mixed = [leftover[j:j + bs] for j in range(0, len(leftover), bs)]
        tail = mixed.pop() if mixed and len(mixed[-1]) < bs else []
        blocks += mixed
        rng.shuffle(blocks)
        self.epoch += 1
        return iter([i for block in blocks for i in block] + tail)


def length_band(n_tokens: int) -> int:
    """Length bands 1.5x wide (..., 23-34, 35-51, 52-77, ... tokens) for data without a `kind` column."""
    return round(math.log(max(2, n_tokens)) / math.log(1.5))


def trainable_and_total(model: torch.nn.Module) -> tuple[int, int]:
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:  # a tied embedding counts once
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


# ---------------------------------------------------------------------------------------------------------
# Config




def replay_rows(shards_dir: Path, n_rows: int, length: int, seed: int) -> Any:
    """`n_rows` random `length`-token windows of the pretraining train split as trainer-ready rows.

    Rows carry `input_ids` and `labels` (every token counts: plain LM loss), the columns SFTTrainer's
    prepared chat rows have, so they join the same dataset; windows are distinct while the split has enough.
    """
    import numpy as np
    from datasets import Dataset

    from pipeline_assets.pretrain.data import TokenWindows, read_index

    windows = TokenWindows(shards_dir, read_index(shards_dir), "train", length - 1)  # gather gives length tokens
    if len(windows) == 0:
        raise ValueError(f"{shards_dir}: the train split has no {length}-token window; lower replay_length or "
                         "replay_fraction=0")
    rng = np.random.default_rng([seed, 0x5F7])
    ids = rng.choice(len(windows), size=n_rows, replace=n_rows > len(windows))
    rows = windows.gather(ids).tolist()
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


REPLAY = "replay"  # the bucket (kind) of pretraining replay rows


def _add_replay(trainer: Any, cfg: SFTStageConfig, shards_dir: Path, kinds: list[str] | None,
                log: Callable[[str], None]) -> tuple[int, list[str] | None]:
    """Append replay rows to the trainer's prepared train set; returns rows per epoch and the new kinds.

    With bucketed batching the appended rows are a pool large enough for the whole run, of which each epoch
    takes its share (BucketSampler quotas): every replay step sees windows not seen before. Otherwise the
    rows are exactly one epoch's share, repeated every epoch.
    """
    from datasets import concatenate_datasets

    chat = trainer.train_dataset
    per_epoch = round(len(chat) * cfg.replay_fraction / (1 - cfg.replay_fraction))
    bucketed = kinds is not None and len(kinds) == len(chat) and hasattr(trainer, "row_kinds")
    pool = max(per_epoch, math.ceil(cfg.max_steps * cfg.batch_size * cfg.replay_fraction)) if bucketed else per_epoch
    replay = replay_rows(shards_dir, pool, cfg.replay_length, cfg.seed)
    # Any other column TRL kept (e.g. messages) is dropped: the collator reads input_ids and labels only.
    chat = chat.select_columns(["input_ids", "labels"])
    trainer.train_dataset = concatenate_datasets([chat, replay.cast(chat.features)])
    log(f"sft | pretraining replay: {per_epoch:,} of {pool:,} windows of {cfg.replay_length} tokens per epoch "
        f"from {shards_dir} ({cfg.replay_fraction:.0%} of the rows)")
    return per_epoch, (kinds + [REPLAY] * pool) if bucketed else None


# ---------------------------------------------------------------------------------------------------------
# Stage


def _with_bucket_sampler(trainer_cls: type, kinds: list[str] | None, seed: int,
                         log: Callable[[str], None]) -> type:
    class _Bucketed(trainer_cls):  # type: ignore[misc, valid-type]
        row_kinds = kinds  # replay rows, appended after construction, extend it
        row_quotas: dict[str, int] | None = None  # rows per epoch of a pooled bucket (replay)

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            ds = self.train_dataset
            keys: list[Any] | None = self.row_kinds
            # SFTTrainer drops rows whose every label is masked (e.g. a reply truncated away); then the kinds
            # no longer line up with the rows and the token-length bands of the prepared rows are used.
            if keys is None or len(keys) != len(ds):
                if keys is not None:
                    log(f"sft | {len(keys) - len(ds)} rows dropped during preparation; bucketing by length")
                keys = [length_band(len(ids)) for ids in ds["input_ids"]]
            return BucketSampler(keys, self.args.per_device_train_batch_size, seed, self.row_quotas)

    return _Bucketed


def run_sft(cfg: SFTStageConfig, base_dir: Path, dataset_path: Path | str, out_dir: Path,
            merged_dir: Path | None = None, log: Callable[[str], None] = print, *,
            test: Sequence[dict] | None = None, val_dataset_path: Path | str | None = None,
            replay_shards: Path | None = None, checkpoint_dir: Path | None = None,
            dev: Sequence[dict] | None = None, dev_score: DevScore | None = None) -> dict[str, Any]:
    """Fine-tune `base_dir` on the chat dataset; write out_dir (and merged_dir for LoRA); return metadata.

    `checkpoint_dir`: where trainer resume points go; a rerun with the same dir resumes (common.train_resumable).

    `dataset_path`: anything `load_chat_dataset` reads (sft.jsonl, parquet, save_to_disk dir, hub id).
    `test`: arithmetic records {"prompt", "answer"} (the benchmark's set) for before/after accuracy; None
    skips that metric. `dev`: dev-split records (datasets/sft dev_arithmetic.jsonl) for the curve
    (`cfg.eval_every`, on `test` without them) and the early stop (`cfg.stop_at_dev_accuracy`, which needs
    them); `dev_score` replaces greedy arithmetic accuracy as what the curve measures on them.
    `val_dataset_path`: sft_val.jsonl for a final val loss; None skips it.
    `merged_dir`: required with LoRA; with a full fine-tune out_dir is already a plain model and
    merged_dir must be None. `replay_shards`: the tokenized_shards dir that `cfg.replay_fraction` > 0 draws
    pretraining windows from.
    """
    from trl import SFTConfig, SFTTrainer

    from pipeline_assets.posttrain.data import load_chat_dataset

    cfg.validate()
    if cfg.stop_at_dev_accuracy is not None and not dev:
        raise ValueError(f"stop_at_dev_accuracy={cfg.stop_at_dev_accuracy} needs dev records (datasets/sft "
                         f"{DEV_FILE}); the test split is never used to decide training")
    if cfg.replay_fraction and replay_shards is None:
        raise ValueError(f"replay_fraction={cfg.replay_fraction} needs replay_shards (the tokenized_shards dir)")
    if cfg.use_lora and merged_dir is None:
        raise ValueError("use_lora=True writes the adapter to out_dir and the merged model to merged_dir; "
                         "pass merged_dir")
    if not cfg.use_lora and merged_dir is not None:
        raise ValueError("merged_dir is for LoRA only (a full fine-tune's out_dir is already a plain model); "
                         "pass merged_dir=None or set use_lora=True")
    t_start = time.perf_counter()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    tok = load_tokenizer(base_dir, need_generation_markers=cfg.assistant_only_loss)
    args_kw = trl_args(out_dir, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                       seed=cfg.seed, device=cfg.device, num_threads=cfg.num_threads,
                       checkpoint_dir=checkpoint_dir, save_every=cfg.save_every)
    torch.manual_seed(cfg.seed)
    model = load_causal_lm(base_dir, cfg.device)
    train_ds = load_chat_dataset(dataset_path)
    kinds = list(train_ds["kind"]) if "kind" in train_ds.column_names else None
    # `tools` (tool-use rows): TRL renders each row with its own tool list (a JSON string, see tool_use/data.py)
    train_ds = train_ds.select_columns([c for c in ("messages", "tools") if c in train_ds.column_names])
    val_ds = load_chat_dataset(val_dataset_path).select_columns(["messages"]) if val_dataset_path else None

    before = arithmetic_accuracy(model, tok, test, cfg.arithmetic_max_new_tokens) if test else None
    if before is not None:
        log(f"sft | held-out arithmetic before: {before['accuracy']:.3f} on {before['n']}")

    # aux_loss: a mixture-of-experts parent's router balancing loss, which TRL adds at the config's coefficient
    history = LossHistory(log=log, every=cfg.log_every, keys=("mean_token_accuracy", "aux_loss"))
    callbacks: list[Any] = [history]
    curve_items = dev or test
    curve = (ArithmeticCurve(tok, curve_items, cfg.eval_every, cfg.arithmetic_max_new_tokens, log,
                          stop_at=cfg.stop_at_dev_accuracy, keep_best=cfg.keep_best_dev, score=dev_score,
                          every_near_stop=cfg.eval_every_near_stop)
             if cfg.eval_every and curve_items else None)
    if curve is not None:
        callbacks.append(curve)
    with tempfile.TemporaryDirectory(prefix="sft-trainer-") as scratch:
        # Without checkpoint_dir the trainer saves nothing (save_strategy="no"); its output_dir only receives a
        # model card if asked, so it points at scratch and out_dir holds exactly the checkpoint.
        args_kw["output_dir"] = str(checkpoint_dir or scratch)
        args = SFTConfig(
            **args_kw, max_length=cfg.max_length, assistant_only_loss=cfg.assistant_only_loss,
            lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps,
            lr_scheduler_kwargs={"num_decay_steps": cfg.decay_steps} if cfg.decay_steps else {},
            include_num_input_tokens_seen="non_padding", per_device_eval_batch_size=cfg.batch_size,
            train_sampling_strategy="group_by_length" if cfg.batching == "group_by_length" else "random",
        )
        trainer_cls = (_with_bucket_sampler(SFTTrainer, kinds, cfg.seed, log) if cfg.batching == "bucket"
                       else SFTTrainer)
        trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                              processing_class=tok, callbacks=callbacks,
                              peft_config=lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_target_modules,
                                                      "CAUSAL_LM", cfg.lora_dropout) if cfg.use_lora else None)
        n_replay, n_chat = 0, len(trainer.train_dataset)
        if cfg.replay_fraction:
            n_replay, replay_kinds = _add_replay(trainer, cfg, Path(replay_shards), kinds, log)  # type: ignore[arg-type]
            if hasattr(trainer, "row_kinds"):
                trainer.row_kinds = replay_kinds
                trainer.row_quotas = {REPLAY: n_replay} if replay_kinds else None
        trainable, total = trainable_and_total(trainer.model)
        log(f"sft | {'LoRA' if cfg.use_lora else 'full'} fine-tune | {trainable:,} trainable of {total:,} params | "
            f"{len(trainer.train_dataset):,} rows | {cfg.max_steps} steps x {cfg.batch_size}")
        t_train = time.perf_counter()
        resumed_from_step = train_resumable(trainer, checkpoint_dir, log)
        train_time = time.perf_counter() - t_train
        kept_step = curve.restore_best(trainer.model) if curve is not None else None  # None unless keep_best
        tokens_seen = int(trainer.state.num_input_tokens_seen)
        val_loss = float(trainer.evaluate()["eval_loss"]) if val_ds is not None else None

    model = trainer.model
    writes = is_rank0()  # under accelerate launch every rank holds the same weights; one writes them
    if cfg.use_lora:
        if writes:
            model.save_pretrained(out_dir)  # adapter only; adapter_config.json names base_dir
            tok.save_pretrained(out_dir)
        model = model.merge_and_unload()
        if writes:
            save_checkpoint(model, tok, Path(merged_dir))  # type: ignore[arg-type]
    elif writes:
        save_checkpoint(model, tok, out_dir)

    after = arithmetic_accuracy(model, tok, test, cfg.arithmetic_max_new_tokens) if test else None
    replies = generate_replies(model, tok, list(cfg.eval_prompts), cfg.eval_max_new_tokens)
    losses = [loss for _, loss in history.loss]
    meta: dict[str, Any] = {
        "stage": "sft",
        "mode": "lora" if cfg.use_lora else "full",
        "parent_checkpoint": str(base_dir),
        "dataset": str(dataset_path),
        "checkpoint_dir": str(out_dir),
        "merged_dir": str(merged_dir) if merged_dir is not None else None,
        "steps": int(trainer.state.global_step),
        "world_size": int(trainer.args.world_size),  # processes that trained it (accelerate launch), 1 in process
        "resumed_from_step": resumed_from_step,
        "loss_history": history.loss,
        "router_aux_loss_history": history.metrics.get("aux_loss") or None,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_final": round(sum(losses[-10:]) / len(losses[-10:]), 4) if losses else None,
        "val_loss": round(val_loss, 4) if val_loss is not None else None,
        "tokens_seen": tokens_seen,
        "replay_rows_per_epoch": n_replay,
        "replay_windows": len(trainer.train_dataset) - n_chat,
        "chat_rows": n_chat,
        "tokens_per_s": round(tokens_seen / train_time, 1) if train_time > 0 else None,
        "train_time_s": round(train_time, 2),
        "trainable_params": trainable,
        "total_params": total,
        "test_arithmetic_accuracy_before": before["accuracy"] if before else None,
        "test_arithmetic_accuracy": after["accuracy"] if after else None,
        "test_arithmetic_by_kind": after["by_kind"] if after else None,
        "arithmetic_curve": curve.curve if curve else None,
        "arithmetic_curve_split": ("dev" if dev else "test") if curve else None,
        "stopped_early_at_step": curve.stopped_at if curve else None,
        "kept_best_dev_step": kept_step,  # the weights saved are that step's, not the last one's
        "test_eos_rate": after["eos_rate"] if after else None,
        "test_samples": after["samples"] if after else [],
        "chat_format_ok": chat_format_rate(replies),
        "samples": [{"prompt": p, "completion": text, "stopped_on_eos": stopped}
                    for p, (text, stopped) in zip(cfg.eval_prompts, replies, strict=True)],
        "config": asdict(cfg),
    }
    meta["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    if writes:
        write_summary(out_dir, meta)
    if writes and merged_dir is not None:  # the merged model is what later stages load; it carries the lineage too
        write_summary(Path(merged_dir), meta)
    log(f"sft | done in {meta['wall_time_s']:.0f}s | loss {meta['train_loss_first']} -> {meta['train_loss_final']}"
        f" | held-out arithmetic {meta['test_arithmetic_accuracy_before']} -> "
        f"{meta['test_arithmetic_accuracy']} | chat_format_ok {meta['chat_format_ok']}")
    return meta


# ---------------------------------------------------------------------------------------------------------
# CLI


def train(cfg: SFTStageConfig, inputs: StageInputs, work: Path, checkpoint_dir: Path | None,
          log: Callable[[str], None]) -> dict[str, Any]:
    """models/sft (pipeline_assets/stages.py): reports on the benchmark's test split, stops on the dev split."""
    sft_data = inputs(SFT_DATA)
    # LoRA: the adapter lives in adapter/, the merged model is the asset dir itself (plain from_pretrained).
    return run_sft(cfg, inputs(BASE), sft_data / SFT_FILE, work / "adapter" if cfg.use_lora else work,
                   merged_dir=work if cfg.use_lora else None, log=log,
                   test=read_jsonl(inputs(BENCHMARKS) / "arithmetic.jsonl"),
                   val_dataset_path=sft_data / SFT_VAL_FILE,
                   checkpoint_dir=checkpoint_dir, replay_shards=inputs(SHARDS) if cfg.replay_fraction else None,
                   dev=read_jsonl(sft_data / DEV_FILE))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m pipeline_assets.posttrain.sft --help``: the models/sft asset's run on given dirs."""
    return stage_main("sft", argv)


if __name__ == "__main__":
    main()
