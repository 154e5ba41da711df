"""Dagster concurrency pools: steps that must not run side by side, across runs.

Training steps share one pool (two trainings at once on one GPU, or on 2 CPU cores, only slow each
other down), and the cross-source corpus assets share another so that two sources landing together
rebuild the clusters and the mixture one after the other, each from every published source. The
limits (1 each) are set by the ``sources`` sensor on an instance that has none; a user's own limit wins.
"""

TRAINING_POOL = "llmdag_training"
CORPUS_GLOBAL_POOL = "llmdag_corpus_global"
