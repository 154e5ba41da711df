"""`datasets/preferences`: on-policy preference pairs judged by verifiers and rules, and the pair files.

    python -m pipeline_assets.posttrain.preference_data --models-sft SFT_DIR --prompt-records prompts.jsonl --out PAIRS

Plain Python, no Dagster: the `datasets/preferences` asset calls `build_preference_pairs` and records the
returned dict; it writes train.jsonl + test.jsonl (TRL conversational pairs) and summary.json.

Prompt records (one dict each; JSONL on the CLI):
    {"prompt": "What is 12 + 7?", "answer": "19"}                 verifiable: judged by check_arithmetic
    {"prompt": "How do I hotwire a car?", "label": "harmful"}      judged by is_refusal: refusal is chosen
    {"prompt": "How do I kill a stuck process?", "label": "benign", "response": "Run `kill PID`."}
                                                                   judged by is_refusal: helpful is chosen
Pair records: {"id", "prompt": [user msg], "chosen": [assistant msg], "rejected": [assistant msg], "source",
"chosen_origin", "rejected_origin", "kind", "answer"}. `source` says how the pair was judged
(PAIR_SOURCES, or "ai_feedback" for pairs from feedback.py); the trainers only read prompt/chosen/rejected
(`load_pairs` + `pair_dataset`, used by reward.py and dpo.py).

Held-out: every prompt is assigned to train or held-out by a hash of its normalized text (`is_test_prompt`),
so pairs, RM eval and RLHF eval agree on the split whatever the seed. Benchmark items never enter: arithmetic
prompts whose (a, op, b) `is_heldout_arithmetic`, and, when `bench_dir` is set, any prompt in `heldout_keys`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from pipeline_assets.config_flags import parse_config_args
from pipeline_assets.jsonl import read_jsonl, write_jsonl
from pipeline_assets.model_io import assistant, chat_generate, fixed_samples, load_policy, user
from pipeline_assets.posttrain.common import Log, config_dict, quiet_progress, set_threads
from pipeline_assets.posttrain.config import PreferenceDataConfig
from pipeline_assets.posttrain.human_preferences import SOURCE as HUMAN_SOURCE
from pipeline_assets.summary import write_summary
from pipeline_assets.tasks.arithmetic import check_arithmetic, is_heldout_arithmetic
from pipeline_assets.tasks.heldout import heldout_keys, normalize_prompt
from pipeline_assets.tasks.refusal import is_refusal

PAIR_SOURCES = ("arithmetic_verifier", "refusal_rule")


def is_test_prompt(prompt: str, fraction: float) -> bool:
    """Deterministic train/held-out split of preference prompts by a hash of the normalized prompt."""
    digest = hashlib.sha256(f"llmdag-preference-split:{normalize_prompt(prompt)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def is_test_record(item: dict, fraction: float) -> bool:
    """A prompt record's own ``test`` flag when it has one (e.g. "SFT never saw it"), else the hash split."""
    if "test" in item:
        return bool(item["test"])
    return is_test_prompt(item["prompt"], fraction)


_EXPR = re.compile(r"(-?\d+)\s*([+\-])\s*(-?\d+)")


def is_benchmark_item(prompt: str, bench_keys: set[str]) -> bool:
    """True if `prompt` is (or phrases) an evals/benchmarks item that training data must never contain."""
    if normalize_prompt(prompt) in bench_keys:
        return True
    match = _EXPR.search(prompt)
    return bool(match) and is_heldout_arithmetic(int(match[1]), match[2], int(match[3]))


def load_bench_keys(bench_dir: str | None) -> set[str]:
    if bench_dir is None:
        return set()
    return set().union(*heldout_keys(Path(bench_dir)).values())


def load_pairs(pairs_dir: Path) -> tuple[list[dict], list[dict]]:
    pairs_dir = Path(pairs_dir)
    hint = "materialize datasets/preferences (build_preference_pairs) first"
    if not (pairs_dir / "train.jsonl").is_file():
        raise FileNotFoundError(f"no train.jsonl in {pairs_dir}; {hint}")
    train, test = read_jsonl(pairs_dir / "train.jsonl"), read_jsonl(pairs_dir / "test.jsonl")
    if not train or not test:
        raise ValueError(f"{pairs_dir} has {len(train)} train and {len(test)} held-out pairs; both must be "
                         f"non-empty: pass more prompts or raise test_fraction")
    return train, test


def pair_dataset(rows: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])


def _prompt_kind(item: dict) -> str:
    if not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
        raise ValueError(f"prompt record {item!r} needs a non-empty string 'prompt'")
    if "answer" in item:
        if not re.fullmatch(r"-?\d+", str(item["answer"]).strip()):
            raise ValueError(f"prompt record {item!r}: 'answer' must be an integer (graded by check_arithmetic)")
        return "arithmetic"
    if item.get("label") in ("harmful", "benign"):
        return item["label"]
    raise ValueError(f"prompt record {item!r} needs an 'answer' (verifiable) or a 'label' of 'harmful'/'benign'")


def _perturb(answer: str, rng: random.Random) -> str:
    # Off by 1..9, the size of error a model that has the format but not the carry makes.
    return str(int(answer) + rng.choice([-1, 1]) * rng.randint(1, 9))


def _judge(kind: str, item: dict, samples: list[str], cfg: PreferenceDataConfig,
           rng: random.Random) -> tuple[str, str, str, str, str] | None:
    """(chosen, rejected, source, chosen_origin, rejected_origin) for one prompt, or None if no pair."""
    if kind == "arithmetic":
        answer = str(item["answer"])
        right = [s for s in samples if check_arithmetic(s, answer)]
        wrong = [s for s in samples if s and not check_arithmetic(s, answer)]
        chosen, c_origin = (right[0], "policy_sample") if right else (answer, "reference")
        rejected, r_origin = (wrong[0], "policy_sample") if wrong else (_perturb(answer, rng), "perturbed")
        return chosen, rejected, "arithmetic_verifier", c_origin, r_origin
    refusals = [s for s in samples if is_refusal(s)]
    complies = [s for s in samples if s and not is_refusal(s)]
    if kind == "harmful":
        chosen, c_origin = (refusals[0], "policy_sample") if refusals else (cfg.refusal_text, "template")
        rejected, r_origin = (complies[0], "policy_sample") if complies else (cfg.compliance_text, "template")
    else:  # benign look-alike: a helpful answer beats a needless refusal
        if item.get("response"):
            chosen, c_origin = item["response"], "reference"
        elif complies:
            chosen, c_origin = complies[0], "policy_sample"
        else:
            return None
        rejected, r_origin = (refusals[0], "policy_sample") if refusals else (cfg.refusal_text, "template")
    return chosen, rejected, "refusal_rule", c_origin, r_origin


def build_preference_pairs(policy_dir: Path, prompts: list[dict], out_dir: Path, cfg: PreferenceDataConfig,
                           extra_pairs: list[dict] | None = None, log: Log = print) -> dict[str, Any]:
    """Sample the policy `cfg.samples_per_prompt` times per prompt, judge the samples by rule, and write
    train.jsonl / test.jsonl / summary.json into the existing `out_dir`.

    Arithmetic: chosen = a verified-correct sample (the reference answer if none), rejected = the policy's
    own wrong sample (a +-1..9 perturbation if every sample was right). Harmful: a refusal beats a compliance;
    benign look-alike: a helpful answer (the record's "response", else a non-refusing sample) beats a needless
    refusal. `extra_pairs` (e.g. datasets/ai_feedback) are appended after the same benchmark filter and split.
    """
    cfg.validate()
    quiet_progress()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"out_dir {out_dir} does not exist; the caller must create it first")
    if not prompts:
        raise ValueError("build_preference_pairs got no prompts; pass arithmetic and/or safety prompt records")
    kinds = [_prompt_kind(p) for p in prompts]
    bench_keys = load_bench_keys(cfg.bench_dir)
    kept = [(p, k) for p, k in zip(prompts, kinds, strict=True) if not is_benchmark_item(p["prompt"], bench_keys)]
    skipped_benchmark = len(prompts) - len(kept)

    dev = set_threads(cfg.device, cfg.num_threads)
    model, tok = load_policy(policy_dir, dev)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    k = cfg.samples_per_prompt
    log(f"preferences | sampling {k} x {len(kept)} prompts from {policy_dir} "
        f"(skipped {skipped_benchmark} benchmark items)")
    t_sample = time.perf_counter()
    flat = chat_generate(model, tok, [p["prompt"] for p, _ in kept for _ in range(k)],
                         max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
                         batch_size=cfg.sample_batch_size)
    sample_time_s = time.perf_counter() - t_sample

    train: list[dict] = []
    test: list[dict] = []
    no_pair = 0
    sample_correct = sample_total = 0
    for i, (item, kind) in enumerate(kept):
        samples = flat[i * k:(i + 1) * k]
        if kind == "arithmetic":
            sample_correct += sum(check_arithmetic(s, str(item["answer"])) for s in samples)
            sample_total += k
        judged = _judge(kind, item, samples, cfg, rng)
        if judged is None:
            no_pair += 1
            continue
        chosen, rejected, source, c_origin, r_origin = judged
        record = {
            "id": f"pref-{hashlib.sha256(item['prompt'].encode()).hexdigest()[:12]}",
            "prompt": user(item["prompt"]), "chosen": assistant(chosen), "rejected": assistant(rejected),
            "source": source, "chosen_origin": c_origin, "rejected_origin": r_origin, "kind": kind,
            "answer": str(item["answer"]) if kind == "arithmetic" else None,
        }
        (test if is_test_record(item, cfg.test_fraction) else train).append(record)

    extra_used = extra_skipped = 0
    for pair in extra_pairs or []:
        for key in ("prompt", "chosen", "rejected"):
            if not (isinstance(pair.get(key), list) and pair[key] and "content" in pair[key][-1]):
                raise ValueError(f"extra pair {pair.get('id', pair)!r}: '{key}' must be a list of chat messages")
        text = pair["prompt"][-1]["content"]
        if is_benchmark_item(text, bench_keys):
            extra_skipped += 1
            continue
        record = {"source": "extra", "chosen_origin": None, "rejected_origin": None, "kind": "extra",
                  "answer": None, **pair}
        record.setdefault("id", f"extra-{hashlib.sha256(text.encode()).hexdigest()[:12]}")
        (test if is_test_record({**pair, "prompt": text}, cfg.test_fraction) else train).append(record)
        extra_used += 1
    rng.shuffle(train)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "test.jsonl", test)

    all_pairs = train + test
    arith = [p for p in all_pairs if p["source"] == "arithmetic_verifier"]
    result: dict[str, Any] = {
        "pairs_dir": str(out_dir),
        "parent_checkpoint": str(policy_dir),
        "prompts_in": len(prompts),
        "skipped_benchmark_items": skipped_benchmark + extra_skipped,
        "prompts_without_pair": no_pair,
        "train_pairs": len(train),
        "test_pairs": len(test),
        "extra_pairs": extra_used,
        # datasets/human_preferences' arena pairs: their number and share of the rows the reward model and DPO
        # train on.
        "human_pairs": sum(p["source"] == HUMAN_SOURCE for p in all_pairs),
        "human_train_share": round(sum(p["source"] == HUMAN_SOURCE for p in train) / max(len(train), 1), 4),
        "pairs_by_source": dict(Counter(p["source"] for p in all_pairs)),
        "chosen_origin": dict(Counter(str(p["chosen_origin"]) for p in all_pairs)),
        "rejected_origin": dict(Counter(str(p["rejected_origin"]) for p in all_pairs)),
        # The share of arithmetic rejecteds that are the policy's own mistakes: what makes the pairs on-policy.
        "own_rejected_fraction": round(sum(p["rejected_origin"] == "policy_sample" for p in arith)
                                       / max(len(arith), 1), 4),
        "policy_sample_accuracy": round(sample_correct / max(sample_total, 1), 4),
        "sample_time_s": round(sample_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "examples": [{k: p[k] for k in ("prompt", "chosen", "rejected", "source")} for p in all_pairs[:3]],
        "samples": fixed_samples(model, tok),
        "config": config_dict(cfg),
    }
    log(f"preferences | {len(train)} train + {len(test)} held-out pairs {result['pairs_by_source']} | "
        f"own rejected {result['own_rejected_fraction']:.2f} | sample acc {result['policy_sample_accuracy']:.3f} | "
        f"{result['wall_time_s']:.0f}s")
    write_summary(out_dir, result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="llmdag datasets/preferences: on-policy pairs judged by rule.")
    parser.add_argument("--models-sft", type=Path, required=True, help="the policy checkpoint dir to sample from")
    parser.add_argument("--prompt-records", type=Path, required=True, help="prompt records, JSONL")
    parser.add_argument("--out", type=Path, required=True, help="output dir (created if missing)")
    args, cfg = parse_config_args(parser, PreferenceDataConfig, "preference_data", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = build_preference_pairs(args.models_sft, read_jsonl(args.prompt_records), args.out, cfg)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("history")}, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
