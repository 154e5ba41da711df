"""FSDP2 for pretraining under torchrun (``parallelism: fsdp2``, the ``scale`` profile): torch's ``fully_shard``.

Parameters, gradients and AdamW state are sharded over the ranks per decoder layer (each layer's weights are
gathered for its forward and backward, then freed; the embedding, final norm and a tied LM head sit in the
root group). What changes against DDP is only how a full copy is obtained:

- checkpoints and the export hold the full (unsharded) weights and optimizer state, gathered collectively
  and written by rank 0 (``full_model_state``, ``full_optimizer_state``), so a resume loads them the way a
  DDP run does and ``from_pretrained`` reads the export unchanged;
- anything that runs the model (eval, samples) runs on every rank with the same number of forwards, since
  each forward all-gathers from every rank.

torch's own API rather than accelerate's: the pretraining loop is ours (DDP today), and ``fully_shard`` is the
one call accelerate's FSDP2 plugin makes for it. Works on CPU with gloo, which is how tests run it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # rank 0 gets the whole dict on CPU, others {}


def shard(model: torch.nn.Module) -> None:
    """``fully_shard`` every decoder layer, then the root: in place, before the optimizer is built."""
    from torch.distributed.fsdp import fully_shard

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no model.layers to shard; parallelism=fsdp2 expects a "
                         "transformers decoder (Llama, Mixtral)")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0 (every rank must call it); {} on the others."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The unsharded optimizer state (keyed by parameter name) on rank 0 (every rank calls it); {} elsewhere."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict[str, Any]) -> None:
    """Every rank passes the full state read from the checkpoint; each keeps its shard."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def all_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank iff ``flag`` is True on rank 0 (one rank checks, all act on the result)."""
    t = torch.tensor([1 if flag else 0], device=device)  # nccl broadcasts CUDA tensors only
    dist.broadcast(t, src=0)
    return bool(t.item())
