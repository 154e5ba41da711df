"""RL with verifiable rewards (`models/grpo`): TRL GRPOTrainer on datasets/reasoning, rewards picked by name.

    python -m pipeline_assets.posttrain.grpo --models-sft SFT --datasets-reasoning REASONING --out OUT \
        [--max-steps 200 ...]                                          # --help: every GRPOStageConfig field

`run_grpo(cfg, policy_dir, dataset_path, out_dir, dev)` is what the asset calls; it returns JSON-able
metadata (held-out accuracy before/after, reward and loss history) and writes it to out_dir/summary.json.

Rewards are plain functions `f(completions, **dataset_columns) -> list[float]` looked up in REWARD_FUNCS
(unknown names raise and list the valid ones, like TRL's own registry):
    correctness     1.0 when `check_arithmetic(completion, answer)` holds (the eval's own grader)
    format          1.0 when the completion is just a short integer ("49", "-15"): the SFT answer format
    code_execution  1.0 when the completion's code passes the row's `tests` (sandbox.py)

Recipe (../shared/notes/post-training.md, 4 runs): G=8 completions per prompt, 32 completions per step,
lr 3e-5 constant, temperature 1.0, beta 0 (no reference model), loss "dapo", 4-6 new tokens. lr 1e-4 was
noisy and 3e-4 collapsed the policy (-25 points); a random-reward control lost 18 points, so the gain comes
from the reward.

Measured here (our BPE tokenizer, hidden 128 x 4 layers, 1 thread on a shared 2-core box, ~0.25 s/step):
  * "a + b", a, b <= 49, 50 steps (12-17 s of training) from SFT checkpoints of three seeds:
    0.265 -> 0.445 (0.40 after 25 steps, 0.48 after 100), 0.26 -> 0.53, 0.435 -> 0.715;
  * the benchmark's space (+ and -, 0..99) from an SFT checkpoint at 0.035: 0.055 after 100 steps. GRPO
    sharpens answers the policy already samples; at 3.5% exact, most groups of 8 hold no correct answer
    and carry no signal. Give SFT more steps first (see SFTStageConfig).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeline_assets.asset_keys import REASONING, SFT
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.model_io import load_causal_lm, save_checkpoint
from pipeline_assets.posttrain.common import LossHistory, train_resumable, trl_args
from pipeline_assets.posttrain.config import REWARD_NAMES, GRPOStageConfig
from pipeline_assets.posttrain.data import DEV_FILE, REASONING_FILE
from pipeline_assets.posttrain.sandbox import code_execution_reward
from pipeline_assets.posttrain.sft import (
    ArithmeticCurve,
    arithmetic_accuracy,
    load_tokenizer,
)
from pipeline_assets.stage_cli import stage_main
from pipeline_assets.stages import StageInputs
from pipeline_assets.summary import write_summary
from pipeline_assets.tasks.arithmetic import check_arithmetic

# ---------------------------------------------------------------------------------------------------------
# Rewards


def completion_text(completion: Any) -> str:
    """TRL passes conversational completions as [{"role": "assistant", "content": ...}], plain ones as str."""
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return str(completion)


def correctness_reward(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the LAST integer of the completion equals `answer` (tasks.arithmetic.check_arithmetic)."""
    return [float(check_arithmetic(completion_text(c), a)) for c, a in zip(completions, answer, strict=True)]


_SHORT_INT = re.compile(r"-?\d{1,6}")


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the whole completion is one integer of at most 6 digits, nothing else.

    check_arithmetic reads the LAST number, so "12 40 49" would still score on correctness; this keeps
    the policy on the bare-integer answer SFT taught instead of listing guesses.
    """
    return [float(_SHORT_INT.fullmatch(completion_text(c).strip()) is not None) for c in completions]


REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "correctness": correctness_reward,
    "format": format_reward,
    "code_execution": code_execution_reward,
}
assert tuple(REWARD_FUNCS) == REWARD_NAMES, "config.REWARD_NAMES must list the registry's names"


def get_reward_funcs(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    unknown = [n for n in names if n not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"unknown reward function(s) {unknown}; valid: {', '.join(REWARD_FUNCS)}")
    return [REWARD_FUNCS[n] for n in names]


# ---------------------------------------------------------------------------------------------------------
# Config




def load_prompt_dataset(path: Path | str, required: Sequence[str] = ("prompt",)) -> Any:
    """A local JSONL / parquet file or save_to_disk dir with a `prompt` column (+ `required` columns)."""
    import datasets

    path = Path(path)
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
    elif path.is_file() and path.suffix in (".jsonl", ".json", ".parquet"):
        ds = datasets.load_dataset("parquet" if path.suffix == ".parquet" else "json", data_files=str(path),
                                   split="train")
    else:
        raise FileNotFoundError(f"{path}: not a .jsonl/.parquet file or save_to_disk dir; materialize "
                                "datasets/reasoning (reasoning.jsonl) first")
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {ds.column_names}); GRPO rows look like "
                         "{'prompt': [{'role': 'user', 'content': 'What is 3 + 4?'}], 'answer': '7'}")
    return ds


# ---------------------------------------------------------------------------------------------------------
# Stage


def run_grpo(cfg: GRPOStageConfig, policy_dir: Path, dataset_path: Path | str, out_dir: Path,
             dev: Sequence[dict], log: Callable[[str], None] = print, *,
             checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """GRPO from `policy_dir` (the SFT checkpoint) on `dataset_path`; write the policy to out_dir.

    `dev`: records {"prompt": str, "answer": str} (dev_arithmetic.jsonl / the benchmark's set),
    scored greedily before and after with check_arithmetic.
    `checkpoint_dir`: trainer resume points; a rerun with the same dir resumes (common.train_resumable).
    """
    from trl import GRPOConfig, GRPOTrainer

    cfg.validate()
    t_start = time.perf_counter()
    policy_dir, out_dir = Path(policy_dir), Path(out_dir)
    reward_funcs = get_reward_funcs(cfg.reward_funcs)
    needs = ["prompt"] + (["answer"] if "correctness" in cfg.reward_funcs else []) + (
        ["tests"] if "code_execution" in cfg.reward_funcs else [])
    train_ds = load_prompt_dataset(dataset_path, needs)
    tok = load_tokenizer(policy_dir, need_generation_markers=False)
    args_kw = trl_args(out_dir, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                       seed=cfg.seed, device=cfg.device, num_threads=cfg.num_threads,
                       checkpoint_dir=checkpoint_dir, save_every=cfg.save_every)
    torch.manual_seed(cfg.seed)
    model = load_causal_lm(policy_dir, cfg.device)

    before = arithmetic_accuracy(model, tok, dev, cfg.arithmetic_max_new_tokens)
    log(f"grpo | held-out arithmetic before: {before['accuracy']:.3f} on {before['n']}")
    metric_keys = ("reward", "reward_std", "frac_reward_zero_std", "completions/mean_length",
                   "completions/clipped_ratio", *(f"rewards/{f.__name__}/mean" for f in reward_funcs))
    history = LossHistory(log=log, every=cfg.log_every, keys=metric_keys)
    callbacks: list[Any] = [history]
    if cfg.eval_every:
        callbacks.append(ArithmeticCurve(tok, dev, cfg.eval_every, cfg.arithmetic_max_new_tokens, log))
    with tempfile.TemporaryDirectory(prefix="grpo-trainer-") as scratch:
        args_kw["output_dir"] = str(checkpoint_dir or scratch)
        args = GRPOConfig(
            **args_kw, num_generations=cfg.num_generations, max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature, beta=cfg.beta, loss_type=cfg.loss_type, lr_scheduler_type="constant",
            reward_weights=list(cfg.reward_weights) if cfg.reward_weights is not None else None,
            use_vllm=cfg.use_vllm,
            **({"vllm_mode": "colocate", "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization}
               if cfg.use_vllm else {}),
        )
        trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_ds,
                              processing_class=tok, callbacks=callbacks)
        t_train = time.perf_counter()
        resumed_from_step = train_resumable(trainer, checkpoint_dir, log)
        train_time = time.perf_counter() - t_train

    model = trainer.model
    save_checkpoint(model, tok, out_dir)
    after = arithmetic_accuracy(model, tok, dev, cfg.arithmetic_max_new_tokens)
    rewards = [r for _, r in history.metrics["reward"]]
    window = max(1, min(10, len(rewards) // 2))
    meta: dict[str, Any] = {
        "stage": "grpo",
        "parent_checkpoint": str(policy_dir),
        "dataset": str(dataset_path),
        "checkpoint_dir": str(out_dir),
        "steps": int(trainer.state.global_step),
        "resumed_from_step": resumed_from_step,
        "dev_arithmetic_accuracy_before": before["accuracy"],
        "dev_arithmetic_accuracy": after["accuracy"],
        "dev_arithmetic_gain": round(after["accuracy"] - before["accuracy"], 4),
        "dev_arithmetic_by_kind_before": before["by_kind"],
        "dev_arithmetic_by_kind": after["by_kind"],
        "dev_curve": callbacks[1].curve if len(callbacks) > 1 else None,
        "reward_first": round(sum(rewards[:window]) / window, 4) if rewards else None,
        "reward_final": round(sum(rewards[-window:]) / window, 4) if rewards else None,
        "reward_history": history.metrics["reward"],
        "reward_history_by_func": {f.__name__: history.metrics[f"rewards/{f.__name__}/mean"] for f in reward_funcs},
        "frac_reward_zero_std": history.metrics["frac_reward_zero_std"],
        "completion_mean_length": history.metrics["completions/mean_length"],
        "loss_history": history.loss,
        "train_time_s": round(train_time, 2),
        "completions_per_step": cfg.batch_size,
        "dev_samples": after["samples"],
        "config": asdict(cfg),
    }
    meta["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    write_summary(out_dir, meta)
    log(f"grpo | done in {meta['wall_time_s']:.0f}s | reward {meta['reward_first']} -> {meta['reward_final']} | "
        f"held-out arithmetic {before['accuracy']:.3f} -> {after['accuracy']:.3f}")
    return meta


# ---------------------------------------------------------------------------------------------------------
# CLI


def train(cfg: GRPOStageConfig, inputs: StageInputs, work: Path, checkpoint_dir: Path | None,
          log: Callable[[str], None]) -> dict[str, Any]:
    """models/grpo (pipeline_assets/stages.py): in-training curves on the dev split of datasets/reasoning."""
    from pipeline_assets.posttrain.sandbox import sandbox_probe

    reasoning = inputs(REASONING)
    result = run_grpo(cfg, inputs(SFT), reasoning / REASONING_FILE, work, read_jsonl(reasoning / DEV_FILE),
                      log=log, checkpoint_dir=checkpoint_dir)
    # Which isolation the code rewards ran under.
    result["sandbox_mode"] = sandbox_probe().mode if "code_execution" in cfg.reward_funcs else "unused"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m pipeline_assets.posttrain.grpo --help``: the models/grpo asset's run on given dirs."""
    return stage_main("grpo", argv)


if __name__ == "__main__":
    main()
