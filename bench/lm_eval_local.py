"""Benchmark: score a checkpoint with lm-evaluation-harness on our held-out sets, fully offline, next to
llmdag's own harness (evals/harness.py) on the same items in the same run, item by item.

    python bench/lm_eval_local.py --model-dir CKPT --bench-dir BENCH --limit 0        # every item
    python bench/lm_eval_local.py --model-dir CKPT --bench-dir BENCH --device cuda --batch-size 32
    python bench/lm_eval_local.py --model-dir CKPT --bench-dir BENCH --apply-chat-template   # lm-eval renders
    python bench/lm_eval_local.py --model-dir CKPT --bench-dir BENCH --lm-eval-python /venv/bin/python

Tasks (pipeline_assets/evals/lm_eval_tasks.py): llmdag_multiple_choice (plain), llmdag_arithmetic (plain
few-shot, how evals/base scores the base model) and llmdag_arithmetic_chat (ChatML, how post-trained models
are scored), all in one lm_eval call. With --apply-chat-template lm-eval renders the chat template itself,
which is a global flag, so that run has MC in chat format + arithmetic_chat only.

For each task it prints n and accuracy of lm-eval and of our harness, and how many items they grade
differently; exit status 1 when any task has more than --max-disagreements (default 1) such items, 2 when
lm-eval is not installed (`pip install lm-eval==0.4.13`). lm_eval runs as a subprocess with HF_HUB_OFFLINE /
HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE and its HF_HOME inside --out-dir, so nothing is downloaded and no
global cache is touched. Paths are passed absolute (a `./model` path makes lm_eval write its results into a
hidden `.__model` dir). --json writes every item: id, both completions, both grades.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script from anywhere

LM_EVAL_VERSION = "0.4.13"  # the version ops.md §6 checked offline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="lm-evaluation-harness on the llmdag held-out sets, offline.")
    # Inputs
    parser.add_argument("--model-dir", type=Path, required=True, help="HF checkpoint dir (or asset dir with model/)")
    parser.add_argument("--bench-dir", type=Path, required=True, help="evals/benchmarks output dir")
    parser.add_argument("--limit", type=int, default=48, help="first N items of each set (0 = all)")
    parser.add_argument("--profile", default="tiny", help="profile whose evals section sets arithmetic_max_new_tokens")
    # Runtime
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=8, help="lm_eval --batch_size and harness batch size")
    parser.add_argument("--apply-chat-template", action="store_true",
                        help="lm_eval --apply_chat_template (lm-eval renders the ChatML template)")
    parser.add_argument("--lm-eval-python", default=sys.executable,
                        help="python of the environment lm-eval is installed in (default: this one)")
    # Output
    parser.add_argument("--out-dir", type=Path, default=None, help="tasks, results, HF_HOME (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write per-task numbers and every item here")
    parser.add_argument("--max-disagreements", type=int, default=1,
                        help="items a task may grade differently before the exit status is 1")
    return parser


def _has_lm_eval(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('lm_eval') is None)"
    return subprocess.run([python, "-c", probe], check=False).returncode == 0


def run_lm_eval(python: str, model_dir: Path, tasks: dict[str, Any], out_dir: Path, device: str,
                batch_size: int, apply_chat_template: bool) -> tuple[dict[str, list[dict]], float]:
    """lm_eval once over all exported tasks; returns {task: its --log_samples rows} and wall seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(out_dir / "hf_home"), "TOKENIZERS_PARALLELISM": "false"}
    results = out_dir / "results"
    cmd = [python, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
           "--include_path", tasks["tasks_dir"], "--tasks", ",".join(tasks["tasks"]),
           "--device", device, "--batch_size", str(batch_size), "--output_path", str(results), "--log_samples"]
    if apply_chat_template:
        cmd.append("--apply_chat_template")
    print("$ " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - t
    samples = {}
    for task in tasks["tasks"]:
        # The timestamp right after the name: "samples_llmdag_arithmetic_*" alone also matches the _chat task's
        # file. The newest is this run's (the dir may hold earlier runs).
        found = sorted((p for p in results.rglob(f"samples_{task}_*.jsonl")
                        if re.fullmatch(rf"samples_{re.escape(task)}_\d{{4}}-.*\.jsonl", p.name)),
                       key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"lm_eval wrote no samples_{task}_*.jsonl under {results}; see its output")
        samples[task] = [json.loads(line) for line in found[-1].read_text().splitlines() if line.strip()]
    return samples, wall


def _normalize_generation(raw: str, first_line: bool) -> str:
    # What harness.py grades: generate_texts strips, _plain_arithmetic then keeps the first line.
    text = raw.strip()
    return text.split("\n")[0] if first_line else text


def run_ours(model_dir: Path, bench_dir: Path, task_names: list[str], limit: int | None, device: str,
             batch_size: int, profile: str, chat: bool) -> tuple[dict[str, list[dict]], float]:
    """Our harness's per-item grades (and completions) for each exported task, in benchmark order."""
    from pipeline_assets.evals.config import EvalConfig
    from pipeline_assets.evals.harness import arithmetic_completions, eval_multiple_choice
    from pipeline_assets.model_io import load_checkpoint
    from pipeline_assets.profiles import section_config
    from pipeline_assets.tasks.arithmetic import check_arithmetic
    from pipeline_assets.tasks.heldout import load_benchmark

    t = time.perf_counter()
    cfg = replace(section_config(EvalConfig, "evals", profile), batch_size=batch_size, device=device,
                  mc_format="chat" if chat else "plain")
    model, tok = load_checkpoint(model_dir, device)
    out: dict[str, list[dict]] = {}
    for task in task_names:
        if task.endswith("_multiple_choice"):
            records = load_benchmark(bench_dir, "multiple_choice")[:limit]
            scores = eval_multiple_choice(model, tok, records, cfg)["items"]["mc_accuracy"]["scores"]
            out[task] = [{"id": str(r["id"]), "correct": bool(s)} for r, s in zip(records, scores, strict=True)]
        else:
            records = load_benchmark(bench_dir, "arithmetic")[:limit]
            fmt = "chat" if task.endswith("_chat") else "plain"
            completions = arithmetic_completions(model, tok, records, replace(cfg, arithmetic_format=fmt))
            out[task] = [{"id": str(r["id"]), "completion": c, "correct": check_arithmetic(c, r["answer"])}
                         for r, c in zip(records, completions, strict=True)]
    return out, time.perf_counter() - t


def compare(ours: dict[str, list[dict]], theirs: dict[str, list[dict]]) -> dict[str, dict[str, Any]]:
    """Per task: n and accuracy of each side, and the items graded (or, for generation, written) differently."""
    report = {}
    for task, our_items in ours.items():
        by_id = {str(s["doc"]["id"]): s for s in theirs[task]}
        metric = "acc" if task.endswith("_multiple_choice") else "exact_match"
        items = []
        for item in our_items:
            sample = by_id.get(item["id"])
            row = {**item, "lm_eval_correct": None if sample is None else bool(sample[metric])}
            if "completion" in item and sample is not None:
                row["lm_eval_completion"] = _normalize_generation(sample["resps"][0][0], task.endswith("_arithmetic"))
                row["lm_eval_filtered"] = sample["filtered_resps"][0]
            items.append(row)
        n = len(items)
        report[task] = {
            "n": n, "lm_eval_n": len(theirs[task]),
            "llmdag_accuracy": round(sum(r["correct"] for r in items) / n, 6) if n else None,
            "lm_eval_accuracy": round(sum(bool(s[metric]) for s in theirs[task]) / len(theirs[task]), 6)
            if theirs[task] else None,
            "disagreements": sum(r["lm_eval_correct"] != r["correct"] for r in items),
            "completion_mismatches": sum(r.get("lm_eval_completion") != r["completion"]
                                         for r in items if "completion" in r),
            "items": items,
        }
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not _has_lm_eval(args.lm_eval_python):
        print(f"lm-eval is not installed in this environment ({args.lm_eval_python}).\n"
              f"Install it with:  pip install lm-eval=={LM_EVAL_VERSION}\n"
              "(or point --lm-eval-python at a venv that has it; the pipeline's own evals live in "
              "pipeline_assets/evals/harness.py)", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    from pipeline_assets.evals.config import EvalConfig
    from pipeline_assets.evals.lm_eval_tasks import write_lm_eval_tasks
    from pipeline_assets.model_io import find_model_dir
    from pipeline_assets.profiles import section_config

    model_dir = find_model_dir(args.model_dir).resolve()
    bench_dir = args.bench_dir.resolve()
    out_dir = (args.out_dir or Path(tempfile.mkdtemp(prefix="lm_eval_llmdag-"))).resolve()
    limit = args.limit or None
    max_gen_toks = section_config(EvalConfig, "evals", args.profile).arithmetic_max_new_tokens
    tasks = write_lm_eval_tasks(bench_dir, out_dir / "tasks", limit, chat=args.apply_chat_template,
                                max_gen_toks=max_gen_toks,
                                tokenizer=AutoTokenizer.from_pretrained(model_dir))
    try:
        theirs, lm_eval_s = run_lm_eval(args.lm_eval_python, model_dir, tasks, out_dir, args.device,
                                        args.batch_size, args.apply_chat_template)
    except subprocess.CalledProcessError as exc:
        print(f"lm_eval failed with exit code {exc.returncode}; its log is above", file=sys.stderr)
        return exc.returncode
    ours, ours_s = run_ours(model_dir, bench_dir, tasks["tasks"], limit, args.device, args.batch_size,
                            args.profile, args.apply_chat_template)
    report = compare(ours, theirs)

    print(f"\n| task | n | lm-eval {LM_EVAL_VERSION} | llmdag harness | items graded differently |"
          "\n|---|---|---|---|---|")
    for task, r in report.items():
        gen = "" if task.endswith("_multiple_choice") else f" ({r['completion_mismatches']} completions differ)"
        print(f"| {task} | {r['n']} | {r['lm_eval_accuracy']} | {r['llmdag_accuracy']} | {r['disagreements']}{gen} |")
    print(f"\nwall s: lm-eval {lm_eval_s:.1f} (incl. process start), llmdag {ours_s:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"tasks": report, "lm_eval_s": lm_eval_s, "llmdag_s": ours_s,
                                         "model_dir": str(model_dir), "out_dir": str(out_dir)}, indent=2))
    bad = [t for t, r in report.items() if r["disagreements"] > args.max_disagreements or r["n"] != r["lm_eval_n"]]
    if bad:
        print(f"lm-eval and llmdag disagree on more than {args.max_disagreements} item(s) in: {', '.join(bad)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
