"""TRL's fused LM head on CPU: every position (TRL's own CPU path) vs label positions only (posttrain/trl_cpu.py).

    python bench/trl_lm_head_cpu.py                 # tiny model, 20 timed steps per row, 2 threads
    python bench/trl_lm_head_cpu.py --steps 50 --threads 1

Same process, same model and batches: forward + backward of ``model(..., fused_lm_head=True).loss`` on the
tiny profile's architecture (PretrainConfig defaults, vocab 4096), for batches shaped like the tiny stages':
SFT arithmetic rows (64 x 24 tokens, answer + end of turn labelled; DPO's chosen + rejected rows look the same)
and SFT's pretraining-replay rows (64 x 64, every token labelled: the switch cannot help there). Prints a markdown table
with each row's ms/step and the speedup (all-positions / label-only).
"""

from __future__ import annotations

import argparse
import time

import torch
import trl.trainer.utils as trl_utils
from transformers import LlamaForCausalLM
from trl.trainer.utils import add_fused_lm_head

from pipeline_assets.posttrain.trl_cpu import compact_lm_head_on_cpu
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.pretrain.model import build_model_config

SHAPES = {  # name: (rows, tokens per row, labelled tokens at the end of each row)
    "sft arithmetic": (64, 24, 4),
    "sft replay": (64, 64, 64),
}


def _batch(rows: int, length: int, labelled: int, vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (rows, length))
    labels = ids.clone()
    labels[:, : length - labelled] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _ms_per_step(model: LlamaForCausalLM, batch: dict, steps: int) -> float:
    for _ in range(2):  # warm-up: allocator, first-call overheads
        model(**batch, fused_lm_head=True).loss.backward()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        model(**batch, fused_lm_head=True).loss.backward()
    return 1000 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = build_model_config(PretrainConfig(), vocab_size=4096, bos_id=0, eos_id=1, pad_id=2)
    model = LlamaForCausalLM(config).train()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer adds
    trl_all_positions = trl_utils._use_triton
    compact_lm_head_on_cpu()
    label_only = trl_utils._use_triton
    print(f"| batch ({args.threads} threads) | all positions ms/step | label positions ms/step | speedup |")
    print("|---|---|---|---|")
    for name, shape in SHAPES.items():
        batch = _batch(*shape, vocab=config.vocab_size)
        trl_utils._use_triton = trl_all_positions
        full = _ms_per_step(model, batch, args.steps)
        trl_utils._use_triton = label_only
        compact = _ms_per_step(model, batch, args.steps)
        print(f"| {name} {shape[0]}x{shape[1]} ({shape[2]} labelled) | {full:.1f} | {compact:.1f} | "
              f"{full / compact:.2f}x |")


if __name__ == "__main__":
    main()
