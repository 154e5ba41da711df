"""GRPO completions/s: TRL's default generation (transformers ``generate`` in the training process) against vLLM
colocated in the training process (``use_vllm``, TRL's ``vllm_mode="colocate"``), same policy, prompts and config.

    python bench/grpo_throughput.py                                   # the default run's models/sft, datasets/reasoning
    python bench/grpo_throughput.py --profile small --steps 20        # GPU; the vllm row needs vllm installed
    python bench/grpo_throughput.py --steps 4                         # CPU smoke test: the trl_defaults row only

Both rows are ``models/grpo``'s own training function (pipeline_assets/posttrain/grpo.py ``run_grpo``) with the
profile's GRPO config for ``--steps`` steps; only ``use_vllm`` differs. completions/s = steps x the config's
batch size (completions per step) / the trainer's train time, which starts after the trainer (and vLLM's engine)
is built. vLLM pins its own torch, so on a GPU host it runs from a venv of its own:
``python -m venv .venv-vllm && .venv-vllm/bin/pip install vllm -e .`` then this script with that venv's python.
Without a GPU or without vllm the vllm row is skipped with the reason (issue 31's target on a GPU: >= 2x).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script from anywhere

from pipeline_assets.asset_keys import REASONING, SFT  # noqa: E402
from pipeline_assets.jsonl import read_jsonl  # noqa: E402
from pipeline_assets.posttrain.config import GRPOStageConfig  # noqa: E402
from pipeline_assets.posttrain.data import DEV_FILE, REASONING_FILE  # noqa: E402
from pipeline_assets.posttrain.grpo import run_grpo  # noqa: E402
from pipeline_assets.profiles import default_profile, section_config  # noqa: E402
from pipeline_assets.stage_cli import add_input_flags, current_inputs  # noqa: E402

DEV_ITEMS = 16  # run_grpo scores the policy before and after: a handful of items keeps that out of the way


def vllm_unavailable(device: str) -> str | None:
    """Why the vllm row cannot run here, or None."""
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return "no CUDA device (vLLM colocate generates on the training GPU)"
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed in this venv (see the module docstring)"
    return None


def completions_per_s(cfg: GRPOStageConfig, sft: Path, reasoning: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as out:
        meta = run_grpo(cfg, sft, reasoning / REASONING_FILE, Path(out),
                        read_jsonl(reasoning / DEV_FILE)[:DEV_ITEMS], log=lambda _: None)
    completions = meta["steps"] * cfg.batch_size
    return {"seconds": meta["train_time_s"], "completions": completions,
            "completions_per_s": completions / meta["train_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=default_profile())
    keys = [SFT.to_user_string(), REASONING.to_user_string()]
    add_input_flags(parser, keys, required=False)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    sft, reasoning = current_inputs(args, keys, args.profile).values()
    cfg = dataclasses.replace(section_config(GRPOStageConfig, "grpo", args.profile), max_steps=args.steps,
                              eval_every=None, use_vllm=False)
    rows = {"trl_defaults": completions_per_s(cfg, sft, reasoning)}
    skipped = vllm_unavailable(cfg.device)
    if skipped is None:
        rows["vllm_colocate"] = completions_per_s(dataclasses.replace(cfg, use_vllm=True), sft, reasoning)
    print(f"\nprofile {args.profile}, device {cfg.device}, {args.steps} steps x {cfg.batch_size} completions "
          f"(G={cfg.num_generations}, up to {cfg.max_completion_length} tokens)")
    print("| mode | train seconds | completions | completions/s |\n|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['seconds']:.1f} | {r['completions']:,} | {r['completions_per_s']:,.1f} |")
    if skipped is None:
        ratio = rows["vllm_colocate"]["completions_per_s"] / rows["trl_defaults"]["completions_per_s"]
        print(f"vllm_colocate / trl_defaults completions/s: {ratio:.2f}x")
    else:
        print(f"vllm_colocate: skipped: {skipped}")


if __name__ == "__main__":
    main()
