"""SFT tokens/s: llmdag's SFT batching against TRL's defaults, same model, rows, batch, lr and steps, same process.

    python bench/sft_throughput.py                                    # the default run's models/base, datasets/sft
    python bench/sft_throughput.py --models-base DIR --datasets-sft DIR --profile small --steps 100   # GPU
    python bench/sft_throughput.py --steps 20 --warmup 3              # CPU smoke test (tiny)

``llmdag`` = ``models/sft``'s trainer as the stage builds it: TRL's SFTTrainer with the bucket sampler (each batch
drawn from one length band of the rows, pipeline_assets/posttrain/sft.py), so a batch of 30-token arithmetic rows
is not padded to a 118-token docstring row. ``trl_defaults`` = SFTTrainer with SFTConfig's defaults for batching
(rows in random order, each batch padded to its longest row). Both train the profile's SFT config (batch size,
max length, lr) on the same rows for ``--warmup`` untimed steps, then ``--steps`` timed ones; tokens/s counts
non-padding tokens (``include_num_input_tokens_seen="non_padding"``), so padding is cost, not throughput.
Prints one row per mode and the ratio (issue 31's target on the GPU profile: >= 1.3x). Replay rows, the dev
curve and the early stop are off in both: this measures the training loop, not the recipe's schedule.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script from anywhere

from transformers import TrainerCallback  # noqa: E402

from pipeline_assets.asset_keys import BASE, SFT_DATA  # noqa: E402
from pipeline_assets.model_io import load_causal_lm  # noqa: E402
from pipeline_assets.posttrain.common import trl_args  # noqa: E402
from pipeline_assets.posttrain.config import SFTStageConfig  # noqa: E402
from pipeline_assets.posttrain.data import SFT_FILE, load_chat_dataset  # noqa: E402
from pipeline_assets.posttrain.sft import _with_bucket_sampler, load_tokenizer  # noqa: E402
from pipeline_assets.profiles import default_profile, section_config  # noqa: E402
from pipeline_assets.stage_cli import add_input_flags, current_inputs  # noqa: E402


class _Clock(TrainerCallback):
    """Wall time and non-padding tokens from the end of step ``start`` to the end of training."""

    def __init__(self, start: int) -> None:
        self.start, self.t0, self.tokens0 = start, None, 0
        self.seconds, self.tokens = 0.0, 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.start:
            self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.tokens = int(state.num_input_tokens_seen - self.tokens0)


def tokens_per_s(mode: str, cfg: SFTStageConfig, base: Path, sft_file: Path, warmup: int, steps: int) -> dict:
    from trl import SFTConfig, SFTTrainer

    tok = load_tokenizer(base, need_generation_markers=cfg.assistant_only_loss)
    model = load_causal_lm(base, cfg.device)
    rows = load_chat_dataset(sft_file)
    kinds = list(rows["kind"]) if "kind" in rows.column_names else None
    rows = rows.select_columns(["messages"])
    clock = _Clock(warmup)
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as scratch:
        kw = trl_args(Path(scratch), max_steps=warmup + steps, learning_rate=cfg.learning_rate,
                      batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, num_threads=cfg.num_threads)
        kw["logging_steps"] = warmup + steps  # one log line per mode, not one per step
        args = SFTConfig(**kw, max_length=cfg.max_length, assistant_only_loss=cfg.assistant_only_loss,
                         include_num_input_tokens_seen="non_padding", warmup_steps=min(cfg.warmup_steps, warmup))
        trainer_cls = _with_bucket_sampler(SFTTrainer, kinds, cfg.seed, print) if mode == "llmdag" else SFTTrainer
        trainer = trainer_cls(model=model, args=args, train_dataset=rows, processing_class=tok, callbacks=[clock])
        trainer.train()
    return {"mode": mode, "steps": steps, "seconds": clock.seconds, "tokens": clock.tokens,
            "tokens_per_s": clock.tokens / clock.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=default_profile())
    keys = [BASE.to_user_string(), SFT_DATA.to_user_string()]
    add_input_flags(parser, keys, required=False)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    base, data = current_inputs(args, keys, args.profile).values()
    cfg = section_config(SFTStageConfig, "sft", args.profile)
    rows = [tokens_per_s(mode, cfg, base, data / SFT_FILE, args.warmup, args.steps)
            for mode in ("trl_defaults", "llmdag")]
    print(f"\nprofile {args.profile}, device {cfg.device}, batch {cfg.batch_size}, max_length {cfg.max_length}, "
          f"{args.steps} timed steps after {args.warmup}")
    print("| mode | seconds | non-padding tokens | tokens/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seconds']:.1f} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} |")
    print(f"llmdag / trl_defaults tokens/s: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
