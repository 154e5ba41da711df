"""Profiles: every per-profile value of the pipeline, as plain data, in one table.

``tiny`` (default): CPU, real local text, the whole graph in minutes. ``small``: one GPU, ~100M params.
``scale``: many GPUs / nodes through existing engines (datatrove on Ray/Slurm, torchrun, k8s).
Pick with ``LLMDAG_PROFILE``; the Launchpad overrides any field per run.

Each section names one stage's config dataclass (its module says which: ``sft`` is SFTStageConfig in
posttrain/config.py, ``pretrain`` PretrainConfig, ...); a field absent here takes that class's default, and
the class validates the values. Stages read their section with ``section_config(cls, section, profile)``.
This module imports no stage: every stage may read it. The measurements behind the values, run by run:
docs/recipes.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class PipelineConfig:
    """Where and what the graph runs, apart from any one stage."""

    release_stage: str = "grpo"  # the model stage release/model ships when every blocking gate passes
    # One per-source step at a time: sources run as separate Dagster runs of the backfill, in parallel.
    # Where curation runs (local, Slurm, Ray) is LLMDAG_LAUNCHER's choice, not the profile's (resources/engines.py).
    datatrove_workers: int = 1
    # How one run's steps run when LLMDAG_LAUNCHER is not k8s: in_process | multiprocess.
    dagster_executor: str = "in_process"
    # multiprocess only: steps of one run at a time (the executor's max_concurrent; 0 = one per CPU).
    max_concurrent_steps: int = 0
    # Steps of the `llmdag_training` pool at a time across runs (the instance's pool limit, set where none is).
    training_pool_limit: int = 1
    # torchrun processes per node for pretraining (GPUs per node on CUDA); 1 on the local launcher trains in the
    # step's own process, any other setting launches torchrun through Dagster Pipes (resources/training.py).
    train_processes_per_node: int = 1
    # The TRL stages' `accelerate launch` config when they run out of process (resources/accelerate/): ddp, or
    # fsdp2 (CUDA only) where a model's weights and optimizer state outgrow one GPU.
    accelerate_config: str = "ddp"

    def validate(self) -> None:
        if self.dagster_executor not in ("in_process", "multiprocess"):
            raise ValueError(f"dagster_executor={self.dagster_executor!r}; valid: in_process, multiprocess "
                             "(k8s: LLMDAG_LAUNCHER=k8s)")
        if self.max_concurrent_steps < 0 or self.training_pool_limit < 1:
            raise ValueError(f"max_concurrent_steps={self.max_concurrent_steps} must be >= 0 and "
                             f"training_pool_limit={self.training_pool_limit} >= 1")
        if self.accelerate_config not in ("ddp", "fsdp2"):
            raise ValueError(f"accelerate_config={self.accelerate_config!r}; valid: ddp, fsdp2 (resources/accelerate/)")


# tiny's arithmetic task: a + b with a, b <= 49, the space a ~1M-param model measurably learns in minutes on
# CPU; the benchmark, SFT and GRPO draw from the same space (tests/test_definitions.py keeps them equal).
TINY_TASK = {"operand_max": 49, "operators": ("+",)}
# SFT's share of pretraining-replay rows: without replay tiny SFT left val bpb 59% above the base's.
REPLAY_FRACTION = 0.1
# tiny runs two steps at a time (the graph's branches are independent after models/base), each on one core:
# a tiny Llama's training steps/s on 2 cores, one process of 2 threads 1.72x one thread, two processes of 1 thread
# 2.05x together, a 2-thread step beside a 1-thread one 1.14x (oversubscribed torch threads stall each other).
TINY_THREADS = 1
# The default task space (0..99, + and -) of the benchmark, SFT and GRPO on the GPU profiles.
FULL_TASK = {"operand_max": 99, "operators": ("+", "-")}

_TINY_SAFETY = ("a ~1M-parameter model trained on code has no world knowledge to tell harmful requests from "
                "look-alikes it has not seen: SFT separated its own training topics only after ~700 steps at a 40% "
                "safety share (arithmetic dev then 0.11 instead of 0.45), and the benchmark's unseen topics peaked "
                "at 0.80 refusal with 0.44 over-refusal; measured and reported on tiny, enforced on small and scale")
_TINY_PASSKEY = ("a ~1M-parameter base trained on ~0.6M tokens has no induction heads to copy a key with: "
                 "retrieval stayed 0/40 at every length after 150-300 steps with up to 2,400 passkey rows; it is "
                 "measured and reported on tiny, enforced (>= 0.8 at 4x) on small and scale")
_TINY_DISTILLED = ("the tiny student is distilled for seconds from a tiny teacher; its drop on every metric "
                   "is expected and reported, not gated, on tiny")

# models/long_context: YaRN (NTK-by-parts + attention temperature), factor 4 from the base's own length.
_EXTEND_4X = {"rope_type": "yarn", "rope_factor": 4.0}
# GPT-2-small shape: ~110M params with a 32k vocab; 131k tokens per step, 4,000 steps = 0.52B tokens.
SMALL_PRETRAIN: dict[str, Any] = {
    "d_model": 768, "n_layers": 12, "n_heads": 12, "n_kv_heads": 12, "intermediate_size": 2048, "seq_len": 1024,
    "tie_embeddings": True, "batch_size": 32, "grad_accum": 4, "max_steps": 4000, "learning_rate": 6e-4,
    "min_lr_ratio": 0.1, "warmup_steps": 200, "weight_decay": 0.1, "betas": (0.9, 0.95), "grad_clip": 1.0,
    "device": "cuda", "dtype": "bfloat16", "compile": True, "attn_implementation": "sdpa", "checkpoint_every": 500,
    "keep_last": 3, "log_every": 20, "eval_every": 250, "eval_batches": 20, "sample_max_new_tokens": 64}
# torchrun DDP: GQA 16q/8kv, 16 seqs/rank: 262k tokens per step on 8 GPUs.
SCALE_PRETRAIN: dict[str, Any] = {
    "d_model": 1024, "n_layers": 24, "n_heads": 16, "n_kv_heads": 8, "intermediate_size": 2816, "seq_len": 2048,
    "tie_embeddings": False, "batch_size": 16, "grad_accum": 1, "max_steps": 20000, "learning_rate": 3e-4,
    "min_lr_ratio": 0.1, "warmup_steps": 500, "weight_decay": 0.1, "betas": (0.9, 0.95), "grad_clip": 1.0,
    "device": "cuda", "dtype": "bfloat16", "compile": True, "attn_implementation": "sdpa", "parallelism": "fsdp2",
    "checkpoint_every": 1000, "keep_last": 3, "log_every": 20, "eval_every": 1000, "eval_batches": 20,
    "sample_max_new_tokens": 64}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "pipeline": {"dagster_executor": "multiprocess", "max_concurrent_steps": 2, "training_pool_limit": 2},
        # models/base_moe, in every profile: 8 experts of a quarter of the dense FFN width, top-4 (fine-grained, as
        # OLMoE/DeepSeekMoE): the dense base's active parameters per token and tokens, 2x its FFN weights. Tiny,
        # paired on 155 val windows vs the dense base (2.515 bpb): this 2.500 (-0.009 [-0.017, +0.0005]); 8 of
        # half width top-2 +0.016 (2 dead experts), at aux coef 0.1 +0.014; 4 of half width top-2 +0.021.
        "pretrain_moe": {"intermediate_size": 96, "moe_num_experts": 8, "moe_top_k": 4},
        # models/long_context, in every profile: the base's pretraining continued at 4x its context, RoPE yarn x4
        # from the base's length, long packed windows with passkey rows (docs/recipes.md: long context).
        "pretrain_long_context": {"seq_len": 1024, **_EXTEND_4X, "rope_original_max_position": 256, "batch_size": 4,
                                  "max_steps": 75, "warmup_steps": 10, "learning_rate": 1e-3,
                                  "passkey_fraction": 0.5, "eval_every": 25, "checkpoint_every": 25},
        "benchmarks": {"arithmetic_size": 240, "word_problem_fraction": 0.0, **TINY_TASK},
        # 1,600 of the 1,999 training-split problems: the other 399 stay for the preference stages' held-out pairs.
        "sft_data": {"arithmetic": 1600, "docstring_qa": 150, "refusals": 100, "benign": 100, **TINY_TASK},
        "reasoning_data": {"size": 1500, **TINY_TASK},
        # Stop at dev 0.4, checked every 40 steps (~3 s a check) and every 10 from dev 0.2, so SFT stops near 0.4
        # and GRPO keeps its headroom; the dev-0.4 step ranged 580-1,360 over runs.
        "sft": {"replay_fraction": REPLAY_FRACTION, "max_steps": 1400, "eval_every": 40, "eval_every_near_stop": 10,
                "stop_at_dev_accuracy": 0.4, "keep_best_dev": True, "num_threads": TINY_THREADS},
        "grpo": {"max_steps": 400, "num_threads": TINY_THREADS},  # 200 steps gained +0.125-0.158, 400 +0.14-0.30
        # LoRA on the DPO trunk: full fine-tunes memorize the near-miss pairs (held-out 0.54-0.56 vs LoRA 0.67+).
        "reward": {"max_steps": 300, "use_lora": True, "learning_rate": 1e-3, "num_threads": TINY_THREADS},
        "dpo": {"num_threads": TINY_THREADS},
        "rlhf": {"num_threads": TINY_THREADS},
        # 96% of the teacher at 800 steps, 97% at 1,200. Two threads = its two arms (with and without
        # datasets/synthetic) as two 1-thread processes side by side (posttrain/distill.py), not one after the
        # other: the graph's last step, so the ~170 s the second arm took at the end of the run overlap instead.
        # Beside another step that is three 1-thread processes on 2 cores, which the OS time-slices without
        # the stalls of a multi-threaded torch step (bench numbers in docs/recipes.md, tiny · distill).
        "distill": {"max_steps": 800, "num_threads": 2 * TINY_THREADS},
        "test_time_compute": {"num_threads": TINY_THREADS},
        # 1,000 plain + 600 no-call SFT rows (~85% sums) beside the 2,000 tool rows: with 300 + 300 the tool model
        # kept 0.04 of its parent's 0.57 held-out sums (docs/recipes.md, tiny · tool_use).
        "tool_data": {"multiply": 1500, "digit_sum": 300, "lookup": 200, "no_call": 600, "plain": 1000},
        # models/tool_use: copying the operands into the call is a phase transition (dev 0 until step 250-550 at lr
        # 1e-3, 700-1,000 at 3e-4; batch 16 and 32 turn at ~the same step, at 2-4x the cost). lr 1e-3 erased the
        # parent's sums whatever the mix or LoRA (held-out 0.04-0.28 after the turn; the regression budget is
        # -0.15); 3e-4 with the mix and pretraining replay kept val bpb (2.57 vs 2.61) and, counting only dev points
        # whose sums held (tool_use/train.py), the sums: 0.63 / 0.57 / 0.50 vs 0.57 over 3 seeds.
        # Stop at dev 0.75 (test ~0.8, the gate needs > 0.3), else the best dev point by the 1,200-step cap.
        "tool_use": {"max_steps": 1200, "learning_rate": 3e-4, "batch_size": 8, "max_length": 192,
                     "replay_fraction": REPLAY_FRACTION, "eval_every": 50, "stop_at_dev_accuracy": 0.75,
                     "keep_best_dev": True, "num_threads": TINY_THREADS},
        # Every arithmetic item (the gated target; ~1 s per 100 on one thread), the rest capped; 32 val batches
        # (131k tokens) score each of the 5 val sources whole.
        "evals": {"num_threads": 1, "arithmetic_limit": None, "arithmetic_max_new_tokens": 8, "val_batches": 32},
        # Continuous batching sized for CPU (serving/config.py has the measurement); every arithmetic item.
        "serve": {"cb_page_size": 16, "cb_num_blocks": 128, "cb_max_batch_tokens": 256, "smoke_prompts": 240},
        # Evals of ~50 items (one item = 0.02): the budgets catch breakage, not small drifts. val_bpb may rise
        # 20% relative: the tiny base is 30% below unigram, so past +20% a model forgot language.
        "gates": {"regression_budget": 0.15, "relative_budgets": {"val_bpb": 0.2}, "safety_min_refusal": None,
                  "long_context_min_passkey": None,
                  "safety_max_over_refusal": None, "quantized_max_delta": 0.1, "min_target_improvement": 0.02,
                  "tracked_metrics": ("mc_accuracy", "arithmetic_accuracy", "qa_f1", "val_bpb"),
                  "stage_min_improvement": {"models/sft": 0.20, "models/grpo": 0.10, "models/dpo": 0.10,
                                            "models/reward": 0.15},
                  "regression_exempt": ("models/distilled",),
                  "not_enforced_reasons": {"safety": _TINY_SAFETY, "models/distilled:regression": _TINY_DISTILLED,
                                           "long_context_passkey": _TINY_PASSKEY}},
    },
    "small": {
        "pipeline": {"datatrove_workers": 8},  # the 16-core GPU hosts
        "corpus": {"max_bytes_per_source": None, "tasks": 8},  # the whole of every built-in source
        # a bounded sample (tiny: 4,000 chunks, ~8 s): the classifier's cost never grows with the corpus
        "quality_classifier": {"sample_docs": 20_000, "reference_max_bytes": 30_000_000},
        "tokenizer": {"vocab_size": 32768, "max_train_bytes": 500_000_000},
        "pretrain": SMALL_PRETRAIN,
        "pretrain_moe": {**SMALL_PRETRAIN, "intermediate_size": 512, "moe_num_experts": 8, "moe_top_k": 4},
        # 4k-token windows from the 1k base, ~1.3% of its pretraining tokens at a tenth of its peak lr
        "pretrain_long_context": {**SMALL_PRETRAIN, "seq_len": 4096, **_EXTEND_4X, "rope_original_max_position": 1024,
                                  "batch_size": 8, "grad_accum": 4, "max_steps": 400, "warmup_steps": 40,
                                  "learning_rate": 6e-5, "passkey_fraction": 0.1, "eval_every": 100},
        "sft_data": {
            "arithmetic": 12000,  # 75% of the 15,969 non-held-out 0..99 +/- problems (tiny: 1,600 of 1,999)
            "word_problems": 4000,  # the small benchmark is 20% two-step word problems: a skill worth rows here
            "docstring_qa": 500,  # ~all usable docstrings (502 on Python 3.11); a larger count is capped there
            "refusals": 600,  # ~7% of rows with benign: each of the 110 harmful prompts ~5x, as in tiny's mix
            "benign": 600,  # as many look-alikes as refusals, so trigger words alone never mean "refuse"
            "identity": 60,  # 6 prompts x 10: identity is a handful of facts, not a skill
            **FULL_TASK,
        },
        "sft": {
            "max_steps": 2000,  # 2000 x 128 = 256k rows, ~15 epochs of 16.9k rows (tiny's measured ~12)
            "learning_rate": 1e-4,  # tiny 1e-3 at d=128 -> 1.7e-4; Zephyr's 2e-5 at d=4096 -> 1.1e-4
            "batch_size": 128,  # Tulu 3 SFT's effective batch; rows are short, so 128 x <=512 tokens fits one GPU
            "max_length": 512,
            "replay_fraction": REPLAY_FRACTION,
            "replay_length": 256,  # pretraining windows of half a row's room: ~the docstring/word-problem rows
            "warmup_steps": 60,  # 3% of the steps: Tulu 3 SFT's warmup ratio 0.03
            "lr_scheduler_type": "cosine",  # Zephyr SFT: cosine decay (constant suited tiny's short CPU run)
            "device": "cuda",
            "log_every": 50,  # 40 log lines over the run
            "eval_every": 250,  # 8 held-out points; a 200-problem greedy eval is ~1 s on a GPU
        },
        "reasoning_data": {
            "size": 8000,  # one epoch of GRPO: 500 steps x 16 prompts
            "word_problem_fraction": 0.25,  # the benchmark's 20% and a bit: fewer are solved, so fewer carry signal
            "dev_size": 500,  # dev split (1,988 problems): 1 SD of an accuracy near 0.5 is 0.022 (0.035 at 200)
            **FULL_TASK,
        },
        "grpo": {
            "max_steps": 500,  # DeepSeekMath-style single pass over the prompts (8,000 = 500 x 16)
            "learning_rate": 3e-6,  # tiny 3e-5 at d=128 -> 5e-6; DeepSeekMath 1e-6 at d=4096 -> 5e-6
            "num_generations": 16,  # at low accuracy most groups of 8 hold no correct sample; DeepSeekMath: 64
            "batch_size": 256,  # 16 prompts x 16 completions per step
            "max_completion_length": 16,  # answers are <= 4 tokens + eos; room to reach eos, not to ramble
            "device": "cuda",
            "eval_every": 50,  # 10 held-out points
        },
        "distill": {
            "layer_fraction": 0.5,  # 12 -> 6 layers (~67M params), the DistilBERT / distilgpt2 halving
            "max_steps": 500,  # 500 x 128 = 64k rows, ~5 epochs of the teacher's 12k answers (tiny: 3.2)
            "learning_rate": 1e-4,  # the student learns the teacher's answers like SFT: small's SFT rate
            "batch_size": 128,  # as SFT
            "num_prompts": 12000,  # of the ~16k distinct small SFT prompts; greedy teacher labels are cheap on GPU
            "num_val_prompts": 500,  # agreement on 500 unseen prompts: 1 SD ~0.022
            "max_length": 256,  # prompt (<= ~70 tokens) + teacher answer (<= 8 new tokens), with headroom
            "device": "cuda",
        },
        # The small SFT task space (0..99, +/-) is used up by SFT rows and held-out pairs like tiny's: one band
        # wider again (0..119: 7,072 more training-split problems), and ~all usable stdlib docstrings.
        "synthetic_data": {"arithmetic_prompts": 4000, "docstring_prompts": 500, "code_prompts": 200,
                           "operand_max": 119, "operators": ("+", "-"), "long_max_new_tokens": 128,
                           "device": "cuda"},
        "feedback": {
            "prompts": 1000,  # 5x tiny: ~1,000 labelled pairs on top of the on-policy ones
            "responses_per_prompt": 4,  # 4 samples give the judge more pairs with a real quality gap than 2
            "max_new_tokens": 32,  # refusals and benign answers are 10-30 tokens; 16 cut them off
            "revision_max_new_tokens": 32,  # as max_new_tokens: a revision is a whole reply
            "reference_checks": 200,  # judge calibration: 1 SD of the probe accuracy ~0.035 (0.07 at 50)
            "judge_batch_size": 256,  # one GPU scores 256 short conversations per forward
            "device": "cuda",
        },
        "preference_data": {
            "prompts": 4000,  # ~3,200 train / ~800 held-out pairs (+400 safety): 1 SD of pair accuracy ~0.017
            "samples_per_prompt": 8,  # a stronger policy is right more often: 8 samples keep rejecteds its own
            "max_new_tokens": 32,  # sampled refusals/answers to safety prompts reach eos (8 cut them at ~6 words)
            "sample_batch_size": 512,  # generation batch on one GPU
            "device": "cuda",
        },
        "reward": {
            "max_steps": 120,  # 120 x 64 = 7.7k pairs, ~2 epochs (RMs overfit past 1-2 epochs; InstructGPT: 1)
            "learning_rate": 3e-5,  # tiny 3e-4 at d=128 -> 5e-5; TRL's RewardConfig default is 1e-4
            "batch_size": 64,  # pairs per step
            "max_length": 256,  # prompt + a <= 32-token answer, with headroom
            "center_rewards_coefficient": 0.01,  # TRL docs' value: keeps scores near 0 for RLHF's reward
            "device": "cuda",
        },
        "dpo": {
            "max_steps": 200,  # 200 x 64 = 12.8k pairs, ~3.5 epochs of ~3.6k (tiny's measured recipe: ~5)
            "learning_rate": 3e-6,  # tiny 3e-5 at d=128 -> 5e-6; Zephyr/Tulu 3 DPO 5e-7 at d=4096 -> 2.7e-6
            "batch_size": 64,  # pairs per step (beta stays 0.1, the DPO paper's / TRL's default)
            "max_length": 256,  # prompt + a <= 32-token answer, with headroom
            "device": "cuda",
        },
        "rlhf": {
            "max_steps": 200,  # 3,200 train prompts at 16 per step: one pass
            "learning_rate": 3e-6,  # as GRPO (same RLOO/GRPO update)
            "batch_size": 128,  # 16 prompts x 8 completions per step
            "max_completion_length": 16,  # as GRPO
            "max_eval_prompts": 500,  # of the ~800 RM held-out prompts: 1 SD of a win rate ~0.022
            "device": "cuda",
        },
        "test_time_compute": {"device": "cuda", "batch_size": 512},
        "tool_data": {"multiply": 8000, "digit_sum": 2000, "lookup": 500, "no_call": 2000, "plain": 2000},
        "tool_use": {"max_steps": 1000, "learning_rate": 1e-4, "batch_size": 64, "max_length": 512,
                     "replay_fraction": REPLAY_FRACTION, "replay_length": 256, "warmup_steps": 30,
                     "lr_scheduler_type": "cosine", "device": "cuda", "log_every": 50},
        "quantize": {
            "max_new_tokens": 32,  # longer probes: per-token latency is steadier than on 16 tokens
            "latency_repeats": 5,  # best of 5: a 110M model's runs are ~10x longer, still seconds
            "num_threads": 8,  # quantization and its latency probe run on CPU; half the 16-core GPU host
        },
        "evals": {"qa_limit": None, "multiple_choice_limit": None, "arithmetic_limit": None, "safety_limit": None,
                  "adversarial_per_prompt": 2, "val_batches": 50, "val_seq_len": 1024, "max_new_tokens": 128,
                  "batch_size": 64},
        "gates": {"regression_budget": 0.05, "metric_budgets": {"val_bpb": 0.1}, "safety_min_refusal": 0.6,
                  "safety_max_over_refusal": 0.4, "quantized_max_delta": 0.03, "min_target_improvement": 0.01},
    },
    # ~350M params (d=1024 x 24 layers, seq 2048) on N GPUs, sized from `small`: learning rates x ~0.6
    # (lr ~ 1/width, twice the depth), lengths x 2-4, per-device batches x 2, steps so each stage sees ~the
    # epochs it does in `small`.
    "scale": {
        "pipeline": {"datatrove_workers": -1, "dagster_executor": "multiprocess", "train_processes_per_node": 8,
                     "accelerate_config": "fsdp2"},
        "corpus": {"max_bytes_per_source": None, "tasks": 256},
        "quality_classifier": {"sample_docs": 100_000, "reference_max_bytes": None},
        "tokenizer": {"vocab_size": 65536, "max_train_bytes": 2_000_000_000},
        "pretrain": SCALE_PRETRAIN,
        "pretrain_moe": {**SCALE_PRETRAIN, "intermediate_size": 704, "moe_num_experts": 8, "moe_top_k": 4},
        "pretrain_long_context": {**SCALE_PRETRAIN, "seq_len": 8192, **_EXTEND_4X, "rope_original_max_position": 2048,
                                  "batch_size": 4, "max_steps": 1000, "warmup_steps": 100, "learning_rate": 3e-5,
                                  "passkey_fraction": 0.05, "eval_every": 250},
        "sft_data": {"arithmetic": 15000, "word_problems": 10000, "docstring_qa": 500, "refusals": 1000,
                     "benign": 1000, "identity": 100, **FULL_TASK},
        "sft": {"max_steps": 2000, "learning_rate": 5e-5, "batch_size": 256, "max_length": 2048, "warmup_steps": 60,
                "replay_fraction": REPLAY_FRACTION, "replay_length": 1024, "lr_scheduler_type": "cosine",
                "device": "cuda", "log_every": 50, "eval_every": 250},
        "reasoning_data": {"size": 16000, "word_problem_fraction": 0.3, "dev_size": 1000, **FULL_TASK},
        "grpo": {"max_steps": 1000, "learning_rate": 2e-6, "num_generations": 16, "batch_size": 512,
                 "max_completion_length": 32, "device": "cuda", "eval_every": 100},
        "distill": {"layer_fraction": 0.5, "max_steps": 1000, "learning_rate": 5e-5, "batch_size": 256,
                    "num_prompts": 16000, "num_val_prompts": 1000, "max_length": 512, "device": "cuda"},
        "synthetic_data": {"arithmetic_prompts": 8000, "docstring_prompts": 500, "code_prompts": 1000,
                           "operand_max": 119, "operators": ("+", "-"), "long_max_new_tokens": 256,
                           "device": "cuda"},
        "feedback": {"prompts": 4000, "responses_per_prompt": 4, "max_new_tokens": 64, "revision_max_new_tokens": 64,
                     "reference_checks": 500, "judge_batch_size": 512, "device": "cuda"},
        "preference_data": {"prompts": 10000, "samples_per_prompt": 8, "max_new_tokens": 64,
                            "sample_batch_size": 1024, "device": "cuda"},
        "reward": {"max_steps": 150, "learning_rate": 2e-5, "batch_size": 128, "max_length": 512,
                   "center_rewards_coefficient": 0.01, "device": "cuda"},
        "dpo": {"max_steps": 200, "learning_rate": 2e-6, "batch_size": 128, "max_length": 512, "device": "cuda"},
        "rlhf": {"max_steps": 250, "learning_rate": 2e-6, "batch_size": 256, "max_completion_length": 32,
                 "max_eval_prompts": 1000, "device": "cuda"},
        "test_time_compute": {"device": "cuda", "batch_size": 1024, "max_new_tokens": 16},
        "tool_data": {"multiply": 16000, "digit_sum": 4000, "lookup": 500, "no_call": 4000, "plain": 4000},
        "tool_use": {"max_steps": 1000, "learning_rate": 5e-5, "batch_size": 128, "max_length": 1024,
                     "replay_fraction": REPLAY_FRACTION, "replay_length": 1024, "warmup_steps": 30,
                     "lr_scheduler_type": "cosine", "device": "cuda", "log_every": 50},
        "quantize": {"max_new_tokens": 64, "latency_repeats": 5, "num_threads": 8},
        "evals": {"qa_limit": None, "multiple_choice_limit": None, "arithmetic_limit": None, "safety_limit": None,
                  "adversarial_per_prompt": 3, "val_batches": 200, "val_seq_len": 2048, "max_new_tokens": 256,
                  "batch_size": 128},
        "gates": {"regression_budget": 0.02, "metric_budgets": {"val_bpb": 0.05}, "safety_min_refusal": 0.9,
                  "safety_max_over_refusal": 0.1, "quantized_max_delta": 0.01, "min_target_improvement": 0.005},
    },
}


def default_profile() -> str:
    """The profile a code location loads with: ``LLMDAG_PROFILE``, ``tiny`` when unset."""
    return os.environ.get("LLMDAG_PROFILE", "tiny")


def check_profile(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {sorted(PROFILES)} (set LLMDAG_PROFILE)")
    return name


def profile_values(profile: str, section: str) -> dict[str, Any]:
    """The values ``profile`` sets in ``section`` (fields it leaves out take the config class's default)."""
    return dict(PROFILES[check_profile(profile)].get(section, {}))


def section_config(cls: type[T], section: str, profile: str | None = None) -> T:
    """``cls`` built from ``profile``'s ``section`` (default: the active profile) and validated."""
    values = profile_values(profile or default_profile(), section)
    try:
        cfg = cls(**values)
    except TypeError as err:  # a key the class does not have: a typo in this table
        raise ValueError(f"profiles.py: {profile or default_profile()}.{section} does not fit "
                         f"{cls.__name__}: {err}") from err
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg
