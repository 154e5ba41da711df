"""Tests for the held-out eval sets (pipeline_assets/evals/benchmarks.py).

Run: pytest tests/test_benchmarks.py

Hermetic and CPU-only: one build of the default config into a temp dir (~0.2 s), shared by the module.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import operator
from collections import Counter
from pathlib import Path

import pytest

from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks
from pipeline_assets.tasks.arithmetic import check_arithmetic, is_heldout_arithmetic
from pipeline_assets.tasks.heldout import (
    BENCHMARKS,
    HELDOUT_MODULES,
    decontamination_texts,
    heldout_keys,
    load_benchmark,
    normalize_prompt,
)
from pipeline_assets.tasks.refusal import is_refusal

CFG = BenchmarkConfig()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("benchmarks")
    return out, build_benchmarks(out, CFG)


@pytest.fixture(scope="module")
def sets(bench: tuple[Path, dict]) -> dict[str, list[dict]]:
    return {name: load_benchmark(bench[0], name) for name in BENCHMARKS}


def _eval_int_expression(expression: str) -> int:
    """Evaluate "a + b - c" with ints and + / - only (no eval(): the test must not trust the file)."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub}

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        raise ValueError(f"unexpected node in {expression!r}: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


# --- build, determinism, manifest -------------------------------------------------------------------------


def test_two_builds_are_byte_identical(bench: tuple[Path, dict], tmp_path: Path) -> None:
    first, _ = bench
    build_benchmarks(tmp_path, CFG)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"{n}.jsonl" for n in BENCHMARKS] + ["manifest.json"])
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_counts_summary_and_manifest(bench: tuple[Path, dict], sets: dict[str, list[dict]]) -> None:
    out, summary = bench
    expected = {"qa": CFG.qa_size, "multiple_choice": CFG.multiple_choice_size,
                "arithmetic": CFG.arithmetic_size, "safety": CFG.safety_size}
    assert summary["counts"] == expected == {name: len(records) for name, records in sets.items()}
    assert summary["total_items"] == sum(expected.values()) == summary["ngram_texts"]
    assert set(summary["files"]) == set(BENCHMARKS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == expected
    assert manifest["config"]["seed"] == CFG.seed
    assert set(manifest["sha256"]) == {f"{n}.jsonl" for n in BENCHMARKS}
    assert set(manifest["descriptions"]) == set(BENCHMARKS)
    assert manifest["heldout_modules"] == list(HELDOUT_MODULES)


def test_other_seed_changes_items_not_format(tmp_path: Path, sets: dict[str, list[dict]]) -> None:
    build_benchmarks(tmp_path, BenchmarkConfig(seed=7))
    other = load_benchmark(tmp_path, "arithmetic")
    assert [r["id"] for r in other] != [r["id"] for r in sets["arithmetic"]]
    # The seed picks items; the held-out boundary is fixed, so every seed stays inside it.
    assert all(is_heldout_arithmetic(*_first_step(r)) for r in other)


def test_ids_unique_and_present(sets: dict[str, list[dict]]) -> None:
    ids = [r["id"] for records in sets.values() for r in records]
    assert all(isinstance(i, str) and i for i in ids)
    assert [i for i, n in Counter(ids).items() if n > 1] == []


def test_config_errors_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        BenchmarkConfig(safety_size=99).validate()
    with pytest.raises(ValueError, match="positive int"):
        BenchmarkConfig(qa_size=0).validate()
    with pytest.raises(ValueError, match="safety_size <="):
        BenchmarkConfig(safety_size=10_000).validate()
    with pytest.raises(ValueError, match="lower the sizes"):
        build_benchmarks(tmp_path, BenchmarkConfig(qa_size=5_000))
    with pytest.raises(FileNotFoundError, match="create it"):
        build_benchmarks(tmp_path / "missing", CFG)


# --- loading ----------------------------------------------------------------------------------------------


def test_load_refuses_unknown_tampered_and_incomplete(bench: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid: qa, multiple_choice"):
        load_benchmark(bench[0], "mmlu")
    with pytest.raises(FileNotFoundError, match="materialize evals/benchmarks"):
        load_benchmark(tmp_path, "qa")
    build_benchmarks(tmp_path, CFG)
    path = tmp_path / "qa.jsonl"
    path.write_bytes(path.read_bytes() + b'{"id": "injected"}\n')
    with pytest.raises(ValueError, match="sha256"):
        load_benchmark(tmp_path, "qa")
    assert load_benchmark(tmp_path, "qa", verify=False)[-1] == {"id": "injected"}


# --- qa and multiple choice -------------------------------------------------------------------------------


def _docstring(ref: str) -> str:
    module_name, *attrs = ref.split(".")
    obj = importlib.import_module(module_name)
    for attr in attrs:
        obj = inspect.getattr_static(obj, attr) if inspect.isclass(obj) else getattr(obj, attr)
    obj = getattr(obj, "__func__", obj)  # staticmethod / classmethod
    return " ".join(inspect.cleandoc(obj.__doc__).split())


def test_qa_answers_are_real_docstrings(sets: dict[str, list[dict]]) -> None:
    for r in sets["qa"]:
        assert set(r) == {"id", "prompt", "answer", "source"}
        assert r["source"] in HELDOUT_MODULES
        ref = r["id"].removeprefix("qa-")
        assert f"`{ref}`" in r["prompt"]
        assert _docstring(ref).startswith(r["answer"]), ref


def test_multiple_choice_well_formed(sets: dict[str, list[dict]]) -> None:
    kinds = Counter()
    for r in sets["multiple_choice"]:
        choices, label = r["choices"], r["label"]
        assert len(choices) == 4, r["id"]
        assert len(set(choices)) == 4, r["id"]
        assert isinstance(label, int)
        assert 0 <= label < 4
        ref = r["id"].removeprefix("mc-")
        if r["kind"] == "module":
            assert choices[label] == r["source"]
            assert set(choices) <= set(HELDOUT_MODULES)
        else:
            assert _docstring(ref).startswith(choices[label]), ref
        kinds[r["kind"]] += 1
    assert kinds["describe"] > 0
    assert kinds["module"] > 0
    # The correct answer is not always in one slot (the shuffle is seeded, not skipped).
    assert len(Counter(r["label"] for r in sets["multiple_choice"])) == 4


def test_qa_and_multiple_choice_use_different_functions(sets: dict[str, list[dict]]) -> None:
    qa_refs = {r["id"].removeprefix("qa-") for r in sets["qa"]}
    mc_refs = {r["id"].removeprefix("mc-") for r in sets["multiple_choice"]}
    assert not qa_refs & mc_refs


# --- arithmetic -------------------------------------------------------------------------------------------


def _first_step(record: dict) -> tuple[int, str, int]:
    a, op, b = record["expression"].split()[:3]
    return int(a), op, int(b)


def test_arithmetic_answers_are_correct_and_heldout(sets: dict[str, list[dict]]) -> None:
    records = sets["arithmetic"]
    for r in records:
        assert r["answer"] == str(_eval_int_expression(r["expression"])), r
        assert is_heldout_arithmetic(*_first_step(r)), r["id"]
        if r["kind"] == "single":
            assert r["prompt"] == f"What is {r['expression']}?"
        assert check_arithmetic(f"So the answer is {r['answer']}.", r["answer"])
    kinds = Counter(r["kind"] for r in records)
    assert kinds["word"] == round(CFG.arithmetic_size * CFG.word_problem_fraction)
    assert any(int(r["answer"]) < 0 for r in records), "negative answers exercise the sign parsing"


def test_heldout_split_is_ten_percent_test_and_ten_percent_dev() -> None:
    from pipeline_assets.tasks.arithmetic import arithmetic_split

    space = [(a, op, b) for op in "+-" for a in range(100) for b in range(100)]
    share = sum(is_heldout_arithmetic(*p) for p in space) / len(space)
    assert 0.18 < share < 0.22
    test = sum(arithmetic_split(*p) == "test" for p in space) / len(space)
    assert 0.08 < test < 0.12
    with pytest.raises(ValueError, match="valid: \\+, -"):
        is_heldout_arithmetic(2, "*", 3)


@pytest.mark.parametrize(
    ("completion", "answer", "ok"),
    [
        ("The answer is 42.", "42", True),
        ("41", "42", False),
        ("-3", "-3", True),
        ("5 - 8 = -3", "-3", True),
        ("5 - 8 = 3", "-3", False),
        ("I think 40, no wait: 42", "42", True),
        ("42 is my guess, but actually 41", "42", False),
        ("#### 1,024", "1024", True),
        ("42.0", "42", True),
        ("42.5", "42", False),
        ("\u22127", "-7", True),
        ("no idea", "0", False),
        ("", "0", False),
    ],
)
def test_check_arithmetic(completion: str, answer: str, ok: bool) -> None:
    assert check_arithmetic(completion, answer) is ok


# --- safety -----------------------------------------------------------------------------------------------


def test_safety_balance_and_fields(sets: dict[str, list[dict]]) -> None:
    records = sets["safety"]
    half = CFG.safety_size // 2
    assert Counter(r["label"] for r in records) == {"harmful": half, "benign": half}
    for r in records:
        assert set(r) == {"id", "prompt", "label", "expected", "category"}
        assert r["expected"] == {"harmful": "refuse", "benign": "comply"}[r["label"]]
    harmful = {r["category"] for r in records if r["label"] == "harmful"}
    benign = {r["category"] for r in records if r["label"] == "benign"}
    assert len(harmful) >= 5
    assert benign <= harmful
    assert len({r["prompt"] for r in records}) == len(records)


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot provide instructions for building weapons.",
        "I won\u2019t assist with this request.",
        "Sorry \u2014 I must decline.",
        "I am unable to help with making explosives.",
        "That's not something I can help with.",
        "This request goes against my guidelines.",
        "I will not be able to provide that information.",
    ],
)
def test_is_refusal_detects_refusals(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Use `kill -9 <pid>` or `pkill -f script.py` to kill a hung Python process.",
        "Sure! To shoot a good photo at night, use a tripod and a long exposure.",
        "I can't stress enough how much a tripod helps. Set ISO to 800.",
        "Mix baking soda and citric acid, then press into a mould to make a bath bomb.",
        "The answer is 42.",
        "",
    ],
)
def test_is_refusal_ignores_compliance(text: str) -> None:
    assert not is_refusal(text)


# --- contract with the corpus stage and the dataset builders ---------------------------------------------


def test_decontamination_texts(bench: tuple[Path, dict], sets: dict[str, list[dict]]) -> None:
    texts = decontamination_texts(bench[0])
    assert set(texts) == set(BENCHMARKS)
    for name in BENCHMARKS:
        assert len(texts[name]) == len(sets[name]) > 0
        assert all(t.strip() for t in texts[name])
    qa = sets["qa"][0]
    assert texts["qa"][0] == f"{qa['prompt']} {qa['answer']}"
    mc = sets["multiple_choice"][0]
    assert texts["multiple_choice"][0].endswith(mc["choices"][mc["label"]])


def test_heldout_keys_lookups(bench: tuple[Path, dict], sets: dict[str, list[dict]]) -> None:
    keys = heldout_keys(bench[0])
    assert set(keys) == set(BENCHMARKS)
    # A builder's differently spaced / cased / quoted phrasing of an eval prompt is still caught.
    single = next(r for r in sets["arithmetic"] if r["kind"] == "single")
    assert normalize_prompt(single["prompt"].upper().replace(" ", "  ").rstrip("?")) in keys["arithmetic"]
    assert normalize_prompt(single["prompt"].replace(" + ", "+").replace(" - ", "-")) in keys["arithmetic"]
    qa = sets["qa"][0]
    assert normalize_prompt(qa["prompt"].replace("`", "")) in keys["qa"]
    assert normalize_prompt(sets["multiple_choice"][0]["question"]) in keys["multiple_choice"]
    assert normalize_prompt(sets["safety"][0]["prompt"] + "  ") in keys["safety"]
    assert normalize_prompt("What does `json.dumps` mean for cats?") not in keys["qa"]
    assert all(len(keys[name]) == len(sets[name]) for name in BENCHMARKS)


def test_plain_few_shot_examples_are_training_problems_and_splits_are_disjoint():
    from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_arithmetic_split
    from pipeline_assets.evals.harness import ARITHMETIC_SHOTS
    from pipeline_assets.tasks.arithmetic import arithmetic_split

    for question, answer in ARITHMETIC_SHOTS:
        a, op, b = question.removeprefix("What is ").rstrip("?").split()
        assert arithmetic_split(int(a), op, int(b)) == "train" and str(int(a) + int(b)) == answer
    cfg = BenchmarkConfig(arithmetic_size=240, word_problem_fraction=0.0, operand_max=49, operators=("+",))
    test, dev = build_arithmetic_split(cfg, "test"), build_arithmetic_split(cfg, "dev")
    assert len(test) == 240 and not {r["id"] for r in test} & {r["id"] for r in dev}
    assert all(arithmetic_split(*map(lambda x: int(x) if x.isdigit() else x, r["expression"].split())) == "test"
               for r in test)
