"""Export our held-out sets as local lm-evaluation-harness tasks (YAML + JSONL), so `lm_eval` can score a
checkpoint offline with the same items as evals/harness.py.

    python -m pipeline_assets.evals.lm_eval_tasks --bench-dir B --out-dir /tmp/llmdag_tasks [--limit 48]
    lm_eval --model hf --model_args pretrained=/abs/ckpt,dtype=float32 --include_path /tmp/llmdag_tasks \
            --tasks llmdag_multiple_choice,llmdag_arithmetic --device cpu --batch_size 8
    (or all of it: python bench/lm_eval_local.py --model-dir CKPT --bench-dir B)

Follows the recipe checked in ../shared/notes/ops.md §6 (lm-eval 0.4.13): `dataset_path: json` with
absolute `data_files`, `output_type: multiple_choice` scored by log-likelihood (acc, acc_norm), and
`generate_until` + exact match for arithmetic. Plain YAML (no `!function` tags), so `yaml.safe_load` reads it.

Prompt format = harness.py's "plain" MC format: the document starts with the eos token (every document in the
token shards follows one, so it is the "start of document" context the base model learnt; a special-token
string inside the text encodes to its id), then "Question: ...\\nAnswer:" and " " + choice. Arithmetic is
graded like `check_arithmetic`: the last integer of the greedy completion must equal the answer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from pipeline_assets.evals.benchmarks import load_benchmark

DEFAULT_PREFIX = "llmdag"
DEFAULT_DOC_PREFIX = "<|im_end|>"  # the llmdag eos (tokenizer/train.py); "" for a tokenizer without it


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _base(task: str, data_file: Path) -> dict[str, Any]:
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        # Absolute: a relative data_files path is resolved against lm_eval's working directory, not the YAML.
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
    }


def multiple_choice_task(task: str, data_file: Path, doc_prefix: str, chat: bool = False) -> dict[str, Any]:
    return {
        **_base(task, data_file),
        "output_type": "multiple_choice",
        # chat: the question alone is the user turn and the choice follows "<|im_start|>assistant\n" directly,
        # which is harness.py's mc_format="chat".
        "doc_to_text": "{{question}}" if chat else doc_prefix + "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "label",
        "target_delimiter": "" if chat else " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def arithmetic_task(task: str, data_file: Path, doc_prefix: str, eos_token: str, max_gen_toks: int,
                    chat: bool = False) -> dict[str, Any]:
    until = ["\n", eos_token] if eos_token else ["\n"]
    return {
        **_base(task, data_file),
        "output_type": "generate_until",
        # chat: the prompt alone is the user turn, exactly as harness.py's arithmetic eval sends it.
        "doc_to_text": "{{prompt}}" if chat else doc_prefix + "Question: {{prompt}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": until, "max_gen_toks": max_gen_toks, "do_sample": False},
        # Last integer in the completion, as check_arithmetic grades it (group_select -1 = last regex match).
        "filter_list": [{"name": "last_integer", "filter": [
            {"function": "regex", "regex_pattern": r"(-?\d+)", "group_select": -1},
            {"function": "take_first"},
        ]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def write_lm_eval_tasks(bench_dir: Path | str, out_dir: Path | str, limit: int | None = None,
                        prefix: str = DEFAULT_PREFIX, doc_prefix: str = DEFAULT_DOC_PREFIX,
                        eos_token: str = DEFAULT_DOC_PREFIX, max_gen_toks: int = 24,
                        chat: bool = False) -> dict[str, Any]:
    """Write `<prefix>_multiple_choice.{yaml,jsonl}` and `<prefix>_arithmetic.{yaml,jsonl}` into `out_dir`.

    `limit` keeps the first N items of each set (the same items harness.py scores with that limit).
    `chat=True` writes the variant for `lm_eval --apply_chat_template`: bare question / prompt as the user turn,
    no document prefix, matching harness.py with mc_format="chat" and its chat-template arithmetic.
    Returns {"tasks_dir", "tasks": [names], "files": {task: {"yaml", "data"}}, "counts": {task: n}}.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1, or None for the whole set")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mc = load_benchmark(Path(bench_dir), "multiple_choice")[:limit]
    arith = load_benchmark(Path(bench_dir), "arithmetic")[:limit]
    specs = {
        f"{prefix}_multiple_choice": (
            [{"id": r["id"], "question": r["question"], "choices": r["choices"], "label": r["label"]} for r in mc],
            lambda task, data: multiple_choice_task(task, data, doc_prefix, chat),
        ),
        f"{prefix}_arithmetic": (
            [{"id": r["id"], "prompt": r["prompt"], "answer": r["answer"]} for r in arith],
            lambda task, data: arithmetic_task(task, data, doc_prefix, eos_token, max_gen_toks, chat),
        ),
    }
    files, counts = {}, {}
    for task, (rows, make) in specs.items():
        data, spec = out_dir / f"{task}.jsonl", out_dir / f"{task}.yaml"
        _write_jsonl(data, rows)
        spec.write_text(yaml.safe_dump(make(task, data), sort_keys=False, allow_unicode=True), encoding="utf-8")
        files[task] = {"yaml": str(spec), "data": str(data)}
        counts[task] = len(rows)
    return {"tasks_dir": str(out_dir.resolve()), "tasks": list(specs), "files": files, "counts": counts}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Write lm-evaluation-harness task YAMLs for the llmdag sets.")
    parser.add_argument("--bench-dir", type=Path, required=True, help="evals/benchmarks output dir")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the YAML + JSONL go (--include_path)")
    parser.add_argument("--limit", type=int, default=None, help="first N items of each set")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="task name prefix")
    parser.add_argument("--chat", action="store_true", help="variant for lm_eval --apply_chat_template")
    args = parser.parse_args(argv)
    result = write_lm_eval_tasks(args.bench_dir, args.out_dir, args.limit, args.prefix, chat=args.chat)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
