"""Tokenizer -> token shards -> base model, materialized in Dagster on the real default corpus."""

from __future__ import annotations

import json

import torch
from conftest import BASE_RUN, latest_metadata, published
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.pretrain.train import train


def test_tokenizer_loads_with_plain_transformers(pretrained):
    tok = AutoTokenizer.from_pretrained(published(pretrained["root"], "tokenizer/tokenizer"))
    text = "def add(a, b):\n    return a + b  # 42 ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")
    meta = latest_metadata(pretrained["instance"], ["tokenizer", "tokenizer"])
    assert meta["roundtrip_exact"] is True and meta["bytes_per_token"] > 2.5
    shards = latest_metadata(pretrained["instance"], ["tokenizer", "tokenized_shards"])
    assert shards["train_tokens"] > 500_000 and shards["val_tokens"] > 0


def test_base_model_trains_reloads_and_generates(pretrained):
    meta = latest_metadata(pretrained["instance"], ["models", "base"])
    assert meta["resumed_from_step"] == 40
    assert meta["train_loss_final"] < meta["train_loss_first"] - 1.0
    assert meta["window_val_loss"] < meta["window_unigram_val_loss"]
    assert "val_bpb" not in meta  # one name per quantity: the exact val_bpb is evals/base's
    assert "data:image/png;base64," in meta["loss_curve"]
    consumed = meta["data_consumed"]
    assert "train_00000.npy" in json.dumps(consumed)
    path = published(pretrained["root"], "models/base")
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("def ", return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_resumed_run_is_bit_identical_to_a_straight_run(pretrained, tmp_path):
    root = pretrained["root"]
    cfg = PretrainConfig().replace(**BASE_RUN)
    train(cfg, published(root, "tokenizer/tokenized_shards"), published(root, "tokenizer/tokenizer"),
          tmp_path / "run", tmp_path / "out", log=lambda _: None)
    resumed = load_file(published(root, "models/base") / "model.safetensors")
    straight = load_file(tmp_path / "out" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
