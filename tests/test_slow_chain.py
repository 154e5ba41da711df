"""Slow: does the chain's claimed value hold? A pretraining control and a 3-seed rerun of post-training.

Run: python -m pytest -q -m slow tests/test_slow_chain.py -s     (tens of minutes on 2 busy cores)

One module fixture builds a pretrained base exactly as the default graph does: the real default sources
(synthetic_arithmetic included), the tiny profile, ``models/base`` and the SFT / reasoning datasets
materialized in process through Dagster. Then:

- test_pretraining_matters: the tiny SFT recipe from that base vs from a random init of the same architecture
  and tokenizer (same data, seed and number of steps: the pretrained run's early-stop step, no stop for the
  control), compared item by item on two held-out sets: the benchmark's arithmetic test split (chat template,
  exact McNemar; reported) and docstring QA on the stdlib objects no SFT row asks about (log-likelihood per
  byte of the reference answer, paired bootstrap; asserted). Numbers: test-artifacts/pretraining_control.json.
- test_post_training_gains_hold_for_every_seed: for seeds 0, 1, 2, base (plain few-shot) -> SFT -> GRPO on
  the same test split; each gain must clear the gate the default run applies (gates.py: sft +0.20 at
  p < 0.01, grpo +0.10 at p < 0.05) for every seed. Numbers: test-artifacts/seed_chain.json.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import torch
from conftest import materialize_in_process, profile_sections, published

# Stage functions and their configs: kept in one place (posttrain modules may be split and renamed).
from pipeline_assets.definitions import build_definitions
from pipeline_assets.evals.harness import eval_arithmetic
from pipeline_assets.evals.stats import discordant, paired_test, wilson_ci
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.model_io import assistant, completion_logps, load_checkpoint, user
from pipeline_assets.posttrain.data import (
    DEV_FILE,
    DOCSTRING_MODULES,
    REASONING_FILE,
    SFT_FILE,
    SFT_VAL_FILE,
    docstring_items,
    docstring_question,
)
from pipeline_assets.posttrain.grpo import run_grpo
from pipeline_assets.posttrain.sft import run_sft
from pipeline_assets.tasks.heldout import normalize_prompt

pytestmark = pytest.mark.slow

PROFILE = profile_sections("tiny")
GATES = PROFILE.gates
EVAL = PROFILE.evals  # arithmetic_limit=None: every test-split item
SEEDS = (0, 1, 2)
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# What the control asserts, and why not arithmetic. Arithmetic is learned in SFT, not pretraining, at this
# budget: a sweep of the synthetic stream (math share 10% / 25% / 50% at 300 pretraining steps, 50% at 600
# steps, i.e. up to ~37k problem lines) left the base's plain few-shot accuracy at 0.025 / 0.013 / 0.017 / 0.025,
# and at 4c6f632 a random init reached 0.592 vs the pretrained base's 0.433 after the same 680 SFT steps
# (-15.8 points, McNemar p=0.0014), while at e4ed63f the same recipe gave +17.5 (below): the sign follows which
# run's SFT phase transition comes first. What pretraining gives SFT is the language and the knowledge of the
# corpus: held-out docstring QA (stdlib objects that pretraining read, that no SFT row asks about) must be
# answered with a higher log-likelihood per byte of the reference answer, by at least CONTROL_MIN_GAIN
# nats/byte, at p < alpha.
# Arithmetic is reported beside it, not asserted. Measured at e4ed63f (both SFTs 800 steps): docstring QA -1.679
# vs -1.905 nats/byte, +0.226 [0.202, 0.250], n=300; arithmetic 0.633 vs 0.458, +17.5 points, McNemar p=0.00014
# (the sign flips between runs: -15.8 at 4c6f632); SFT val loss 1.58 vs 2.42. 1 passed in 1,253 s.
# Seeds 0/1/2 at ae55044: SFT 0.633/0.329/0.571 (steps 800/600/960, p<1e-6 vs base 0.025) -> GRPO
# 0.804/0.600/0.871 (+0.171/+0.271/+0.300, p<=2e-6): passes for every seed (1,656 s).
CONTROL_MIN_GAIN, CONTROL_ALPHA = 0.05, 0.05
DOCSTRING_HELDOUT_MAX = 300


def _write(name: str, data: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(data, indent=2) + "\n")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """models/base, datasets/sft, datasets/reasoning and evals/benchmarks as the default graph builds them."""
    root = tmp_path_factory.mktemp("slow_chain")
    defs = build_definitions(root=str(root), landing=str(root / "landing"), builtin_sources=True)
    keys = [dg.AssetKey(["models", "base"]), dg.AssetKey(["datasets", "sft"]), dg.AssetKey(["datasets", "reasoning"])]
    with dg.instance_for_test() as inst:
        results = materialize_in_process(defs, inst, dg.AssetSelection.assets(*keys).upstream())
        assert all(r.success for r in results)
        yield {"root": root, "work": root / "runs",
               "base": published(root, "models/base").resolve(),
               "sft_data": published(root, "datasets/sft").resolve(),
               "shards": published(root, "tokenizer/tokenized_shards").resolve(),  # SFT's pretraining replay
               "reasoning": published(root, "datasets/reasoning").resolve(),
               "test": read_jsonl(published(root, "evals/benchmarks").resolve() / "arithmetic.jsonl"),
               "sft_runs": {}, "scores": {}}


def _score(chain: dict, model_dir: Path, fmt: str = "chat") -> list[float]:
    """0/1 per test-split item (the benchmark's reported split), cached per (model, format)."""
    key = (str(model_dir), fmt)
    if key not in chain["scores"]:
        model, tok = load_checkpoint(model_dir)
        out = eval_arithmetic(model, tok, chain["test"], replace(EVAL, arithmetic_format=fmt))
        chain["scores"][key] = out["items"]["arithmetic_accuracy"]["scores"]
    return chain["scores"][key]


def _sft(chain: dict, base: Path, name: str, seed: int, **overrides) -> tuple[Path, dict]:
    """The tiny profile's SFT recipe (seed and ``overrides`` applied) from ``base``; cached so both tests
    share seed 0."""
    if name not in chain["sft_runs"]:
        out = chain["work"] / name
        meta = run_sft(replace(PROFILE.sft, seed=seed, **overrides), base, chain["sft_data"] / SFT_FILE, out,
                       val_dataset_path=chain["sft_data"] / SFT_VAL_FILE, replay_shards=chain["shards"],
                       dev=read_jsonl(chain["sft_data"] / DEV_FILE))
        chain["sft_runs"][name] = (out, meta)
    return chain["sft_runs"][name]


def _random_init(chain: dict, seed: int = 0) -> Path:
    """The base's architecture and tokenizer with fresh weights: the control for what pretraining adds."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = chain["work"] / "random_init"
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(chain["base"])).save_pretrained(out)
    AutoTokenizer.from_pretrained(chain["base"]).save_pretrained(out)
    return out


def _summary(scores: list[float]) -> dict:
    k, n = int(sum(scores)), len(scores)
    lo, hi = wilson_ci(k, n)
    return {"accuracy": round(k / n, 4), "correct": k, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def _compare(a: list[float], b: list[float]) -> dict:
    """a vs b on the same items: delta, bootstrap CI, exact McNemar p and the discordant counts."""
    only_a, only_b = discordant(a, b)
    return {**paired_test(a, b), "only_a": only_a, "only_b": only_b}


def _docstring_heldout(chain: dict) -> list[tuple[str, str]]:
    """(prompt, first docstring sentence) for DOCSTRING_MODULES objects that no SFT row (train or val) asks about."""
    asked = {normalize_prompt(r["messages"][0]["content"]) for f in (SFT_FILE, SFT_VAL_FILE)
             for r in read_jsonl(chain["sft_data"] / f) if r["kind"] == "docstring_qa"}
    items = []
    for module_name, name, sentence in docstring_items(DOCSTRING_MODULES):
        prompt = docstring_question(module_name, name)
        if normalize_prompt(prompt) not in asked:
            items.append((prompt, sentence))
    return items[:DOCSTRING_HELDOUT_MAX]


def _loglik_per_byte(model_dir: Path, items: list[tuple[str, str]]) -> list[float]:
    """log p(reference answer | chat prompt) / answer bytes, nats: higher = the model knows it better."""
    model, tok = load_checkpoint(model_dir)
    ll = completion_logps(model, tok, [user(p) for p, _ in items], [assistant(a) for _, a in items])
    return [x / len(a.encode()) for x, (_, a) in zip(ll, items, strict=True)]


def test_pretraining_matters(chain):
    random_dir = _random_init(chain)
    pre_dir, pre_meta = _sft(chain, chain["base"], "sft_pretrained_s0", 0)
    # Same budget: the steps the pretrained run took before its dev early stop, with no stop for the control.
    rnd_dir, rnd_meta = _sft(chain, random_dir, "sft_random_s0", 0, max_steps=pre_meta["steps"],
                             stop_at_dev_accuracy=None)
    pre, rnd = _score(chain, pre_dir), _score(chain, rnd_dir)
    docs = _docstring_heldout(chain)
    assert len(docs) >= 200, len(docs)
    doc_pre, doc_rnd = _loglik_per_byte(pre_dir, docs), _loglik_per_byte(rnd_dir, docs)
    doc_diff = paired_test(doc_pre, doc_rnd)
    result = {
        "task": "tiny arithmetic test split (chat template, greedy)", "sft_config": pre_meta["config"],
        "base_plain": _summary(_score(chain, chain["base"], "plain")),
        "random_init_plain": _summary(_score(chain, random_dir, "plain")),
        "sft_from_pretrained": {**_summary(pre), "steps": pre_meta["steps"], "val_loss": pre_meta["val_loss"],
                                "train_loss_final": pre_meta["train_loss_final"],
                                "train_time_s": pre_meta["train_time_s"]},
        "sft_from_random_init": {**_summary(rnd), "steps": rnd_meta["steps"], "val_loss": rnd_meta["val_loss"],
                                 "train_loss_final": rnd_meta["train_loss_final"],
                                 "train_time_s": rnd_meta["train_time_s"]},
        "pretrained_minus_random": _compare(pre, rnd),
        "docstring_qa_heldout": {
            "metric": "answer log-likelihood per byte (nats), reference = first docstring sentence", "n": len(docs),
            "from_pretrained": round(sum(doc_pre) / len(docs), 4),
            "from_random_init": round(sum(doc_rnd) / len(docs), 4),
            "pretrained_minus_random": doc_diff, "examples": [p for p, _ in docs[:3]]},
        "target": {"min_gain_nats_per_byte": CONTROL_MIN_GAIN, "alpha": CONTROL_ALPHA},
    }
    _write("pretraining_control.json", result)
    print("\npretraining control:", json.dumps(result, indent=2))
    assert doc_diff["delta"] >= CONTROL_MIN_GAIN and doc_diff["p_value"] < CONTROL_ALPHA, doc_diff


def test_post_training_gains_hold_for_every_seed(chain):
    base = _score(chain, chain["base"], "plain")
    heldout = read_jsonl(chain["reasoning"] / DEV_FILE)  # dev split: GRPO's own before/after curve
    per_seed = {}
    for seed in SEEDS:
        sft_dir, sft_meta = _sft(chain, chain["base"], f"sft_pretrained_s{seed}", seed)
        grpo_dir = chain["work"] / f"grpo_s{seed}"
        grpo_meta = run_grpo(replace(PROFILE.grpo, seed=seed), sft_dir, chain["reasoning"] / REASONING_FILE,
                             grpo_dir, heldout)
        sft, grpo = _score(chain, sft_dir), _score(chain, grpo_dir)
        per_seed[seed] = {"base_plain": _summary(base), "sft": _summary(sft), "grpo": _summary(grpo),
                          "sft_minus_base": _compare(sft, base), "grpo_minus_sft": _compare(grpo, sft),
                          "sft_steps": sft_meta["steps"], "sft_train_time_s": sft_meta["train_time_s"],
                          "grpo_train_time_s": grpo_meta["train_time_s"]}
        print(f"\nseed {seed}:", json.dumps(per_seed[seed], indent=2))
    sft_gain, sft_alpha = GATES.min_gain("models/sft"), GATES.stage_alpha("models/sft")
    grpo_gain, grpo_alpha = GATES.min_gain("models/grpo"), GATES.stage_alpha("models/grpo")
    result = {"seeds": per_seed, "targets": {"sft_min_gain": sft_gain, "sft_alpha": sft_alpha,
                                             "grpo_min_gain": grpo_gain, "grpo_alpha": grpo_alpha}}
    _write("seed_chain.json", result)
    failures = []
    for seed, r in per_seed.items():
        s, g = r["sft_minus_base"], r["grpo_minus_sft"]
        if not (s["delta"] > sft_gain and s["p_value"] < sft_alpha):
            failures.append(f"seed {seed}: sft - base {s['delta']:+.4f} p={s['p_value']}")
        if not (g["delta"] > grpo_gain and g["p_value"] < grpo_alpha):
            failures.append(f"seed {seed}: grpo - sft {g['delta']:+.4f} p={g['p_value']}")
    assert not failures, failures
