"""Evaluation stage: held-out benchmark sets and the harness that scores every model asset.

`benchmarks.py` builds the held-out sets (`evals/benchmarks`) before any training happens; the corpus
stage decontaminates against them and the post-training data builders exclude them.
Build them by hand with `python -m pipeline_assets.evals.benchmarks --out /tmp/benchmarks`.
"""
