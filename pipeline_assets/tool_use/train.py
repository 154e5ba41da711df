"""models/tool_use: the SFT policy fine-tuned on datasets/tool_use with TRL's SFTTrainer (assistant-only loss).

TRL renders each row's `tools` through the chat template and masks everything but the assistant turns, so
the model learns the calls and the answers built from tool results, never the results themselves. The same
`run_sft` as models/sft, with the `tool_use` section of profiles.py.

    python -m pipeline_assets.tool_use.train --models-sft SFT --datasets-tool-use DATA \
        --tokenizer-tokenized-shards SHARDS --evals-benchmarks BENCH --out OUT
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline_assets.asset_keys import BENCHMARKS, SFT, SHARDS, TOOL_USE_DATA
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.posttrain.config import SFTStageConfig
from pipeline_assets.posttrain.sft import run_sft
from pipeline_assets.stage_cli import stage_main
from pipeline_assets.stages import StageInputs
from pipeline_assets.tasks.arithmetic import check_arithmetic
from pipeline_assets.tasks.tool_problems import MULTIPLY, problems
from pipeline_assets.tool_use.data import TOOL_USE_FILE
from pipeline_assets.tool_use.loop import run_with_tools
from pipeline_assets.tool_use.tools import tool_schemas

DEV_PROBLEMS = 40  # dev-split multiplications the curve (and early stop) answers through the tool loop: ~3 s
CALL_TOKENS = 48  # a calculator call on two 3-digit numbers is ~35 tokens, its answer ~12


def tool_answer_accuracy(model: Any, tok: Any, records: Sequence[dict], max_new_tokens: int) -> float:
    """Share of `records` answered right with the tools offered: call, result, answer (the eval's target)."""
    runs = run_with_tools(model, tok, [[{"role": "user", "content": r["prompt"]}] for r in records], tool_schemas(),
                          max_new_tokens=max(max_new_tokens, CALL_TOKENS))
    return sum(check_arithmetic(ex.answer, r["answer"]) for ex, r in zip(runs, records, strict=True)) / len(records)


def train(cfg: SFTStageConfig, inputs: StageInputs, work: Path, checkpoint_dir: Path | None,
          log: Callable[[str], None]) -> dict[str, Any]:
    """Full fine-tune (or LoRA, merged) of models/sft; held-out arithmetic before/after shows what it kept. With
    `eval_every`, the dev curve (and `stop_at_dev_accuracy`) is the tool-loop answer accuracy on dev problems."""
    return run_sft(cfg, inputs(SFT), inputs(TOOL_USE_DATA) / TOOL_USE_FILE, work / "adapter" if cfg.use_lora
                   else work, merged_dir=work if cfg.use_lora else None, log=log,
                   test=read_jsonl(inputs(BENCHMARKS) / "arithmetic.jsonl"), checkpoint_dir=checkpoint_dir,
                   replay_shards=inputs(SHARDS) if cfg.replay_fraction else None,
                   dev=problems(MULTIPLY, "dev", DEV_PROBLEMS, cfg.seed), dev_score=tool_answer_accuracy)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m pipeline_assets.tool_use.train --help``: the models/tool_use asset's run on given dirs."""
    return stage_main("tool_use", argv)


if __name__ == "__main__":
    main()
