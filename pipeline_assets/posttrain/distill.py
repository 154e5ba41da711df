"""Distillation (`models/distilled`): a smaller student (half the layers by default) trained from a teacher.

    python -m pipeline_assets.posttrain.distill --models-grpo GRPO --datasets-sft SFT_DATA \
        --datasets-reasoning REASONING --datasets-synthetic SYNTHETIC --out OUT [--max-steps 400 ...]
                                                                        # --help: every DistillConfig field

`run_distill(cfg, teacher_dir, prompts_dataset_path, out_dir)` is what the asset calls; it returns JSON-able
metadata and writes it to out_dir/summary.json. The student shares the teacher's tokenizer and vocab.

How (the default, method="gkd"):
  1. the teacher answers `num_prompts` training prompts greedily (its outputs ARE the training data), plus
     `num_val_prompts` other prompts that only measure agreement;
  2. the student is the teacher's config with `layer_fraction` of its layers, initialised from the teacher's
     embeddings, final norm and evenly spaced layers (first and last kept), like DistilBERT;
  3. TRL's GKDTrainer with lmbda=0, beta=0: token-level forward KL to the teacher's full next-token
     distribution on the teacher's own answers (Hinton-style KD on sequence-level KD data);
  4. with datasets/synthetic rows (verified teacher answers to prompts the SFT rows do not ask), up to
     `synthetic_max_share` of the training rows are those, and the same recipe without them is trained too
     and saved in WITHOUT_SYNTHETIC_DIR: evals/distilled pairs the two (the measured synthetic effect).
Why this and not the alternatives (CPU, ~1 min, 1 thread; numbers in the table below):
  * on-policy DistillationTrainer (method="on_policy") makes the student generate every step: 40% more time
    per step, and while the student is still poor its samples are contexts the teacher's answers never
    visit; it ended lower (0.265 vs 0.315);
  * plain SFT on the teacher's answers (method="sft") gives one target token per position where KD gives a
    distribution over the 1,024-token vocab, so the teacher's near-misses ("37 or 38") transfer as well;
    it ended at 0.235;
  * a random-init student has to learn arithmetic from scratch, which took the teacher 400 SFT steps; with
    the same 100 KD steps it reached 0.025. The layer-dropped init keeps the teacher's embeddings and features.

Measured (teacher = the GRPO checkpoint at 0.48 on "a + b <= 49", 984k params; student 2 of 4 layers, 558k
params; 1 thread; 100 steps x 32 unless noted; accuracy = greedy held-out exact match, agreement = same greedy
answer as the teacher on 200 unseen prompts):
    method      init            accuracy        agreement       wall
    gkd         teacher layers  0.05 -> 0.315   0.075 -> 0.44   22 s
    gkd 300 st  teacher layers  0.05 -> 0.385   0.075 -> 0.755  55 s
    sft         teacher layers  0.05 -> 0.235   0.075 -> 0.40   20 s
    on_policy   teacher layers  0.05 -> 0.265   0.075 -> 0.445  30 s
    gkd         random          0.00 -> 0.025   0.00 -> 0.035   27 s
"""

from __future__ import annotations

import contextlib
import copy
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeline_assets.asset_keys import GRPO, REASONING, SFT_DATA, SYNTHETIC
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.model_io import device_for, generate_replies, load_causal_lm, save_checkpoint
from pipeline_assets.posttrain.common import LossHistory, train_resumable, trl_args
from pipeline_assets.posttrain.config import DistillConfig
from pipeline_assets.posttrain.data import DEV_FILE, SFT_FILE, SYNTHETIC_FILE, WITHOUT_SYNTHETIC_DIR
from pipeline_assets.posttrain.sft import (
    arithmetic_accuracy,
    load_tokenizer,
    trainable_and_total,
)
from pipeline_assets.posttrain.side_process import SideProcess
from pipeline_assets.stage_cli import stage_main
from pipeline_assets.stages import StageInputs
from pipeline_assets.summary import write_summary

# ---------------------------------------------------------------------------------------------------------
# Student


def student_config(teacher_config: Any, cfg: DistillConfig) -> Any:
    """The teacher's config with fewer layers (and optionally narrower, keeping the head dim)."""
    sc = copy.deepcopy(teacher_config)
    sc.num_hidden_layers = max(1, round(teacher_config.num_hidden_layers * cfg.layer_fraction))
    if cfg.width_fraction < 1.0:
        head_dim = teacher_config.hidden_size // teacher_config.num_attention_heads
        heads = max(1, round(teacher_config.num_attention_heads * cfg.width_fraction))
        kv_ratio = teacher_config.num_attention_heads // teacher_config.num_key_value_heads
        sc.num_attention_heads = heads
        sc.num_key_value_heads = max(1, heads // kv_ratio)
        sc.hidden_size = heads * head_dim
        sc.intermediate_size = max(8, round(teacher_config.intermediate_size * cfg.width_fraction))
        sc.head_dim = head_dim
    if cfg.ffn_fraction < 1.0:
        sc.intermediate_size = max(8, round(sc.intermediate_size * cfg.ffn_fraction))
    return sc


def top_ffn_neurons(mlp: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
    """Indices (sorted) of the `keep` FFN neurons with the largest weight-norm product |gate|*|up|*|down|.

    Structured pruning by magnitude (as Minitron / Sheared-LLaMA prune FFN width, without their calibration
    data): a neuron whose in- and out-weights are small contributes little, and the student starts from
    the rest instead of from scratch.
    """
    score = (mlp["gate_proj.weight"].norm(dim=1) * mlp["up_proj.weight"].norm(dim=1)
             * mlp["down_proj.weight"].norm(dim=0))
    return torch.topk(score, keep).indices.sort().values


def kept_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included: 4 -> 2 keeps [0, 3]."""
    if n_student == 1:
        return [n_teacher - 1]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def build_student(teacher: Any, cfg: DistillConfig) -> tuple[Any, list[int] | None]:
    from transformers import AutoModelForCausalLM

    sc = student_config(teacher.config, cfg)
    torch.manual_seed(cfg.seed)
    student = AutoModelForCausalLM.from_config(sc, dtype=torch.float32)
    if cfg.student_init == "random":
        return student, None
    layers = kept_layers(teacher.config.num_hidden_layers, sc.num_hidden_layers)
    t_sd = teacher.state_dict()
    prefix = "model.layers."
    new_sd = {}
    keep = sc.intermediate_size
    neurons: dict[int, torch.Tensor] = {}
    for key in student.state_dict():
        if key.startswith(prefix):
            idx, rest = key[len(prefix):].split(".", 1)
            src = f"{prefix}{layers[int(idx)]}."
            weight = t_sd[src + rest]
            if rest.startswith("mlp.") and keep < teacher.config.intermediate_size:
                if int(idx) not in neurons:
                    neurons[int(idx)] = top_ffn_neurons(
                        {k: t_sd[f"{src}mlp.{k}"] for k in ("gate_proj.weight", "up_proj.weight", "down_proj.weight")},
                        keep)
                kept = neurons[int(idx)]
                weight = weight[:, kept] if rest == "mlp.down_proj.weight" else weight[kept]
            new_sd[key] = weight
        else:
            new_sd[key] = t_sd[key]  # embeddings, final norm, (untied) LM head
    student.load_state_dict(new_sd)
    return student, layers


# ---------------------------------------------------------------------------------------------------------
# Prompts


def read_prompts(path: Path | str) -> list[str]:
    """Single-turn user prompts from reasoning.jsonl (`prompt`) or a chat dataset (`messages`)."""
    from pipeline_assets.posttrain.grpo import load_prompt_dataset

    ds = load_prompt_dataset(path, required=())
    if "prompt" in ds.column_names:
        column = ds["prompt"]
    elif "messages" in ds.column_names:
        column = [[m for m in msgs if m["role"] == "user"][:1] for msgs in ds["messages"]]
    else:
        raise ValueError(f"{path}: need a `prompt` column (reasoning.jsonl) or `messages` (sft.jsonl); "
                         f"has {ds.column_names}")
    prompts = []
    for value in column:
        if isinstance(value, str):
            prompts.append(value)
        elif isinstance(value, list) and value and isinstance(value[-1], dict):
            prompts.append(value[-1]["content"])
    if not prompts:
        raise ValueError(f"{path}: no usable prompts")
    return list(dict.fromkeys(prompts))  # de-duplicated, order kept


def teacher_agreement(student_replies: Sequence[tuple[str, bool]],
                      teacher_replies: Sequence[tuple[str, bool]]) -> float:
    """Share of prompts where the student's greedy reply is exactly the teacher's."""
    same = sum(s[0] == t[0] for s, t in zip(student_replies, teacher_replies, strict=True))
    return round(same / max(len(teacher_replies), 1), 4)


# ---------------------------------------------------------------------------------------------------------
# Stage


def _trainer(cfg: DistillConfig, student: Any, teacher: Any, tok: Any, train_rows: list[dict],
             args_kw: dict, callbacks: list[Any]) -> Any:
    from datasets import Dataset

    if cfg.method == "gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        args = GKDConfig(**args_kw, lmbda=cfg.lmbda, beta=cfg.beta, temperature=cfg.temperature,
                         max_new_tokens=cfg.max_new_tokens, max_length=cfg.max_length,
                         lr_scheduler_type="constant_with_warmup", warmup_steps=min(10, cfg.max_steps))
        ds = Dataset.from_list([{"messages": r["messages"]} for r in train_rows])
        return GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds, processing_class=tok,
                          callbacks=callbacks)
    if cfg.method == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**args_kw, max_length=cfg.max_length, assistant_only_loss=True,
                         lr_scheduler_type="constant_with_warmup", warmup_steps=min(10, cfg.max_steps))
        ds = Dataset.from_list([{"messages": r["messages"]} for r in train_rows])
        return SFTTrainer(model=student, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks)
    from trl import DistillationConfig, DistillationTrainer

    args = DistillationConfig(**args_kw, beta=cfg.beta, temperature=cfg.temperature,
                              max_completion_length=cfg.max_new_tokens, lr_scheduler_type="constant")
    ds = Dataset.from_list([{"prompt": r["messages"][:1]} for r in train_rows])
    return DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds,
                               processing_class=tok, callbacks=callbacks)


def synthetic_sample(rows: Sequence[dict], real_rows: int, max_share: float, seed: int) -> list[dict]:
    """At most ``max_share`` of the training rows from ``rows`` (datasets/synthetic), a seeded sample."""
    cap = int(max_share / (1.0 - max_share) * real_rows) if max_share > 0 else 0
    picked = list(rows)
    random.Random(f"{seed}:synthetic").shuffle(picked)
    return [{"messages": r["messages"]} for r in picked[:cap]]


def _fit(cfg: DistillConfig, student: Any, teacher: Any, tok: Any, rows: list[dict], args_kw: dict,
         checkpoint_dir: Path | None, log: Callable[[str], None]) -> tuple[Any, Any, LossHistory, float, int | None]:
    """``student`` trained on ``rows``: (trained model, trainer, loss history, train seconds, resumed step)."""
    history = LossHistory(log=log, every=cfg.log_every)
    with tempfile.TemporaryDirectory(prefix="distill-trainer-") as scratch:
        trainer = _trainer(cfg, student, teacher, tok, rows, {**args_kw, "output_dir": str(checkpoint_dir or scratch)},
                           [history])
        t_train = time.perf_counter()
        resumed_from_step = train_resumable(trainer, checkpoint_dir, log)
        train_time = time.perf_counter() - t_train
    return trainer.model, trainer, history, train_time, resumed_from_step


def train_ablation_arm(cfg: DistillConfig, teacher_dir: Path, rows: list[dict], out: Path,
                       dev: Sequence[dict] | None, num_threads: int,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The main arm's recipe on ``rows`` alone (no synthetic rows), from the same seeded student, saved to
    ``out``. Not resumable: a kill re-runs it (one training of the main arm's size)."""
    log = log or (lambda m: print(f"[without synthetic] {m}", flush=True))  # a side process's stdout
    tok = load_tokenizer(teacher_dir, need_generation_markers=cfg.method == "sft")
    args_kw = trl_args(out, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                       seed=cfg.seed, device=cfg.device, num_threads=num_threads, save_every=cfg.save_every)
    teacher = load_causal_lm(teacher_dir, cfg.device).eval()
    student, _ = build_student(teacher, cfg)
    without, _, _, seconds, _ = _fit(cfg, student.to(teacher.device), teacher, tok, rows, args_kw, None, log)
    save_checkpoint(without, tok, out)
    acc = arithmetic_accuracy(without, tok, dev, cfg.arithmetic_max_new_tokens) if dev else None
    return {"without_synthetic_dir": str(out),
            "without_synthetic_dev_arithmetic_accuracy": acc["accuracy"] if acc else None,
            "without_synthetic_train_time_s": round(seconds, 2), "without_synthetic_threads": num_threads}


def run_distill(cfg: DistillConfig, teacher_dir: Path, prompts_dataset_path: Path | str, out_dir: Path,
                log: Callable[[str], None] = print, *, dev: Sequence[dict] | None = None,
                checkpoint_dir: Path | None = None, synthetic: Sequence[dict] = ()) -> dict[str, Any]:
    """Train a smaller student from `teacher_dir` on prompts from `prompts_dataset_path`; save it to out_dir.

    `dev`: arithmetic records {"prompt", "answer"} for student/teacher accuracy; None skips that metric
    (teacher agreement on held-back prompts is always measured).
    `checkpoint_dir`: trainer resume points; a rerun with the same dir resumes (common.train_resumable).
    `synthetic`: datasets/synthetic rows; up to `cfg.synthetic_max_share` of the training rows come from them,
    and with `cfg.synthetic_ablation` the same recipe without them is saved in out_dir/WITHOUT_SYNTHETIC_DIR.
    """
    cfg.validate()
    t_start = time.perf_counter()
    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    tok = load_tokenizer(teacher_dir, need_generation_markers=cfg.method == "sft")
    args_kw = trl_args(out_dir, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                       seed=cfg.seed, device=cfg.device, num_threads=cfg.num_threads,
                       checkpoint_dir=checkpoint_dir, save_every=cfg.save_every)
    teacher = load_causal_lm(teacher_dir, cfg.device).eval()

    prompts = read_prompts(prompts_dataset_path)
    random.Random(f"{cfg.seed}:distill").shuffle(prompts)
    if len(prompts) < cfg.num_val_prompts + 1:
        raise ValueError(f"{prompts_dataset_path} has {len(prompts)} distinct prompts; need more than "
                         f"num_val_prompts={cfg.num_val_prompts}")
    val_prompts = prompts[:cfg.num_val_prompts]
    train_prompts = prompts[cfg.num_val_prompts:cfg.num_val_prompts + cfg.num_prompts]
    t_gen = time.perf_counter()
    teacher_train = generate_replies(teacher, tok, train_prompts, cfg.max_new_tokens)
    teacher_val = generate_replies(teacher, tok, val_prompts, cfg.max_new_tokens)
    # Only well-formed teacher answers are worth imitating: empty or unterminated ones teach rambling.
    train_rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": text}]}
                  for p, (text, stopped) in zip(train_prompts, teacher_train, strict=True) if text and stopped]
    if not train_rows:
        raise ValueError(f"the teacher at {teacher_dir} produced no eos-terminated answer in "
                         f"{cfg.max_new_tokens} tokens; raise max_new_tokens or distill from a fine-tuned model")
    log(f"distill | teacher labelled {len(train_rows)}/{len(train_prompts)} prompts in "
        f"{time.perf_counter() - t_gen:.0f}s")
    synthetic_rows = synthetic_sample(synthetic, len(train_rows), cfg.synthetic_max_share, cfg.seed)
    share = len(synthetic_rows) / (len(train_rows) + len(synthetic_rows))
    if synthetic:
        log(f"distill | + {len(synthetic_rows)} of {len(synthetic)} synthetic rows (share {share:.3f}, "
            f"cap {cfg.synthetic_max_share})")

    ablate = bool(synthetic_rows) and cfg.synthetic_ablation
    ablation_kw = dict(cfg=cfg, teacher_dir=teacher_dir, rows=train_rows, out=out_dir / WITHOUT_SYNTHETIC_DIR,
                       dev=dev)
    # On CPU the arm without the synthetic rows trains beside the main one, the threads split between them:
    # two 1-thread trainings did 200 GKD steps in 50 s on 2 cores where one 2-thread training took 63 s.
    side_threads = cfg.num_threads // 2 if ablate and device_for(cfg.device) == "cpu" else 0
    with contextlib.ExitStack() as stack:
        side = None
        if side_threads:
            side = stack.enter_context(SideProcess(train_ablation_arm, {**ablation_kw, "num_threads": side_threads}))
            torch.set_num_threads(cfg.num_threads - side_threads)
            stack.callback(torch.set_num_threads, cfg.num_threads)  # per process: restored for later steps
            log(f"distill | ablation without the {len(synthetic_rows)} synthetic rows: a side process on "
                f"{side_threads} of {cfg.num_threads} threads")
        student, layers = build_student(teacher, cfg)
        teacher_params, student_params = trainable_and_total(teacher)[1], trainable_and_total(student)[1]
        teacher_acc = arithmetic_accuracy(teacher, tok, dev, cfg.arithmetic_max_new_tokens) if dev else None
        student.to(teacher.device)
        before_acc = arithmetic_accuracy(student, tok, dev, cfg.arithmetic_max_new_tokens) if dev else None
        before_agree = teacher_agreement(generate_replies(student, tok, val_prompts, cfg.max_new_tokens), teacher_val)
        log(f"distill | student {student_params:,} params ({student.config.num_hidden_layers} layers, init "
            f"{cfg.student_init}{' ' + str(layers) if layers else ''}) vs teacher {teacher_params:,} | agreement "
            f"before {before_agree:.3f}")

        student, trainer, history, train_time, resumed_from_step = _fit(
            cfg, student, teacher, tok, train_rows + synthetic_rows, args_kw, checkpoint_dir, log)
        save_checkpoint(student, tok, out_dir)
        after_acc = arithmetic_accuracy(student, tok, dev, cfg.arithmetic_max_new_tokens) if dev else None
        after_agree = teacher_agreement(generate_replies(student, tok, val_prompts, cfg.max_new_tokens), teacher_val)

        ablation: dict[str, Any] = {}
        if side is not None:
            ablation = side.result()
        elif ablate:
            log(f"distill | ablation: the same recipe without the {len(synthetic_rows)} synthetic rows")
            ablation = train_ablation_arm(**ablation_kw, num_threads=cfg.num_threads, log=log)
    losses = [loss for _, loss in history.loss]
    meta: dict[str, Any] = {
        "stage": "distill",
        "method": cfg.method,
        "parent_checkpoint": str(teacher_dir),
        "teacher_dir": str(teacher_dir),
        "dataset": str(prompts_dataset_path),
        "checkpoint_dir": str(out_dir),
        "teacher_params": teacher_params,
        "student_params": student_params,
        "compression": round(teacher_params / student_params, 3),
        "student_layers": student.config.num_hidden_layers,
        "teacher_layers": teacher.config.num_hidden_layers,
        "student_init": cfg.student_init,
        "student_init_layers": layers,
        "teacher_labelled_prompts": len(train_rows),
        "synthetic_rows_available": len(synthetic),
        "synthetic_rows": len(synthetic_rows),
        "synthetic_share": round(share, 4),
        "synthetic_max_share": cfg.synthetic_max_share,
        **ablation,
        "steps": int(trainer.state.global_step),
        "resumed_from_step": resumed_from_step,
        "loss_history": history.loss,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_final": round(sum(losses[-10:]) / len(losses[-10:]), 4) if losses else None,
        "teacher_agreement_before": before_agree,
        "teacher_agreement": after_agree,
        "teacher_dev_arithmetic_accuracy": teacher_acc["accuracy"] if teacher_acc else None,
        "dev_arithmetic_accuracy_before": before_acc["accuracy"] if before_acc else None,
        "dev_arithmetic_accuracy": after_acc["accuracy"] if after_acc else None,
        "dev_samples": after_acc["samples"] if after_acc else [],
        "train_time_s": round(train_time, 2),
        "config": asdict(cfg),
    }
    meta["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    write_summary(out_dir, meta)
    log(f"distill | done in {meta['wall_time_s']:.0f}s | agreement {before_agree:.3f} -> {after_agree:.3f} | "
        f"held-out arithmetic {meta['dev_arithmetic_accuracy_before']} -> {meta['dev_arithmetic_accuracy']} "
        f"(teacher {meta['teacher_dev_arithmetic_accuracy']}, without synthetic "
        f"{ablation.get('without_synthetic_dev_arithmetic_accuracy', 'not trained')})")
    return meta


# ---------------------------------------------------------------------------------------------------------
# CLI


def train(cfg: DistillConfig, inputs: StageInputs, work: Path, checkpoint_dir: Path | None,
          log: Callable[[str], None]) -> dict[str, Any]:
    """models/distilled (pipeline_assets/stages.py): the SFT prompts, the dev split for the agreement curve,
    and the datasets/synthetic rows."""
    return run_distill(cfg, inputs(GRPO), inputs(SFT_DATA) / SFT_FILE, work, log=log,
                       dev=read_jsonl(inputs(REASONING) / DEV_FILE), checkpoint_dir=checkpoint_dir,
                       synthetic=read_jsonl(inputs(SYNTHETIC) / SYNTHETIC_FILE))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m pipeline_assets.posttrain.distill --help``: the models/distilled asset's run on given dirs."""
    return stage_main("distilled", argv)


if __name__ == "__main__":
    main()
