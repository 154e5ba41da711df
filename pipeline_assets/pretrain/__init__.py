"""Pretraining stage: a Llama-style decoder-only transformer trained from token shards, as plain Python.

config.py (PretrainConfig; per-profile values in profiles.py) · model.py (transformers LlamaForCausalLM + FLOP counts)
· data.py (resumable memmap batch loader) · checkpoint.py (atomic step_NNNNNN dirs, meta.json last)
· train.py (the loop; `python -m pipeline_assets.pretrain.train --help`) · plots.py (loss curve PNG).
Nothing here imports Dagster; `assets.py` (owned by the lead) wraps `train.train()`.
"""
