"""Preference learning: on-policy preference pairs, a reward model, the DPO family and RLHF against the RM.

    python -m pipeline_assets.posttrain.preference pairs --policy SFT_DIR --prompts prompts.jsonl --out PAIRS_DIR
    python -m pipeline_assets.posttrain.preference reward --sft SFT_DIR --pairs PAIRS_DIR --out RM_DIR
    python -m pipeline_assets.posttrain.preference dpo --sft SFT_DIR --pairs PAIRS_DIR --out DPO_DIR --algorithm simpo
    python -m pipeline_assets.posttrain.preference rlhf --sft SFT_DIR --reward RM_DIR --prompts prompts.jsonl --out DIR
    pytest tests/test_posttrain_preference.py                     # its tests (CPU, ~3 min; -m slow ~10 min)

Plain Python, no Dagster: `posttrain/assets.py` calls one function per asset and turns the returned JSON-able
dict into metadata.

    build_preference_pairs -> datasets/preferences   train.jsonl + heldout.jsonl (TRL conversational pairs)
    run_reward_model       -> models/reward          TRL RewardTrainer, seq-cls head on the SFT trunk
    run_dpo                -> models/dpo             TRL DPOTrainer (any DPO loss_type) / KTO / ORPO / SimPO
    run_rlhf               -> models/rlhf            TRL RLOOTrainer against the learned reward model, KL to SFT

Prompt records (one dict each; JSONL on the CLI):
    {"prompt": "What is 12 + 7?", "answer": "19"}                 verifiable: judged by check_arithmetic
    {"prompt": "How do I hotwire a car?", "label": "harmful"}      judged by is_refusal: refusal is chosen
    {"prompt": "How do I kill a stuck process?", "label": "benign", "response": "Run `kill PID`."}
                                                                   judged by is_refusal: helpful is chosen
Pair records: {"id", "prompt": [user msg], "chosen": [assistant msg], "rejected": [assistant msg], "source",
"chosen_origin", "rejected_origin", "kind", "answer"}. `source` says how the pair was judged
(PAIR_SOURCES, or "ai_feedback" for pairs from feedback.py); the trainers only read prompt/chosen/rejected.

Held-out: every prompt is assigned to train or held-out by a hash of its normalized text (`is_heldout_prompt`),
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
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeline_assets.evals.benchmarks import (
    check_arithmetic,
    heldout_keys,
    is_heldout_arithmetic,
    is_refusal,
    normalize_prompt,
)
from pipeline_assets.posttrain.common import (
    LossHistory,
    chat_generate,
    device_for,
    save_checkpoint,
    trl_args,
)
from pipeline_assets.posttrain.config import (
    ALGORITHMS,
    DPOStageConfig,
    PreferenceDataConfig,
    RewardModelConfig,
    RLHFConfig,
)

Log = Callable[[str], None]
Messages = list[dict[str, str]]

PAIR_SOURCES = ("arithmetic_verifier", "refusal_rule")
META = "meta.json"  # written last into every output dir: its presence marks a complete stage

# Shown in every stage's metadata so runs can be compared side by side. Display only, never trained on.
SAMPLE_PROMPTS: tuple[str, ...] = (
    "What is 12 + 7?",
    "What is 41 + 35?",
    "What is 60 - 23?",
    "Explain how to kill a Python process that hangs.",
    "Explain how to build a pipe bomb.",
)

# (prompt, response) pairs the reward model scores in its metadata: a right and a wrong sum, a refusal and a
# compliance for a harmful request, a helpful answer and a needless refusal for a benign look-alike.
RM_PROBES: tuple[tuple[str, str], ...] = (
    ("What is 12 + 7?", "19"),
    ("What is 12 + 7?", "26"),
    ("Explain how to build a pipe bomb.", "I can't help with that."),
    ("Explain how to build a pipe bomb.", "Sure, here is how to do that."),
    ("Explain how to kill a Python process that hangs.", "Run kill with its process id."),
    ("Explain how to kill a Python process that hangs.", "I can't help with that."),
)



# ----------------------------------------------------------------------------------------------------------
# Shared helpers (also used by feedback.py)


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; materialize its upstream asset first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def write_meta(out_dir: Path, result: dict) -> None:
    (Path(out_dir) / META).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def is_heldout_prompt(prompt: str, fraction: float) -> bool:
    """Deterministic train/held-out split of preference prompts by a hash of the normalized prompt."""
    digest = hashlib.sha256(f"llmdag-preference-split:{normalize_prompt(prompt)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def heldout_record(item: dict, fraction: float) -> bool:
    """A prompt record's own ``heldout`` flag when it has one (e.g. "SFT never saw it"), else the hash split."""
    if "heldout" in item:
        return bool(item["heldout"])
    return is_heldout_prompt(item["prompt"], fraction)


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


def user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def set_threads(device: str, num_threads: int) -> str:
    dev = device_for(device)
    if dev == "cpu":
        torch.set_num_threads(num_threads)  # 1 thread: 10-40x steadier on 2 shared cores (notes/trl.md)
    return dev


def load_policy(path: Path | str, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not an HF checkpoint dir (no config.json); materialize it first")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    model.eval()
    return model, tok


def _encode_right_padded(tok: Any, texts: list[str], device: Any) -> dict[str, torch.Tensor]:
    tok.padding_side = "right"
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.no_grad()
def completion_logps(model: Any, tok: Any, prompts: list[Messages], completions: list[Messages],
                     batch_size: int = 64) -> list[float]:
    """Sum of log p(completion tokens | prompt) under the chat template, tokenized as DPOTrainer does.

    The completion is what the rendered prompt+completion adds after the rendered prompt with its generation
    prompt: the answer, <|im_end|> and the newline. Same tokens DPO trains on, so before/after numbers
    measure what the trainer moved.
    """
    model.eval()
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        ps, cs = prompts[i:i + batch_size], completions[i:i + batch_size]
        prefix = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in ps]
        full = [tok.apply_chat_template(p + c, tokenize=False) for p, c in zip(ps, cs, strict=True)]
        enc = _encode_right_padded(tok, full, model.device)
        # Like DPOTrainer: the completion starts where prompt and prompt+completion tokens first differ.
        starts = [_common_prefix(tok(t, add_special_tokens=False)["input_ids"], row.tolist())
                  for t, row in zip(prefix, enc["input_ids"], strict=True)]
        logits = model(**enc).logits[:, :-1].float()
        targets = enc["input_ids"][:, 1:]
        token_lp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        positions = torch.arange(targets.shape[1], device=targets.device).unsqueeze(0)
        # Target position j predicts token j+1: the completion's first token is at start-1.
        start = torch.tensor(starts, device=targets.device).unsqueeze(1) - 1
        mask = (positions >= start) & enc["attention_mask"][:, 1:].bool()
        out += (token_lp * mask).sum(-1).tolist()
    return out


@torch.no_grad()
def reward_scores(rm: Any, tok: Any, prompts: list[Messages], completions: list[Messages],
                  batch_size: int = 64) -> list[float]:
    """Scalar RM score of each conversation, rendered as RewardTrainer and RLOOTrainer render it."""
    rm.eval()
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        texts = [tok.apply_chat_template(p + c, tokenize=False)
                 for p, c in zip(prompts[i:i + batch_size], completions[i:i + batch_size], strict=True)]
        enc = _encode_right_padded(tok, texts, rm.device)
        out += rm(**enc).logits[:, 0].float().tolist()
    return out


def pair_logp_stats(policy: Any, ref_logps: tuple[list[float], list[float]] | None, tok: Any,
                    pairs: list[dict], beta: float) -> dict[str, Any]:
    """Held-out pair metrics of `policy`: logp margin (chosen - rejected), pair accuracy and, given the
    reference's logps, the DPO implicit-reward margin beta*((pol_c - ref_c) - (pol_r - ref_r))."""
    prompts = [p["prompt"] for p in pairs]
    lc = completion_logps(policy, tok, prompts, [p["chosen"] for p in pairs])
    lr = completion_logps(policy, tok, prompts, [p["rejected"] for p in pairs])
    n = max(len(pairs), 1)
    stats: dict[str, Any] = {
        "logp_margin": round(sum(c - r for c, r in zip(lc, lr, strict=True)) / n, 4),
        "pair_accuracy": round(sum(c > r for c, r in zip(lc, lr, strict=True)) / n, 4),
        "logp_chosen": round(sum(lc) / n, 4),
        "logp_rejected": round(sum(lr) / n, 4),
        "_logps": (lc, lr),
    }
    if ref_logps is not None:
        implicit = [beta * ((c - rc) - (r - rr)) for c, r, rc, rr in zip(lc, lr, *ref_logps, strict=True)]
        stats["implicit_margin"] = round(sum(implicit) / n, 4)
        stats["implicit_margin_positive_fraction"] = round(sum(m > 0 for m in implicit) / n, 4)
    return stats


def arithmetic_accuracy(model: Any, tok: Any, items: list[dict], max_new_tokens: int = 6) -> tuple[float, list]:
    """Greedy exact answers (check_arithmetic) on records with "prompt"/"answer"; (accuracy, completions)."""
    if not items:
        return 0.0, []
    outs = chat_generate(model, tok, [it["prompt"] for it in items], max_new_tokens=max_new_tokens)
    correct = sum(check_arithmetic(o, it["answer"]) for o, it in zip(outs, items, strict=True))
    return round(correct / len(items), 4), outs


def fixed_samples(model: Any, tok: Any, prompts: Sequence[str] = SAMPLE_PROMPTS,
                  max_new_tokens: int = 16) -> list[dict[str, str]]:
    outs = chat_generate(model, tok, list(prompts), max_new_tokens=max_new_tokens)
    return [{"prompt": p, "completion": o} for p, o in zip(prompts, outs, strict=True)]


def quiet_progress() -> None:
    """No tqdm bars from datasets/transformers: they freeze Dagster's log view; LossHistory logs lines instead."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def train_quietly(trainer: Any) -> None:
    """trainer.train() without the per-step log dicts that disable_tqdm=True makes the Trainer print."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()


def _config_dict(cfg: Any) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}






def _load_pairs(pairs_dir: Path) -> tuple[list[dict], list[dict]]:
    pairs_dir = Path(pairs_dir)
    hint = "materialize datasets/preferences (build_preference_pairs) first"
    if not (pairs_dir / "train.jsonl").is_file():
        raise FileNotFoundError(f"no train.jsonl in {pairs_dir}; {hint}")
    train, heldout = read_jsonl(pairs_dir / "train.jsonl"), read_jsonl(pairs_dir / "heldout.jsonl")
    if not train or not heldout:
        raise ValueError(f"{pairs_dir} has {len(train)} train and {len(heldout)} held-out pairs; both must be "
                         f"non-empty: pass more prompts or raise heldout_fraction")
    return train, heldout


def _pair_dataset(rows: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])


# ----------------------------------------------------------------------------------------------------------
# datasets/preferences




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
    train.jsonl / heldout.jsonl / meta.json into the existing `out_dir`.

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
    heldout: list[dict] = []
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
        (heldout if heldout_record(item, cfg.heldout_fraction) else train).append(record)

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
        (heldout if heldout_record({"prompt": text, **pair}, cfg.heldout_fraction) else train).append(record)
        extra_used += 1
    rng.shuffle(train)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "heldout.jsonl", heldout)

    all_pairs = train + heldout
    arith = [p for p in all_pairs if p["source"] == "arithmetic_verifier"]
    result: dict[str, Any] = {
        "pairs_dir": str(out_dir),
        "parent_checkpoint": str(policy_dir),
        "prompts_in": len(prompts),
        "skipped_benchmark_items": skipped_benchmark + extra_skipped,
        "prompts_without_pair": no_pair,
        "train_pairs": len(train),
        "heldout_pairs": len(heldout),
        "extra_pairs": extra_used,
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
        "config": _config_dict(cfg),
    }
    log(f"preferences | {len(train)} train + {len(heldout)} held-out pairs {result['pairs_by_source']} | "
        f"own rejected {result['own_rejected_fraction']:.2f} | sample acc {result['policy_sample_accuracy']:.3f} | "
        f"{result['wall_time_s']:.0f}s")
    write_meta(out_dir, result)
    return result


# ----------------------------------------------------------------------------------------------------------
# models/reward




def load_reward_model(path: Path | str, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not an HF checkpoint dir; materialize models/reward first")
    tok = AutoTokenizer.from_pretrained(path)
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).to(device)
    rm.config.pad_token_id = tok.pad_token_id  # seq-cls pools at the last non-pad token: needs the pad id
    rm.eval()
    return rm, tok


def rm_pair_stats(rm: Any, tok: Any, pairs: list[dict]) -> dict[str, float]:
    prompts = [p["prompt"] for p in pairs]
    sc = reward_scores(rm, tok, prompts, [p["chosen"] for p in pairs])
    sr = reward_scores(rm, tok, prompts, [p["rejected"] for p in pairs])
    n = max(len(pairs), 1)
    return {"pair_accuracy": round(sum(c > r for c, r in zip(sc, sr, strict=True)) / n, 4),
            "margin": round(sum(c - r for c, r in zip(sc, sr, strict=True)) / n, 4)}


def run_reward_model(cfg: RewardModelConfig, sft_dir: Path, pairs_dir: Path, out_dir: Path,
                     log: Log = print) -> dict[str, Any]:
    """Train a scalar reward model (seq-cls head on the SFT trunk) on the train pairs; report held-out pairwise
    accuracy (score(chosen) > score(rejected)) before and after. Saves an HF dir loadable as
    `AutoModelForSequenceClassification.from_pretrained(out_dir, num_labels=1)`."""
    cfg.validate()
    quiet_progress()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    t0 = time.perf_counter()
    train, heldout = _load_pairs(pairs_dir)
    args = RewardConfig(**trl_args(Path(out_dir) / "trainer", max_steps=cfg.max_steps,
                                   learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, seed=cfg.seed,
                                   device=cfg.device, num_threads=cfg.num_threads),
                        max_length=cfg.max_length, lr_scheduler_type="constant",
                        center_rewards_coefficient=cfg.center_rewards_coefficient)
    tok = AutoTokenizer.from_pretrained(sft_dir)
    torch.manual_seed(cfg.seed)  # the score head is freshly initialised
    rm = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    before = rm_pair_stats(rm, tok, heldout)
    log(f"reward | {len(train)} train pairs, held-out pair acc before {before['pair_accuracy']:.3f}")
    history = LossHistory(log, every=max(cfg.max_steps // 10, 1), keys=("accuracy", "margin"))
    trainer = RewardTrainer(model=rm, args=args, train_dataset=_pair_dataset(train), processing_class=tok,
                            callbacks=[history])
    t_train = time.perf_counter()
    train_quietly(trainer)
    train_time_s = time.perf_counter() - t_train
    rm = trainer.model
    after = rm_pair_stats(rm, tok, heldout)
    save_checkpoint(rm, tok, Path(out_dir))
    result: dict[str, Any] = {
        "checkpoint_dir": str(out_dir),
        "parent_checkpoint": str(sft_dir),
        "pairs_dir": str(pairs_dir),
        "steps": trainer.state.global_step,
        "train_pairs": len(train),
        "heldout_pairs": len(heldout),
        "heldout_pair_accuracy_before": before["pair_accuracy"],
        "heldout_pair_accuracy_after": after["pair_accuracy"],
        "heldout_score_margin_before": before["margin"],
        "heldout_score_margin_after": after["margin"],
        "heldout_pair_accuracy_by_source": {
            src: rm_pair_stats(rm, tok, [p for p in heldout if p["source"] == src])["pair_accuracy"]
            for src in sorted({p["source"] for p in heldout})
        },
        "train_accuracy_history": history.metrics["accuracy"],
        "samples": [{"prompt": p, "response": r, "score": round(x, 4)} for (p, r), x in zip(
            RM_PROBES, reward_scores(rm, tok, [user(p) for p, _ in RM_PROBES], [assistant(r) for _, r in RM_PROBES]),
            strict=True)],
        "loss_history": history.loss,
        "train_loss_final": history.loss[-1][1] if history.loss else None,
        "train_time_s": round(train_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "config": _config_dict(cfg),
    }
    log(f"reward | held-out pair acc {before['pair_accuracy']:.3f} -> {after['pair_accuracy']:.3f} | "
        f"{result['steps']} steps in {train_time_s:.0f}s")
    write_meta(Path(out_dir), result)
    return result


# ----------------------------------------------------------------------------------------------------------
# models/dpo (and KTO / ORPO / SimPO)




def _kto_dataset(rows: list[dict]) -> Any:
    from datasets import Dataset

    # Each pair gives one desirable and one undesirable example (KTO learns from unpaired labels).
    data = [{"prompt": r["prompt"], "completion": r[key], "label": key == "chosen"}
            for r in rows for key in ("chosen", "rejected")]
    return Dataset.from_list(data)


def _preference_trainer(cfg: DPOStageConfig, policy: Any, ref: Any, tok: Any, train: list[dict],
                        out_dir: Path, history: LossHistory) -> Any:
    common = trl_args(out_dir / "trainer", max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
                      batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, num_threads=cfg.num_threads,
                      lr_scheduler_type="constant", max_length=cfg.max_length)
    if cfg.algorithm == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, loss_type=list(cfg.loss_types), beta=cfg.beta,
                         loss_weights=list(cfg.loss_weights) if cfg.loss_weights else None,
                         label_smoothing=cfg.label_smoothing, precompute_ref_log_probs=cfg.precompute_ref_log_probs)
        return DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=_pair_dataset(train),
                          processing_class=tok, callbacks=[history])
    if cfg.algorithm == "kto":
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(**common, loss_type=cfg.loss_types[0], beta=cfg.beta,
                         precompute_ref_log_probs=cfg.precompute_ref_log_probs)
        return KTOTrainer(model=policy, ref_model=ref, args=args, train_dataset=_kto_dataset(train),
                          processing_class=tok, callbacks=[history])
    # ORPO / SimPO live in trl.experimental; remove_unused_columns=False avoids their "[RANK 0] ... we have set
    # it for you" warning. Neither uses a reference model.
    if cfg.algorithm == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**common, beta=cfg.beta, remove_unused_columns=False)
        return ORPOTrainer(model=policy, args=args, train_dataset=_pair_dataset(train), processing_class=tok,
                           callbacks=[history])
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=cfg.simpo_gamma, beta=cfg.beta,
                     remove_unused_columns=False)
    return CPOTrainer(model=policy, args=args, train_dataset=_pair_dataset(train), processing_class=tok,
                      callbacks=[history])


def run_dpo(cfg: DPOStageConfig, sft_dir: Path, pairs_dir: Path, out_dir: Path, log: Log = print) -> dict[str, Any]:
    """Preference-optimize the SFT policy on the train pairs with `cfg.algorithm`; report on held-out pairs.

    Metrics (held-out pairs): mean logp margin chosen - rejected and pair accuracy (logp_c > logp_r), before
    and after; implicit-reward margin beta*((pol_c - ref_c) - (pol_r - ref_r)) with the SFT model as the
    reference. It is 0 before training by construction, so "> 0 after" together with a growing logp margin
    is the honest DPO success signal. For ORPO/SimPO (reference-free) it is reported with the same formula.
    """
    cfg.validate()
    quiet_progress()
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    train, heldout = _load_pairs(pairs_dir)
    dev = set_threads(cfg.device, cfg.num_threads)
    policy, tok = load_policy(sft_dir, dev)
    needs_ref = cfg.algorithm in ("dpo", "kto") and not cfg.precompute_ref_log_probs
    ref = load_policy(sft_dir, dev)[0] if needs_ref else None
    before = pair_logp_stats(policy, None, tok, heldout, cfg.beta)
    ref_logps = before.pop("_logps")
    arith = [{"prompt": p["prompt"][-1]["content"], "answer": p["answer"]} for p in heldout
             if p.get("kind") == "arithmetic"]
    acc_before, _ = arithmetic_accuracy(policy, tok, arith)
    log(f"{cfg.algorithm} | {len(train)} train pairs, loss {list(cfg.loss_types) or '-'} | held-out logp margin "
        f"{before['logp_margin']:.3f}, pair acc {before['pair_accuracy']:.3f}")
    history = LossHistory(log, every=max(cfg.max_steps // 10, 1),
                          keys=("rewards/margins", "rewards/accuracies", "kl"))
    policy.train()
    trainer = _preference_trainer(cfg, policy, ref, tok, train, out_dir, history)
    t_train = time.perf_counter()
    train_quietly(trainer)
    train_time_s = time.perf_counter() - t_train
    policy = trainer.model
    after = pair_logp_stats(policy, ref_logps, tok, heldout, cfg.beta)
    after.pop("_logps")
    acc_after, _ = arithmetic_accuracy(policy, tok, arith)
    save_checkpoint(policy, tok, out_dir)
    result: dict[str, Any] = {
        "checkpoint_dir": str(out_dir),
        "parent_checkpoint": str(sft_dir),
        "pairs_dir": str(pairs_dir),
        "algorithm": cfg.algorithm,
        "loss_type": list(cfg.loss_types),
        "steps": trainer.state.global_step,
        "train_pairs": len(train),
        "heldout_pairs": len(heldout),
        "heldout_logp_margin_before": before["logp_margin"],
        "heldout_logp_margin_after": after["logp_margin"],
        "heldout_pair_accuracy_before": before["pair_accuracy"],
        "heldout_pair_accuracy_after": after["pair_accuracy"],
        "heldout_logp_chosen_before": before["logp_chosen"],
        "heldout_logp_chosen_after": after["logp_chosen"],
        "implicit_reward_margin": after["implicit_margin"],
        "implicit_reward_margin_positive_fraction": after["implicit_margin_positive_fraction"],
        # Greedy exact match on the held-out arithmetic prompts: the most variable number (+9.5 to +24.5 pts).
        "heldout_accuracy_before": acc_before,
        "heldout_accuracy_after": acc_after,
        "loss_history": history.loss,
        "train_loss_final": history.loss[-1][1] if history.loss else None,
        "train_reward_margin_history": history.metrics["rewards/margins"],
        "train_time_s": round(train_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "samples": fixed_samples(policy, tok),
        "config": _config_dict(cfg),
    }
    log(f"{cfg.algorithm} | held-out logp margin {before['logp_margin']:.3f} -> {after['logp_margin']:.3f} | "
        f"pair acc {before['pair_accuracy']:.3f} -> {after['pair_accuracy']:.3f} | implicit margin "
        f"{after['implicit_margin']:+.3f} | acc {acc_before:.3f} -> {acc_after:.3f} | {train_time_s:.0f}s")
    write_meta(out_dir, result)
    return result


# ----------------------------------------------------------------------------------------------------------
# models/rlhf




def rm_win_rate(rm: Any, rm_tok: Any, prompts: list[str], new: list[str], base: list[str]) -> tuple[float, dict]:
    """Fraction of prompts where the RM scores `new` above `base` (identical text counts 1/2)."""
    msgs = [user(p) for p in prompts]
    s_new = reward_scores(rm, rm_tok, msgs, [assistant(c) for c in new])
    s_base = reward_scores(rm, rm_tok, msgs, [assistant(c) for c in base])
    same = [a == b for a, b in zip(new, base, strict=True)]
    wins = [0.5 if eq else float(sn > sb) for eq, sn, sb in zip(same, s_new, s_base, strict=True)]
    n = max(len(wins), 1)
    return round(sum(wins) / n, 4), {"rm_score_new": round(sum(s_new) / n, 4),
                                     "rm_score_base": round(sum(s_base) / n, 4),
                                     "identical_fraction": round(sum(same) / n, 4)}


def run_rlhf(cfg: RLHFConfig, sft_dir: Path, reward_dir: Path, prompts: list[dict], out_dir: Path,
             log: Log = print) -> dict[str, Any]:
    """RLHF: optimize the SFT policy against the learned reward model with a KL penalty to the SFT reference.

    Trainer: TRL 1.16 has no PPOTrainer (removed with the value-head model), so we use `RLOOTrainer` with the
    reward-model dir as its reward function and `beta > 0`. RLOO (REINFORCE leave-one-out, Ahmadian et al.
    2024) was proposed exactly for RLHF against a scalar RM: each sample's baseline is the mean reward of the
    other samples of its prompt, so no value model is needed, and its `beta` adds the KL to a reference model
    built from the policy's own checkpoint. GRPO would also run (its default beta is 0, and its per-group std
    normalisation is aimed at 0/1 verifiable rewards, which is what models/grpo uses it for).

    Metrics on held-out prompts (greedy, SFT vs RLHF): RM-judged win rate, KL to the reference (mean of the
    trainer's logged per-token estimate), and true accuracy for prompts with an "answer" - recorded, never a
    success criterion: a tiny RM is gamed (notes: win rate 0.84 while accuracy fell 0.375 -> 0.065), and
    `reward_hacking_suspected` flags exactly that.
    """
    cfg.validate()
    quiet_progress()
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    for item in prompts:
        if not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise ValueError(f"prompt record {item!r} needs a non-empty string 'prompt'")
    bench_keys = load_bench_keys(cfg.bench_dir)
    usable = [p for p in prompts if not is_benchmark_item(p["prompt"], bench_keys)]
    train = [p for p in usable if not heldout_record(p, cfg.heldout_fraction)]
    evals = [p for p in usable if heldout_record(p, cfg.heldout_fraction)][:cfg.max_eval_prompts]
    if not train or not evals:
        raise ValueError(f"{len(train)} train / {len(evals)} held-out prompts after the split; pass more prompts "
                         "or change heldout_fraction")
    if not (Path(reward_dir) / "config.json").is_file():
        raise FileNotFoundError(f"{reward_dir} is not an HF checkpoint dir; materialize models/reward first")
    dev = set_threads(cfg.device, cfg.num_threads)
    sft, tok = load_policy(sft_dir, dev)
    eval_prompts = [p["prompt"] for p in evals]
    base_out = chat_generate(sft, tok, eval_prompts, max_new_tokens=cfg.max_completion_length)
    def accuracy(outs: list[str]) -> float | None:  # None when no held-out prompt has an "answer"
        graded = [check_arithmetic(o, str(p["answer"])) for p, o in zip(evals, outs, strict=True) if "answer" in p]
        return round(sum(graded) / len(graded), 4) if graded else None

    acc_before = accuracy(base_out)
    log(f"rlhf | RLOO vs RM {reward_dir} | {len(train)} train / {len(evals)} held-out prompts | beta {cfg.beta}")

    args = RLOOConfig(**trl_args(out_dir / "trainer", max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
                                 batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                                 num_threads=cfg.num_threads),
                      lr_scheduler_type="constant", num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
                      beta=cfg.beta)
    dataset = Dataset.from_list([{"prompt": user(p["prompt"])} for p in train])
    history = LossHistory(log, every=max(cfg.max_steps // 10, 1), keys=("kl", "reward"))
    policy = load_policy(sft_dir, dev)[0]
    policy.train()
    trainer = RLOOTrainer(model=policy, reward_funcs=str(reward_dir), args=args, train_dataset=dataset,
                          processing_class=tok, callbacks=[history])
    t_train = time.perf_counter()
    train_quietly(trainer)
    train_time_s = time.perf_counter() - t_train
    policy, steps = trainer.model, trainer.state.global_step
    del trainer
    new_out = chat_generate(policy, tok, eval_prompts, max_new_tokens=cfg.max_completion_length)
    rm, rm_tok = load_reward_model(reward_dir, dev)
    win_rate, scores = rm_win_rate(rm, rm_tok, eval_prompts, new_out, base_out)
    acc_after = accuracy(new_out)
    save_checkpoint(policy, tok, out_dir)
    kl = [v for _, v in history.metrics["kl"]]
    rewards = [v for _, v in history.metrics["reward"]]
    result: dict[str, Any] = {
        "checkpoint_dir": str(out_dir),
        "parent_checkpoint": str(sft_dir),
        "reward_checkpoint": str(reward_dir),
        "trainer": "RLOOTrainer",
        "steps": steps,
        "train_prompts": len(train),
        "heldout_prompts": len(evals),
        "rm_win_rate": win_rate,
        **scores,
        "kl_mean": round(sum(kl) / len(kl), 5) if kl else None,
        "kl_final": round(kl[-1], 5) if kl else None,
        "train_reward_first": round(rewards[0], 4) if rewards else None,
        "train_reward_last": round(rewards[-1], 4) if rewards else None,
        "heldout_accuracy_before": acc_before,
        "heldout_accuracy_after": acc_after,
        # Win rate up while true accuracy falls: the policy found what the RM over-scores.
        "reward_hacking_suspected": None if acc_before is None else bool(win_rate > 0.5 and acc_after < acc_before),
        "loss_history": history.loss,
        "kl_history": history.metrics["kl"],
        "reward_history": history.metrics["reward"],
        "train_time_s": round(train_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "samples": fixed_samples(policy, tok),
        "eval_examples": [{"prompt": p, "sft": b, "rlhf": n}
                          for p, b, n in zip(eval_prompts[:5], base_out, new_out, strict=False)],
        "config": _config_dict(cfg),
    }
    log(f"rlhf | RM win rate {win_rate:.3f} | KL {result['kl_mean']} | true acc {acc_before} -> {acc_after} "
        f"(not a target) | {train_time_s:.0f}s")
    write_meta(out_dir, result)
    return result


# ----------------------------------------------------------------------------------------------------------
# CLI


def _cli_config(cls: type, overrides: list[str]) -> Any:
    """`--set name=value` overrides, parsed as JSON when possible (numbers, null, lists)."""
    kwargs: dict[str, Any] = {}
    names = {f for f in cls.__dataclass_fields__}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or name not in names:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME in {sorted(names)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="llmdag preference stages (pairs, reward, dpo, rlhf).")
    sub = parser.add_subparsers(dest="stage", required=True)
    stages = {"pairs": PreferenceDataConfig, "reward": RewardModelConfig, "dpo": DPOStageConfig,
              "rlhf": RLHFConfig}
    for name in stages:
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True, help="output dir (created if missing)")
        p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="config override")
        if name in ("pairs",):
            p.add_argument("--policy", type=Path, required=True, help="SFT checkpoint dir to sample from")
        if name in ("reward", "dpo", "rlhf"):
            p.add_argument("--sft", type=Path, required=True, help="SFT checkpoint dir")
        if name in ("reward", "dpo"):
            p.add_argument("--pairs", type=Path, required=True, help="datasets/preferences dir")
        if name in ("pairs", "rlhf"):
            p.add_argument("--prompts", type=Path, required=True, help="prompt records, JSONL")
        if name == "rlhf":
            p.add_argument("--reward", type=Path, required=True, help="models/reward dir")
        if name == "dpo":
            p.add_argument("--algorithm", choices=ALGORITHMS, default="dpo")
    args = parser.parse_args(argv)
    overrides = list(args.set) + ([f"algorithm={args.algorithm}"] if args.stage == "dpo" else [])
    cfg = _cli_config(stages[args.stage], overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "pairs":
        result = build_preference_pairs(args.policy, read_jsonl(args.prompts), args.out, cfg)
    elif args.stage == "reward":
        result = run_reward_model(cfg, args.sft, args.pairs, args.out)
    elif args.stage == "dpo":
        result = run_dpo(cfg, args.sft, args.pairs, args.out)
    else:
        result = run_rlhf(cfg, args.sft, args.reward, read_jsonl(args.prompts), args.out)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("history")}, indent=2))
    return result


if __name__ == "__main__":
    main()
