"""`datasets/synthetic`: a teacher answers grounded prompts, verifiers keep the right answers, rows accumulate.

    python -m pipeline_assets.synthetic.generate --teacher MODEL_DIR --sft-data SFT --reasoning REASONING \
        --benchmarks BENCH --mixture-file a.jsonl --out OUT [--previous PREV_VERSION]

One materialization (a "generation"):
  1. prompts: fresh records from each pool (synthetic/prompts.py) that no real training row, no held-out
     preference prompt, no eval item and no earlier generation holds;
  2. the teacher answers each greedily (its answers ARE the data; sampling would add wrong answers for the
     verifier to throw away);
  3. each answer is verified (synthetic/verify.py), then decontaminated against evals/benchmarks and
     near-deduplicated against the real rows and every row accepted so far (synthetic/clean.py);
  4. written: ``synthetic.jsonl`` = the earlier generations' accepted rows + this one's (accumulate, never
     replace: Gerstgrasser et al. 2024, and synthetic/collapse.py here), ``rejected.jsonl`` likewise with
     the reason of each. Rows are TRL ``messages`` plus what re-verifies them and where they came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline_assets.config_flags import parse_config_args
from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.jsonl import read_jsonl, write_jsonl
from pipeline_assets.model_io import assistant, generate_replies, load_causal_lm, user
from pipeline_assets.posttrain.common import quiet_progress, set_threads
from pipeline_assets.posttrain.data import (
    REASONING_FILE,
    REJECTED_FILE,
    SFT_FILE,
    SFT_VAL_FILE,
    SYNTHETIC_FILE,
    SFTDataConfig,
    unseen_arithmetic,
)
from pipeline_assets.posttrain.sft import load_tokenizer
from pipeline_assets.summary import write_summary
from pipeline_assets.synthetic import prompts
from pipeline_assets.synthetic.clean import Decontaminator, NearDuplicates, distinct_n, row_text
from pipeline_assets.synthetic.config import SyntheticDataConfig
from pipeline_assets.synthetic.verify import VERIFIER_OF, verify
from pipeline_assets.tasks.heldout import load_benchmark, normalize_prompt

Log = Callable[[str], None]


def _real_rows(sft_dir: Path, reasoning_dir: Path, task: SFTDataConfig) -> tuple[list[dict], set[str]]:
    """The lineage's real chat rows (SFT) and every prompt real data uses: SFT's, GRPO's, and the preference
    stages' held-out prompts (the SFT task space's problems no SFT row used)."""
    rows = read_jsonl(sft_dir / SFT_FILE) + read_jsonl(sft_dir / SFT_VAL_FILE)
    used = {r["messages"][0]["content"] for r in rows}
    used |= {r["prompt"][-1]["content"] for r in read_jsonl(reasoning_dir / REASONING_FILE)}
    used |= {p["prompt"] for p in unseen_arithmetic(used, task.operand_max, task.operators)}
    return rows, {normalize_prompt(p) for p in used}


def _row_id(item: dict) -> str:
    return "syn-" + hashlib.sha256(f"{item['kind']}:{item['prompt']}".encode()).hexdigest()[:12]


def _acceptance(asked: Sequence[dict], accepted: Sequence[dict]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind, verifier in VERIFIER_OF.items():
        n = sum(r["kind"] == kind for r in asked)
        k = sum(r["kind"] == kind for r in accepted)
        if n:
            out[verifier] = {"asked": n, "accepted": k, "rate": round(k / n, 4)}
    return out


def build_synthetic_dataset(out_dir: Path, cfg: SyntheticDataConfig, teacher_dir: Path, sft_dir: Path,
                            reasoning_dir: Path, bench_dir: Path, mixture_files: Sequence[Path],
                            corpus: CorpusConfig, task: SFTDataConfig, previous_dir: Path | None = None,
                            log: Log = print) -> dict[str, Any]:
    """Write one generation of synthetic rows (plus every earlier generation's) into ``out_dir``."""
    cfg.validate()
    t_start = time.perf_counter()
    out_dir, teacher_dir = Path(out_dir), Path(teacher_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = read_jsonl(previous_dir / SYNTHETIC_FILE) if previous_dir else []
    earlier_rejected = read_jsonl(previous_dir / REJECTED_FILE) if previous_dir else []
    generation = 1 + max((r["generation"] for r in earlier + earlier_rejected), default=0)

    real, exclude = _real_rows(Path(sft_dir), Path(reasoning_dir), task)
    exclude |= {normalize_prompt(r["messages"][0]["content"]) for r in earlier + earlier_rejected}
    rng = random.Random(f"{cfg.seed}:synthetic:{generation}")
    held_answers = {r["answer"] for r in load_benchmark(bench_dir, "qa")}
    asked = (prompts.arithmetic_pool(cfg.arithmetic_prompts, cfg.operand_max, cfg.operators, exclude, rng)
             + prompts.docstring_pool(cfg.docstring_prompts, mixture_files, exclude, held_answers, rng)
             + prompts.code_pool(cfg.code_prompts, cfg.operand_max, cfg.operators, exclude, rng))
    if not asked:
        raise ValueError(f"generation {generation}: every prompt pool is used up ({len(earlier)} rows accepted "
                         "so far); widen synthetic_data.operand_max or point the teacher at new documents")

    device = set_threads(cfg.device, cfg.num_threads)
    quiet_progress()
    tok = load_tokenizer(teacher_dir, need_generation_markers=False)
    teacher = load_causal_lm(teacher_dir, device).eval()
    t_gen = time.perf_counter()
    replies: list[tuple[str, bool]] = []
    for long in (False, True):  # arithmetic answers get a short budget, the rest a long one
        batch = [r["prompt"] for r in asked if (r["kind"] != "arithmetic") == long]
        replies += generate_replies(teacher, tok, batch, cfg.long_max_new_tokens if long else cfg.max_new_tokens)
    asked = [r for long in (False, True) for r in asked if (r["kind"] != "arithmetic") == long]
    gen_time = time.perf_counter() - t_gen
    log(f"synthetic | generation {generation}: teacher answered {len(asked)} prompts in {gen_time:.1f}s")

    decont = Decontaminator(bench_dir, corpus)
    dedup = NearDuplicates(corpus, cfg.dedup_ngrams)
    for i, row in enumerate(real):
        dedup.add(f"real:{i}", row_text(row))
    for row in earlier:
        dedup.add(row["id"], row_text(row))
    teacher_version = teacher_dir.name
    accepted, rejected = [], []
    for item, (reply, stopped) in zip(asked, replies, strict=True):
        verdict = verify(item, reply, cfg.docstring_min_f1)
        extra = {k: item[k] for k in ("answer", "reference", "tests") if k in item}
        row = {"id": _row_id(item), "messages": user(item["prompt"]) + assistant(reply), "kind": item["kind"],
               **extra, "verifier": VERIFIER_OF[item["kind"]], "score": verdict.score, "teacher": str(teacher_dir),
               "teacher_version": teacher_version, "generation": generation, "grounding": item["grounding"]}
        reason = None if stopped else "unterminated"
        reason = reason or (None if verdict.accepted else verdict.reason)
        reason = reason or (f"contaminated_{task}" if (task := decont(row)) else None)
        if reason is None and (match := dedup.add(row["id"], row_text(row))) is not None:
            reason = "near_duplicate_of_real" if match.startswith("real:") else "near_duplicate"
        (rejected.append({**row, "reason": reason}) if reason else accepted.append(row))
    decont.close()

    all_accepted, all_rejected = earlier + accepted, earlier_rejected + rejected
    write_jsonl(out_dir / SYNTHETIC_FILE, all_accepted)
    write_jsonl(out_dir / REJECTED_FILE, all_rejected)
    answers = [r["messages"][-1]["content"] for r in all_accepted]
    result: dict[str, Any] = {
        "generation": generation,
        "teacher": str(teacher_dir),
        "teacher_version": teacher_version,
        "accumulated_from": str(previous_dir) if previous_dir else None,
        "rows": len(all_accepted),
        "rejected_rows": len(all_rejected),
        "new_rows": len(accepted),
        "asked": len(asked),
        "acceptance_rate": round(len(accepted) / len(asked), 4),
        "acceptance_by_verifier": _acceptance(asked, accepted),
        "acceptance_by_verifier_all": _acceptance(all_accepted + all_rejected, all_accepted),
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejected)),
        "rejected_by_reason_all": dict(Counter(r["reason"] for r in all_rejected)),
        "rows_by_generation": dict(sorted(Counter(str(r["generation"]) for r in all_accepted).items())),
        "rows_by_kind": dict(Counter(r["kind"] for r in all_accepted)),
        "distinct_1": distinct_n(answers, 1),
        "distinct_2": distinct_n(answers, 2),
        "real_rows_compared": len(real),
        "generation_time_s": round(gen_time, 2),
        "samples": [{"prompt": r["messages"][0]["content"], "completion": r["messages"][-1]["content"],
                     "reason": r.get("reason", "accepted")} for r in (accepted[:4] + rejected[:4])],
        "config": asdict(cfg),
    }
    result["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    write_summary(out_dir, result)
    log(f"synthetic | generation {generation}: accepted {len(accepted)}/{len(asked)} "
        f"{json.dumps(result['acceptance_by_verifier'])} | rejected {result['rejected_by_reason']} | "
        f"{len(all_accepted)} rows in all")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher checkpoint dir")
    parser.add_argument("--sft-data", type=Path, required=True, help="datasets/sft version dir (the real rows)")
    parser.add_argument("--reasoning", type=Path, required=True, help="datasets/reasoning version dir")
    parser.add_argument("--benchmarks", type=Path, required=True, help="evals/benchmarks version dir")
    parser.add_argument("--mixture-file", type=Path, action="append", default=[],
                        help="a training-mixture JSONL file to ground docstring questions in (repeatable)")
    parser.add_argument("--previous", type=Path, default=None, help="an earlier datasets/synthetic version dir")
    parser.add_argument("--out", type=Path, required=True)
    args, cfg = parse_config_args(parser, SyntheticDataConfig, "synthetic_data", argv)
    return build_synthetic_dataset(args.out, cfg, args.teacher, args.sft_data, args.reasoning, args.benchmarks,
                                   args.mixture_file, CorpusConfig(), SFTDataConfig(), args.previous)


if __name__ == "__main__":
    main()
