"""lm-eval export (pipeline_assets/evals/lm_eval_tasks.py) and bench/lm_eval_local.py: lm-eval must grade the
same items the same way our harness does, in both arithmetic formats.

    pytest tests/test_lm_eval_export.py       # file checks only without lm-eval; with it, ~40 s more

Fixture: a 512-token llmdag tokenizer, 20 tiny-profile arithmetic items ("What is a + b?", a, b <= 49) and
8 MC items, and a d=64 Llama fine-tuned for a few seconds on the right answers of the first half of the
arithmetic items in both formats, so accuracies sit between 0 and 1 and a grading mismatch shows.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import fit_targets

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks  # noqa: E402
from pipeline_assets.evals.harness import ARITHMETIC_SHOTS  # noqa: E402
from pipeline_assets.evals.lm_eval_tasks import write_lm_eval_tasks  # noqa: E402
from pipeline_assets.tasks.arithmetic import check_arithmetic
from pipeline_assets.tasks.heldout import load_benchmark  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_ARITH = 20


def _texts(limit_bytes: int = 30_000) -> list[str]:
    import pydoc_data.topics

    out, total = [], 0
    for _, text in sorted(pydoc_data.topics.topics.items()):
        out.append(text)
        total += len(text.encode())
        if total >= limit_bytes:
            break
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pipeline_assets.tokenizer.train import TokenizerConfig, train_tokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lm_eval")
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(_texts())))
    tok_dir = root / "tokenizer"
    tok_dir.mkdir()
    train_tokenizer([docs], tok_dir, TokenizerConfig(vocab_size=512, model_max_length=256), log=lambda _: None)
    bench = root / "bench"
    bench.mkdir()
    build_benchmarks(bench, BenchmarkConfig(qa_size=4, multiple_choice_size=8, arithmetic_size=N_ARITH,
                                            safety_size=4, word_problem_fraction=0.0, operand_max=49,
                                            operators=("+",)))
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    shots = "".join(f"{q} {a}\n" for q, a in ARITHMETIC_SHOTS)
    examples = []
    for r in load_benchmark(bench, "arithmetic")[: N_ARITH // 2]:
        chat = tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                       add_generation_prompt=True)
        examples.append((tok(chat, add_special_tokens=False)["input_ids"],
                         tok(r["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
        examples.append(([tok.eos_token_id] + tok(shots + r["prompt"], add_special_tokens=False)["input_ids"],
                         tok(f" {r['answer']}\n", add_special_tokens=False)["input_ids"]))
    fit_targets(model, examples, steps=60, lr=5e-3)
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    return {"root": root, "bench": bench, "ckpt": ckpt}


def test_task_files(env: dict[str, Path], tmp_path: Path) -> None:
    out = write_lm_eval_tasks(env["bench"], tmp_path / "tasks", limit=5)
    assert out["tasks"] == ["llmdag_multiple_choice", "llmdag_arithmetic", "llmdag_arithmetic_chat"]
    assert set(out["counts"].values()) == {5}
    for task, files in out["files"].items():
        spec = yaml.safe_load(Path(files["yaml"]).read_text())
        data = Path(spec["dataset_kwargs"]["data_files"]["test"])
        assert spec["task"] == task and data.is_absolute() and data.is_file() and str(data) == files["data"]
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        assert len(rows) == 5
        if spec["output_type"] == "multiple_choice":
            assert all(0 <= r["label"] < len(r["choices"]) for r in rows) and spec["doc_to_target"] == "label"
            continue
        assert spec["generation_kwargs"]["until"] == ["<|im_end|>"] and spec["doc_to_text"] == "{{context}}"
        if task == "llmdag_arithmetic":
            assert rows[0]["context"] == "<|im_end|>What is 3 + 4? 7\nWhat is 12 + 30? 42\nWhat is 25 + 14? 39\n" \
                + rows[0]["prompt"]
        else:
            assert rows[0]["context"] == f"<|im_start|>user\n{rows[0]['prompt']}<|im_end|>\n<|im_start|>assistant\n"
        # The filter chain, replayed with re, must grade like check_arithmetic.
        for completion in (" 42", "\n\n40 + 2 = 42\n7", "The answer is 1,042.", "42.0", "42.5", "-42", "no"):
            text = completion
            for step in spec["filter_list"][0]["filter"][:-1]:
                found = re.findall(step["regex_pattern"], text)
                text = found[step["group_select"]].strip() if found else "[invalid]"
            for pattern in spec["metric_list"][0]["regexes_to_ignore"]:
                text = re.sub(pattern, "", text)
            graded = completion.strip().split("\n")[0] if task == "llmdag_arithmetic" else completion
            assert (text == "42") == check_arithmetic(graded, "42"), (task, completion, text)


def test_chat_variant_for_apply_chat_template(env: dict[str, Path], tmp_path: Path) -> None:
    out = write_lm_eval_tasks(env["bench"], tmp_path / "tasks", limit=3, chat=True)
    assert out["tasks"] == ["llmdag_multiple_choice", "llmdag_arithmetic_chat"]
    spec = yaml.safe_load(Path(out["files"]["llmdag_arithmetic_chat"]["yaml"]).read_text())
    assert spec["doc_to_text"] == "{{prompt}}"


def test_bench_without_lm_eval(env: dict[str, Path], tmp_path: Path) -> None:
    # An interpreter without site-packages stands in for a venv that lacks lm-eval.
    bare = tmp_path / "python-without-lm-eval"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    bare.chmod(0o755)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "lm_eval_local.py"), "--model-dir", str(env["ckpt"]),
                           "--bench-dir", str(env["bench"]), "--lm-eval-python", str(bare)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "pip install lm-eval==0.4.13" in proc.stderr


def test_lm_eval_agrees_item_by_item(env: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    out = tmp_path / "agreement.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "lm_eval_local.py"), "--model-dir", str(env["ckpt"]),
                           "--bench-dir", str(env["bench"]), "--limit", "0", "--out-dir", str(tmp_path / "run"),
                           "--json", str(out), "--max-disagreements", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())["tasks"]
    arith = report["llmdag_arithmetic_chat"]
    assert arith["n"] == N_ARITH and report["llmdag_arithmetic"]["n"] == N_ARITH
    # The fine-tune must have taught something, or "both 0" would make the agreement check vacuous.
    assert arith["llmdag_accuracy"] > 0 or report["llmdag_arithmetic"]["llmdag_accuracy"] > 0
    for task in ("llmdag_arithmetic", "llmdag_arithmetic_chat"):
        for item in report[task]["items"]:
            assert item["lm_eval_completion"] == item["completion"], (task, item)
            assert item["lm_eval_correct"] == item["correct"], (task, item)
    assert report["llmdag_multiple_choice"]["disagreements"] == 0


def test_compare_counts_disagreements() -> None:
    spec = importlib.util.spec_from_file_location("lm_eval_local", REPO / "bench" / "lm_eval_local.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ours = {"llmdag_arithmetic": [{"id": "a", "completion": "42", "correct": True},
                                  {"id": "b", "completion": "7", "correct": False}]}
    theirs = {"llmdag_arithmetic": [{"doc": {"id": "a"}, "resps": [[" 42\nWhat is"]], "filtered_resps": ["42"],
                                     "exact_match": 1.0},
                                    {"doc": {"id": "b"}, "resps": [["9"]], "filtered_resps": ["9"],
                                     "exact_match": 1.0}]}
    r = bench.compare(ours, theirs)["llmdag_arithmetic"]
    assert (r["n"], r["llmdag_accuracy"], r["lm_eval_accuracy"]) == (2, 0.5, 1.0)
    assert r["disagreements"] == 1 and r["completion_mismatches"] == 1
