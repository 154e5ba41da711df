"""datasets/synthetic: verifiers, decontamination, near-dedup, grounded pools and accumulation (no model).

The teacher is replaced by a function that answers from the prompt records (right, wrong or escaping, as a
test needs); everything after generation is the real code path. The asset on a real teacher runs in
test_pipeline.py and on the default run.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks
from pipeline_assets.jsonl import read_jsonl, write_jsonl
from pipeline_assets.posttrain.data import (
    REJECTED_FILE,
    SFT_FILE,
    SFT_VAL_FILE,
    SYNTHETIC_FILE,
    SFTDataConfig,
)
from pipeline_assets.posttrain.sandbox import sandbox_probe
from pipeline_assets.synthetic import generate, prompts
from pipeline_assets.synthetic.assets import overlapping, reverify
from pipeline_assets.synthetic.clean import Decontaminator, NearDuplicates, distinct_n
from pipeline_assets.synthetic.config import SyntheticDataConfig
from pipeline_assets.synthetic.verify import verify_arithmetic, verify_code, verify_docstring
from pipeline_assets.tasks.arithmetic import arithmetic_split
from pipeline_assets.tasks.heldout import load_benchmark, normalize_prompt

TASK = SFTDataConfig(operand_max=9, operators=("+",))
CFG = SyntheticDataConfig(arithmetic_prompts=30, docstring_prompts=4, code_prompts=3, operand_max=14,
                          device="cpu", num_threads=1)
STDLIB_DOC = {"id": "python_stdlib/shapes/area.py", "text": '''
def square(side):
    """Return the area of a square with the given side length."""
    return side * side


def circle(radius):
    """Return the area of a circle with the given radius."""
    return 3.14159 * radius * radius


def _private(x):
    """Return nothing useful for anyone at all."""
'''}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("benchmarks")
    build_benchmarks(out, BenchmarkConfig(operand_max=49, operators=("+",), arithmetic_size=40,
                                          word_problem_fraction=0.0))
    return out


def test_arithmetic_verifier_wants_the_exact_bare_integer() -> None:
    assert verify_arithmetic(" 55", "55").accepted
    assert verify_arithmetic("54", "55").reason == "wrong_answer"
    assert verify_arithmetic("55 or 56", "55").reason == "not_an_integer"
    assert verify_arithmetic("The answer is 55.", "55").reason == "not_an_integer"


def test_docstring_verifier_scores_against_the_document_sentence() -> None:
    ref = "Return the area of a square with the given side length."
    assert verify_docstring("Return the area of a square with the given side length.", ref, 0.6).score == 1.0
    low = verify_docstring("Compute things.", ref, 0.6)
    assert not low.accepted and low.reason == "below_reference_f1" and low.score < 0.6


def test_code_verifier_rejects_wrong_and_escaping_answers(tmp_path: Path) -> None:
    if sandbox_probe().mode != "bwrap":
        pytest.skip(f"no bubblewrap sandbox here: {sandbox_probe().reason}")
    tests = "assert solve() == 55"
    assert verify_code("```python\ndef solve():\n    return 50 + 5\n```", tests).accepted
    assert verify_code("def solve():\n    return 54", tests).reason == "tests_failed"
    assert verify_code("", tests).reason == "no_code"
    # An answer that passes its test only by reaching outside: writing to the host, opening a socket.
    target = tmp_path / "escaped.txt"
    escape = f"def solve():\n    open({str(target)!r}, 'w').write('x')\n    return 55"
    assert verify_code(escape, tests).reason == "tests_failed"
    assert not target.exists()
    network = "import socket\ndef solve():\n    socket.create_connection(('127.0.0.1', 22), 1)\n    return 55"
    assert verify_code(network, tests).reason == "tests_failed"
    assert verify_code("def solve():\n    while True:\n        pass", tests).reason.startswith("sandbox_")


def test_decontaminator_catches_eval_ngrams_and_heldout_prompts(bench: Path) -> None:
    decont = Decontaminator(bench, CorpusConfig())
    try:
        qa = load_benchmark(bench, "qa")[0]
        copied = {"messages": [{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": qa["answer"]}]}
        held = load_benchmark(bench, "arithmetic")[0]["prompt"]
        asked = {"messages": [{"role": "user", "content": held}, {"role": "assistant", "content": "1"}]}
        clean = {"messages": [{"role": "user", "content": "What is 99 + 99?"},
                              {"role": "assistant", "content": "198"}]}
        assert decont(copied) == "qa" and decont(asked) == "heldout_prompt" and decont(clean) is None
    finally:
        decont.close()


def test_near_duplicates_are_confirmed_by_jaccard_and_numbers_count() -> None:
    dedup = NearDuplicates(CorpusConfig(), 3)
    sentence = "Return the area of a square with the given side length in metres."
    assert dedup.add("a", sentence) is None
    assert dedup.add("b", sentence.replace("metres", "meters")) == "a"  # 11 of 12 3-grams shared
    assert dedup.add("c", "What is 12 + 7?\n19") is None
    assert dedup.add("d", "What is 12 + 8?\n20") is None  # numbers are the row: not a duplicate
    assert dedup.add("e", "what is 12 + 7? 19") == "c"
    assert distinct_n(["a b c", "a b d"], 2) == 0.75 and distinct_n([""], 2) is None


def test_pools_are_grounded_in_training_problems_and_documents() -> None:
    exclude = {normalize_prompt("What is 3 + 4?")}
    pool = prompts.arithmetic_pool(1000, 14, ("+",), exclude, random.Random(0))
    assert pool and all(r["grounding"].startswith("train split") for r in pool)
    for r in pool:
        a, b = (int(x) for x in r["prompt"][len("What is "):-1].split(" + "))
        assert arithmetic_split(a, "+", b) == "train" and int(r["answer"]) == a + b
    assert "What is 3 + 4?" not in {r["prompt"] for r in pool}
    found = prompts.documented_functions(STDLIB_DOC["id"], STDLIB_DOC["text"])
    assert [r["prompt"] for r in found] == ["What does `shapes.area.square` do?", "What does `shapes.area.circle` do?"]
    assert found[0]["reference"] == "Return the area of a square with the given side length."
    assert prompts.documented_functions("python_stdlib/json/encoder.py", STDLIB_DOC["text"]) == []  # eval module
    assert prompts.module_name("python_stdlib/email/__init__.py") == "email"
    assert prompts.module_name("python_docs/topics.txt") is None


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    sft = tmp_path / "sft"
    sft.mkdir()
    rows = [{"messages": [{"role": "user", "content": f"What is {a} + 1?"},
                          {"role": "assistant", "content": str(a + 1)}], "kind": "arithmetic"}
            for a in range(10) if arithmetic_split(a, "+", 1) == "train"]
    rows.append({"messages": [{"role": "user", "content": "What does `shapes.area.circle` do?"},
                              {"role": "assistant", "content": "Return the area of a circle."}], "kind": "docstring"})
    write_jsonl(sft / SFT_FILE, rows)
    write_jsonl(sft / SFT_VAL_FILE, [])
    mixture = tmp_path / "stdlib.jsonl"
    write_jsonl(mixture, [STDLIB_DOC])
    return sft, mixture


def _fake_teacher(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Greedy: right answers for even first operands, wrong for odd; sampled: right unless the first operand
    is 1 mod 4 (so resampling rescues half the wrong ones). The docstring reference; code that passes."""
    sampled_calls = []

    def replies(model, tok, batch, max_new_tokens, do_sample=False, temperature=1.0):
        sampled_calls.append(do_sample)
        out = []
        for prompt in batch:
            if prompt.startswith("What is "):
                a, b = (int(x) for x in prompt[len("What is "):-1].split(" + "))
                wrong = a % 4 == 1 if do_sample else a % 2 == 1
                out.append((str(a + b + wrong), True))
            elif prompt.startswith("Write"):
                expr = prompt.split("value of ")[1].rstrip(".")
                out.append((f"def solve():\n    return {expr}", True))
            else:
                out.append(("Return the area of a square with the given side length.", True))
        return out

    monkeypatch.setattr(generate, "generate_replies", replies)
    monkeypatch.setattr(generate, "load_tokenizer", lambda path, need_generation_markers: None)
    monkeypatch.setattr(generate, "load_causal_lm", lambda path, device: type("M", (), {"eval": lambda s: s})())
    return sampled_calls


def test_generations_accumulate_and_every_row_reverifies(tmp_path: Path, bench: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sampled = _fake_teacher(monkeypatch)
    sft, mixture = _inputs(tmp_path)
    teacher = tmp_path / "teacher-v1"
    first = generate.build_synthetic_dataset(tmp_path / "g1", CFG, teacher, sft, bench, [mixture],
                                             CorpusConfig(), TASK, log=lambda _: None)
    second = generate.build_synthetic_dataset(tmp_path / "g2", CFG, teacher, sft, bench, [mixture],
                                              CorpusConfig(), TASK, previous_dir=tmp_path / "g1",
                                              log=lambda _: None)
    rows1, rows2 = read_jsonl(tmp_path / "g1" / SYNTHETIC_FILE), read_jsonl(tmp_path / "g2" / SYNTHETIC_FILE)
    rejected2 = read_jsonl(tmp_path / "g2" / REJECTED_FILE)
    assert (first["generation"], second["generation"]) == (1, 2)
    assert rows1 and rows2[:len(rows1)] == rows1 and len(rows2) == first["rows"] + second["new_rows"]
    assert second["new_rows"] > 0 and second["rows_by_generation"] == {"1": first["new_rows"],
                                                                       "2": second["new_rows"]}
    asked = [normalize_prompt(r["messages"][0]["content"]) for r in rows2 + rejected2]
    assert len(asked) == len(set(asked)), "a prompt was asked in two generations"
    # Never a real row's prompt. Greedy answers to odd first operands were wrong: resampling rescued those
    # with a first operand 3 mod 4 (kept with their sample index), those 1 mod 4 stayed wrong and rejected.
    real = {normalize_prompt(r["messages"][0]["content"]) for r in read_jsonl(sft / SFT_FILE)}
    assert not real & set(asked) and True in sampled
    arithmetic = [r for r in rows2 if r["kind"] == "arithmetic"]
    first_operand = [int(r["messages"][0]["content"].split()[2]) for r in arithmetic]
    assert all(a % 4 != 1 for a in first_operand) and any(a % 4 == 3 for a in first_operand)
    assert all((r["sample"] > 0) == (a % 2 == 1) for r, a in zip(arithmetic, first_operand, strict=True))
    assert {r["reason"] for r in rejected2} == {"wrong_answer"}
    assert second["accepted_after_resampling"] > 0
    for row in rows2:
        assert row["teacher_version"] == "teacher-v1" and row["verifier"] and row["score"] > 0
        assert row["messages"][0]["role"] == "user" and row["messages"][1]["role"] == "assistant"
    assert {r["kind"] for r in rows1} >= {"arithmetic", "docstring"}
    # The docstring question about `circle` is a real SFT row's: only `square` may be asked.
    assert all("circle" not in r["messages"][0]["content"] for r in rows2 + rejected2)
    assert reverify(rows2, CFG.docstring_min_f1) == [] and overlapping(rows2, bench, CorpusConfig()) == []
    assert second["acceptance_by_verifier"]["exact_answer"]["asked"] > 0
    summary = json.loads((tmp_path / "g2" / "summary.json").read_text())
    assert summary["accumulated_from"] == str(tmp_path / "g1")


def test_a_tampered_row_fails_reverification() -> None:
    row = {"id": "x", "kind": "arithmetic", "answer": "19",
           "messages": [{"role": "user", "content": "What is 12 + 7?"}, {"role": "assistant", "content": "20"}]}
    assert reverify([row], 0.6) == ["x"]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="nothing to generate"):
        SyntheticDataConfig(arithmetic_prompts=0, docstring_prompts=0, code_prompts=0).validate()
    with pytest.raises(ValueError, match="operators"):
        SyntheticDataConfig(operators=("*",)).validate()


def test_distillation_trains_on_a_capped_share_and_saves_its_ablation(pretrained, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """models/distilled with synthetic rows: at most its cap, and the same recipe without them saved beside it,
    which its eval pairs with it on the target's items (evals.harness.ablation_effect)."""
    import torch
    from conftest import published

    from pipeline_assets.evals.config import EvalConfig
    from pipeline_assets.evals.harness import ablation_effect, evaluate_checkpoint
    from pipeline_assets.posttrain import distill
    from pipeline_assets.posttrain.config import DistillConfig
    from pipeline_assets.posttrain.data import WITHOUT_SYNTHETIC_DIR

    root = pretrained["root"]
    base, bench = published(root, "models/base").resolve(), published(root, "evals/benchmarks").resolve()
    prompts = tmp_path / "sft.jsonl"
    write_jsonl(prompts, [{"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                        {"role": "assistant", "content": str(i + 1)}]} for i in range(20)])
    # The base model never learnt to end a chat answer: the teacher's labels are stubbed, training is real.
    monkeypatch.setattr(distill, "generate_replies", lambda model, tok, batch, n: [("7", True)] * len(batch))
    synthetic = [{"messages": [{"role": "user", "content": f"What is {i} + 50?"},
                               {"role": "assistant", "content": str(i + 50)}]} for i in range(30)]
    cfg = DistillConfig(max_steps=2, batch_size=4, num_prompts=16, num_val_prompts=4, max_length=48,
                        synthetic_max_share=0.2, device="cpu", num_threads=1)
    out = tmp_path / "distilled"
    meta = distill.run_distill(cfg, base, prompts, out, log=lambda _: None, synthetic=synthetic)
    assert meta["synthetic_rows"] == 4 and meta["synthetic_share"] == pytest.approx(4 / 20)  # 16 real: 0.2 -> 4
    assert (out / WITHOUT_SYNTHETIC_DIR / "config.json").is_file() and meta["without_synthetic_train_time_s"] > 0
    eval_cfg = EvalConfig(sets=("arithmetic",), arithmetic_limit=12, arithmetic_max_new_tokens=2, device="cpu")
    result = evaluate_checkpoint(out, bench, eval_cfg, log=lambda _: None)
    effect = ablation_effect(result, out / WITHOUT_SYNTHETIC_DIR, bench, "arithmetic_accuracy", eval_cfg,
                             log=lambda _: None)
    assert effect["n"] == 12 and effect["with"] == result["metrics"]["arithmetic_accuracy"]
    assert {"delta", "ci95", "p_value", "without"} <= set(effect) and 0.0 <= effect["p_value"] <= 1.0
    # Without synthetic rows (or with share 0) nothing extra is trained or saved.
    none = distill.run_distill(replace(cfg, synthetic_max_share=0.0), base, prompts, tmp_path / "plain",
                               log=lambda _: None, synthetic=synthetic)
    assert none["synthetic_rows"] == 0 and not (tmp_path / "plain" / WITHOUT_SYNTHETIC_DIR).exists()
    # With 2 threads on CPU the arm without them trains beside the main one, in a side process on 1 thread.
    beside = distill.run_distill(replace(cfg, num_threads=2), base, prompts, tmp_path / "beside", log=lambda _: None,
                                 synthetic=synthetic)
    assert beside["without_synthetic_threads"] == 1 and beside["without_synthetic_train_time_s"] > 0
    assert (tmp_path / "beside" / WITHOUT_SYNTHETIC_DIR / "model.safetensors").is_file()
    assert meta["without_synthetic_threads"] == 1 and torch.get_num_threads() == 2  # the stage's count restored
