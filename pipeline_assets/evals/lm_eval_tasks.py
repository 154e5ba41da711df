"""Export our held-out sets as local lm-evaluation-harness tasks (YAML + JSONL), so `lm_eval` can score a
checkpoint offline with the same items as evals/harness.py.

    python -m pipeline_assets.evals.lm_eval_tasks --bench-dir B --out-dir /tmp/llmdag_tasks [--tokenizer CKPT]
    lm_eval --model hf --model_args pretrained=/abs/ckpt,dtype=float32 --include_path /tmp/llmdag_tasks \
            --tasks llmdag_multiple_choice,llmdag_arithmetic,llmdag_arithmetic_chat --device cpu --batch_size 8
    (or all of it, with our numbers next to lm-eval's: python bench/lm_eval_local.py --model-dir CKPT --bench-dir B)

Follows the recipe checked in ../shared/notes/ops.md §6 (lm-eval 0.4.13): `dataset_path: json` with
absolute `data_files`, `output_type: multiple_choice` scored by log-likelihood (acc, acc_norm), and
`generate_until` + regex filters + exact_match for arithmetic. Plain YAML (no `!function` tags), so
`yaml.safe_load` reads it and no Python module has to sit next to it.

Tasks (the default export; `chat=True` writes the `--apply_chat_template` variant instead, see below):
  <prefix>_multiple_choice   harness.py's "plain" MC format: eos token (every document in the token shards
                             follows one, so it is the "start of document" context the base model learnt; a
                             special-token string inside the text encodes to its id), "Question: ...\nAnswer:",
                             then " " + choice
  <prefix>_arithmetic        harness.py's arithmetic_format="plain" (`_plain_arithmetic`, how evals/base scores
                             the base model): eos, the ARITHMETIC_SHOTS lines, the question; graded on the first
                             line of the stripped completion
  <prefix>_arithmetic_chat   harness.py's arithmetic_format="chat" (`chat_generate`, how post-trained models are
                             scored): the question as one user turn through the checkpoint's chat template,
                             rendered at export time into the JSONL, so it needs no lm_eval flag and runs in the
                             same lm_eval call as the plain tasks; graded on the whole completion
Both arithmetic tasks take the last number with check_arithmetic's own regex (NUMBER_PATTERN) and compare it
to the answer with exact_match, ignoring thousands commas and a ".0" tail as check_arithmetic does. Known gap:
check_arithmetic reads a unicode minus as "-", the regex filter does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from pipeline_assets.evals.harness import ARITHMETIC_SHOTS
from pipeline_assets.tasks.arithmetic import NUMBER_PATTERN
from pipeline_assets.tasks.heldout import load_benchmark

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


def plain_arithmetic_context(prompt: str, doc_prefix: str = DEFAULT_DOC_PREFIX) -> str:
    """The text `_plain_arithmetic` feeds the model (its eos prefix id spelled as the eos string)."""
    return doc_prefix + "".join(f"{q} {a}\n" for q, a in ARITHMETIC_SHOTS) + prompt


def chatml_context(prompt: str, tokenizer: Any | None = None) -> str:
    """The text `chat_generate` feeds the model. With `tokenizer`, its own chat template renders it (identical
    to chat_generate by construction); without, the llmdag ChatML template's output is spelled out."""
    if tokenizer is not None:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


def _last_number_filters(first_line: bool) -> list[dict[str, Any]]:
    steps = []
    if first_line:
        # _plain_arithmetic strips the completion, THEN keeps the text before the first newline. A "\n" stop
        # sequence would cut " \n42" to "" where we read "42", so lm-eval generates as long as we do and this
        # regex takes the first line after leading whitespace.
        steps.append({"function": "regex", "regex_pattern": r"^\s*([^\n]*)", "group_select": 0})
    # group_select -1 = last match, check_arithmetic's rule, with its exact pattern.
    steps += [{"function": "regex", "regex_pattern": NUMBER_PATTERN, "group_select": -1},
              {"function": "take_first"}]
    return [{"name": "last_integer", "filter": steps}]


def arithmetic_task(task: str, data_file: Path, eos_token: str, max_gen_toks: int, first_line: bool,
                    doc_to_text: str = "{{context}}") -> dict[str, Any]:
    return {
        **_base(task, data_file),
        "output_type": "generate_until",
        # The prompt text sits in the JSONL, not in this template: Jinja drops a template's trailing "\n",
        # which is the last character of the ChatML generation prompt.
        "doc_to_text": doc_to_text,
        "doc_to_target": "{{answer}}",
        # Only eos stops, as in harness.py (generate_texts passes eos_token_id and nothing else).
        "generation_kwargs": {"until": [eos_token] if eos_token else [], "max_gen_toks": max_gen_toks,
                              "do_sample": False},
        "filter_list": _last_number_filters(first_line),
        # check_arithmetic reads "1,024" as 1024 and "42.0" as 42; the answers are plain integers.
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "regexes_to_ignore": [",", r"\.0+$"]}],
        "metadata": {"version": 2.0},
    }


def write_lm_eval_tasks(bench_dir: Path | str, out_dir: Path | str, limit: int | None = None,
                        prefix: str = DEFAULT_PREFIX, doc_prefix: str = DEFAULT_DOC_PREFIX,
                        eos_token: str = DEFAULT_DOC_PREFIX, max_gen_toks: int = 24,
                        chat: bool = False, tokenizer: Any | None = None) -> dict[str, Any]:
    """Write `<prefix>_<task>.{yaml,jsonl}` into `out_dir`: multiple_choice, arithmetic, arithmetic_chat.

    `limit` keeps the first N items of each set (the same items harness.py scores with that limit);
    `max_gen_toks` should be the EvalConfig's arithmetic_max_new_tokens. `tokenizer` (the checkpoint's)
    renders arithmetic_chat's prompts; without it the llmdag ChatML template is assumed.
    `chat=True` writes the variant for `lm_eval --apply_chat_template` instead: bare question / prompt as the
    user turn and lm-eval renders it; that flag applies to every task of the run, so this variant has no
    plain arithmetic task. MC then matches harness.py's mc_format="chat".
    Returns {"tasks_dir", "tasks": [names], "files": {task: {"yaml", "data"}}, "counts": {task: n}}.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1, or None for the whole set")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mc = load_benchmark(Path(bench_dir), "multiple_choice")[:limit]
    arith = load_benchmark(Path(bench_dir), "arithmetic")[:limit]
    mc_rows = [{"id": r["id"], "question": r["question"], "choices": r["choices"], "label": r["label"]} for r in mc]
    specs = {f"{prefix}_multiple_choice": (mc_rows, lambda t, d: multiple_choice_task(t, d, doc_prefix, chat))}
    if not chat:
        specs[f"{prefix}_arithmetic"] = (
            [{"id": r["id"], "prompt": r["prompt"], "answer": r["answer"],
              "context": plain_arithmetic_context(r["prompt"], doc_prefix)} for r in arith],
            lambda t, d: arithmetic_task(t, d, eos_token, max_gen_toks, first_line=True))
        specs[f"{prefix}_arithmetic_chat"] = (
            [{"id": r["id"], "prompt": r["prompt"], "answer": r["answer"],
              "context": chatml_context(r["prompt"], tokenizer)} for r in arith],
            lambda t, d: arithmetic_task(t, d, eos_token, max_gen_toks, first_line=False))
    else:
        specs[f"{prefix}_arithmetic_chat"] = (
            [{"id": r["id"], "prompt": r["prompt"], "answer": r["answer"]} for r in arith],
            lambda t, d: arithmetic_task(t, d, eos_token, max_gen_toks, first_line=False, doc_to_text="{{prompt}}"))
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
    parser.add_argument("--max-gen-toks", type=int, default=None,
                        help="arithmetic generation budget (default: the profile's arithmetic_max_new_tokens)")
    parser.add_argument("--profile", default="tiny", help="profile whose evals section sets --max-gen-toks")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="checkpoint (or tokenizer) dir whose chat template renders arithmetic_chat")
    parser.add_argument("--chat", action="store_true", help="variant for lm_eval --apply_chat_template")
    args = parser.parse_args(argv)
    tok = None
    if args.tokenizer is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    from pipeline_assets.evals.config import EvalConfig
    from pipeline_assets.profiles import section_config

    max_gen = args.max_gen_toks or section_config(EvalConfig, "evals", args.profile).arithmetic_max_new_tokens
    result = write_lm_eval_tasks(args.bench_dir, args.out_dir, args.limit, args.prefix, max_gen_toks=max_gen,
                                 chat=args.chat, tokenizer=tok)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
