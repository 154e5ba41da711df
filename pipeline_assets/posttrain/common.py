"""What every post-training stage shares: offline/CPU-safe TRL arguments, loss capture, chat sampling.

Every stage takes an HF checkpoint dir (model + tokenizer with the ChatML template from
``pipeline_assets/tokenizer``) and writes one: ``save_pretrained`` (safetensors) + tokenizer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def device_for(requested: str = "auto") -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested


def trl_args(output_dir: Path, *, max_steps: int, learning_rate: float, batch_size: int, seed: int = 0,
             device: str = "auto", num_threads: int = 1, **extra) -> dict:
    """Keyword arguments valid for every TRL config (SFT/Reward/DPO/GRPO/RLOO/...).

    TRL defaults to bf16 and gradient checkpointing, both wrong on CPU; 1 torch thread is 10-40x
    steadier for tiny models on 2 shared cores (../shared/notes/trl.md). Checkpoints are ours to
    save, so the trainer saves none.
    """
    dev = device_for(device)
    if dev == "cpu":
        torch.set_num_threads(num_threads)
    return dict(
        output_dir=str(output_dir), max_steps=max_steps, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, seed=seed, data_seed=seed,
        bf16=dev == "cuda" and torch.cuda.is_bf16_supported(), use_cpu=dev == "cpu",
        activation_checkpointing=False, report_to="none", dataloader_pin_memory=False,
        save_strategy="no", logging_steps=1, disable_tqdm=True, weight_decay=0.0,
        logging_nan_inf_filter=False, **extra,
    )


class LossHistory(TrainerCallback):
    """Collects ``[step, loss]`` (and any reward/margin logs) and forwards a progress line to ``log``.

    Every stage uses it, so it is also the stages' finite guard: a NaN/inf loss or grad_norm raises
    ``NonFiniteError`` naming the step (``guards.check_logs``) before it is recorded.
    """

    def __init__(self, log: Callable[[str], None] = print, every: int = 10, keys: tuple[str, ...] = ()) -> None:
        self.log, self.every, self.keys = log, every, keys
        self.loss: list[list[float]] = []
        self.metrics: dict[str, list[list[float]]] = {k: [] for k in keys}
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        from pipeline_assets.posttrain.guards import check_logs

        logs = logs or {}
        check_logs(state.global_step, logs)
        if "loss" in logs:
            self.loss.append([state.global_step, float(logs["loss"])])
        for k in self.keys:
            if k in logs:
                self.metrics[k].append([state.global_step, float(logs[k])])
        if state.global_step % self.every == 0 and "loss" in logs:
            elapsed = time.time() - self.start
            eta = elapsed / max(state.global_step, 1) * (state.max_steps - state.global_step)
            self.log(f"step {state.global_step:05d}/{state.max_steps:05d} | loss {logs['loss']:.4f} | "
                     f"elapsed {elapsed:.0f}s | eta {eta:.0f}s")


@torch.no_grad()
def generate_texts(model: PreTrainedModel, tok: PreTrainedTokenizerBase, texts: list[str],
                   max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
                   batch_size: int = 32, prefix_ids: list[int] | None = None) -> list[str]:
    """Completions of raw ``texts`` (left-padded batches); ``prefix_ids`` go before each text's tokens."""
    model.eval()
    tok.padding_side = "left"
    out: list[str] = []
    for i in range(0, len(texts), batch_size):
        ids = [list(prefix_ids or []) + tok(t, add_special_tokens=False)["input_ids"] for t in texts[i:i + batch_size]]
        enc = tok.pad({"input_ids": ids}, return_tensors="pt").to(model.device)
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             temperature=temperature if do_sample else None, top_p=None, top_k=None,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [o.strip() for o in out]


def chat_generate(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str],
                  max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0,
                  batch_size: int = 32) -> list[str]:
    """Completions of single-turn user prompts through the chat template (left-padded batches)."""
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    return generate_texts(model, tok, texts, max_new_tokens, do_sample, temperature, batch_size)


def save_checkpoint(model: PreTrainedModel, tok: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """HF format (safetensors) + tokenizer, loadable with plain ``from_pretrained``; NaN/inf weights refused."""
    from pipeline_assets.finite import assert_finite_weights

    assert_finite_weights(model.state_dict(), where=f"the model about to be saved to {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
