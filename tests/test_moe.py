"""The mixture-of-experts option of pretraining (models/base_moe): a native transformers MoE at the dense base's
active parameters per token and tokens in every profile; its routing measured per layer; its gate judged by
non-inferiority to the dense base."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, MixtralForCausalLM

from pipeline_assets.evals.routing import routing_stats
from pipeline_assets.evals.stats import paired_test
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.pretrain.model import build_model, count_params, matmul_params
from pipeline_assets.profiles import PROFILES, section_config
from pipeline_assets.reports.gates import GateConfig, evaluate_gates

MOE_FIELDS = {"intermediate_size", "moe_num_experts", "moe_top_k", "moe_aux_loss_coef"}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_pairs_the_moe_with_the_dense_base_fairly(profile: str) -> None:
    dense = section_config(PretrainConfig, "pretrain", profile)
    moe = section_config(PretrainConfig, "pretrain_moe", profile)
    assert moe.moe and not dense.moe and moe.validate()
    # Everything but the FFN is the dense recipe: same tokens, schedule, attention, data order.
    differs = {f.name for f in dataclasses.fields(PretrainConfig) if getattr(moe, f.name) != getattr(dense, f.name)}
    assert differs <= MOE_FIELDS, differs
    assert moe.tokens_per_step * moe.max_steps == dense.tokens_per_step * dense.max_steps
    # Active parameters per token: the dense FFN's, plus only the router (d x E per layer).
    vocab = 4096
    router = moe.n_layers * moe.d_model * moe.moe_num_experts
    assert matmul_params(moe, vocab) - matmul_params(dense, vocab) == router


def _tiny(**kw) -> PretrainConfig:
    return PretrainConfig(**{"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "intermediate_size": 32,
                             "seq_len": 16, **kw})


def test_moe_checkpoint_is_a_native_mixtral_plain_transformers_loads_and_generates(tmp_path) -> None:
    cfg = _tiny(moe_num_experts=4, moe_top_k=2)
    model = build_model(cfg, vocab_size=100, bos_id=1, eos_id=2, pad_id=0)
    assert isinstance(model, MixtralForCausalLM)
    assert model.config.num_local_experts == 4 and model.config.num_experts_per_tok == 2
    dense = build_model(_tiny(intermediate_size=64), vocab_size=100, bos_id=1, eos_id=2, pad_id=0)
    # 4 experts of width 32 = 2x the dense width-64 FFN's weights; the router adds d x E per layer.
    assert count_params(model) - count_params(dense) == 2 * (3 * 32 * 64) + 2 * 32 * 4
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is MixtralForCausalLM and "auto_map" not in loaded.config.to_dict()
    out = loaded.generate(torch.tensor([[1, 5, 6]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7)
    # A training forward with router logits gives HF's balancing loss: ~top_k when balanced, never 0.
    aux = model(input_ids=torch.randint(3, 100, (2, 16)), output_router_logits=True).aux_loss
    assert 1.0 < float(aux.detach()) < 4.0


def test_routing_stats_report_a_collapsed_router() -> None:
    torch.manual_seed(0)
    model = build_model(_tiny(moe_num_experts=4, moe_top_k=2), vocab_size=100, bos_id=1, eos_id=2, pad_id=0).eval()
    windows = [np.random.default_rng(i).integers(3, 100, 16) for i in range(8)]
    healthy = routing_stats(model, windows, batch_size=4)
    assert healthy["tokens"] == 128 and len(healthy["layers"]) == 2 and healthy["dead_experts"] == 0
    assert all(abs(sum(r["load"]) - 1) < 1e-3 for r in healthy["layers"])
    # Layer 1's router sends every token to experts 0 and 1: its load is [0.5, 0.5, 0, 0].
    router = model.model.layers[1].mlp.gate

    def collapsed_router(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = torch.tensor([5.0, 4.0, 0.0, 0.0]).expand(hidden.reshape(-1, 32).shape[0], 4)
        top, index = logits.softmax(-1).topk(2, -1)
        return logits, top / top.sum(-1, keepdim=True), index

    router.forward = collapsed_router  # hooks that record router logits wrap __call__, so they still see it
    collapsed = routing_stats(model, windows, batch_size=4)
    layer = collapsed["layers"][1]
    assert layer["load"] == [0.5, 0.5, 0.0, 0.0] and layer["dead_experts"] == 2 and layer["max_over_mean"] == 2.0
    assert layer["router_entropy"] < healthy["layers"][1]["router_entropy"]
    assert collapsed["dead_experts"] == 2 and collapsed["max_over_mean"] == 2.0


def _windows(bpb: float, n: int = 60, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"val_bpb": {"set": "val", "ids": [f"w{i}" for i in range(n)],
                        "scores": list(bpb + rng.normal(0, 0.05, n))}}


def test_moe_gate_is_non_inferiority_to_the_dense_base() -> None:
    lineage = {"models/base": None, "models/base_moe": "models/base"}
    cfg = GateConfig()
    dense = _windows(2.5)
    dense_scores = dense["val_bpb"]["scores"]

    def gate(moe_shift: float) -> dict:
        moe = {"val_bpb": {**dense["val_bpb"], "scores": [s + moe_shift for s in dense_scores]}}
        metrics = {"models/base": {"val_bpb": 2.5, "unigram_val_bpb": 3.5},
                   "models/base_moe": {"val_bpb": 2.5 + moe_shift, "unigram_val_bpb": 3.5}}
        out = evaluate_gates(metrics, lineage, cfg, {"models/base": dense, "models/base_moe": moe})
        return next(g for g in out["gates"] if g["stage"] == "models/base_moe" and g["kind"] == "target")

    # +0.5% worse, significantly so, is still within the 2% margin: non-inferior.
    small = gate(0.0125)
    assert small["status"] == "pass" and "non-inferior" in small["reason"]
    assert paired_test([s + 0.0125 for s in dense_scores], dense_scores)["p_value"] < 0.05
    # +3% worse misses it, and says by how much.
    worse = gate(0.075)
    assert worse["status"] == "fail" and "non-inferiority not shown" in worse["reason"]
    assert worse["checked"]["val_bpb"]["non_inferiority_margin"] == pytest.approx(0.05)
    assert gate(-0.05)["status"] == "pass"  # better is fine
