"""Mixture-of-experts routing on the val split: how evenly the router spreads tokens over the experts.

HF's load-balancing loss sums routing over every layer before it is reported (and is ~top_k, not 1, at perfect
balance), so a collapsed layer hides behind balanced ones; this counts each layer's top-k assignments itself.
Per layer: each expert's share of the assignments, max share / mean share (1 = even; E = one expert takes
all), the coefficient of variation of the shares, experts that received no token, and the router's mean
entropy over experts divided by log E (1 = uniform routing, 0 = always the same expert).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def is_moe(model: Any) -> bool:
    return int(getattr(model.config, "num_local_experts", 0) or 0) > 1


def val_windows(shards_dir: Path | str, seq_len: int, count: int) -> list[np.ndarray]:
    """The first ``count`` windows of ``seq_len`` tokens of the val split (all of it when shorter)."""
    from pipeline_assets.pretrain.data import TokenWindows, read_index

    stream = TokenWindows(Path(shards_dir), read_index(Path(shards_dir)), "val", seq_len).stream()
    return [stream[i * seq_len:(i + 1) * seq_len].astype(np.int64)
            for i in range(min(count, max(1, len(stream) // seq_len)))]


@torch.no_grad()
def routing_stats(model: Any, windows: Sequence[np.ndarray], batch_size: int) -> dict[str, Any]:
    """Routing of ``model`` (a transformers MoE causal LM) over equal-length token ``windows``."""
    experts, top_k = int(model.config.num_local_experts), int(model.config.num_experts_per_tok)
    device = next(model.parameters()).device
    counts: list[torch.Tensor] = []
    entropy: list[float] = []
    aux: list[float] = []
    tokens = 0
    for b in range(0, len(windows), batch_size):
        ids = torch.from_numpy(np.stack(windows[b:b + batch_size])).to(device)
        out = model(input_ids=ids, use_cache=False, output_router_logits=True)
        aux.append(float(out.aux_loss))
        for layer, logits in enumerate(out.router_logits):
            probs = logits.float().softmax(-1)
            hits = torch.bincount(probs.topk(top_k, -1).indices.flatten(), minlength=experts).cpu()
            ent = float(-(probs * probs.clamp_min(1e-12).log()).sum())
            if layer == len(counts):
                counts.append(hits)
                entropy.append(ent)
            else:
                counts[layer] += hits
                entropy[layer] += ent
        tokens += ids.numel()
    layers = []
    for layer, hits in enumerate(counts):
        share = hits.double() / hits.sum()
        layers.append({"layer": layer, "load": [round(float(s), 4) for s in share],
                       "max_over_mean": round(float(share.max() * experts), 4),
                       "cv": round(float(share.std(unbiased=False) / share.mean()), 4),
                       "dead_experts": int((hits == 0).sum()),
                       "router_entropy": round(entropy[layer] / tokens / math.log(experts), 4)})
    return {"num_experts": experts, "top_k": top_k, "tokens": tokens, "layers": layers,
            # HF's load-balancing loss on these windows: E * sum_i f_i * P_i, ~top_k when balanced
            "aux_loss": round(sum(aux) / len(aux), 4),
            "max_over_mean": max(r["max_over_mean"] for r in layers),
            "cv": round(sum(r["cv"] for r in layers) / len(layers), 4),
            "dead_experts": sum(r["dead_experts"] for r in layers),
            "router_entropy": round(sum(r["router_entropy"] for r in layers) / len(layers), 4)}
