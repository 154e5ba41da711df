"""Model for pretraining: a transformers `LlamaForCausalLM` (or, with ``moe_num_experts``, the same model with
mixture-of-experts FFNs: `MixtralForCausalLM`) built from PretrainConfig, plus FLOP math.

transformers defines the architecture (RMSNorm, RoPE, SwiGLU, GQA, sdpa/flash attention, top-k routing), so a
checkpoint is a plain HF model dir that `AutoModelForCausalLM.from_pretrained` loads with no llmdag code. Used
by train.py and bench/pretrain_mfu.py; there is no command for this file alone.
"""

from __future__ import annotations

import math

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MixtralConfig, PretrainedConfig

from pipeline_assets.pretrain.config import PretrainConfig

# Dense (no sparsity) bf16 tensor-core peak per GPU, from the vendor datasheets. Matched by substring of
# torch.cuda.get_device_name(); longest key wins so "H100 NVL" is not read as "H100".
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "H800": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 125e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def padded_vocab_size(vocab_size: int, multiple_of: int) -> int:
    return int(math.ceil(vocab_size / multiple_of) * multiple_of)


def build_model_config(
    cfg: PretrainConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int | None
) -> PretrainedConfig:
    """LlamaConfig (MixtralConfig with experts) for `cfg`; embedding rows padded to cfg.vocab_multiple_of (ids >=
    vocab_size unused)."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size={vocab_size} is too small; is the tokenizer dir right?")
    if cfg.moe:
        # Mixtral's attention, norms and RoPE are Llama's; only the FFN differs. Router logits are asked for per
        # forward (train.py), so generate() stays as cheap as a dense model's.
        moe = dict(num_local_experts=cfg.moe_num_experts, num_experts_per_tok=cfg.moe_top_k,
                   router_aux_loss_coef=cfg.moe_aux_loss_coef, output_router_logits=False, sliding_window=None)
        return MixtralConfig(**_shared_config(cfg, vocab_size, bos_id, eos_id, pad_id), **moe)
    return LlamaConfig(**_shared_config(cfg, vocab_size, bos_id, eos_id, pad_id))


def _shared_config(cfg: PretrainConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int | None) -> dict:
    return dict(
        vocab_size=padded_vocab_size(vocab_size, cfg.vocab_multiple_of),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=1e-5,
        rope_parameters=cfg.rope_parameters(),
        attention_dropout=cfg.dropout,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        attn_implementation=cfg.attn_implementation,
        # Saved into config.json so generate() uses the KV cache; the training forward passes use_cache=False.
        use_cache=True,
    )


def build_model(
    cfg: PretrainConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int | None
) -> torch.nn.Module:
    """A freshly initialised fp32 model (master weights stay fp32; bf16 comes from autocast)."""
    return AutoModelForCausalLM.from_config(build_model_config(cfg, vocab_size, bos_id, eos_id, pad_id))


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Unique parameters (a tied embedding counts once)."""
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def expert_params(cfg: PretrainConfig) -> int:
    """One SwiGLU FFN (gate, up, down) of width cfg.intermediate_size: a dense layer's FFN or one expert."""
    return 3 * cfg.d_model * cfg.intermediate_size


def matmul_params(cfg: PretrainConfig, vocab_size: int) -> int:
    """Parameters that take part in a matmul per token: every block weight plus the LM head.

    With experts, only the router and the top_k experts a token is sent to count (active, not total). The
    input embedding is a lookup (no FLOPs), so an untied input table is left out; when tied, the shared
    matrix is counted once, as the head. Norm weights are ~0.01% and left out. Same N as nanoGPT/PaLM.
    """
    d, kv = cfg.d_model, cfg.n_kv_heads * (cfg.d_model // cfg.n_heads)
    per_layer = 2 * d * d + 2 * d * kv + expert_params(cfg)  # q,o + k,v + gate,up,down
    if cfg.moe:  # a token passes the router and its top_k experts: the active parameters
        per_layer += (cfg.moe_top_k - 1) * expert_params(cfg) + d * cfg.moe_num_experts
    return cfg.n_layers * per_layer + d * padded_vocab_size(vocab_size, cfg.vocab_multiple_of)


def flops_per_token(cfg: PretrainConfig, vocab_size: int) -> float:
    """Training FLOPs per token: 6N (fwd 2N + bwd 4N) + attention 12 * L * d * seq_len.

    The attention term is QK^T and AV (2 matmuls x 2 FLOPs x d x T, x3 for fwd+bwd) as in nanoGPT's
    estimate_mfu / PaLM appendix B; it counts the full T x T square (no causal halving), which is the usual
    convention when quoting MFU.
    """
    return 6.0 * matmul_params(cfg, vocab_size) + 12.0 * cfg.n_layers * cfg.d_model * cfg.seq_len


def peak_bf16_flops(device_name: str) -> float | None:
    """Datasheet dense bf16 peak for a GPU name, or None when unknown (then MFU is not reported)."""
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_BF16_FLOPS[key]
    return None
