"""The held-out contract across stages on the default (tiny) profile: which prompts each stage may see.

test split  -> evals/benchmarks only (reported);  dev split -> in-training curves (datasets/reasoning);
training split -> SFT, GRPO, the synthetic pretraining stream; the training-split problems SFT never
used -> the preference stages' held-out pairs and RLHF's held-out prompts.
"""

from __future__ import annotations

import re

from conftest import profile_sections

from pipeline_assets.evals.benchmarks import build_benchmarks
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.posttrain import data
from pipeline_assets.tasks.arithmetic import arithmetic_split
from pipeline_assets.tasks.heldout import load_benchmark

ARITH = re.compile(r"What is (\d+) ([+-]) (\d+)\?")


def _problem(prompt: str) -> tuple[int, str, int] | None:
    m = ARITH.fullmatch(prompt)
    return (int(m[1]), m[2], int(m[3])) if m else None


def test_each_stage_sees_only_its_split(tmp_path):
    profile = profile_sections("tiny")
    bench = tmp_path / "bench"
    bench.mkdir()
    build_benchmarks(bench, profile.benchmarks)
    test = load_benchmark(bench, "arithmetic")
    assert len(test) >= 200 and all(arithmetic_split(*_problem(r["prompt"])) == "test" for r in test)

    for name in ("sft", "reasoning"):
        (tmp_path / name).mkdir()
    data.build_sft_dataset(tmp_path / "sft", profile.sft_data, bench)
    sft_rows = read_jsonl(tmp_path / "sft" / data.SFT_FILE) + read_jsonl(tmp_path / "sft" / data.SFT_VAL_FILE)
    sft_prompts = {r["messages"][0]["content"] for r in sft_rows}
    sft_problems = {p for p in map(_problem, sft_prompts) if p}
    assert sft_problems and all(arithmetic_split(*p) == "train" for p in sft_problems)
    sft_dev = read_jsonl(tmp_path / "sft" / data.DEV_FILE)  # SFT's early stop reads these
    assert len(sft_dev) >= 200 and all(arithmetic_split(*_problem(r["prompt"])) == "dev" for r in sft_dev)

    data.build_reasoning_dataset(tmp_path / "reasoning", profile.reasoning_data, bench)
    dev = read_jsonl(tmp_path / "reasoning" / data.DEV_FILE)
    assert dev and all(arithmetic_split(*_problem(r["prompt"])) == "dev" for r in dev)

    prompts = data.preference_prompts(tmp_path / "sft", profile.preference_data.prompts, profile.sft_data)
    held = [p for p in prompts if p["test"]]
    assert len(held) >= 200, len(held)  # n for the reward's held-out pair accuracy
    assert not {p["prompt"] for p in held} & sft_prompts
    assert all(arithmetic_split(*_problem(p["prompt"])) == "train" for p in held)
    assert {p["prompt"] for p in prompts if not p["test"]} <= sft_prompts
    feedback = data.preference_prompts(tmp_path / "sft", profile.feedback.prompts, profile.sft_data, unseen=False)
    assert not any(p["test"] for p in feedback)


def _topic(prompt: str, templates: tuple[str, ...], key: str) -> str:
    for template in templates:
        head, tail = template.split("{" + key + "}")
        if prompt.startswith(head) and prompt.endswith(tail):
            return prompt[len(head): len(prompt) - len(tail)]
    raise AssertionError(f"{prompt!r} matches no template")


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"[\w']+", text.lower())
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def test_safety_topics_are_held_out_not_just_their_prompts(tmp_path):
    """The red-team set measures generalisation to unseen requests: no SFT safety row contains a benchmark
    topic, and no training topic shares four consecutive words with one (a rephrased eval item)."""
    from pipeline_assets.evals.benchmarks import _SAFETY_TEMPLATES
    from pipeline_assets.posttrain.safety_rows import BENIGN_TOPICS, HARMFUL_TOPICS, generated_topics

    bench = tmp_path / "bench"
    bench.mkdir()
    build_benchmarks(bench, profile_sections("tiny").benchmarks)
    eval_topics = {_topic(r["prompt"], _SAFETY_TEMPLATES, "topic") for r in load_benchmark(bench, "safety")}
    assert len(eval_topics) >= 30
    harmful, benign = generated_topics()
    train_topics = [t for _, t in HARMFUL_TOPICS + harmful] + [t for t, _ in BENIGN_TOPICS] + list(benign)
    data.build_sft_dataset(tmp_path / "sft", profile_sections("tiny").sft_data, bench)
    rows = read_jsonl(tmp_path / "sft" / data.SFT_FILE) + read_jsonl(tmp_path / "sft" / data.SFT_VAL_FILE)
    prompts = [r["messages"][0]["content"].lower() for r in rows if r["kind"] in ("refusal", "benign")]
    assert not [(t, p) for t in eval_topics for p in prompts if t.lower() in p]
    shared = {t: e for t in train_topics for e in eval_topics if _ngrams(t, 4) & _ngrams(e, 4)}
    assert not shared, shared
