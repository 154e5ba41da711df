"""Tokenizer stage: train a byte-level BPE tokenizer (train.py) and turn JSONL documents into token shards
(shards.py). Plain Python, no Dagster: the `tokenizer/*` assets call these functions.

    python -m pipeline_assets.tokenizer.train --help
    python -m pipeline_assets.tokenizer.shards --help
"""
