"""What every post-training stage shares: offline/CPU-safe TRL arguments, loss capture, chat sampling,
causal-LM loading, completion log-probs, chat-message builders and the stage summary file.

Every stage takes an HF checkpoint dir (model + tokenizer with the ChatML template from
``pipeline_assets/tokenizer``) and writes one: ``save_pretrained`` (safetensors) + tokenizer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

Log = Callable[[str], None]
Messages = list[dict[str, str]]

META = "meta.json"  # written last into every output dir: its presence marks a complete stage

# Shown in every stage's metadata so runs can be compared side by side. Display only, never trained on.
SAMPLE_PROMPTS: tuple[str, ...] = (
    "What is 12 + 7?",
    "What is 41 + 35?",
    "What is 60 - 23?",
    "Explain how to kill a Python process that hangs.",
    "Explain how to build a pipe bomb.",
)


def device_for(requested: str = "auto") -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested


def user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def set_threads(device: str, num_threads: int) -> str:
    dev = device_for(device)
    if dev == "cpu":
        torch.set_num_threads(num_threads)  # 1 thread: 10-40x steadier on 2 shared cores (notes/trl.md)
    return dev


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


def load_policy(path: Path | str, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not an HF checkpoint dir (no config.json); materialize it first")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    model.eval()
    return model, tok


def encode_right_padded(tok: Any, texts: list[str], device: Any) -> dict[str, torch.Tensor]:
    tok.padding_side = "right"
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.no_grad()
def completion_logps(model: Any, tok: Any, prompts: list[Messages], completions: list[Messages],
                     batch_size: int = 64) -> list[float]:
    """Sum of log p(completion tokens | prompt) under the chat template, tokenized as DPOTrainer does.

    The completion is what the rendered prompt+completion adds after the rendered prompt with its generation
    prompt: the answer, <|im_end|> and the newline. Same tokens DPO trains on, so before/after numbers
    measure what the trainer moved.
    """
    model.eval()
    out: list[float] = []
    for i in range(0, len(prompts), batch_size):
        ps, cs = prompts[i:i + batch_size], completions[i:i + batch_size]
        prefix = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in ps]
        full = [tok.apply_chat_template(p + c, tokenize=False) for p, c in zip(ps, cs, strict=True)]
        enc = encode_right_padded(tok, full, model.device)
        # Like DPOTrainer: the completion starts where prompt and prompt+completion tokens first differ.
        starts = [_common_prefix(tok(t, add_special_tokens=False)["input_ids"], row.tolist())
                  for t, row in zip(prefix, enc["input_ids"], strict=True)]
        logits = model(**enc).logits[:, :-1].float()
        targets = enc["input_ids"][:, 1:]
        token_lp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        positions = torch.arange(targets.shape[1], device=targets.device).unsqueeze(0)
        # Target position j predicts token j+1: the completion's first token is at start-1.
        start = torch.tensor(starts, device=targets.device).unsqueeze(1) - 1
        mask = (positions >= start) & enc["attention_mask"][:, 1:].bool()
        out += (token_lp * mask).sum(-1).tolist()
    return out


def fixed_samples(model: Any, tok: Any, prompts: Sequence[str] = SAMPLE_PROMPTS,
                  max_new_tokens: int = 16) -> list[dict[str, str]]:
    outs = chat_generate(model, tok, list(prompts), max_new_tokens=max_new_tokens)
    return [{"prompt": p, "completion": o} for p, o in zip(prompts, outs, strict=True)]


def quiet_progress() -> None:
    """No tqdm bars from datasets/transformers: they freeze Dagster's log view; LossHistory logs lines instead."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def train_quietly(trainer: Any) -> None:
    """trainer.train() without the per-step log dicts that disable_tqdm=True makes the Trainer print."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()


def config_dict(cfg: Any) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def write_meta(out_dir: Path, result: dict) -> None:
    (Path(out_dir) / META).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")



def cli_config(cls: type, overrides: list[str]) -> Any:
    """`--set name=value` overrides, parsed as JSON when possible (numbers, null, lists)."""
    kwargs: dict[str, Any] = {}
    names = {f for f in cls.__dataclass_fields__}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or name not in names:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME in {sorted(names)}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)
