"""Tests for post-training: datasets, SFT (full + LoRA), GRPO and distillation.

Run: python -m pytest tests/test_posttrain_sft_rl.py          (default set, CPU, 1 torch thread)
     python -m pytest tests/test_posttrain_sft_rl.py -m slow  (the longer runs)

Hermetic, built the way the pipeline builds it: our BPE tokenizer (vocab 1024) trained on ~350 KB of this
Python's stdlib source and pydoc topics, the held-out benchmarks, and a random-init Llama (hidden 128,
4 layers, tied embeddings) saved with save_pretrained; no pretraining. One SFT run is shared by the SFT,
GRPO and distillation tests (module fixture). Thresholds are about a third of the gains measured on this
box; the measured numbers sit next to each assertion.
"""

from __future__ import annotations

import json
import os
import re
import sysconfig
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray hub id must fail fast, never download
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks  # noqa: E402
from pipeline_assets.jsonl import read_jsonl  # noqa: E402
from pipeline_assets.posttrain.data import (  # noqa: E402
    ReasoningDataConfig,
    SFTDataConfig,
    build_reasoning_dataset,
    build_sft_dataset,
    load_chat_dataset,
    split_arithmetic,
)
from pipeline_assets.posttrain.grpo import (  # noqa: E402
    REWARD_FUNCS,
    GRPOStageConfig,
    correctness_reward,
    format_reward,
    get_reward_funcs,
    run_grpo,
)
from pipeline_assets.posttrain.sft import ArithmeticCurve, SFTStageConfig, arithmetic_accuracy, run_sft  # noqa: E402
from pipeline_assets.tasks.arithmetic import arithmetic_split, is_heldout_arithmetic
from pipeline_assets.tasks.heldout import HELDOUT_MODULES, heldout_keys, load_benchmark, normalize_prompt
from pipeline_assets.tasks.refusal import is_refusal
from pipeline_assets.tokenizer.train import TokenizerConfig, train_tokenizer  # noqa: E402

torch.set_num_threads(1)

# The task is "a + b" with a, b <= 49 (the notes' recipe), measured on 200 problems of the benchmark's held-out
# hash split. The benchmark's own space (+ and -, 0..99, word problems) is ~8x larger: the tiny model reaches
# only 0.035-0.055 there after the same 400 steps (see test_tiny_defaults_on_benchmark, marked slow).
OPS = ("+",)
OPERAND_MAX = 49
SFT_DATA = SFTDataConfig(arithmetic=1900, operand_max=OPERAND_MAX, operators=OPS, docstring_qa=60, refusals=60,
                         benign=60, identity=12)
REASONING_DATA = ReasoningDataConfig(size=1900, operand_max=OPERAND_MAX, operators=OPS)
# The tiny defaults (at most 660 steps x 64, lr 1e-3), stopped as the tiny profile stops SFT: at the first dev
# point >= 0.3. Where the phase transition comes is chaotic (it moves with the CPU's float kernels: on an AMD
# EPYC host 660 steps reached 0.895, leaving GRPO 0.02 to gain), so a fixed step count gives GRPO anywhere
# from no headroom to no foothold.
SFT_CFG = SFTStageConfig(eval_every=20, stop_at_dev_accuracy=0.3)
GRPO_CFG = GRPOStageConfig(max_steps=50)  # tiny defaults but 50 steps: G=8, 32 completions/step, lr 3e-5
_ARITH = re.compile(r"^What is (\d+) ([+-]) (\d+)\?$")


# ---------------------------------------------------------------------------------------------------------
# Fixtures


def _write_corpus(path: Path) -> Path:
    from pydoc_data.topics import topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for p in sorted(stdlib.glob("*.py"))[:80]:
        text = p.read_text(encoding="utf-8")
        if total + len(text) <= 200_000:
            docs.append(("code", p.name, text))
            total += len(text)
    total = 0
    for key, text in sorted(topics.items()):
        if total + len(text) <= 150_000:
            docs.append(("prose", key, text))
            total += len(text)
    with path.open("w", encoding="utf-8") as f:
        for domain, doc_id, text in docs:
            f.write(json.dumps({"id": f"{domain}/{doc_id}", "text": text,
                                "metadata": {"source": "stdlib", "domain": domain}}) + "\n")
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("posttrain")


@pytest.fixture(scope="module")
def bench(root: Path) -> Path:
    out = root / "bench"
    out.mkdir()
    build_benchmarks(out, BenchmarkConfig())
    return out


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return split_arithmetic(OPERAND_MAX, 200, OPS)


@pytest.fixture(scope="module")
def base_dir(root: Path) -> Path:
    """Our tokenizer + a random-init tiny Llama, exactly as models/base would hand them on (no pretraining)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_dir = root / "tokenizer"
    tok_dir.mkdir()
    train_tokenizer([_write_corpus(root / "corpus.jsonl")], tok_dir, TokenizerConfig(vocab_size=1024),
                    log=lambda _: None)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    out = root / "base"
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sft_data(root: Path, bench: Path) -> dict[str, Any]:
    return build_sft_dataset(root / "sft_data", SFT_DATA, bench)


@pytest.fixture(scope="module")
def reasoning(root: Path, bench: Path) -> dict[str, Any]:
    return build_reasoning_dataset(root / "reasoning", REASONING_DATA, bench)


@pytest.fixture(scope="module")
def sft_run(root: Path, base_dir: Path, sft_data: dict, heldout: list[dict]) -> dict[str, Any]:
    return run_sft(SFT_CFG, base_dir, sft_data["files"]["sft.jsonl"], root / "sft", None,
                   log=lambda _: None, test=heldout, val_dataset_path=sft_data["files"]["sft_val.jsonl"],
                   dev=split_arithmetic(OPERAND_MAX, 200, OPS, split="dev"))


@pytest.fixture(scope="module")
def grpo_run(root: Path, sft_run: dict, reasoning: dict, heldout: list[dict]) -> dict[str, Any]:
    return run_grpo(GRPO_CFG, Path(sft_run["checkpoint_dir"]), reasoning["files"]["reasoning.jsonl"],
                    root / "grpo", heldout, log=lambda _: None)


# ---------------------------------------------------------------------------------------------------------
# Datasets


def _arith_prompts(rows: list[dict]) -> list[tuple[int, str, int]]:
    out = []
    for row in rows:
        text = row["messages"][0]["content"] if "messages" in row else row["prompt"][0]["content"]
        m = _ARITH.match(text)
        if m:
            out.append((int(m.group(1)), m.group(2), int(m.group(3))))
    return out


def test_sft_dataset_excludes_heldout_and_matches_graders(sft_data: dict, bench: Path) -> None:
    train = read_jsonl(Path(sft_data["files"]["sft.jsonl"]))
    val = read_jsonl(Path(sft_data["files"]["sft_val.jsonl"]))
    rows = train + val
    keys = heldout_keys(bench)
    held = set().union(*keys.values())
    assert not [r for r in rows if normalize_prompt(r["messages"][0]["content"]) in held]
    problems = _arith_prompts(rows)
    assert len(problems) == sum(r["kind"] == "arithmetic" for r in rows) == SFT_DATA.arithmetic
    assert not [p for p in problems if is_heldout_arithmetic(*p)]
    for r in rows:
        user, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        if r["kind"] == "arithmetic":
            a, op, b = _arith_prompts([r])[0]
            assert reply == str(a + b if op == "+" else a - b)  # a bare integer: what GRPO's format reward wants
        elif r["kind"] == "docstring_qa":
            module = re.search(r"`([\w.]+)`", user).group(1).split(".")[0]
            assert module not in HELDOUT_MODULES
        elif r["kind"] == "refusal":
            assert is_refusal(reply)
        elif r["kind"] == "benign":
            assert not is_refusal(reply)
    qa_answers = {r["answer"] for r in load_benchmark(bench, "qa")}
    assert not [r for r in rows if r["kind"] == "docstring_qa" and r["messages"][1]["content"] in qa_answers]
    assert {"arithmetic", "docstring_qa", "refusal", "benign", "identity"} <= set(sft_data["counts"])
    # Deterministic: the same config rebuilds byte-identical files.
    again = build_sft_dataset(Path(sft_data["files"]["sft.jsonl"]).parent.with_name("sft_again"), SFT_DATA, bench)
    assert again["sha256"] == sft_data["sha256"]


def test_reasoning_dataset_excludes_heldout(reasoning: dict, heldout: list[dict], bench: Path, root: Path) -> None:
    rows = read_jsonl(Path(reasoning["files"]["reasoning.jsonl"]))
    problems = _arith_prompts(rows)
    assert len(problems) == len(rows) == REASONING_DATA.size
    assert not [p for p in problems if is_heldout_arithmetic(*p)]
    assert all(r["answer"] == str(a + b if op == "+" else a - b) for r, (a, op, b) in zip(rows, problems, strict=True))
    assert not {r["prompt"][0]["content"] for r in rows} & {r["prompt"] for r in heldout}
    # The held-out list written beside the data (GRPO's in-training curve) is the dev split, never the
    # benchmark's test items.
    dev = read_jsonl(Path(reasoning["files"]["dev_arithmetic.jsonl"]))
    dev_problems = [(int(m[1]), m[2], int(m[3])) for m in (_ARITH.match(r["prompt"]) for r in dev)]
    assert len(dev_problems) == len(dev) > 0 and all(arithmetic_split(*p) == "dev" for p in dev_problems)
    assert not {r["prompt"] for r in dev} & {r["prompt"] for r in load_benchmark(bench, "arithmetic")}
    words = build_reasoning_dataset(root / "reasoning_words", ReasoningDataConfig(size=200, word_problem_fraction=0.5),
                                    bench)
    assert words["counts"] == {"arithmetic": 100, "word_problem": 100}
    held_prompts = heldout_keys(bench)["arithmetic"]
    assert not [r for r in read_jsonl(Path(words["files"]["reasoning.jsonl"]))
                if normalize_prompt(r["prompt"][0]["content"]) in held_prompts]


def test_data_config_errors() -> None:
    with pytest.raises(ValueError, match="held-out eval module"):
        SFTDataConfig(docstring_modules=("json", "string")).validate()
    with pytest.raises(ValueError, match="every count is 0"):
        SFTDataConfig(arithmetic=0, docstring_qa=0, refusals=0, benign=0, identity=0).validate()
    with pytest.raises(ValueError, match="word_problem_fraction"):
        ReasoningDataConfig(word_problem_fraction=1.5).validate()


def test_load_chat_dataset_formats_and_errors(tmp_path: Path) -> None:
    import datasets

    good = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 3
    jsonl = tmp_path / "chat.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in good))
    assert len(load_chat_dataset(jsonl)) == 3
    parquet = tmp_path / "chat.parquet"
    datasets.Dataset.from_list(good).to_parquet(str(parquet))
    assert load_chat_dataset(str(parquet))["messages"][0][1]["content"] == "hello"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(good)}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_chat_dataset(tmp_path / "dd", split="train")) == 3
    with pytest.raises(ValueError, match=r"has splits \['train'\]"):
        load_chat_dataset(tmp_path / "dd", split="test")

    def bad(rows: list[dict], match: str) -> None:
        path = tmp_path / "bad.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(ValueError, match=match):
            load_chat_dataset(path)

    bad([{"text": "no messages"}], "no `messages` column")
    bad([{"messages": [{"role": "robot", "content": "x"}]}], "message 0")
    bad([{"messages": [{"role": "user", "content": "only a question"}]}], "no assistant turn")
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        load_chat_dataset(tmp_path / "missing.jsonl")
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        load_chat_dataset("data/missing.jsonl")  # looks like owner/name, but is a missing file
    with pytest.raises(ConnectionError, match="Hub"):  # a hub id: real code path, offline here
        load_chat_dataset("llmdag-test/no-such-dataset")


# ---------------------------------------------------------------------------------------------------------
# Rewards (the code sandbox is tested in tests/test_sandbox.py)


def test_rewards_and_registry() -> None:
    conv = [[{"role": "assistant", "content": c}] for c in ("49", "The answer is 49.", "48", "-15", "")]
    assert correctness_reward(conv, answer=["49", "49", "49", "-15", "1"]) == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert format_reward(conv) == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert format_reward(["1234567"]) == [0.0]  # longer than any 0..99 sum: not "short"
    assert get_reward_funcs(["format"]) == [format_reward]
    with pytest.raises(ValueError, match="valid: " + ", ".join(REWARD_FUNCS)):
        get_reward_funcs(["correctness", "vibes"])
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOStageConfig(batch_size=30).validate()
    with pytest.raises(ValueError, match="one weight per reward"):
        GRPOStageConfig(reward_weights=(1.0,)).validate()
    with pytest.raises(ValueError, match="use_vllm=True needs device='cuda'"):  # vLLM colocate: a GPU only
        GRPOStageConfig(use_vllm=True).validate()
    GRPOStageConfig(use_vllm=True, device="cuda").validate()


# ---------------------------------------------------------------------------------------------------------
# SFT


def test_stage_config_errors() -> None:
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        SFTStageConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        SFTStageConfig(lr_scheduler_type="exotic").validate()
    from pipeline_assets.posttrain.distill import DistillConfig

    with pytest.raises(ValueError, match="would not be smaller"):
        DistillConfig(layer_fraction=1.0).validate()
    with pytest.raises(ValueError, match="width_fraction must be 1.0"):
        DistillConfig(width_fraction=0.5).validate()


def test_bucket_sampler_batches_one_kind_and_covers_every_row() -> None:
    from pipeline_assets.posttrain.sft import BucketSampler

    kinds = ["arithmetic"] * 70 + ["docstring_qa"] * 21 + ["identity"] * 5
    sampler = BucketSampler(kinds, batch_size=8, seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(len(kinds))) and first != second  # new order each epoch
    blocks = [first[i:i + 8] for i in range(0, len(first), 8)]
    pure = [b for b in blocks if len({kinds[i] for i in b}) == 1]
    # 70 // 8 + 21 // 8 = 10 single-kind blocks; the 6 + 5 + 5 remainders share 2 mixed blocks.
    assert len(pure) == 10 and len(blocks) == 12


def test_bucket_sampler_quota_takes_fresh_pool_rows_each_epoch() -> None:
    from pipeline_assets.posttrain.sft import BucketSampler

    kinds = ["arithmetic"] * 32 + ["replay"] * 40  # a pool of 40 replay rows, 8 of them per epoch
    sampler = BucketSampler(kinds, batch_size=8, seed=0, quotas={"replay": 8})
    assert len(sampler) == 40
    epochs = [list(sampler) for _ in range(5)]
    replay = [{i for i in e if kinds[i] == "replay"} for e in epochs]
    assert all(len(r) == 8 for r in replay) and len(set().union(*replay)) == 40  # 5 epochs x 8 = the whole pool
    assert all(sorted(i for i in e if kinds[i] == "arithmetic") == list(range(32)) for e in epochs)
    sampler.set_epoch(2)  # a resumed run gets the same epoch's rows
    assert list(sampler) == epochs[2]


def test_sft_learns_chat_format_and_heldout_arithmetic(sft_run: dict) -> None:
    from transformers import AutoModelForCausalLM

    print(f"\nsft: held-out {sft_run['test_arithmetic_accuracy']} | chat_format_ok {sft_run['chat_format_ok']} | "
          f"{sft_run['train_time_s']}s train, {sft_run['wall_time_s']}s wall")
    # Measured after 400 steps: 0.265 (seed 0; 0.15 at step 300, 0.19 at 350), 0.26 (seed 1), 0.435 (seed 2);
    # 176-258 s of training on one busy thread. The notes saw 0.375 / 0.535 with a character-level tokenizer.
    assert sft_run["test_arithmetic_accuracy_before"] == 0.0
    assert sft_run["test_arithmetic_accuracy"] >= 0.10, sft_run["test_samples"]
    # Every held-out answer ends with eos; of the six free-text prompts (57 rows of each kind) 4 (seed 0) and
    # 6 (seed 1) give a non-empty reply ending in eos.
    assert sft_run["test_eos_rate"] >= 0.95
    assert sft_run["chat_format_ok"] >= 0.5, sft_run["samples"]
    assert sft_run["train_loss_final"] < sft_run["train_loss_first"] / 2
    # sft_val.jsonl, never trained on; token-weighted, so the free-text rows dominate it. ln(1024) = 6.93 at
    # init; measured 3.11.
    assert sft_run["val_loss"] < 4.5
    assert sft_run["steps"] == (sft_run["stopped_early_at_step"] or SFT_CFG.max_steps)
    assert sft_run["arithmetic_curve_split"] == "dev" and sft_run["arithmetic_curve"][-1][0] == sft_run["steps"]
    assert sft_run["tokens_seen"] > sft_run["steps"] * SFT_CFG.batch_size * 10  # ~30 tokens a row
    assert sft_run["trainable_params"] == sft_run["total_params"]  # full fine-tune
    out = Path(sft_run["checkpoint_dir"])
    assert json.loads((out / "summary.json").read_text())["steps"] == sft_run["steps"]
    reloaded = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no llmdag code
    assert sum(p.numel() for p in reloaded.parameters()) == sft_run["total_params"]


def test_lora_sft_trains_only_adapters_and_merges(root: Path, base_dir: Path, sft_data: dict) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = SFTStageConfig(max_steps=8, warmup_steps=0, learning_rate=3e-3, batch_size=16, use_lora=True, lora_r=4,
                         eval_prompts=("What is 2 + 3?",), eval_max_new_tokens=4)
    out, merged = root / "lora", root / "lora_merged"
    meta = run_sft(cfg, base_dir, sft_data["files"]["sft.jsonl"], out, merged, log=lambda _: None)
    assert meta["mode"] == "lora" and 0 < meta["trainable_params"] < 0.1 * meta["total_params"]
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((merged / "summary.json").read_text())["merged_dir"] == str(merged)

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    adapted = PeftModel.from_pretrained(base, out).eval()
    # Only adapter weights were trained: every base weight inside the adapter model is the original.
    for name, tensor in adapted.named_parameters():
        if "lora_" not in name:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(tensor, base_state[plain]), name
    plain_merged = AutoModelForCausalLM.from_pretrained(merged).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    ids = tok(["What is 12 + 30?", "Who are you?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        a, m = adapted(**ids).logits, plain_merged(**ids).logits
        b = AutoModelForCausalLM.from_pretrained(base_dir)(**ids).logits
    assert torch.allclose(a, m, atol=1e-4), (a - m).abs().max()
    assert (m - b).abs().max() > 1e-3  # the adapter changed the model


# ---------------------------------------------------------------------------------------------------------
# GRPO


def test_grpo_raises_heldout_accuracy(grpo_run: dict, sft_run: dict) -> None:
    from transformers import AutoModelForCausalLM

    print(f"\ngrpo: held-out {grpo_run['dev_arithmetic_accuracy_before']} -> "
          f"{grpo_run['dev_arithmetic_accuracy']} | {grpo_run['train_time_s']}s train, "
          f"{grpo_run['wall_time_s']}s wall")
    # Here GRPO's dev records are the same items SFT was tested on, so its start is SFT's end.
    assert grpo_run["dev_arithmetic_accuracy_before"] == sft_run["test_arithmetic_accuracy"]
    # Measured after 50 steps (12-17 s): 0.265 -> 0.445 (seed 0; 0.40 at 25 steps, 0.48 at 100),
    # 0.26 -> 0.53 (seed 1), 0.435 -> 0.715 (seed 2). The notes saw +0.275. On an AMD EPYC host, from the SFT
    # stopped at dev 0.3 (test 0.425): +0.08 after 50 steps, +0.065 after 100. A no-op gains exactly 0 and the
    # notes' random-reward control lost 18 points, so half the smallest gain measured still separates them.
    assert grpo_run["dev_arithmetic_gain"] >= 0.04, grpo_run["dev_samples"]
    # The held-out gain is the target; the sampled (temperature 1) training reward is noisy over 50 steps
    # (seen: 0.533 -> 0.527 while held-out accuracy went 0.34 -> 0.74) and must only not collapse.
    assert grpo_run["reward_final"] > grpo_run["reward_first"] - 0.05
    assert grpo_run["steps"] == GRPO_CFG.max_steps
    assert len(grpo_run["reward_history"]) == GRPO_CFG.max_steps
    assert set(grpo_run["reward_history_by_func"]) == {"correctness_reward", "format_reward"}
    AutoModelForCausalLM.from_pretrained(grpo_run["checkpoint_dir"])


# ---------------------------------------------------------------------------------------------------------
# Distillation


def test_distilled_student_is_smaller_and_beats_random_init(root: Path, grpo_run: dict, reasoning: dict,
                                                            heldout: list[dict]) -> None:
    from transformers import AutoTokenizer

    from pipeline_assets.model_io import load_causal_lm
    from pipeline_assets.posttrain.distill import DistillConfig, build_student, run_distill

    cfg = DistillConfig(max_steps=100)
    teacher_dir = Path(grpo_run["checkpoint_dir"])
    meta = run_distill(cfg, teacher_dir, reasoning["files"]["reasoning.jsonl"], root / "student",
                       log=lambda _: None, dev=heldout)
    print(f"\ndistill: {meta['student_params']} vs {meta['teacher_params']} params | held-out "
          f"{meta['dev_arithmetic_accuracy_before']} -> {meta['dev_arithmetic_accuracy']} (teacher "
          f"{meta['teacher_dev_arithmetic_accuracy']}) | agreement {meta['teacher_agreement_before']} -> "
          f"{meta['teacher_agreement']} | {meta['train_time_s']}s train, {meta['wall_time_s']}s wall")
    assert meta["student_params"] < meta["teacher_params"]
    assert meta["student_layers"] == 2 and meta["teacher_layers"] == 4
    # Baseline: a random-init student of the same shape, scored the same way.
    teacher = load_causal_lm(teacher_dir, "cpu")
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    random_student, _ = build_student(teacher, DistillConfig(student_init="random"))
    random_acc = arithmetic_accuracy(random_student, tok, heldout)["accuracy"]
    print(f"random-init student: {random_acc}")
    # Measured in 100 steps (16-23 s): student 0.05 -> 0.38, agreement 0.125 -> 0.62 (seed 0, teacher 0.445);
    # 0.05 -> 0.325, 0.075 -> 0.46 (seed 1, teacher 0.53); 0.065 -> 0.60, 0.075 -> 0.685 (seed 2, teacher
    # 0.715). A random-init student scores 0.0 (0.025 after the same 100 steps of KD).
    assert meta["dev_arithmetic_accuracy"] >= random_acc + 0.10
    assert meta["teacher_agreement"] >= meta["teacher_agreement_before"] + 0.15


def test_student_keeps_the_teachers_strongest_ffn_neurons() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline_assets.posttrain.distill import DistillConfig, build_student

    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                           num_attention_heads=2, num_key_value_heads=2))
    with torch.no_grad():  # make neurons 3 and 7 of layer 3 (the student's second layer) clearly the strongest
        for name in ("gate_proj", "up_proj"):
            getattr(teacher.model.layers[3].mlp, name).weight[[3, 7]] *= 10
    student, layers = build_student(teacher, DistillConfig(ffn_fraction=0.25))
    assert layers == [0, 3] and student.config.intermediate_size == 8
    mlp, t_mlp = student.model.layers[1].mlp, teacher.model.layers[3].mlp
    kept = [i for i in range(32) if any(torch.equal(t_mlp.up_proj.weight[i], row) for row in mlp.up_proj.weight)]
    assert len(kept) == 8 and {3, 7} <= set(kept)
    assert torch.equal(mlp.down_proj.weight, t_mlp.down_proj.weight[:, kept])  # in and out weights stay paired
    assert torch.equal(student.model.layers[1].self_attn.q_proj.weight, teacher.model.layers[3].self_attn.q_proj.weight)
    n = sum(p.numel() for p in student.parameters())
    assert n < 0.6 * sum(p.numel() for p in teacher.parameters())


# ---------------------------------------------------------------------------------------------------------
# The tiny defaults on the real benchmark (slow: ~10 min on one thread)


@pytest.mark.slow
def test_tiny_defaults_on_benchmark(root: Path, base_dir: Path, bench: Path) -> None:
    """The pipeline's own setting: default sft.jsonl (+ and -, 0..99, every kind), the benchmark's 200 items.

    Measured on the default data (SFTStageConfig defaults but 1000 steps, accuracy every 100 steps):
    0.01 0.01 0.01 0.02 0.04 0.075 0.03 0.075 0.05 0.03; 581 s for the 1000 steps with those evals; val loss
    3.28. The tiny model gets the magnitude right ("18 + 76" -> 103) long before the digits, hence the weak
    threshold. This test's own run (800 steps, 574 s of training): 0.075, val loss 3.33, eos rate 0.955.
    """
    data = build_sft_dataset(root / "sft_default_data", SFTDataConfig(), bench)
    meta = run_sft(SFTStageConfig(max_steps=800), base_dir, data["files"]["sft.jsonl"], root / "sft_default", None,
                   log=lambda _: None, test=load_benchmark(bench, "arithmetic"),
                   val_dataset_path=data["files"]["sft_val.jsonl"])
    assert meta["test_arithmetic_accuracy"] >= 0.02, meta["test_samples"]  # 4 of 200; the base gets 0
    assert meta["test_eos_rate"] >= 0.9 and meta["chat_format_ok"] >= 0.5
    assert meta["val_loss"] < 4.5  # ln(1024) = 6.93 at init


def test_dev_checks_tighten_near_the_stop() -> None:
    """Every 40 steps until a point reaches half the stop, then every 10: SFT stops near its target."""
    class Control:
        should_training_stop = False

    class State:
        global_step = 0

    scores = iter([0.1, 0.25, 0.05, 0.45])  # a dip after reaching half the stop keeps the short interval
    curve = ArithmeticCurve(None, [], 40, 8, lambda m: None, stop_at=0.4, every_near_stop=10,
                            score=lambda *a: next(scores))
    checked = []
    state, control = State(), Control()
    for step in range(1, 200):
        state.global_step = step
        before = len(curve.curve)
        curve.on_step_end(None, state, control, model=torch.nn.Linear(1, 1))
        if len(curve.curve) > before:
            checked.append(step)
        if control.should_training_stop:
            break
    assert checked == [40, 80, 90, 100] and curve.stopped_at == 100
    with pytest.raises(ValueError, match="eval_every_near_stop"):
        SFTStageConfig(eval_every=40, stop_at_dev_accuracy=0.4, eval_every_near_stop=0).validate()
