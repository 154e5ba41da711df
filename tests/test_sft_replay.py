"""SFT mechanisms of models/sft: pretraining replay (windows of the token shards trained beside the chat rows)
and the early stop on dev-split accuracy.

A tiny random-init model, so each test takes seconds: what is asserted is the mechanism (rows, pool, fresh
windows, that replay really trains the LM, where training stops), not the default run's numbers (README,
SFTStageConfig docstring).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_pretrain_stage import make_token_fixture

from pipeline_assets.posttrain.config import SFTStageConfig


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("replay")
    tok_dir, shards = make_token_fixture(root)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    with (root / "sft.jsonl").open("w") as f:
        for i in range(16):
            turns = [{"role": "user", "content": f"What is {i} + 1?"}, {"role": "assistant", "content": str(i + 1)}]
            f.write(json.dumps({"kind": "arithmetic", "messages": turns}) + "\n")
    return {"base": root / "base", "data": root / "sft.jsonl", "shards": shards}


CFG = SFTStageConfig(max_steps=24, batch_size=4, max_length=32, warmup_steps=0, learning_rate=3e-3,
                     assistant_only_loss=False, device="cpu", log_every=1, eval_prompts=("Hi",), eval_max_new_tokens=2,
                     replay_length=32)


def _lm_loss(model_dir: Path, shards: Path) -> float:
    """Mean next-token loss of the model on the shards' val split (what replay should protect)."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = np.concatenate([np.load(p) for p in sorted(shards.glob("val_*.npy"))]).astype(np.int64)[:1 + 32 * 8]
    batch = torch.from_numpy(ids[:-1].reshape(8, 32)), torch.from_numpy(ids[1:].reshape(8, 32))
    with torch.no_grad():
        logits = model(input_ids=batch[0]).logits
    return float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[1].reshape(-1)))


def _run(inputs: dict[str, Path], out: Path, dev: list[dict] | None = None, **overrides: Any) -> dict[str, Any]:
    from pipeline_assets.posttrain.sft import run_sft

    cfg = dataclasses.replace(CFG, **overrides)
    return run_sft(cfg, inputs["base"], inputs["data"], out, log=lambda _: None,
                   replay_shards=inputs["shards"] if cfg.replay_fraction else None, dev=dev)


def test_replay_rows_train_the_language_model_beside_the_chat_rows(inputs: dict[str, Path], tmp_path: Path) -> None:
    plain = _run(inputs, tmp_path / "plain")
    replay = _run(inputs, tmp_path / "replay", replay_fraction=0.5)
    # 16 chat rows + 16 replay rows an epoch; the bucketed pool holds the whole run's share: 24 steps x 4 x 0.5.
    assert (replay["chat_rows"], replay["replay_rows_per_epoch"], replay["replay_windows"]) == (16, 16, 48)
    assert plain["replay_windows"] == 0 and replay["steps"] == plain["steps"] == 24
    # Same steps, same lr: the run with replay batches predicts held-out pretraining text better.
    assert _lm_loss(tmp_path / "replay", inputs["shards"]) < _lm_loss(tmp_path / "plain", inputs["shards"]) - 0.2


def test_replay_without_bucketing_repeats_one_epoch_share(inputs: dict[str, Path], tmp_path: Path) -> None:
    meta = _run(inputs, tmp_path / "random", replay_fraction=0.2, batching="random", max_steps=2)
    assert (meta["replay_rows_per_epoch"], meta["replay_windows"]) == (4, 4)


def test_replay_needs_the_shards_and_a_window_that_fits(inputs: dict[str, Path], tmp_path: Path) -> None:
    from pipeline_assets.posttrain.sft import run_sft

    with pytest.raises(ValueError, match="needs replay_shards"):
        run_sft(dataclasses.replace(CFG, replay_fraction=0.1), inputs["base"], inputs["data"], tmp_path)
    with pytest.raises(ValueError, match="replay_length=64 must be in"):
        dataclasses.replace(CFG, replay_fraction=0.1, replay_length=64).validate()
    dataclasses.replace(CFG, replay_length=64).validate()  # no replay: its window length does not matter


DEV = [{"prompt": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(4)]


def test_early_stop_ends_training_at_the_first_dev_point_reaching_the_target(
        inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline_assets.posttrain import sft

    # The tiny model learns nothing in 24 steps, so the dev accuracies are scripted: the trainer wiring
    # (callback -> should_training_stop -> fewer optimizer steps, the saved model) is what is under test.
    scripted = iter([0.1, 0.3, 0.6, 0.9])
    seen: list[list[dict]] = []

    def fake_accuracy(model: Any, tok: Any, items: list[dict], max_new_tokens: int = 8) -> dict:
        seen.append(items)
        return {"accuracy": next(scripted)}

    monkeypatch.setattr(sft, "arithmetic_accuracy", fake_accuracy)
    meta = _run(inputs, tmp_path / "stop", dev=DEV, eval_every=4, stop_at_dev_accuracy=0.5)
    assert meta["steps"] == meta["stopped_early_at_step"] == 12
    assert meta["arithmetic_curve"] == [[4, 0.1], [8, 0.3], [12, 0.6]] and meta["arithmetic_curve_split"] == "dev"
    assert all(items is DEV for items in seen)
    assert (tmp_path / "stop" / "model.safetensors").exists()


def test_a_run_that_never_reaches_the_dev_target_keeps_its_best_dev_point(
        inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    from pipeline_assets.posttrain import sft

    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.1, 0.15])  # dev at steps 4..24: best at step 8, never 0.5
    weights: dict[int, torch.Tensor] = {}

    def fake_accuracy(model: Any, tok: Any, items: list[dict], max_new_tokens: int = 8) -> dict:
        if items is DEV:
            weights[len(weights)] = model.get_input_embeddings().weight.detach().clone()
            return {"accuracy": next(scripted)}
        return {"accuracy": 0.0, "by_kind": {}, "eos_rate": 1.0, "samples": []}

    monkeypatch.setattr(sft, "arithmetic_accuracy", fake_accuracy)
    meta = _run(inputs, tmp_path / "best", dev=DEV, eval_every=4, stop_at_dev_accuracy=0.5, keep_best_dev=True)
    assert meta["steps"] == 24 and meta["stopped_early_at_step"] is None and meta["kept_best_dev_step"] == 8
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "best").get_input_embeddings().weight
    assert torch.equal(saved, weights[1]) and not torch.equal(saved, weights[5])  # step 8's weights, not 24's
    # Without keep_best_dev (or when the last point is the best) the last step's weights are saved.
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.1, 0.15])
    last = _run(inputs, tmp_path / "last", dev=DEV, eval_every=4, stop_at_dev_accuracy=0.5)
    assert last["kept_best_dev_step"] is None
    with pytest.raises(ValueError, match="keep_best_dev needs eval_every"):
        dataclasses.replace(CFG, keep_best_dev=True).validate()


def test_early_stop_never_reads_the_test_split(inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs dev records"):
        _run(inputs, tmp_path / "nodev", eval_every=4, stop_at_dev_accuracy=0.5)
    with pytest.raises(ValueError, match="needs eval_every"):
        dataclasses.replace(CFG, stop_at_dev_accuracy=0.5).validate()


def test_decay_steps_belong_to_the_wsd_schedule(inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="warmup_stable_decay' only"):
        dataclasses.replace(CFG, decay_steps=8).validate()
    with pytest.raises(ValueError, match="decay_steps=30 must be in"):
        dataclasses.replace(CFG, lr_scheduler_type="warmup_stable_decay", decay_steps=30).validate()
    meta = _run(inputs, tmp_path / "wsd", lr_scheduler_type="warmup_stable_decay", decay_steps=8)
    assert meta["steps"] == 24
