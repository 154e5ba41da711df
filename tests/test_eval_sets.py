"""The eval-set registry (evals/sets.py): a set registered there runs in evaluate_checkpoint with no other change,
and `sets` / unregistering leave it out. CPU only, hermetic: a byte-level tokenizer trained on a few KB and a
1-layer d=16 Llama, so every test here takes seconds.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline_assets.evals.config import SETS, EvalConfig  # noqa: E402
from pipeline_assets.evals.sets import REGISTRY, EvalInputs, EvalSet, SetResult, register  # noqa: E402

# Every limit small and generation 2 tokens: the point is which keys appear, not what the model says.
CFG = EvalConfig(qa_limit=2, multiple_choice_limit=2, arithmetic_limit=3, safety_limit=2, adversarial_per_prompt=0,
                 win_rate_limit=1, max_new_tokens=2, arithmetic_max_new_tokens=2, batch_size=4, device="cpu",
                 num_threads=1, sample_prompts=("What is 1 + 1?",))


def prompt_length(x: EvalInputs) -> SetResult:
    """The toy metric: mean characters per arithmetic prompt, sized by arithmetic_limit."""
    records = x.benchmark("arithmetic")
    lengths = [float(len(r["prompt"])) for r in records]
    return SetResult({"prompt_length": sum(lengths) / len(lengths)}, {"prompt_length": len(records)},
                     {"prompt_length": {"set": "arithmetic", "ids": [str(r["id"]) for r in records],
                                        "scores": lengths}}, summary=f"mean prompt length over {len(records)} items")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks
    from pipeline_assets.tokenizer.train import TokenizerConfig, train_tokenizer

    root = tmp_path_factory.mktemp("eval_sets")
    text = "def add(a, b):\n    return a + b\n\nWhat is 12 + 30? The answer is 42.\n"
    (root / "docs.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": text * 3}) + "\n" for i in range(20)))
    tok_dir = root / "tokenizer"
    tok_dir.mkdir()
    train_tokenizer([root / "docs.jsonl"], tok_dir, TokenizerConfig(vocab_size=300, model_max_length=128),
                    log=lambda _: None)
    bench = root / "bench"
    bench.mkdir()
    build_benchmarks(bench, BenchmarkConfig(qa_size=2, multiple_choice_size=2, arithmetic_size=4, safety_size=4))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    model_dir = root / "model"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                                 bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return {"model": model_dir, "bench": bench}


def _evaluate(env: dict[str, Path], cfg: EvalConfig) -> dict[str, Any]:
    from pipeline_assets.evals.harness import evaluate_checkpoint

    return evaluate_checkpoint(env["model"], env["bench"], cfg, log=lambda _: None)


def _without_timings(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("timings_s", "wall_time_s")}


def test_a_registered_set_runs_with_no_other_change(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline_assets.tasks.heldout import load_benchmark

    before = _evaluate(env, CFG)  # no shards, pairs, parent or judge: val, preference and win_rate skip
    assert list(before["timings_s"]) == ["multiple_choice", "arithmetic", "qa", "safety", "samples"]
    monkeypatch.setitem(REGISTRY, "prompt_length", EvalSet(prompt_length, limit="arithmetic_limit"))
    cfg = replace(CFG, sets=EvalConfig().sets)  # the default: every set registered now
    assert cfg.sets == (*SETS, "prompt_length")
    after = _evaluate(env, cfg)

    prompts = [r["prompt"] for r in load_benchmark(env["bench"], "arithmetic")[:CFG.arithmetic_limit]]
    assert after["metrics"]["prompt_length"] == pytest.approx(sum(map(len, prompts)) / len(prompts))
    assert after["counts"]["prompt_length"] == CFG.arithmetic_limit == after["metric_stats"]["prompt_length"]["n"]
    assert list(after["timings_s"])[-1] == "prompt_length"  # registration order = run order: last
    # Everything else is what it was without the set.
    drop = {"metrics", "counts", "per_item", "metric_stats", "config"}
    assert {k: v for k, v in _without_timings(after).items() if k not in drop} == \
        {k: v for k, v in _without_timings(before).items() if k not in drop}
    for key in ("metrics", "counts", "per_item", "metric_stats"):
        assert {k: v for k, v in after[key].items() if k != "prompt_length"} == before[key]
    assert list(before["timings_s"]) == [s for s in list(after["timings_s"]) if s != "prompt_length"]

    # `sets` leaving it out: not run, no key anywhere.
    skipped = _evaluate(env, replace(CFG, sets=SETS))
    assert "prompt_length" not in skipped["metrics"] and "prompt_length" not in skipped["timings_s"]
    assert _without_timings(skipped) == _without_timings(before)


def test_unregistered_set_is_gone_and_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "prompt_length", EvalSet(prompt_length))
    assert "prompt_length" in EvalConfig().sets
    monkeypatch.delitem(REGISTRY, "prompt_length")
    assert EvalConfig().sets == SETS
    with pytest.raises(ValueError, match=r"unknown names \['prompt_length'\]"):
        EvalConfig(sets=("prompt_length",)).validate()


def test_needs_and_limit_fields_are_checked(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown inputs"):
        register("bad", prompt_length, needs=("tokenizer_dir",))
    assert "bad" not in REGISTRY
    monkeypatch.setitem(REGISTRY, "sized_by_nothing", EvalSet(prompt_length, limit="prompt_length_limit"))
    with pytest.raises(ValueError, match="EvalConfig.prompt_length_limit, which does not exist"):
        EvalConfig().validate()
    monkeypatch.delitem(REGISTRY, "sized_by_nothing")
    # A set whose input was not given is skipped: no metric, no timing.
    monkeypatch.setitem(REGISTRY, "needs_pairs", EvalSet(prompt_length, needs=("pairs_dir",)))
    out = _evaluate(env, replace(CFG, sets=("needs_pairs",)))
    assert "prompt_length" not in out["metrics"] and out["timings_s"] == {}
