"""PretrainConfig: every knob of the pretraining stage in one frozen dataclass.

The defaults ARE the tiny profile (CPU, one thread, loss visibly falls within the first minute). Used by
`pipeline_assets.pretrain.train.train()` and its CLI (`python -m pipeline_assets.pretrain.train --help`);
`assets.py` mirrors the fields as a `dg.Config`; the small and scale values are the `pretrain` sections of
pipeline_assets/profiles.py. Check a config with `PretrainConfig(...).validate()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any

DEVICES = ("auto", "cpu", "cuda")
PARALLELISMS = ("ddp", "fsdp2")  # pretrain/sharding.py
DTYPES = ("float32", "bfloat16")
# The attention back-ends transformers 5.x accepts for Llama; flash_attention_* need their own packages.
ROPE_TYPES = ("default", "linear", "yarn", "llama3", "dynamic")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass(frozen=True)
class PretrainConfig:
    # --- Model shape (Llama: RMSNorm, RoPE, SwiGLU MLP, optional GQA)
    # tiny: d=128 rather than 192 runs 300 steps in ~2.6 min instead of ~4.1 min on one busy CPU thread
    # (4.1k vs 2.6k tok/s measured, vocab 4096); val loss still ends 1.4 nats below unigram (5.19 vs 6.60).
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4  # < n_heads = grouped-query attention; must divide n_heads
    intermediate_size: int = 384  # SwiGLU hidden width; ~8/3 * d_model is the Llama ratio
    seq_len: int = 256
    tie_embeddings: bool = True  # below ~1B params the tied input/output embedding is a large saving
    rope_theta: float = 10000.0
    # Context extension (models/long_context): transformers' rope_parameters type ("default" = none) and the
    # factor it stretches positions by, from the context the weights were trained at. That original length is
    # required, never inferred: for yarn/llama3 transformers otherwise takes the *current* max_position_embeddings
    # (= seq_len) as the original and silently scales from the wrong base.
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_original_max_position: int | None = None
    dropout: float = 0.0  # attention dropout; modern pretraining uses 0, >0 is supported and resumes exactly
    vocab_multiple_of: int = 64  # pad the embedding rows: GPU matmuls on a multiple of 64 are faster
    init_std: float = 0.02
    # Mixture of experts (0 = dense Llama): every FFN becomes moe_num_experts SwiGLU experts of
    # intermediate_size each plus a router sending each token to moe_top_k of them (transformers' Mixtral:
    # Llama attention, so the dense base and the MoE differ only in the FFN). Equal active parameters per token
    # with a dense config of FFN width W: intermediate_size = W / moe_top_k. moe_aux_loss_coef weighs the
    # load-balancing loss (HF's value is ~moe_top_k at perfect balance, not 1; OLMoE uses 0.01).
    moe_num_experts: int = 0
    moe_top_k: int = 2
    moe_aux_loss_coef: float = 0.01
    # Share of training rows replaced by passkey-retrieval rows (pretrain/passkey.py): a number hidden in the row's
    # own text, asked for at its end. Continued pretraining for long context uses it; 0 = plain text only.
    passkey_fraction: float = 0.0

    # --- Optimization
    batch_size: int = 8  # sequences per micro-batch per rank
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 300  # length of the lr schedule
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    warmup_steps: int = 20
    weight_decay: float = 0.1  # on matrices and embeddings only, never on norms
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0  # max global grad norm; None disables clipping

    # --- Runtime
    device: str = "auto"  # auto = cuda when available
    dtype: str = "float32"  # bfloat16 = bf16 autocast over fp32 master weights (CUDA only)
    compile: bool = False
    # Under torchrun: ddp (every rank holds the whole model) or fsdp2 (weights, grads and AdamW state sharded
    # per decoder layer: pretrain/sharding.py), for models whose training state outgrows one GPU.
    parallelism: str = "ddp"
    attn_implementation: str = "sdpa"
    num_threads: int = 1  # torch CPU threads per process; on 2 shared cores 1 is faster and 10-40x steadier
    seed: int = 0
    # Stop (checkpoint and return) once this step is done, keeping max_steps as the schedule length: a planned
    # interruption. A resumed run then ends bit-identical to a straight one; raising max_steps instead
    # stretches the cosine and changes every lr after warmup.
    stop_after_steps: int | None = None

    # --- Checkpointing
    checkpoint_every: int | None = 100  # steps; the last step is always checkpointed; None = only the last
    keep_last: int | None = 2  # complete checkpoints kept in run_dir; None keeps all

    # --- Logging and evaluation
    log_every: int = 10
    eval_every: int | None = 100  # val loss/bpb every N steps (and always at the end); None = only at the end
    eval_batches: int = 8  # val batches of batch_size sequences per evaluation
    sample_prompts: tuple[str, ...] = ("def ", "The ", "import ", "class ")
    sample_max_new_tokens: int = 32

    # ------------------------------------------------------------------------------------------------
    def rope_parameters(self) -> dict[str, Any]:
        """transformers' rope_parameters: RoPE, or a context extension of it with its original length explicit."""
        params: dict[str, Any] = {"rope_type": self.rope_type, "rope_theta": self.rope_theta}
        if self.rope_type != "default":
            params["factor"] = self.rope_factor
        if self.rope_type not in ("default", "linear"):  # linear scales every position alike: no original length
            params["original_max_position_embeddings"] = self.rope_original_max_position
        if self.rope_type == "llama3":  # Llama 3.1's band edges (transformers requires them for llama3)
            params.update(low_freq_factor=1.0, high_freq_factor=4.0)
        return params

    @property
    def moe(self) -> bool:
        return self.moe_num_experts > 0

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step on ONE rank (multiply by world size for the global batch)."""
        return self.batch_size * self.grad_accum * self.seq_len

    def validate(self) -> PretrainConfig:
        """Raise ValueError naming the field and the fix; return self so calls can chain."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"PretrainConfig: {msg}")

        for name in (
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "intermediate_size",
            "seq_len",
            "batch_size",
            "grad_accum",
            "max_steps",
            "log_every",
            "eval_batches",
            "num_threads",
            "vocab_multiple_of",
        ):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        need(
            self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}; pick e.g. "
            f"n_heads={max(1, self.d_model // 64)} (head_dim 64)",
        )
        need(
            self.n_heads % self.n_kv_heads == 0,
            f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} (GQA groups); "
            f"set n_kv_heads to a divisor of n_heads",
        )
        need(
            (self.d_model // self.n_heads) % 2 == 0,
            f"head_dim={self.d_model // self.n_heads} must be even for RoPE; change d_model or n_heads",
        )
        need(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0")
        need(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        need(
            0 <= self.warmup_steps < self.max_steps,
            f"warmup_steps={self.warmup_steps} must be in [0, max_steps={self.max_steps}); lower it",
        )
        need(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        need(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            f"betas={self.betas} must be two numbers in [0, 1), e.g. (0.9, 0.95)",
        )
        need(
            self.grad_clip is None or self.grad_clip > 0,
            f"grad_clip={self.grad_clip} must be > 0, or None to disable clipping",
        )
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be in [0, 1)")
        need(self.init_std > 0, f"init_std={self.init_std} must be > 0")
        need(
            self.moe_num_experts == 0 or self.moe_num_experts >= 2,
            f"moe_num_experts={self.moe_num_experts} must be 0 (dense) or >= 2",
        )
        need(
            self.moe_num_experts == 0 or 1 <= self.moe_top_k <= self.moe_num_experts,
            f"moe_top_k={self.moe_top_k} must be in [1, moe_num_experts={self.moe_num_experts}]",
        )
        need(self.moe_aux_loss_coef >= 0, f"moe_aux_loss_coef={self.moe_aux_loss_coef} must be >= 0")
        need(self.rope_type in ROPE_TYPES, f"rope_type={self.rope_type!r} is not one of {ROPE_TYPES}")
        need(
            self.rope_type == "default" or (self.rope_factor > 1 and self.rope_original_max_position is not None),
            f"rope_type={self.rope_type!r} needs rope_factor > 1 and rope_original_max_position (the context the "
            f"weights were trained at) set explicitly",
        )
        need(
            self.rope_original_max_position is None or self.rope_original_max_position >= 1,
            f"rope_original_max_position={self.rope_original_max_position} must be >= 1 or None",
        )
        need(0.0 <= self.passkey_fraction <= 1.0, f"passkey_fraction={self.passkey_fraction} must be in [0, 1]")
        need(self.device in DEVICES, f"device={self.device!r} is not one of {DEVICES}")
        need(self.parallelism in PARALLELISMS, f"parallelism={self.parallelism!r} is not one of {PARALLELISMS}")
        need(self.dtype in DTYPES, f"dtype={self.dtype!r} is not one of {DTYPES}")
        need(
            not (self.device == "cpu" and self.dtype == "bfloat16"),
            "dtype='bfloat16' needs CUDA; on CPU use dtype='float32' (bf16 autocast on CPU is slower)",
        )
        need(
            self.attn_implementation in ATTN_IMPLEMENTATIONS,
            f"attn_implementation={self.attn_implementation!r} is not one of {ATTN_IMPLEMENTATIONS}",
        )
        need(
            self.stop_after_steps is None or 1 <= self.stop_after_steps <= self.max_steps,
            f"stop_after_steps={self.stop_after_steps} must be None or in [1, max_steps={self.max_steps}]",
        )
        need(
            self.checkpoint_every is None or self.checkpoint_every >= 1,
            f"checkpoint_every={self.checkpoint_every} must be >= 1, or None to save only the last step",
        )
        need(
            self.keep_last is None or self.keep_last >= 1,
            f"keep_last={self.keep_last} must be >= 1 (the newest checkpoint is what resume needs), or None",
        )
        need(
            self.eval_every is None or self.eval_every >= 1,
            f"eval_every={self.eval_every} must be >= 1, or None to evaluate only at the end",
        )
        need(
            self.sample_max_new_tokens >= 0,
            f"sample_max_new_tokens={self.sample_max_new_tokens} must be >= 0",
        )
        need(
            all(isinstance(p, str) and p for p in self.sample_prompts),
            f"sample_prompts={self.sample_prompts!r} must be non-empty strings",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists); inverse of from_dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        """Build from a dict (e.g. meta.json's `config`); unknown keys raise so typos are not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"PretrainConfig: unknown field(s) {unknown}; valid fields are {sorted(known)}")
        kw = dict(d)
        for key in ("betas", "sample_prompts"):
            if key in kw and kw[key] is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def replace(self, **changes: Any) -> PretrainConfig:
        return dataclasses.replace(self, **changes)
