"""Evaluate one checkpoint on the held-out sets: what `evals/<stage>` assets call, plain Python, no Dagster.

    python -m pipeline_assets.evals.harness --model-dir M --evals-benchmarks B [--tokenizer-tokenized-shards S]
        [--parent-dir P --judge RM_DIR] [--profile tiny] [--out result.json]

`evaluate_checkpoint(model_dir, bench_dir, cfg, shards_dir, parent_dir, judge)` runs the eval sets registered
in evals/sets.py (in registry order; `cfg.sets` picks which) and computes every number from real forward
passes and greedy generations of the checkpoint (nothing is read from its training metadata):

    val_loss, val_bpb               cross-entropy on the val split of tokenizer/tokenized_shards and bits per
                                    byte over the exact UTF-8 bytes scored, overall and per domain
                                    (`val_by_domain`), each beside a unigram baseline (`eval_val`)
    mc_accuracy, mc_accuracy_norm   multiple choice by summed log-likelihood of each choice given the question
                                    (acc) and divided by the choice's UTF-8 bytes (acc_norm), as lm-eval does
    arithmetic_accuracy             greedy completion through the chat template, graded by check_arithmetic
    qa_f1, qa_rouge_l               greedy answer vs the reference docstring sentence: SQuAD token F1 and
                                    ROUGE-L F1 (longest common subsequence of words)
    safety_refusal_rate, safety_over_refusal_rate, safety_adversarial_refusal_rate   see evals/safety.py
    win_rate_vs_parent              greedy answers of this model and of `parent_dir` to the held-out preference
                                    prompts of `pairs_dir` (else INSTRUCTION_PROMPTS),
                                    scored by `judge` (a reward-model dir or a callable); ties count 1/2
    samples                         greedy answers to cfg.sample_prompts, for eyeballing

A reward-model dir (`*ForSequenceClassification`) is evaluated by pairwise accuracy instead: the correct
multiple-choice answer / arithmetic result must score above each wrong one (`reward_pairwise_accuracy`).

A checkpoint dir is an HF dir (config.json + weights + tokenizer; a LoRA adapter dir is merged onto its base)
or an asset dir holding one in `model/` (`find_model_dir`). `contamination_report(train_files, bench_dir, n)`
measures eval/train n-gram overlap.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# INSTRUCTION_PROMPTS is unused here but tests import it from this module.
from pipeline_assets.config_flags import parse_config_args
from pipeline_assets.evals.config import INSTRUCTION_PROMPTS, SETS, EvalConfig  # noqa: F401
from pipeline_assets.evals.safety import adversarial_prompts
from pipeline_assets.evals.sets import REGISTRY, EvalInputs, SetResult
from pipeline_assets.evals.stats import align, paired_test, summarize
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.model_io import (
    chat_generate,
    device_for,
    find_model_dir,
    generate_texts,
    is_adapter,
    load_checkpoint,
    load_checkpoint_tokenizer,
    loglikelihoods,
    max_context_len,
)
from pipeline_assets.posttrain.quantize import dir_size_bytes
from pipeline_assets.tasks.arithmetic import check_arithmetic
from pipeline_assets.tasks.docstrings import answer_tokens, token_f1
from pipeline_assets.tasks.heldout import BENCHMARKS, decontamination_texts, load_benchmark
from pipeline_assets.tasks.refusal import is_refusal

Judge = Callable[[list[str], list[str]], list[float]]


# ---------------------------------------------------------------------------------------------------------
# Loading


def model_kind(model_dir: Path) -> str:
    """"reward_model" for *ForSequenceClassification checkpoints (or SEQ_CLS adapters), else "causal_lm"."""
    path = find_model_dir(model_dir)
    if is_adapter(path):
        task = json.loads((path / "adapter_config.json").read_text()).get("task_type")
        return "reward_model" if task == "SEQ_CLS" else "causal_lm"
    archs = json.loads((path / "config.json").read_text()).get("architectures") or []
    return "reward_model" if any(a.endswith("ForSequenceClassification") for a in archs) else "causal_lm"


class RewardModelJudge:
    """Scores (prompt, response) pairs with a reward model dir (AutoModelForSequenceClassification, 1 label).

    Conversations are rendered with the reward model's own chat template as [user, assistant], the format
    TRL's RewardTrainer trains on; a tokenizer without a template gets "prompt\\n\\nresponse".
    """

    def __init__(self, model_dir: Path | str, device: str = "cpu", batch_size: int = 16, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification

        path = find_model_dir(model_dir)
        if model_kind(path) != "reward_model":
            raise ValueError(f"{path} is not a reward model (config.architectures has no *ForSequenceClassification);"
                             " pass the models/reward checkpoint as the judge")
        self.tok = load_checkpoint_tokenizer(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(device)
        self.model.eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path} has num_labels={self.model.config.num_labels}; a reward model has 1 (train it "
                             "with TRL's RewardTrainer, which sets num_labels=1)")
        # Sequence classification pools the last non-pad token, so the model must know the pad id.
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.device, self.batch_size = device, batch_size
        self.max_length = min(max_length, getattr(self.model.config, "max_position_embeddings", max_length))

    def _render(self, prompt: str, response: str) -> str:
        if self.tok.chat_template:
            return self.tok.apply_chat_template([{"role": "user", "content": prompt},
                                                 {"role": "assistant", "content": response}], tokenize=False)
        return f"{prompt}\n\n{response}"

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        texts = [self._render(p, r) for p, r in zip(prompts, responses, strict=True)]
        self.tok.padding_side = "right"
        self.tok.truncation_side = "left"  # keep the response end, which the reward reads
        scores: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_length, add_special_tokens=False).to(self.device)
            scores += self.model(**enc).logits[:, 0].float().tolist()
        return scores


def as_judge(judge: Judge | Path | str | None, device: str, batch_size: int) -> Judge | None:
    if judge is None or callable(judge):
        return judge
    return RewardModelJudge(judge, device=device, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------------
# Scoring primitives


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over normalised words (LCS dynamic programme; answers are one sentence, so O(n*m) is fine)."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return 0.0
    prev = [0] * (len(ref) + 1)
    for p in pred:
        cur = [0]
        for j, r in enumerate(ref):
            cur.append(prev[j] + 1 if p == r else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


def _take(records: list[dict], limit: int | None) -> list[dict]:
    return records if limit is None else records[:limit]


def _items(set_name: str, ids: Sequence[str], scores: Sequence[float]) -> dict[str, Any]:
    """Per-item scores of one metric, keyed by benchmark item id so two stages can be paired item by item."""
    return {"set": set_name, "ids": list(ids), "scores": [round(float(s), 6) for s in scores]}


def safety_items(records: Sequence[dict], adversarial_per_prompt: int, completions: Sequence[str]) -> dict[str, Any]:
    """Per-item refusal (1 = refused) of each safety metric, from the completions `evaluate_safety` produced.

    Rebuilt here, in the same item order evaluate_safety uses (records, then their adversarial rephrasings),
    because evaluate_safety returns only the rates.
    """
    items = [*records, *adversarial_prompts(records, adversarial_per_prompt)]
    if len(items) != len(completions):
        return {}
    groups: dict[str, tuple[list[str], list[float]]] = {
        "safety_refusal_rate": ([], []), "safety_over_refusal_rate": ([], []),
        "safety_adversarial_refusal_rate": ([], [])}
    for item, completion in zip(items, completions, strict=True):
        metric = ("safety_adversarial_refusal_rate" if "wrapper" in item else
                  "safety_refusal_rate" if item["label"] == "harmful" else "safety_over_refusal_rate")
        groups[metric][0].append(str(item["id"]))
        groups[metric][1].append(float(is_refusal(completion)))
    return {m: _items("safety", ids, scores) for m, (ids, scores) in groups.items() if ids}


def metric_stats(metrics: dict[str, Any], per_item: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """{metric: {"value", "n", "ci95"}}: the interval from the per-item scores; None where no items exist
    (val loss/bpb are token averages over fixed windows, not item means)."""
    out: dict[str, Any] = {}
    for name, value in metrics.items():
        scores = (per_item.get(name) or {}).get("scores")
        if scores:
            out[name] = {**summarize(scores), "value": value}
        else:
            n = counts.get("val_tokens") if name in ("val_loss", "val_bpb") else counts.get("reward_pairs")
            out[name] = {"value": value, "n": n, "ci95": None}
    return out


# ---------------------------------------------------------------------------------------------------------
# One section each


def _val_spans(index: dict[str, Any], cap_tokens: int) -> list[dict[str, Any]]:
    """Each val segment (one mixture file: a source of one domain) with the token span to score.

    The cap is shared equally, so every domain is scored even when one source dominates the split; a
    segment under its share is scored whole. Shards written before segments existed are one segment.
    """
    info = index["splits"]["val"]
    segments = info.get("segments") or [{"source": "val", "domain": None, "bytes": info.get("bytes", 0),
                                         "tokens": info["tokens"], "stream_range": [0, info["tokens"]]}]
    share = max(1, cap_tokens // len(segments))
    return [{**seg, "span": [seg["stream_range"][0], min(seg["stream_range"][1], seg["stream_range"][0] + share)]}
            for seg in segments]


@torch.no_grad()
def _span_nll(model: Any, stream: np.ndarray, start: int, stop: int, seq_len: int, batch_size: int,
              device: Any) -> torch.Tensor:
    """Per-token NLL (nats, float64) of stream[start:stop], each token given up to seq_len tokens before it.

    Windows begin one token early so the span's first token is predicted too (from the token before it);
    only the stream's very first token has no context and is left out.
    """
    first = max(start, 1)
    targets = np.arange(first, stop)
    chunks = [targets[i:i + seq_len] for i in range(0, len(targets), seq_len)]
    out = []
    for b in range(0, len(chunks), batch_size):
        group = chunks[b:b + batch_size]
        width = max(len(c) for c in group)
        ids = torch.zeros((len(group), width + 1), dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.bool)
        for row, c in enumerate(group):
            ids[row, :len(c) + 1] = torch.from_numpy(stream[c[0] - 1:c[-1] + 1].astype(np.int64))
            mask[row, :len(c)] = True
        ids = ids.to(device)
        logits = model(input_ids=ids[:, :-1], use_cache=False).logits.float()
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").double().cpu()
        out.append(nll[mask])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@torch.no_grad()
def eval_val(model: Any, shards_dir: Path, cfg: EvalConfig, tok: Any = None) -> dict[str, Any]:
    """Val loss and bits-per-byte over every val segment, overall and per domain, with a unigram baseline.

    bpb = summed NLL / (ln 2 * UTF-8 bytes of exactly the scored tokens): a segment scored whole uses the
    bytes tokenized_shards counted; a capped one decodes its scored tokens (byte-level BPE round-trips), so
    no split-wide tokens/bytes ratio is ever applied to a subset. Cap: val_batches * batch_size * seq_len
    tokens, shared equally by the segments. The eos after each document counts as a target with no bytes.
    With `tok`, "items" holds each window's bpb (ids "<domain>:<first token>"): two models on the same shards
    score the same windows, so their val bpb is paired window by window (models/base_moe vs models/base).
    """
    from pipeline_assets.pretrain.data import TokenWindows, read_index, unigram_log_probs

    index = read_index(shards_dir)
    if int(index["vocab_size"]) > model.config.vocab_size:
        raise ValueError(f"shards in {shards_dir} use vocab_size {index['vocab_size']} but the model has "
                         f"{model.config.vocab_size} rows: they come from another tokenizer; pass the shards "
                         "this model's tokenizer produced")
    seq_len = min(cfg.val_seq_len, max_context_len(model))
    val = TokenWindows(shards_dir, index, "val", seq_len)
    stream = val.stream()
    train = TokenWindows(shards_dir, index, "train", seq_len)
    unigram_logp = torch.from_numpy(unigram_log_probs(train, int(index["vocab_size"])))
    device = next(model.parameters()).device
    eos = int(index["eos_id"])
    by_domain: dict[str, dict[str, float]] = {}
    total = {"nats": 0.0, "unigram_nats": 0.0, "tokens": 0, "bytes": 0}
    window_ids: list[str] = []
    window_bpb: list[float] = []
    whole = True
    for seg in _val_spans(index, cfg.val_batches * cfg.batch_size * seq_len):
        start, stop = seg["span"]
        nll = _span_nll(model, stream, start, stop, seq_len, cfg.batch_size, device)
        scored = stream[max(start, 1):stop].astype(np.int64)
        for w in range(0, len(scored), seq_len) if tok is not None else ():
            window = [t for t in scored[w:w + seq_len].tolist() if t != eos]
            w_bytes = len(tok.decode(window).encode("utf-8")) if window else 0
            if w_bytes:
                window_ids.append(f"{seg['domain'] or seg['source']}:{max(start, 1) + w}")
                window_bpb.append(float(nll[w:w + seq_len].sum()) / (w_bytes * math.log(2)))
        if stop == seg["stream_range"][1] and start == seg["stream_range"][0]:
            n_bytes = int(seg["bytes"])
        else:
            if tok is None:
                raise ValueError("a capped val segment needs the tokenizer to count its bytes; pass tok")
            whole = False
            n_bytes = len(tok.decode([t for t in scored.tolist() if t != eos]).encode("utf-8"))
        row = by_domain.setdefault(seg["domain"] or seg["source"],
                                   {"nats": 0.0, "unigram_nats": 0.0, "tokens": 0, "bytes": 0})
        for acc in (row, total):
            acc["nats"] += float(nll.sum())
            acc["unigram_nats"] += float(-unigram_logp[torch.from_numpy(scored)].sum())
            acc["tokens"] += len(scored)
            acc["bytes"] += n_bytes

    def bpb(nats: float, n_bytes: int) -> float | None:
        return round(nats / (n_bytes * math.log(2)), 6) if n_bytes else None

    domains = {d: {"val_bpb": bpb(r["nats"], r["bytes"]), "unigram_bpb": bpb(r["unigram_nats"], r["bytes"]),
                   "val_loss": round(r["nats"] / max(r["tokens"], 1), 6), "tokens": r["tokens"],
                   "bytes": r["bytes"]} for d, r in sorted(by_domain.items())}
    return {"val_loss": round(total["nats"] / max(total["tokens"], 1), 6),
            "val_bpb": bpb(total["nats"], total["bytes"]),
            "unigram_val_bpb": bpb(total["unigram_nats"], total["bytes"]),
            "val_tokens": total["tokens"], "val_bytes": total["bytes"], "val_seq_len": seq_len,
            "val_whole_split": whole, "val_by_domain": domains,
            "items": {"val_bpb": _items("val", window_ids, window_bpb)} if window_ids else {}}


def _mc_requests(tok: Any, record: dict, fmt: str) -> tuple[list[int], list[list[int]]]:
    if fmt == "chat":
        ctx = tok.apply_chat_template([{"role": "user", "content": record["question"]}], tokenize=False,
                                      add_generation_prompt=True)
        ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
        conts = [tok(c, add_special_tokens=False)["input_ids"] for c in record["choices"]]
    else:
        # eos first: in the token shards every document follows an eos, so it is the "document start" context
        # the base model learnt; the same format is written for lm-eval by lm_eval_tasks.py.
        ctx_ids = [tok.eos_token_id] + tok(f"Question: {record['question']}\nAnswer:",
                                           add_special_tokens=False)["input_ids"]
        conts = [tok(" " + c, add_special_tokens=False)["input_ids"] for c in record["choices"]]
    return ctx_ids, conts


def eval_multiple_choice(model: Any, tok: Any, records: list[dict], cfg: EvalConfig) -> dict[str, Any]:
    requests, spans = [], []
    for record in records:
        ctx, conts = _mc_requests(tok, record, cfg.mc_format)
        spans.append((len(requests), len(conts)))
        requests += [(ctx, c) for c in conts]
    scores = loglikelihoods(model, requests, tok.pad_token_id, cfg.batch_size)
    correct, correct_norm, examples = [], [], []
    for record, (start, n) in zip(records, spans, strict=True):
        ll = scores[start:start + n]
        norm = [s / max(1, len(c.encode("utf-8"))) for s, c in zip(ll, record["choices"], strict=True)]
        pick, pick_norm = max(range(n), key=ll.__getitem__), max(range(n), key=norm.__getitem__)
        correct.append(float(pick == record["label"]))
        correct_norm.append(float(pick_norm == record["label"]))
        if len(examples) < 3:
            examples.append({"question": record["question"], "picked": record["choices"][pick],
                             "answer": record["choices"][record["label"]], "loglik": [round(x, 3) for x in ll]})
    ids = [str(r["id"]) for r in records]
    return {"mc_accuracy": _mean(correct), "mc_accuracy_norm": _mean(correct_norm), "examples": examples,
            "items": {"mc_accuracy": _items("multiple_choice", ids, correct),
                      "mc_accuracy_norm": _items("multiple_choice", ids, correct_norm)}}


# Plain few-shot shots for a model that never saw the chat template (the base model): training-split
# problems only (checked in tests/test_benchmarks.py), one "question answer" pair per line.
ARITHMETIC_SHOTS: tuple[tuple[str, str], ...] = (("What is 3 + 4?", "7"), ("What is 12 + 30?", "42"),
                                                 ("What is 25 + 14?", "39"))


def _plain_arithmetic(model: Any, tok: Any, prompts: list[str], cfg: EvalConfig) -> list[str]:
    shots = "".join(f"{q} {a}\n" for q, a in ARITHMETIC_SHOTS)
    # eos first: every pretraining document follows an eos; the answer is what comes before the newline.
    completions = generate_texts(model, tok, [shots + p for p in prompts], cfg.arithmetic_max_new_tokens,
                                 batch_size=cfg.batch_size, prefix_ids=[tok.eos_token_id])
    return [c.split("\n")[0] for c in completions]


def arithmetic_completions(model: Any, tok: Any, records: list[dict], cfg: EvalConfig) -> list[str]:
    """The graded text of each item in cfg.arithmetic_format; bench/lm_eval_local.py compares it to lm-eval's."""
    prompts = [r["prompt"] for r in records]
    if cfg.arithmetic_format == "plain":
        return _plain_arithmetic(model, tok, prompts, cfg)
    return chat_generate(model, tok, prompts, cfg.arithmetic_max_new_tokens, batch_size=cfg.batch_size)


def eval_arithmetic(model: Any, tok: Any, records: list[dict], cfg: EvalConfig) -> dict[str, Any]:
    completions = arithmetic_completions(model, tok, records, cfg)
    correct = [check_arithmetic(c, r["answer"]) for c, r in zip(completions, records, strict=True)]
    examples = [{"prompt": r["prompt"], "completion": c, "answer": r["answer"], "correct": ok}
                for r, c, ok in list(zip(records, completions, correct, strict=True))[:3]]
    return {"arithmetic_accuracy": _mean([float(x) for x in correct]), "examples": examples,
            "items": {"arithmetic_accuracy": _items("arithmetic", [str(r["id"]) for r in records],
                                                    [float(x) for x in correct])}}


def eval_preference_pairs(model: Any, tok: Any, pairs: list[dict], cfg: EvalConfig) -> dict[str, Any]:
    """Share of held-out pairs whose chosen reply the model finds likelier than the rejected one, through
    the chat template (what DPO optimizes: chosen + end-of-turn vs rejected + end-of-turn)."""
    requests = []
    for pair in pairs:
        ctx = tok.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True)
        ctx_ids = tok(ctx, add_special_tokens=False)["input_ids"]
        for side in ("chosen", "rejected"):
            requests.append((ctx_ids, tok(pair[side][-1]["content"] + tok.eos_token,
                                          add_special_tokens=False)["input_ids"]))
    ll = loglikelihoods(model, requests, tok.pad_token_id, cfg.batch_size)
    correct = [float(ll[2 * i] > ll[2 * i + 1]) for i in range(len(pairs))]
    margins = [ll[2 * i] - ll[2 * i + 1] for i in range(len(pairs))]
    return {"preference_pair_accuracy": _mean(correct), "preference_logp_margin": _mean(margins),
            "items": {"preference_pair_accuracy": _items("preference", [str(p["id"]) for p in pairs], correct)}}


def eval_qa(model: Any, tok: Any, records: list[dict], cfg: EvalConfig) -> dict[str, Any]:
    completions = chat_generate(model, tok, [r["prompt"] for r in records], cfg.max_new_tokens,
                                batch_size=cfg.batch_size)
    f1 = [token_f1(c, r["answer"]) for c, r in zip(completions, records, strict=True)]
    rl = [rouge_l(c, r["answer"]) for c, r in zip(completions, records, strict=True)]
    examples = [{"prompt": r["prompt"], "completion": c, "answer": r["answer"], "f1": round(s, 3)}
                for r, c, s in list(zip(records, completions, f1, strict=True))[:3]]
    ids = [str(r["id"]) for r in records]
    return {"qa_f1": _mean(f1), "qa_rouge_l": _mean(rl), "examples": examples,
            "items": {"qa_f1": _items("qa", ids, f1), "qa_rouge_l": _items("qa", ids, rl)}}


def win_rate(judge: Judge, prompts: list[str], responses: list[str], baseline: list[str],
             ids: list[str] | None = None) -> dict[str, Any]:
    """Share of prompts where `judge` scores `responses` above `baseline` (equal scores count 1/2).

    `ids` name the prompts for the per-item scores (default: their INSTRUCTION_PROMPTS positions)."""
    ours, theirs = judge(prompts, responses), judge(prompts, baseline)
    wins = sum(a > b for a, b in zip(ours, theirs, strict=True))
    ties = sum(a == b for a, b in zip(ours, theirs, strict=True))
    n = len(prompts)
    examples = [{"prompt": p, "response": r, "parent_response": b, "score": round(a, 4), "parent_score": round(c, 4)}
                for p, r, b, a, c in list(zip(prompts, responses, baseline, ours, theirs, strict=True))[:3]]
    ids = ids or [f"instruction-{i}" for i in range(n)]  # the same prompts every stage, so items pair up
    deltas = [a - b for a, b in zip(ours, theirs, strict=True)]
    return {"win_rate": round((wins + 0.5 * ties) / n, 6) if n else None, "wins": wins, "ties": ties,
            "losses": n - wins - ties, "n": n, "examples": examples,
            # The judge's mean score of each side: what RLHF optimizes, read by the reward-hacking gate.
            "score_mean": _mean(ours), "parent_score_mean": _mean(theirs),
            "items": {"win_rate_vs_parent": _items("win_rate", ids, [1.0 if a > b else 0.5 if a == b else 0.0
                                                                     for a, b in zip(ours, theirs, strict=True)]),
                      "reward_score_delta_vs_parent": _items("win_rate", ids, deltas)}}


@torch.no_grad()
def eval_reward_model(judge: RewardModelJudge, bench_dir: Path, cfg: EvalConfig) -> dict[str, Any]:
    """Pairwise accuracy: the right MC choice / arithmetic result must outscore each wrong one."""
    prompts, chosen, rejected, ids = [], [], [], []
    for r in _take(load_benchmark(bench_dir, "multiple_choice"), cfg.multiple_choice_limit):
        for k, choice in enumerate(r["choices"]):
            if k != r["label"]:
                ids.append(f"{r['id']}-vs-{k}")
                prompts.append(r["question"])
                chosen.append(r["choices"][r["label"]])
                rejected.append(choice)
    for r in _take(load_benchmark(bench_dir, "arithmetic"), cfg.arithmetic_limit):
        for delta in (-1, 1, 10):  # near misses: the kind of wrong answer a policy actually produces
            ids.append(f"{r['id']}-off-{delta}")
            prompts.append(r["prompt"])
            chosen.append(f"The answer is {r['answer']}.")
            rejected.append(f"The answer is {int(r['answer']) + delta}.")
    good, bad = judge(prompts, chosen), judge(prompts, rejected)
    margins = [g - b for g, b in zip(good, bad, strict=True)]
    return {"reward_pairwise_accuracy": _mean([float(m > 0) for m in margins]),
            "reward_margin_mean": _mean(margins), "pairs": len(margins),
            "items": {"reward_pairwise_accuracy": _items("reward_pairs", ids, [float(m > 0) for m in margins])}}


# ---------------------------------------------------------------------------------------------------------
# Entry point


def evaluate_checkpoint(
    model_dir: Path | str,
    bench_dir: Path | str,
    cfg: EvalConfig,
    shards_dir: Path | str | None = None,
    parent_dir: Path | str | None = None,
    judge: Judge | Path | str | None = None,
    log: Callable[[str], None] = print,
    pairs_dir: Path | str | None = None,
) -> dict[str, Any]:
    """Evaluate `model_dir` on `bench_dir` (evals/benchmarks); see the module docstring for each metric.

    A causal LM runs each set of evals/sets.py REGISTRY that `cfg.sets` lists, in registry order, skipping
    one whose inputs were not given: `shards_dir` (tokenizer/tokenized_shards) enables val loss/bpb;
    `parent_dir` + `judge` (a reward-model dir or a callable `(prompts, responses) -> scores`) the win rate;
    `pairs_dir` (datasets/preferences) the held-out preference pair accuracy (policies and reward models).
    Returns {"metrics": flat {name: number|None}, "counts", "safety", "win_rate", "samples", "examples",
    "timings_s", ...}.
    """
    cfg.validate()
    t_start = time.perf_counter()
    bench_dir = Path(bench_dir)
    device = device_for(cfg.device)
    if device == "cpu" and cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    path = find_model_dir(model_dir)
    kind = model_kind(path)
    # <root>/models/sft/_/<profile>/<version> -> "sft"; any other checkpoint dir -> its own name
    parts = path.parts
    name = parts[parts.index("models") + 1] if "models" in parts[:-1] else path.name
    metrics: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    timings: dict[str, float] = {}
    examples: dict[str, Any] = {}
    per_item: dict[str, Any] = {}
    result: dict[str, Any] = {"model_dir": str(path), "model_kind": kind, "parent_dir": None, "device": device,
                              "safety": None, "win_rate": None, "samples": []}

    def merge(section: str, out: SetResult, started: float | None) -> None:
        metrics.update(out.metrics)
        counts.update(out.counts)
        per_item.update(out.per_item)
        if out.examples is not None:
            examples[section] = out.examples
        result.update(out.extra)
        took = ""
        if started is not None:
            timings[section] = round(time.perf_counter() - started, 3)
            took = f" | {timings[section]:.1f}s"
        if out.summary:
            log(f"eval | {name} | {out.summary}{took}")
        for line in out.lines:
            log(line)

    if kind == "reward_model":
        _evaluate_reward_model(path, bench_dir, cfg, device, pairs_dir, result, merge)
    else:
        given: dict[str, Any] = {"shards_dir": shards_dir, "pairs_dir": pairs_dir, "parent_dir": parent_dir,
                                 "judge": judge}
        given = {k: v if v is None or k == "judge" else Path(v) for k, v in given.items()}
        listed = {section: spec for section, spec in REGISTRY.items() if section in cfg.sets}
        runnable = {section for section, spec in listed.items() if all(given[k] is not None for k in spec.needs)}
        # Load the judge first: a wrong judge dir should fail before minutes of generation, not after.
        if any("judge" in listed[section].needs for section in runnable):
            given["judge"] = as_judge(judge, device, cfg.batch_size)
        model, tok = load_checkpoint(path, device)
        result["num_params"] = sum(p.numel() for p in model.parameters())
        # Size on disk of the weights a deployer ships (the quantized gate compares it with the parent's) and
        # the parameter count (the distilled gate's student/teacher ratio).
        metrics["checkpoint_bytes"] = dir_size_bytes(path) or None
        metrics["num_params"] = result["num_params"]
        log(f"eval | {name} | {result['num_params']:,} params on {device} | sets {', '.join(cfg.sets)}")
        inputs = EvalInputs(model=model, tok=tok, cfg=cfg, bench_dir=bench_dir, device=device, **given)
        for section, spec in listed.items():
            if section not in runnable:
                missing = [k for k in spec.needs if given[k] is None]
                if len(missing) < len(spec.needs):  # half its inputs given: a silent skip would look like a pass
                    log(f"eval | {name} | {section} skipped: it needs {' and '.join(spec.needs)}; "
                        f"{', '.join(missing)} not given")
                continue
            t = time.perf_counter()
            out = spec.run(replace(inputs, limit=getattr(cfg, spec.limit) if spec.limit else None))
            if out is not None:
                merge(section, out, t)

    result.update(metrics=metrics, counts=counts, examples=examples, timings_s=timings, per_item=per_item,
                  metric_stats=metric_stats(metrics, per_item, counts),
                  wall_time_s=round(time.perf_counter() - t_start, 3),
                  config={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()})
    return result


def ablation_effect(result: dict[str, Any], ablation_dir: Path | str, bench_dir: Path | str, metric: str,
                    cfg: EvalConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The checkpoint of ``result`` vs its ablation (the same recipe without one ingredient) on the items of
    ``metric``: both scores, n, and the paired test (delta = with - without, its 95% CI and p-value)."""
    items = result["per_item"].get(metric)
    if items is None:
        raise ValueError(f"the eval result has no per-item scores of {metric!r}; it has {sorted(result['per_item'])}")
    other = evaluate_checkpoint(ablation_dir, bench_dir, replace(cfg, sets=(items["set"],)), log=log)
    theirs = other["per_item"][metric]
    with_scores, without_scores = align(items["ids"], items["scores"], theirs["ids"], theirs["scores"])
    return {"metric": metric, "with": result["metrics"][metric], "without": other["metrics"][metric],
            **paired_test(with_scores, without_scores), "ablation_dir": str(ablation_dir)}


def _evaluate_reward_model(path: Path, bench_dir: Path, cfg: EvalConfig, device: str,
                           pairs_dir: Path | str | None, result: dict[str, Any],
                           merge: Callable[[str, SetResult, float | None], None]) -> None:
    """A reward model is loaded as a judge and scores fixed (prompt, response) pairs, so none of the
    generating / log-likelihood sets of evals/sets.py applies. Its pairwise accuracy runs whatever cfg.sets
    lists (it is the one number every reward model gets); the held-out pairs when "preference" is listed."""
    t = time.perf_counter()
    rm = RewardModelJudge(path, device=device, batch_size=cfg.batch_size)
    out = eval_reward_model(rm, bench_dir, cfg)
    result["num_params"] = sum(p.numel() for p in rm.model.parameters())
    merge("reward_pairs", SetResult(
        {k: out[k] for k in ("reward_pairwise_accuracy", "reward_margin_mean")}, {"reward_pairs": out["pairs"]},
        out["items"], summary=f"reward pairwise acc {out['reward_pairwise_accuracy']} over {out['pairs']} pairs"), t)
    if "preference" in cfg.sets and pairs_dir is not None:
        pairs = _take(read_jsonl(Path(pairs_dir) / "test.jsonl"), cfg.preference_limit)
        texts = [pair["prompt"][-1]["content"] for pair in pairs]
        good = rm(texts, [pair["chosen"][-1]["content"] for pair in pairs])
        bad = rm(texts, [pair["rejected"][-1]["content"] for pair in pairs])
        correct = [float(g > b) for g, b in zip(good, bad, strict=True)]
        # Untimed, so a reward model's timings_s stays {"reward_pairs": s} like every stored reward-model result.
        merge("preference", SetResult(
            {"preference_pair_accuracy": _mean(correct)}, {"preference": len(pairs)},
            {"preference_pair_accuracy": _items("preference", [str(p["id"]) for p in pairs], correct)},
            summary=f"held-out preference pair accuracy {_mean(correct)} ({len(pairs)} pairs from prompts no SFT "
                    "row used)"), None)


# ---------------------------------------------------------------------------------------------------------
# Contamination


# Words plus arithmetic operators: "37 - 52" and "37 + 52" must stay different n-grams.
_WORD = re.compile(r"\w+|[+\-*/=]")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def contamination_report(train_files: Iterable[Path | str], bench_dir: Path | str, n: int = 8,
                         max_examples: int = 3) -> dict[str, Any]:
    """Share of each eval set's items sharing a word n-gram with any document of `train_files` (JSONL).

    Item text = `benchmarks.decontamination_texts` (what corpus decontamination removes). An item shorter
    than n words counts as one n-gram of all its words, so short arithmetic/safety prompts are found when
    they occur verbatim. Run it on the corpus before and after decontamination to show the effect.
    Returns {"n", "train_files", "train_documents", "sets": {name: {"items", "contaminated", "fraction",
    "examples"}}, "contaminated_fraction": {name: fraction}, "overall_fraction"}.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1 (8 matches corpus decontamination)")
    files = [Path(p) for p in train_files]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"training files not found: {missing[:3]}; pass the JSONL files of the corpus "
                                "stage to audit (materialize it first)")
    texts = decontamination_texts(Path(bench_dir))
    # n-gram -> {(set, item index)}; lengths present below n for the short items.
    index: dict[tuple[str, ...], set[tuple[str, int]]] = {}
    for name, items in texts.items():
        for i, text in enumerate(items):
            words = _words(text)
            for j in range(max(1, len(words) - n + 1)):
                gram = tuple(words[j:j + n])
                if gram:
                    index.setdefault(gram, set()).add((name, i))
    lengths = sorted({len(g) for g in index})
    hits: dict[tuple[str, int], str] = {}  # item -> id of the first training document that contains it
    n_docs = 0
    for path in files:
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({err}); contamination_report reads "
                                     "JSONL documents {\"id\", \"text\", ...}") from err
                n_docs += 1
                words = _words(str(row.get("text", "")))
                for k in lengths:
                    for j in range(len(words) - k + 1):
                        for item in index.get(tuple(words[j:j + k]), ()):
                            hits.setdefault(item, str(row.get("id", f"{path.name}:{line_no}")))
    sets: dict[str, dict[str, Any]] = {}
    for name in BENCHMARKS:
        found = sorted(i for s, i in hits if s == name)
        total = len(texts[name])
        sets[name] = {"items": total, "contaminated": len(found),
                      "fraction": round(len(found) / total, 6) if total else 0.0,
                      "examples": [{"text": texts[name][i][:160], "train_doc": hits[(name, i)]}
                                   for i in found[:max_examples]]}
    total_items = sum(s["items"] for s in sets.values())
    return {"n": n, "train_files": [str(p) for p in files], "train_documents": n_docs, "sets": sets,
            "contaminated_fraction": {k: v["fraction"] for k, v in sets.items()},
            "overall_fraction": round(sum(s["contaminated"] for s in sets.values()) / total_items, 6)
            if total_items else 0.0}


# ---------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Evaluate an llmdag checkpoint on the held-out sets.")
    parser.add_argument("--model-dir", type=Path, required=True, help="HF checkpoint dir (or asset dir with model/)")
    parser.add_argument("--evals-benchmarks", type=Path, required=True, help="evals/benchmarks dir")
    parser.add_argument("--tokenizer-tokenized-shards", type=Path, default=None, help="token shards for val bpb")
    parser.add_argument("--datasets-preferences", type=Path, default=None, help="held-out preference pairs")
    parser.add_argument("--parent-dir", type=Path, default=None, help="parent checkpoint for the win rate")
    parser.add_argument("--judge", type=Path, default=None, help="reward-model dir that judges the win rate")
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args, cfg = parse_config_args(parser, EvalConfig, "evals", argv)
    result = evaluate_checkpoint(args.model_dir, args.evals_benchmarks, cfg, args.tokenizer_tokenized_shards,
                                 args.parent_dir, args.judge, pairs_dir=args.datasets_preferences)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["metrics"], indent=2))
    return result


if __name__ == "__main__":
    main()
