"""Every asset key of the graph, in one place: the names users type (../shared/DESIGN.md), imported by the
stage that materializes each asset and by every stage that reads it, so a key is spelled once."""

import dagster as dg

# corpus
RAW = dg.AssetKey(["corpus", "raw_documents"])
QUALITY_CLASSIFIER = dg.AssetKey(["corpus", "quality_classifier"])
FILTERED = dg.AssetKey(["corpus", "filtered_documents"])
SIGNATURES = dg.AssetKey(["corpus", "minhash_signatures"])
CLUSTERS = dg.AssetKey(["corpus", "duplicate_clusters"])
DEDUPED = dg.AssetKey(["corpus", "deduplicated_documents"])
DECONT = dg.AssetKey(["corpus", "decontaminated_documents"])
MIXTURE = dg.AssetKey(["corpus", "training_mixture"])
# held-out sets: built before any training (corpus decontamination reads them)
BENCHMARKS = dg.AssetKey(["evals", "benchmarks"])
# tokenizer
TOKENIZER = dg.AssetKey(["tokenizer", "tokenizer"])
SHARDS = dg.AssetKey(["tokenizer", "tokenized_shards"])
# post-training datasets
SFT_DATA = dg.AssetKey(["datasets", "sft"])
REASONING = dg.AssetKey(["datasets", "reasoning"])
AI_FEEDBACK = dg.AssetKey(["datasets", "ai_feedback"])
PREFERENCES = dg.AssetKey(["datasets", "preferences"])
SYNTHETIC = dg.AssetKey(["datasets", "synthetic"])  # teacher-generated, verifier-filtered rows
TOOL_USE_DATA = dg.AssetKey(["datasets", "tool_use"])  # function-calling exchanges, the tools run for real
HUMAN_PREFERENCES = dg.AssetKey(["datasets", "human_preferences"])  # decisive arena votes as preference pairs
# accuracy vs samples per query (majority vote, best-of-N, pass@N) for the release lineage's policies
TEST_TIME_COMPUTE = dg.AssetKey(["evals", "test_time_compute"])
ARENA = dg.AssetKey(["evals", "arena"])  # win rates and Bradley-Terry / Elo ratings from the arena's votes
# reports and release
REPORT_CARD = dg.AssetKey(["reports", "report_card"])
RELEASE = dg.AssetKey(["release", "model"])
SERVING_SMOKE = dg.AssetKey(["serving", "smoke"])  # the release served and probed with real requests


def model_key(stage: str) -> dg.AssetKey:
    """``models/<stage>``: the checkpoint of a model stage (pipeline_assets/lineage.py lists them)."""
    return dg.AssetKey(["models", stage])


def eval_key(stage: str) -> dg.AssetKey:
    """``evals/<stage>``: the eval report of ``models/<stage>``."""
    return dg.AssetKey(["evals", stage])


BASE, BASE_MOE, LONG_CONTEXT, SFT, REWARD, DPO, RLHF, GRPO, DISTILLED, QUANTIZED = (
    model_key(s) for s in ("base", "base_moe", "long_context", "sft", "reward", "dpo", "rlhf", "grpo", "distilled",
                           "quantized"))
