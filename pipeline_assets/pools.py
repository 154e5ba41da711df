"""Dagster concurrency pools: steps that must not run side by side, across runs.

Training steps share one pool, limited by the profile's ``training_pool_limit``: tiny trains two 1-thread
steps at once on its 2 cores; one GPU (small) takes one training at a time, two only slow each other
down. The cross-source corpus assets share another (limit 1) so that two sources landing together
rebuild the clusters and the mixture one after the other, each from every published source. The
limits are set by the ``sources`` sensor and ``llmdag materialize`` on an instance that has none; a
user's own limit wins.
"""

import dagster as dg

from pipeline_assets.asset_keys import AI_FEEDBACK, DPO, PREFERENCES, REWARD, SFT

TRAINING_POOL = "llmdag_training"
CORPUS_GLOBAL_POOL = "llmdag_corpus_global"

# Which ready step a run starts first when it runs several at a time (tiny: 2), as Dagster's step priority.
# Every eval waits on models/reward (the judge), so the chain from models/sft to it is the graph's longest:
# started as soon as it is ready, the side branches (base_moe, long_context, grpo, distillation, tool use) fill
# the other core. tests/test_definitions.py derives this chain from the graph.
CRITICAL_CHAIN = (SFT, AI_FEEDBACK, PREFERENCES, DPO, REWARD)


def priority_tags(key: dg.AssetKey) -> dict[str, str]:
    """The op tags that start ``key``'s step first among the ready ones (``dagster/priority``, higher first)."""
    return {"dagster/priority": "1"} if key in CRITICAL_CHAIN else {}
