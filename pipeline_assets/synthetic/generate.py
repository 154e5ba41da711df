"""`datasets/synthetic`: a teacher answers grounded prompts, verifiers keep the right answers, rows accumulate.

    python -m pipeline_assets.synthetic.generate --teacher MODEL_DIR --sft-data SFT \
        --benchmarks BENCH --mixture-file a.jsonl --out OUT [--previous PREV_VERSION]

One materialization (a "generation"):
  1. prompts: fresh records from each pool (synthetic/prompts.py) that no real row of the consuming
     training set (the SFT rows models/distilled distils on), no eval item and no earlier generation holds;
  2. the teacher answers each greedily, and prompts whose answer fails its verifier get sampled retries
     (rejection sampling: the first verified answer is kept);
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
    REJECTED_FILE,
    SFT_FILE,
    SFT_VAL_FILE,
    SYNTHETIC_FILE,
    SFTDataConfig,
)
from pipeline_assets.posttrain.sft import load_tokenizer
from pipeline_assets.profiles import section_config
from pipeline_assets.summary import write_summary
from pipeline_assets.synthetic import prompts
from pipeline_assets.synthetic.clean import Decontaminator, NearDuplicates, distinct_n, row_text
from pipeline_assets.synthetic.config import SyntheticDataConfig
from pipeline_assets.synthetic.verify import VERIFIER_OF, verify
from pipeline_assets.tasks.heldout import load_benchmark, normalize_prompt

Log = Callable[[str], None]


def _real_rows(sft_dir: Path) -> list[dict]:
    """The real chat rows of the training sets that read datasets/synthetic (models/distilled distils on the
    SFT prompts): a synthetic row must not repeat one of their prompts or near-duplicate one of them."""
    return read_jsonl(sft_dir / SFT_FILE) + read_jsonl(sft_dir / SFT_VAL_FILE)


def _answer(teacher: Any, tok: Any, asked: list[dict], cfg: SyntheticDataConfig) -> list[tuple[str, bool, int]]:
    """(reply, stopped on eos, sample index) per prompt: greedy first, then sampled retries (rejection
    sampling) for the prompts whose every answer so far failed its verifier; a prompt that never passes
    keeps its greedy answer (its rejection reason is the greedy answer's)."""
    budget = [cfg.long_max_new_tokens if r["kind"] != "arithmetic" else cfg.max_new_tokens for r in asked]
    best: list[tuple[str, bool, int]] = [("", False, 0)] * len(asked)
    todo = list(range(len(asked)))
    for sample in range(cfg.samples_per_prompt):
        passed = set()
        for length in sorted({budget[i] for i in todo}):
            batch = [i for i in todo if budget[i] == length]
            replies = generate_replies(teacher, tok, [asked[i]["prompt"] for i in batch], length,
                                       do_sample=sample > 0, temperature=cfg.temperature)
            for i, (text, stopped) in zip(batch, replies, strict=True):
                ok = stopped and verify(asked[i], text, cfg.docstring_min_f1).accepted
                if sample == 0 or ok:
                    best[i] = (text, stopped, sample)
                if ok:
                    passed.add(i)
        todo = [i for i in todo if i not in passed]
        if not todo:
            break
    return best


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
                            bench_dir: Path, mixture_files: Sequence[Path],
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

    real = _real_rows(Path(sft_dir))
    exclude = {normalize_prompt(r["messages"][0]["content"]) for r in real + earlier + earlier_rejected}
    rng = random.Random(f"{cfg.seed}:synthetic:{generation}")
    held_answers = {r["answer"] for r in load_benchmark(bench_dir, "qa")}
    operand_max, operators = cfg.operand_max or task.operand_max, tuple(cfg.operators or task.operators)
    asked = (prompts.arithmetic_pool(cfg.arithmetic_prompts, operand_max, operators, exclude, rng)
             + prompts.docstring_pool(cfg.docstring_prompts, mixture_files, exclude, held_answers, rng)
             + prompts.code_pool(cfg.code_prompts, operand_max, operators, exclude, rng))
    if not asked:
        raise ValueError(f"generation {generation}: every prompt pool is used up ({len(earlier)} rows accepted "
                         "so far); widen synthetic_data.operand_max or point the teacher at new documents")

    device = set_threads(cfg.device, cfg.num_threads)
    quiet_progress()
    tok = load_tokenizer(teacher_dir, need_generation_markers=False)
    teacher = load_causal_lm(teacher_dir, device).eval()
    t_gen = time.perf_counter()
    replies = _answer(teacher, tok, asked, cfg)
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
    for item, (reply, stopped, sample) in zip(asked, replies, strict=True):
        verdict = verify(item, reply, cfg.docstring_min_f1)
        extra = {k: item[k] for k in ("answer", "reference", "tests") if k in item}
        row = {"id": _row_id(item), "messages": user(item["prompt"]) + assistant(reply), "kind": item["kind"],
               **extra, "verifier": VERIFIER_OF[item["kind"]], "score": verdict.score, "teacher": str(teacher_dir),
               "teacher_version": teacher_version, "generation": generation, "sample": sample,
               "grounding": item["grounding"]}
        # The first failing step names the rejection: format, verifier, eval overlap, then near-duplicates
        # (only rows that pass everything else are registered, so a rejected row never shadows a later one).
        reason = None if stopped else "unterminated"
        reason = reason or (None if verdict.accepted else verdict.reason)
        if reason is None and (overlap := decont(row)):
            reason = f"contaminated_{overlap}"
        if reason is None and (match := dedup.add(row["id"], row_text(row))) is not None:
            reason = "near_duplicate_of_real" if match.startswith("real:") else "near_duplicate"
        (rejected.append({**row, "reason": reason}) if reason else accepted.append(row))
    decont.close()

    all_accepted, all_rejected = earlier + accepted, earlier_rejected + rejected
    write_jsonl(out_dir / SYNTHETIC_FILE, all_accepted)
    write_jsonl(out_dir / REJECTED_FILE, all_rejected)
    texts = [row_text(r) for r in all_accepted]  # arithmetic answers alone are one word: no bigram
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
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "real_rows_compared": len(real),
        "accepted_after_resampling": sum(r["sample"] > 0 for r in accepted),
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
    parser.add_argument("--benchmarks", type=Path, required=True, help="evals/benchmarks version dir")
    parser.add_argument("--mixture-file", type=Path, action="append", default=[],
                        help="a training-mixture JSONL file to ground docstring questions in (repeatable)")
    parser.add_argument("--previous", type=Path, default=None, help="an earlier datasets/synthetic version dir")
    parser.add_argument("--out", type=Path, required=True)
    args, cfg = parse_config_args(parser, SyntheticDataConfig, "synthetic_data", argv)
    # The corpus's dedup/decontamination shape and SFT's task space of the same profile, as the asset reads them.
    return build_synthetic_dataset(args.out, cfg, args.teacher, args.sft_data, args.benchmarks,
                                   args.mixture_file, section_config(CorpusConfig, "corpus", args.profile),
                                   section_config(SFTDataConfig, "sft_data", args.profile), args.previous)


if __name__ == "__main__":
    main()
