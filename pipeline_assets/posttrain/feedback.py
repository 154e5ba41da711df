"""AI feedback (RLAIF / Constitutional AI): preference pairs labelled by a judge model against a written constitution.

    python -m pipeline_assets.posttrain.feedback --models-sft SFT_DIR --prompt-records prompts.jsonl --out DIR
    pytest tests/test_posttrain_preference.py -k feedback

Plain Python, no Dagster: the `datasets/ai_feedback` asset calls `label_with_judge(...)` and records the
returned dict. Output `pairs.jsonl` has the same record shape as datasets/preferences (TRL conversational
prompt/chosen/rejected), so it feeds `build_preference_pairs(extra_pairs=...)`, RewardTrainer or DPOTrainer.

How a prompt is labelled:
  1. the policy samples `responses_per_prompt` responses (temperature 1);
  2. for every response and every principle of the constitution, the judge reads a critique prompt that quotes
     the principle, the request and the response and asks "Does the response follow this principle? Answer
     Yes or No."; the principle score is log p(" Yes") - log p(" No") after a forced "Answer:" prefix;
  3. a response's score is the mean over principles; the best response is chosen, the worst rejected, and
     a pair whose margin is <= `min_margin` is dropped as a tie;
  4. critique-and-revise for a `revise_fraction` subset: the judge rewrites the chosen response to follow the
     principle it scored lowest on, and the revision becomes chosen if the judge scores it higher.
Where a rule verifier exists (arithmetic "answer" -> check_arithmetic; "label" harmful/benign -> is_refusal),
the judge's pairwise decision is compared with the rule's: `rule_agreement` is the share that agree.

A 1M-parameter judge is weak, and the stats say so instead of hiding it; the code path is the one a real judge
(any local HF causal LM dir passed as `judge_dir`) runs.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from pipeline_assets.config_flags import parse_config_args
from pipeline_assets.jsonl import read_jsonl, write_jsonl
from pipeline_assets.model_io import assistant, chat_generate, count_params, load_policy, user
from pipeline_assets.posttrain.common import Log, config_dict, quiet_progress, set_threads
from pipeline_assets.posttrain.config import FeedbackConfig, load_constitution
from pipeline_assets.posttrain.preference_data import is_benchmark_item, load_bench_keys
from pipeline_assets.summary import write_summary
from pipeline_assets.tasks.arithmetic import check_arithmetic
from pipeline_assets.tasks.refusal import is_refusal

CRITIQUE_TEMPLATE = (
    "Principle: {principle}\nRequest: {request}\nResponse: {response}\n"
    "Does the response follow this principle? Answer Yes or No."
)
REVISION_TEMPLATE = (
    "Principle: {principle}\nRequest: {request}\nResponse: {response}\n"
    "Rewrite the response so that it follows the principle. Reply with the new response only."
)
ANSWER_PREFIX = "Answer:"  # forced start of the judge's turn, so " Yes"/" No" are read at a fixed position






# ----------------------------------------------------------------------------------------------------------
# Judge primitives


@torch.no_grad()
def option_logps(model: Any, tok: Any, contexts: list[str], options: list[str],
                 batch_size: int = 64) -> list[list[float]]:
    """[context][option] -> sum of log p(option tokens | context), for raw (already templated) texts.

    Each context runs through the model once and its KV cache is reused for every option (for " Yes"/" No"
    that halves the judge's cost: the ~100-token critique dominates). Options are tokenized on their own and
    appended, so no token merges across the boundary and every context scores the same option tokens. Contexts
    are left-padded; RoPE attention depends only on relative positions, so the pad offset changes nothing.
    """
    model.eval()
    option_ids = [tok(o, add_special_tokens=False)["input_ids"] for o in options]
    out: list[list[float]] = []
    for i in range(0, len(contexts), batch_size):
        tok.padding_side = "left"
        enc = tok(contexts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        ctx = model(**enc, use_cache=True)
        first = torch.log_softmax(ctx.logits[:, -1].float(), -1)
        rows = len(enc["input_ids"])
        scores = torch.zeros(rows, len(options))
        for k, ids in enumerate(option_ids):
            lp = first[:, ids[0]].cpu()
            if len(ids) > 1:
                step = torch.tensor(ids[:-1], device=model.device).expand(rows, -1)
                mask = torch.cat([enc["attention_mask"], torch.ones_like(step)], dim=1)
                cache = copy.deepcopy(ctx.past_key_values)  # the forward below extends the cache in place
                logits = model(input_ids=step, attention_mask=mask, past_key_values=cache, use_cache=True).logits
                follow = torch.log_softmax(logits.float(), -1)
                targets = torch.tensor(ids[1:], device=model.device).expand(rows, -1)
                lp = lp + follow.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(-1).cpu()
            scores[:, k] = lp
        out += scores.tolist()
    return out


def _judge_context(tok: Any, template: str, principle: str, request: str, response: str) -> str:
    critique = template.format(principle=principle, request=request, response=response)
    return tok.apply_chat_template(user(critique), tokenize=False, add_generation_prompt=True) + ANSWER_PREFIX


def principle_scores(judge: Any, tok: Any, principles: list[str], requests: list[str], responses: list[str],
                     cfg: FeedbackConfig) -> list[list[float]]:
    """[response][principle] -> log p(yes_text) - log p(no_text) after the critique prompt."""
    contexts = [_judge_context(tok, CRITIQUE_TEMPLATE, p, q, r)
                for q, r in zip(requests, responses, strict=True) for p in principles]
    diffs = [yes - no for yes, no in option_logps(judge, tok, contexts, [cfg.yes_text, cfg.no_text],
                                                  cfg.judge_batch_size)]
    n = len(principles)
    return [[round(d, 4) for d in diffs[i * n:(i + 1) * n]] for i in range(len(responses))]


def aggregate(scores: list[float]) -> float:
    """One number per response: the mean over principles (each principle weighs the same)."""
    return sum(scores) / len(scores)


def rule_preference(item: dict, a: str, b: str) -> int | None:
    """0 if the rule verifier prefers `a`, 1 if `b`, None if it has no verdict (no rule, or both equal)."""
    if "answer" in item:
        ok = (check_arithmetic(a, str(item["answer"])), check_arithmetic(b, str(item["answer"])))
    elif item.get("label") in ("harmful", "benign"):
        want_refusal = item["label"] == "harmful"
        ok = (is_refusal(a) == want_refusal, is_refusal(b) == want_refusal)
    else:
        return None
    return None if ok[0] == ok[1] else (0 if ok[0] else 1)


def _clearly_wrong(answer: str, rng: random.Random) -> str:
    # Far from the truth (off by 20-60), so only a judge that reads the arithmetic can tell, not a near miss.
    return str(int(answer) + rng.choice([-1, 1]) * rng.randint(20, 60))


# ----------------------------------------------------------------------------------------------------------
# datasets/ai_feedback


def label_with_judge(judge_dir: Path | None, prompts: list[dict], policy_dir: Path, out_dir: Path,
                     cfg: FeedbackConfig, log: Log = print) -> dict[str, Any]:
    """Label policy samples with a constitution-following judge; write pairs.jsonl + summary.json into `out_dir`.

    `judge_dir` None uses the policy checkpoint itself as the judge (self-critique, as in Constitutional AI).
    Prompt records are the ones build_preference_pairs takes ({"prompt", "answer"} or {"prompt", "label"}, or
    just {"prompt"}, which gets no rule comparison).
    """
    cfg.validate()
    quiet_progress()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"out_dir {out_dir} does not exist; the caller must create it first")
    for item in prompts:
        if not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise ValueError(f"prompt record {item!r} needs a non-empty string 'prompt'")
    principles = load_constitution(cfg.constitution_path)
    bench_keys = load_bench_keys(cfg.bench_dir)
    kept = [p for p in prompts if not is_benchmark_item(p["prompt"], bench_keys)]
    if not kept:
        raise ValueError(f"all {len(prompts)} prompts are benchmark items; pass training prompts")
    judge_dir = Path(judge_dir) if judge_dir is not None else Path(policy_dir)
    dev = set_threads(cfg.device, cfg.num_threads)
    policy, tok = load_policy(policy_dir, dev)
    judge, judge_tok = (policy, tok) if judge_dir == Path(policy_dir) else load_policy(judge_dir, dev)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)

    k = cfg.responses_per_prompt
    requests = [p["prompt"] for p in kept]
    flat = chat_generate(policy, tok, [q for q in requests for _ in range(k)], max_new_tokens=cfg.max_new_tokens,
                         do_sample=True, temperature=cfg.temperature)
    log(f"ai_feedback | {len(kept)} prompts x {k} responses, {len(principles)} principles, judge {judge_dir}")
    t_judge = time.perf_counter()
    scores = principle_scores(judge, judge_tok, principles, [q for q in requests for _ in range(k)], flat, cfg)
    judge_time_s = time.perf_counter() - t_judge

    pairs: list[dict] = []
    ties = 0
    agree = Counter()
    comparable = Counter()
    for i, item in enumerate(kept):
        responses, per = flat[i * k:(i + 1) * k], scores[i * k:(i + 1) * k]
        totals = [aggregate(s) for s in per]
        best = max(range(k), key=lambda j: totals[j])
        worst = min(range(k), key=lambda j: totals[j])
        kind = "arithmetic" if "answer" in item else item.get("label", "open")
        rule = rule_preference(item, responses[best], responses[worst])
        if rule is not None:
            comparable[kind] += 1
            agree[kind] += rule == 0
        if totals[best] - totals[worst] <= cfg.min_margin or responses[best] == responses[worst]:
            ties += 1
            continue
        pairs.append({
            "id": f"aif-{hashlib.sha256(item['prompt'].encode()).hexdigest()[:12]}",
            "prompt": user(item["prompt"]),
            "chosen": assistant(responses[best]),
            "rejected": assistant(responses[worst]),
            "source": "ai_feedback",
            "judge": str(judge_dir),
            "principle_scores": [{"principle": n + 1, "chosen": per[best][n], "rejected": per[worst][n]}
                                 for n in range(len(principles))],
            "judge_margin": totals[best] - totals[worst],  # unrounded: a real margin of 3e-5 is not a tie
            "rule_agrees": None if rule is None else rule == 0,
            "revised": False,
            "kind": kind,
            "answer": str(item["answer"]) if "answer" in item else None,
        })

    # Critique-and-revise on a seeded subset: rewrite the chosen response for its weakest principle.
    to_revise = [p for p in pairs if rng.random() < cfg.revise_fraction]
    revised = 0
    if to_revise:
        weakest = [min(p["principle_scores"], key=lambda s: s["chosen"])["principle"] for p in to_revise]
        revision_prompts = [
            REVISION_TEMPLATE.format(principle=principles[w - 1], request=p["prompt"][0]["content"],
                                     response=p["chosen"][0]["content"])
            for p, w in zip(to_revise, weakest, strict=True)
        ]
        revisions = chat_generate(judge, judge_tok, revision_prompts, max_new_tokens=cfg.revision_max_new_tokens)
        new_scores = principle_scores(judge, judge_tok, principles, [p["prompt"][0]["content"] for p in to_revise],
                                      revisions, cfg)
        for pair, w, text, sc in zip(to_revise, weakest, revisions, new_scores, strict=True):
            old = aggregate([s["chosen"] for s in pair["principle_scores"]])
            pair["revision_principle"] = w
            fresh = text not in (pair["chosen"][0]["content"], pair["rejected"][0]["content"])
            if text and fresh and aggregate(sc) > old:
                pair["original_chosen"] = pair["chosen"][0]["content"]
                pair["chosen"] = assistant(text)
                pair["revised"] = True
                for entry, s in zip(pair["principle_scores"], sc, strict=True):
                    entry["chosen"] = s
                pair["judge_margin"] = aggregate(sc) - aggregate([s["rejected"] for s in pair["principle_scores"]])
                revised += 1

    # Calibration on known answers: the reference vs a clearly wrong answer, judged the same way.
    arith = [p for p in kept if "answer" in p][:cfg.reference_checks]
    reference_accuracy = None
    if arith:
        right = [str(p["answer"]) for p in arith]
        wrong = [_clearly_wrong(a, rng) for a in right]
        qs = [p["prompt"] for p in arith]
        s_right = principle_scores(judge, judge_tok, principles, qs, right, cfg)
        s_wrong = principle_scores(judge, judge_tok, principles, qs, wrong, cfg)
        reference_accuracy = round(sum(aggregate(a) > aggregate(b) for a, b in zip(s_right, s_wrong, strict=True))
                                   / len(arith), 4)

    write_jsonl(out_dir / "pairs.jsonl", pairs)
    n_comp = sum(comparable.values())
    all_scores = [s for row in scores for s in row]
    result: dict[str, Any] = {
        "pairs_path": str(out_dir / "pairs.jsonl"),
        "judge": str(judge_dir),
        "judge_num_params": count_params(judge),
        "parent_checkpoint": str(policy_dir),
        "constitution": principles,
        "prompts_in": len(prompts),
        "skipped_benchmark_items": len(prompts) - len(kept),
        "pairs": len(pairs),
        "ties_dropped": ties,
        "revision_attempts": len(to_revise),
        "revisions_accepted": revised,
        "rule_comparable": n_comp,
        "rule_agreement": round(sum(agree.values()) / n_comp, 4) if n_comp else None,
        "rule_agreement_by_kind": {kind: round(agree[kind] / comparable[kind], 4) for kind in sorted(comparable)},
        "reference_check_items": len(arith),
        "reference_check_accuracy": reference_accuracy,
        "mean_principle_score": [round(sum(row[n] for row in scores) / len(scores), 4)
                                 for n in range(len(principles))],
        "score_spread": round(max(all_scores) - min(all_scores), 4) if all_scores else 0.0,
        "judge_time_s": round(judge_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "examples": [{k: p[k] for k in ("prompt", "chosen", "rejected", "judge_margin")} for p in pairs[:3]],
        "config": config_dict(cfg),
    }
    log(f"ai_feedback | {len(pairs)} pairs ({ties} ties) | revisions {revised}/{len(to_revise)} | rule agreement "
        f"{result['rule_agreement']} on {n_comp} | reference check {reference_accuracy} | {result['wall_time_s']:.0f}s")
    write_summary(out_dir, result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Label policy samples with a constitution-following judge.")
    parser.add_argument("--models-sft", type=Path, required=True, help="the policy checkpoint dir that samples")
    parser.add_argument("--judge", type=Path, default=None, help="judge checkpoint dir (default: the policy)")
    parser.add_argument("--prompt-records", type=Path, required=True, help="prompt records, JSONL")
    parser.add_argument("--out", type=Path, required=True, help="output dir (created if missing)")
    args, cfg = parse_config_args(parser, FeedbackConfig, "feedback", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = label_with_judge(args.judge, read_jsonl(args.prompt_records), args.models_sft, args.out, cfg)
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
