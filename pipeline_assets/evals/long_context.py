"""Long-context evals of a base model at 1x, 2x and 4x the context it was pretrained at.

* loss by position: mean next-token loss of held-out val windows 4x the base context long, bucketed by position
  (0-1x, 1-2x, 2-4x): a model that uses the longer context keeps the far buckets at or below the first one, a
  model that does not (RoPE past its trained length) degrades there;
* passkey retrieval (pretrain/passkey.py): a 5-digit key hidden at an evenly spaced depth of real val text,
  asked for at the end, answered greedily; exact digits count. Eval keys are odd, training keys even.

The base context is the extension's ``original_max_position_embeddings`` (or, for linear scaling, its length over
its factor), else the model's ``max_position_embeddings``: a base model and its extension are scored at the same
lengths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline_assets.pretrain.passkey import KEY_DIGITS, answer_of, passkey, passkey_prompt

MULTIPLES = (1, 2, 4)


def base_context(config: Any) -> int:
    """The length the weights were first trained at: an extension's original length (linear RoPE scaling
    records only its factor), else the model's own context."""
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("original_max_position_embeddings"):
        return int(rope["original_max_position_embeddings"])
    return int(config.max_position_embeddings / float(rope.get("factor") or 1.0))


def val_stream(shards_dir: Path | str) -> np.ndarray:
    from pipeline_assets.pretrain.data import TokenWindows, read_index

    return TokenWindows(Path(shards_dir), read_index(Path(shards_dir)), "val", 1).stream().astype(np.int64)


@torch.no_grad()
def loss_by_position(model: Any, stream: np.ndarray, context: int, windows: int, batch_size: int) -> dict[str, Any]:
    """Mean loss per position bucket over up to ``windows`` disjoint val windows of 4 x ``context`` tokens."""
    length = MULTIPLES[-1] * context
    n = min(windows, len(stream) // (length + 1))
    if n == 0:
        raise ValueError(f"the val split has {len(stream)} tokens: not one window of {length + 1}")
    device = next(model.parameters()).device
    nll = []
    for b in range(0, n, batch_size):
        rows = [stream[i * (length + 1):(i + 1) * (length + 1)] for i in range(b, min(n, b + batch_size))]
        ids = torch.from_numpy(np.stack(rows)).to(device)
        logits = model(input_ids=ids[:, :-1], use_cache=False).logits.float()
        nll.append(F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").double().cpu())
    per_window = torch.cat(nll)  # (windows, length)
    edges = [0, *(m * context for m in MULTIPLES)]
    names = [f"{lo // context}_{hi // context}x" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    # Each window's mean loss per bucket: two models on the same shards are paired window by window.
    items = {name: per_window[:, lo:hi].mean(1).tolist()
             for name, lo, hi in zip(names, edges[:-1], edges[1:], strict=True)}
    per_position = per_window.mean(0)
    step = max(1, length // 32)
    curve = [[i, round(float(per_position[i:i + step].mean()), 4)] for i in range(0, length, step)]
    return {"windows": n, "length": length, "buckets": {k: round(sum(v) / n, 6) for k, v in items.items()},
            "items": items, "curve": curve}


@torch.no_grad()
def passkey_retrieval(model: Any, tok: Any, stream: np.ndarray, context: int, per_length: int,
                      seed: int = 0) -> dict[str, Any]:
    """Greedy retrieval accuracy at each multiple of ``context``, per-item scores keyed by length and index."""
    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    device = next(model.parameters()).device
    rng = np.random.default_rng([seed, 0x5EED])
    out: dict[str, Any] = {"accuracy": {}, "items": {}, "examples": []}
    for multiple in MULTIPLES:
        length = multiple * context
        span = len(stream) - length
        if span <= 0:
            raise ValueError(f"the val split has {len(stream)} tokens: too few for a {length}-token passkey prompt")
        prompts, keys = [], []
        for i in range(per_length):
            start = int(i * span / max(per_length, 1))
            key = passkey(rng, "test")
            depth = i / max(per_length - 1, 1)
            prompts.append(passkey_prompt(stream[start:start + length], key, depth, length, encode))
            keys.append(key)
        scores: list[float] = []
        for b in range(0, per_length, 8):
            ids = torch.tensor(prompts[b:b + 8], device=device)
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=KEY_DIGITS + 2, pad_token_id=tok.pad_token_id or 0)
            for j, row in enumerate(generated[:, ids.shape[1]:].tolist()):
                text = tok.decode(row, skip_special_tokens=True)
                scores.append(float(answer_of(text) == keys[b + j]))
                if b + j < 2:
                    out["examples"].append({"length": length, "key": keys[b + j], "answer": text})
        name = f"passkey_{multiple}x"
        out["accuracy"][name] = round(sum(scores) / len(scores), 6)
        out["items"][name] = {"ids": [f"{name}-{i}" for i in range(per_length)], "scores": scores}
    return out
