"""posttrain/trl_cpu.py: on CPU, TRL's fused LM head scores only label positions, with the same numbers."""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils
from transformers import LlamaConfig, LlamaForCausalLM
from trl.trainer.utils import add_fused_lm_head

from pipeline_assets.posttrain.trl_cpu import COMPACTING_MODULES, compact_lm_head_on_cpu


def _fused_outputs(model, batch):
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return out, grads


def test_switch_reaches_every_compacting_module_and_is_idempotent():
    # Fails when a TRL bump renames what the switch relies on: then re-measure and re-check trl_cpu.py.
    assert compact_lm_head_on_cpu() == list(COMPACTING_MODULES)
    first = trl_utils._use_triton
    assert compact_lm_head_on_cpu() == list(COMPACTING_MODULES)
    assert trl_utils._use_triton is first
    assert trl_utils._use_triton(torch.device("cpu")) is True


def test_label_positions_only_gives_the_same_log_probs_loss_and_grads(monkeypatch):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, 97, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[mask == 0] = -100
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    compact_lm_head_on_cpu()
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: False)  # TRL's own CPU path: every position
    full, full_grads = _fused_outputs(model, batch)
    monkeypatch.undo()
    assert trl_utils._use_triton(torch.device("cpu")) is True
    compact, compact_grads = _fused_outputs(model, batch)

    valid = labels[:, 1:] != -100
    assert torch.allclose(full.log_probs[valid], compact.log_probs[valid], atol=1e-6)
    assert torch.equal(compact.log_probs[~valid], torch.zeros_like(compact.log_probs[~valid]))
    assert torch.allclose(full.entropy[valid], compact.entropy[valid], atol=1e-5)
    assert torch.allclose(full.loss, compact.loss, atol=1e-6)
    for a, b in zip(full_grads, compact_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
