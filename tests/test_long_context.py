"""Long-context extension (models/long_context): the RoPE extension's config, passkey rows for training and
eval, the long-context eval set, and its gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from pipeline_assets.evals import long_context as lc
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.pretrain.model import build_model
from pipeline_assets.pretrain.passkey import NEEDLE, QUESTION, answer_of, passkey, passkey_prompt, passkey_row
from pipeline_assets.profiles import PROFILES, section_config
from pipeline_assets.reports.gates import GateConfig, evaluate_gates


def encode(text: str) -> list[int]:
    """A character-level stand-in for the tokenizer: one id per ASCII character below 90 (3..92)."""
    return [3 + ord(c) for c in text]


def decode(ids) -> str:
    return "".join(chr(int(i) - 3) for i in ids if int(i) >= 3)


def test_an_extension_must_name_the_length_it_extends_from() -> None:
    with pytest.raises(ValueError, match="rope_original_max_position"):
        PretrainConfig(rope_type="yarn", rope_factor=4.0).validate()
    cfg = PretrainConfig(seq_len=1024, rope_type="yarn", rope_factor=4.0, rope_original_max_position=256)
    assert cfg.validate().rope_parameters() == {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                "original_max_position_embeddings": 256}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_extends_its_own_base_by_4x(profile: str) -> None:
    base = section_config(PretrainConfig, "pretrain", profile)
    ext = section_config(PretrainConfig, "pretrain_long_context", profile).validate()
    assert ext.rope_original_max_position == base.seq_len and ext.seq_len == 4 * base.seq_len
    assert ext.rope_factor == 4.0 and ext.passkey_fraction > 0
    shape = ("d_model", "n_layers", "n_heads", "n_kv_heads", "intermediate_size", "tie_embeddings",
             "vocab_multiple_of", "moe_num_experts")
    assert all(getattr(ext, f) == getattr(base, f) for f in shape)  # the base's weights load unchanged


def test_passkey_rows_hide_the_key_at_the_asked_depth_and_keep_train_and_eval_keys_apart() -> None:
    rng = np.random.default_rng(0)
    assert {int(passkey(rng, "train")) % 2 for _ in range(50)} == {0}
    assert {int(passkey(rng, "test")) % 2 for _ in range(50)} == {1}
    filler = np.arange(1000, 2000)
    prompt = passkey_prompt(filler, "13579", 0.5, 300, encode)
    needle, question = encode(NEEDLE.format(key="13579")), encode(QUESTION)
    assert len(prompt) == 300 and prompt[-len(question):] == question
    at = next(i for i in range(len(prompt)) if prompt[i:i + len(needle)] == needle)
    room = 300 - len(needle) - len(question)
    assert at == round(0.5 * room) and prompt[:at] == list(range(1000, 1000 + at))
    row = passkey_row(filler, np.random.default_rng(1), 300, encode)
    key = answer_of(decode(row[-6:]))  # the answer closes the row: " " + an even (training) key
    assert len(row) == 300 and key is not None and int(key) % 2 == 0 and decode(row).count(key) == 3
    assert answer_of(" 48213. Remember") == "48213" and answer_of(" be be") is None
    with pytest.raises(ValueError, match="filler"):
        passkey_prompt(filler[:10], "13579", 0.5, 300, encode)


def _model(seq_len: int = 64, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = PretrainConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, intermediate_size=64, seq_len=seq_len, **kw)
    return build_model(cfg, vocab_size=128, bos_id=1, eos_id=2, pad_id=0).eval()


def test_an_extended_checkpoint_keeps_its_rope_in_plain_transformers(tmp_path) -> None:
    model = _model(rope_type="yarn", rope_factor=4.0, rope_original_max_position=16)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    rope = loaded.config.rope_parameters
    assert rope["rope_type"] == "yarn" and rope["original_max_position_embeddings"] == 16
    assert loaded.config.max_position_embeddings == 64 and lc.base_context(loaded.config) == 16
    assert lc.base_context(_model().config) == 64
    linear = _model(rope_type="linear", rope_factor=4.0, rope_original_max_position=16).config
    assert "original_max_position_embeddings" not in linear.rope_parameters and lc.base_context(linear) == 16


class _CharTok:
    pad_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return encode(text)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return decode(ids)


def test_the_long_context_eval_scores_positions_and_retrieval_at_each_length() -> None:
    model = _model(512, rope_type="yarn", rope_factor=4.0, rope_original_max_position=128)
    stream = np.random.default_rng(0).integers(3, 128, 5000)
    loss = lc.loss_by_position(model, stream, 128, windows=6, batch_size=4)
    assert loss["windows"] == 6 and loss["length"] == 512 and set(loss["buckets"]) == {"0_1x", "1_2x", "2_4x"}
    keys = lc.passkey_retrieval(model, _CharTok(), stream, 128, per_length=3)
    assert set(keys["accuracy"]) == {"passkey_1x", "passkey_2x", "passkey_4x"}
    assert keys["items"]["passkey_4x"]["ids"] == ["passkey_4x-0", "passkey_4x-1", "passkey_4x-2"]
    assert all(0.0 <= a <= 1.0 for a in keys["accuracy"].values())  # an untrained model: ~0


def _gate(ext: dict, cfg: GateConfig | None = None) -> dict:
    base = {"val_bpb": 2.50, "passkey_4x": 0.0, "long_loss_0_1x": 6.0, "long_loss_2_4x": 6.2}
    out = evaluate_gates({"models/base": base, "models/long_context": ext},
                         {"models/base": None, "models/long_context": "models/base"}, cfg or GateConfig())
    return next(g for g in out["gates"] if g["stage"] == "models/long_context" and g["kind"] == "long_context")


def test_the_long_context_gate_needs_retrieval_far_loss_and_short_quality() -> None:
    good = {"val_bpb": 2.52, "passkey_4x": 0.9, "long_loss_0_1x": 5.9, "long_loss_2_4x": 5.95}
    assert _gate(good)["status"] == "pass"
    assert "passkey" in _gate({**good, "passkey_4x": 0.5})["reason"] and _gate({**good, "passkey_4x": 0.5})[
        "status"] == "fail"
    assert _gate({**good, "long_loss_2_4x": 6.1})["status"] == "fail"  # +0.2 nats at 2-4x
    failed = _gate({**good, "val_bpb": 2.6})  # +4% short-context bpb
    assert failed["status"] == "fail" and "short-context val bpb" in failed["reason"]
    assert _gate({"val_bpb": 2.5})["status"] == "not_enforced"
    # tiny reports retrieval without enforcing it (its reason in the gate); the other criteria still hold it.
    tiny = section_config(GateConfig, "gates", "tiny")
    reported = _gate({**good, "passkey_4x": 0.0}, tiny)
    assert reported["status"] == "pass" and "not enforced: a ~1M-parameter base" in reported["reason"]
    assert _gate({**good, "passkey_4x": 0.0, "long_loss_2_4x": 6.1}, tiny)["status"] == "fail"


def test_the_target_is_the_far_loss_paired_with_the_base_window_by_window() -> None:
    windows = [f"long-window-{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    base_far = list(6.2 + rng.normal(0, 0.1, 30))
    items = {"models/base": {"long_loss_2_4x": {"ids": windows, "scores": base_far}},
             "models/long_context": {"long_loss_2_4x": {"ids": windows, "scores": [s - 0.15 for s in base_far]}}}
    metrics = {"models/base": {"long_loss_2_4x": 6.2, "val_bpb": 2.5},
               "models/long_context": {"long_loss_2_4x": 6.05, "val_bpb": 2.49}}
    out = evaluate_gates(metrics, {"models/base": None, "models/long_context": "models/base"}, GateConfig(), items)
    target = next(g for g in out["gates"] if g["stage"] == "models/long_context" and g["kind"] == "target")
    assert target["status"] == "pass" and target["target"]["p_value"] < 0.05
    assert target["target"]["delta_vs_parent"] == pytest.approx(-0.15)


class _Windows:
    """TokenWindows' interface over an in-memory stream: 50 windows of 200 tokens."""

    seq_len = 199

    def __init__(self) -> None:
        self.stream = np.random.default_rng(0).integers(3, 93, 50 * 200)

    def __len__(self) -> int:
        return 50

    def gather(self, ids) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.stream[i * 200:(i + 1) * 200] for i in ids]).astype(np.int64))


def test_passkey_rows_are_mixed_at_their_share_and_a_resume_sees_the_same_rows() -> None:
    from pipeline_assets.pretrain.data import TrainLoader
    from pipeline_assets.pretrain.train import PasskeyLoader

    def loader() -> PasskeyLoader:
        return PasskeyLoader(TrainLoader(_Windows(), 4, seed=0), 0.5, 0, encode)

    straight = loader()
    batches = [straight.next_batch() for _ in range(6)]
    assert 6 <= straight.rows_replaced <= 18  # ~half of 24 rows
    assert sum("pass key" in decode(row.tolist()) for b in batches for row in b) == straight.rows_replaced
    resumed = loader()
    resumed.next_batch()
    state = resumed.state_dict()  # the wrapped TrainLoader's: what a checkpoint saves
    again = loader()
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip((again.next_batch() for _ in range(5)), batches[1:], strict=True))
