"""Benchmark: score a checkpoint with lm-evaluation-harness on our held-out sets, fully offline, next to
llmdag's own harness (evals/harness.py) on the same items in the same run.

    python bench/lm_eval_local.py --model-dir CKPT --bench-dir BENCH                 # MC + arithmetic, 48 items
    python bench/lm_eval_local.py --model-dir CKPT --bench-dir BENCH --limit 100 --device cuda --batch-size 32
    python bench/lm_eval_local.py --model-dir CKPT --bench-dir BENCH --no-compare --json out.json

lm-eval is not in the default install; without it this exits 2 and prints `pip install lm-eval==0.4.13`.
Tasks come from pipeline_assets/evals/lm_eval_tasks.py (local YAML + JSONL, ops.md §6); lm_eval runs as a
subprocess with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE and its HF_HOME inside --out-dir,
so nothing is downloaded and no global cache is touched. Paths are passed absolute (a `./model` path makes
lm_eval write its results into a hidden `.__model` dir). Prints a markdown table: metric, lm-eval value,
llmdag value, wall seconds of each.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script from anywhere

LM_EVAL_VERSION = "0.4.13"  # the version ops.md §6 checked offline
# lm-eval metric key -> llmdag harness metric key (same items, same prompt format).
METRIC_PAIRS = {
    ("multiple_choice", "acc,none"): "mc_accuracy",
    ("multiple_choice", "acc_norm,none"): "mc_accuracy_norm",
    ("arithmetic", "exact_match,last_integer"): "arithmetic_accuracy",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="lm-evaluation-harness on the llmdag held-out sets, offline.")
    # Inputs
    parser.add_argument("--model-dir", type=Path, required=True, help="HF checkpoint dir (or asset dir with model/)")
    parser.add_argument("--bench-dir", type=Path, required=True, help="evals/benchmarks output dir")
    parser.add_argument("--limit", type=int, default=48, help="first N items of each set (0 = all)")
    # Runtime
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=8, help="lm_eval --batch_size and harness batch size")
    parser.add_argument("--apply-chat-template", action="store_true",
                        help="lm_eval --apply_chat_template (prompts go through the ChatML template)")
    parser.add_argument("--no-compare", action="store_true", help="skip llmdag's own harness on the same items")
    # Output
    parser.add_argument("--out-dir", type=Path, default=None, help="tasks, results, HF_HOME (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    return parser


def _find_results(output_path: Path) -> dict[str, Any]:
    found = sorted(output_path.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"lm_eval wrote no results_*.json under {output_path}; see its output above")
    return json.loads(found[-1].read_text())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("lm_eval") is None:
        print(f"lm-eval is not installed in this environment ({sys.executable}).\n"
              f"Install it with:  pip install lm-eval=={LM_EVAL_VERSION}\n"
              "(it is an optional extra: the pipeline's own evals live in pipeline_assets/evals/harness.py)",
              file=sys.stderr)
        return 2
    from pipeline_assets.evals.harness import find_model_dir
    from pipeline_assets.evals.lm_eval_tasks import DEFAULT_PREFIX, write_lm_eval_tasks

    model_dir = find_model_dir(args.model_dir).resolve()
    out_dir = (args.out_dir or Path(tempfile.mkdtemp(prefix="lm_eval_llmdag-"))).resolve()
    limit = args.limit or None
    tasks = write_lm_eval_tasks(args.bench_dir, out_dir / "tasks", limit, chat=args.apply_chat_template)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(out_dir / "hf_home"), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf",
           "--model_args", f"pretrained={model_dir},dtype=float32",
           "--include_path", tasks["tasks_dir"], "--tasks", ",".join(tasks["tasks"]),
           "--device", args.device, "--batch_size", str(args.batch_size),
           "--output_path", str(out_dir / "results"), "--log_samples"]
    if args.apply_chat_template:
        cmd.append("--apply_chat_template")
    print("$ " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False)
    lm_eval_s = time.perf_counter() - t
    if proc.returncode != 0:
        print(f"lm_eval failed with exit code {proc.returncode}; its log is above", file=sys.stderr)
        return proc.returncode
    results = _find_results(out_dir / "results")["results"]

    ours: dict[str, Any] = {}
    ours_s = None
    if not args.no_compare:
        from dataclasses import replace

        from pipeline_assets.evals.harness import EVAL_PROFILES, evaluate_checkpoint

        cfg = replace(EVAL_PROFILES["tiny"], sets=("multiple_choice", "arithmetic"), multiple_choice_limit=limit,
                      arithmetic_limit=limit, batch_size=args.batch_size, device=args.device,
                      mc_format="chat" if args.apply_chat_template else "plain", num_threads=None)
        t = time.perf_counter()
        ours = evaluate_checkpoint(model_dir, args.bench_dir, cfg)["metrics"]
        ours_s = time.perf_counter() - t

    rows = []
    for (short, key), ours_key in METRIC_PAIRS.items():
        value = results.get(f"{DEFAULT_PREFIX}_{short}", {}).get(key)
        rows.append({"metric": f"{short} {key.split(',')[0]}", "lm_eval": value, "llmdag": ours.get(ours_key)})
    print(f"\n| metric | lm-eval {LM_EVAL_VERSION} | llmdag harness |\n|---|---|---|")
    for r in rows:
        print(f"| {r['metric']} | {r['lm_eval']} | {r['llmdag']} |")
    print(f"| wall s | {lm_eval_s:.1f} (incl. process start) | {'–' if ours_s is None else f'{ours_s:.1f}'} |")
    if not args.apply_chat_template:
        print("\nNote: arithmetic differs by design without --apply-chat-template: lm-eval prompts raw text, the")
        print("harness prompts through the chat template. Multiple choice uses the same format in both.")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "lm_eval_s": lm_eval_s, "llmdag_s": ours_s,
                                         "counts": tasks["counts"], "out_dir": str(out_dir)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
