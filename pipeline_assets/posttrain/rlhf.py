"""`models/rlhf`: RLHF of the SFT policy against the learned reward model (TRL RLOOTrainer, KL to SFT).

    python -m pipeline_assets.posttrain.rlhf --models-sft SFT --models-reward RM --datasets-sft SFT_DATA --out DIR
    pytest tests/test_posttrain_preference.py                     # its tests (CPU, ~3 min; -m slow ~10 min)

Plain Python, no Dagster: the `models/rlhf` asset calls `run_rlhf` and records the returned dict. Prompt records
are those of preference_data.py; the train/held-out split and the benchmark filter are the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline_assets.asset_keys import REWARD, SFT, SFT_DATA
from pipeline_assets.model_io import assistant, chat_generate, fixed_samples, load_policy, save_checkpoint, user
from pipeline_assets.posttrain.common import (
    Log,
    LossHistory,
    config_dict,
    quiet_progress,
    set_threads,
    train_resumable,
    trl_args,
)
from pipeline_assets.posttrain.config import PreferenceDataConfig, RLHFConfig
from pipeline_assets.posttrain.data import SFTDataConfig, preference_prompts
from pipeline_assets.posttrain.preference_data import is_benchmark_item, is_test_record, load_bench_keys
from pipeline_assets.posttrain.reward import load_reward_model, reward_scores
from pipeline_assets.stage_cli import stage_main
from pipeline_assets.stages import StageInputs
from pipeline_assets.summary import write_summary
from pipeline_assets.tasks.arithmetic import check_arithmetic


def rm_win_rate(rm: Any, rm_tok: Any, prompts: list[str], new: list[str], base: list[str]) -> tuple[float, dict]:
    """Fraction of prompts where the RM scores `new` above `base` (identical text counts 1/2)."""
    msgs = [user(p) for p in prompts]
    s_new = reward_scores(rm, rm_tok, msgs, [assistant(c) for c in new])
    s_base = reward_scores(rm, rm_tok, msgs, [assistant(c) for c in base])
    same = [a == b for a, b in zip(new, base, strict=True)]
    wins = [0.5 if eq else float(sn > sb) for eq, sn, sb in zip(same, s_new, s_base, strict=True)]
    n = max(len(wins), 1)
    return round(sum(wins) / n, 4), {"rm_score_new": round(sum(s_new) / n, 4),
                                     "rm_score_base": round(sum(s_base) / n, 4),
                                     "identical_fraction": round(sum(same) / n, 4)}


def run_rlhf(cfg: RLHFConfig, sft_dir: Path, reward_dir: Path, prompts: list[dict], out_dir: Path,
             log: Log = print, *, checkpoint_dir: Path | None = None) -> dict[str, Any]:
    """RLHF: optimize the SFT policy against the learned reward model with a KL penalty to the SFT reference.

    Trainer: TRL 1.16 has no PPOTrainer (removed with the value-head model), so we use `RLOOTrainer` with the
    reward-model dir as its reward function and `beta > 0`. RLOO (REINFORCE leave-one-out, Ahmadian et al.
    2024) was proposed exactly for RLHF against a scalar RM: each sample's baseline is the mean reward of the
    other samples of its prompt, so no value model is needed, and its `beta` adds the KL to a reference model
    built from the policy's own checkpoint. GRPO would also run (its default beta is 0, and its per-group std
    normalisation is aimed at 0/1 verifiable rewards, which is what models/grpo uses it for).

    Metrics on held-out prompts (greedy, SFT vs RLHF): RM-judged win rate, KL to the reference (mean of the
    trainer's logged per-token estimate), and true accuracy for prompts with an "answer" - recorded, never a
    success criterion: a tiny RM is gamed (notes: win rate 0.84 while accuracy fell 0.375 -> 0.065), and
    `reward_hacking_suspected` flags exactly that.
    `checkpoint_dir`: trainer resume points; a rerun with the same dir resumes (common.train_resumable).
    """
    cfg.validate()
    quiet_progress()
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    for item in prompts:
        if not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise ValueError(f"prompt record {item!r} needs a non-empty string 'prompt'")
    bench_keys = load_bench_keys(cfg.bench_dir)
    usable = [p for p in prompts if not is_benchmark_item(p["prompt"], bench_keys)]
    train = [p for p in usable if not is_test_record(p, cfg.test_fraction)]
    evals = [p for p in usable if is_test_record(p, cfg.test_fraction)][:cfg.max_eval_prompts]
    if not train or not evals:
        raise ValueError(f"{len(train)} train / {len(evals)} held-out prompts after the split; pass more prompts "
                         "or change test_fraction")
    if not (Path(reward_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{reward_dir} is not an HF checkpoint dir; materialize models/reward first")
    dev = set_threads(cfg.device, cfg.num_threads)
    sft, tok = load_policy(sft_dir, dev)
    eval_prompts = [p["prompt"] for p in evals]
    base_out = chat_generate(sft, tok, eval_prompts, max_new_tokens=cfg.max_completion_length)
    def accuracy(outs: list[str]) -> float | None:  # None when no held-out prompt has an "answer"
        graded = [check_arithmetic(o, str(p["answer"])) for p, o in zip(evals, outs, strict=True) if "answer" in p]
        return round(sum(graded) / len(graded), 4) if graded else None

    acc_before = accuracy(base_out)
    log(f"rlhf | RLOO vs RM {reward_dir} | {len(train)} train / {len(evals)} held-out prompts | beta {cfg.beta}")

    args = RLOOConfig(**trl_args(out_dir / "trainer", max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
                                 batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                                 num_threads=cfg.num_threads, checkpoint_dir=checkpoint_dir,
                                 save_every=cfg.save_every),
                      lr_scheduler_type="constant", num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
                      beta=cfg.beta)
    dataset = Dataset.from_list([{"prompt": user(p["prompt"])} for p in train])
    history = LossHistory(log, every=max(cfg.max_steps // 10, 1), keys=("kl", "reward"))
    policy = load_policy(sft_dir, dev)[0]
    policy.train()
    trainer = RLOOTrainer(model=policy, reward_funcs=str(reward_dir), args=args, train_dataset=dataset,
                          processing_class=tok, callbacks=[history])
    t_train = time.perf_counter()
    resumed_from_step = train_resumable(trainer, checkpoint_dir, log)
    train_time_s = time.perf_counter() - t_train
    policy, steps = trainer.model, trainer.state.global_step
    del trainer
    new_out = chat_generate(policy, tok, eval_prompts, max_new_tokens=cfg.max_completion_length)
    rm, rm_tok = load_reward_model(reward_dir, dev)
    win_rate, scores = rm_win_rate(rm, rm_tok, eval_prompts, new_out, base_out)
    acc_after = accuracy(new_out)
    save_checkpoint(policy, tok, out_dir)
    kl = [v for _, v in history.metrics["kl"]]
    rewards = [v for _, v in history.metrics["reward"]]
    result: dict[str, Any] = {
        "checkpoint_dir": str(out_dir),
        "parent_checkpoint": str(sft_dir),
        "reward_checkpoint": str(reward_dir),
        "trainer": "RLOOTrainer",
        "steps": steps,
        "resumed_from_step": resumed_from_step,
        "train_prompts": len(train),
        "test_prompts": len(evals),
        "rm_win_rate": win_rate,
        **scores,
        "kl_mean": round(sum(kl) / len(kl), 5) if kl else None,
        "kl_final": round(kl[-1], 5) if kl else None,
        "train_reward_first": round(rewards[0], 4) if rewards else None,
        "train_reward_last": round(rewards[-1], 4) if rewards else None,
        "test_accuracy_before": acc_before,
        "test_accuracy_after": acc_after,
        # Win rate up while true accuracy falls: the policy found what the RM over-scores.
        "reward_hacking_suspected": None if acc_before is None else bool(win_rate > 0.5 and acc_after < acc_before),
        "loss_history": history.loss,
        "kl_history": history.metrics["kl"],
        "reward_history": history.metrics["reward"],
        "train_time_s": round(train_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "samples": fixed_samples(policy, tok),
        "eval_examples": [{"prompt": p, "sft": b, "rlhf": n}
                          for p, b, n in zip(eval_prompts[:5], base_out, new_out, strict=False)],
        "config": config_dict(cfg),
    }
    log(f"rlhf | RM win rate {win_rate:.3f} | KL {result['kl_mean']} | true acc {acc_before} -> {acc_after} "
        f"(not a target) | {train_time_s:.0f}s")
    write_summary(out_dir, result)
    return result


def train(cfg: RLHFConfig, inputs: StageInputs, work: Path, checkpoint_dir: Path | None, log: Log) -> dict[str, Any]:
    """models/rlhf (pipeline_assets/stages.py): the preference stage's prompts, so RLHF's held-out prompts are
    the reward model's held-out pairs'."""
    prompts = preference_prompts(inputs(SFT_DATA), inputs.config(PreferenceDataConfig, "preference_data").prompts,
                                 inputs.config(SFTDataConfig, "sft_data"))
    return run_rlhf(cfg, inputs(SFT), inputs(REWARD), prompts, work, log=log, checkpoint_dir=checkpoint_dir)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m pipeline_assets.posttrain.rlhf --help``: the models/rlhf asset's run on given dirs."""
    return stage_main("rlhf", argv)


if __name__ == "__main__":
    main()
