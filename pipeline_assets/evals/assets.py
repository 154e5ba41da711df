"""Evaluation assets. ``evals/benchmarks``: the held-out sets, built before any training data is final."""


import dagster as dg

from pipeline_assets.evals.benchmarks import build_benchmarks
from pipeline_assets.metadata import path_md
from resources import ArtifactStore, PipelineSettings

BENCHMARKS = dg.AssetKey(["evals", "benchmarks"])


@dg.asset(key=BENCHMARKS, group_name="evals", code_version="1", kinds={"python"})
def benchmarks(context: dg.AssetExecutionContext, store: ArtifactStore,
               settings: PipelineSettings) -> dg.MaterializeResult:
    """Held-out eval sets (QA, multiple choice, arithmetic, safety): built before training, never trained on."""
    final = store.asset_path(context)
    with store.writing(final) as work:
        result = build_benchmarks(work, settings.get().benchmarks)
    return dg.MaterializeResult(metadata={"counts": dg.MetadataValue.json(result["counts"]),
                                          "total_items": result["total_items"], "path": path_md(final)})
