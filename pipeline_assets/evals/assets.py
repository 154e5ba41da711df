"""Evaluation assets: the held-out sets (``evals/benchmarks``) and one eval report per model stage.

``evals/<stage>`` scores the checkpoint of ``models/<stage>`` on the held-out sets with real generations and
log-likelihoods (pipeline_assets/evals/harness.py); stages after SFT are also judged against their parent
by the reward model.
"""

import json
from pathlib import Path

import dagster as dg

from pipeline_assets.evals.benchmarks import build_benchmarks
from pipeline_assets.evals.harness import contamination_report, evaluate_checkpoint
from pipeline_assets.lineage import ModelStage
from pipeline_assets.metadata import md_table, path_md
from pipeline_assets.run_config import StageOverrides, overridden
from resources import ArtifactStore, PipelineSettings

BENCHMARKS = dg.AssetKey(["evals", "benchmarks"])
SHARDS = dg.AssetKey(["tokenizer", "tokenized_shards"])
MIXTURE = dg.AssetKey(["corpus", "training_mixture"])
REWARD = dg.AssetKey(["models", "reward"])


@dg.asset(key=BENCHMARKS, group_name="evals", code_version="1", kinds={"python"})
def benchmarks(context: dg.AssetExecutionContext, store: ArtifactStore,
               settings: PipelineSettings) -> dg.MaterializeResult:
    """Held-out eval sets (QA, multiple choice, arithmetic, safety): built before training, never trained on."""
    final = store.asset_path(context)
    with store.writing(final) as work:
        result = build_benchmarks(work, settings.get().benchmarks)
    return dg.MaterializeResult(metadata={"counts": dg.MetadataValue.json(result["counts"]),
                                          "total_items": result["total_items"], "path": path_md(final)})


def _mixture_train_files(store: ArtifactStore) -> list[Path]:
    manifest = json.loads((store.path(MIXTURE.path) / "manifest.json").read_text())
    return [store.path(MIXTURE.path) / e["file"] for e in manifest["train"]]


def _raw_files(store: ArtifactStore) -> list[Path]:
    return sorted(store.asset_root(["corpus", "deduplicated_documents"]).glob("*/documents/*.jsonl"))


def eval_asset(stage: ModelStage, judged: bool) -> dg.AssetsDefinition:
    parent = dg.AssetKey(["models", stage.parent]) if stage.parent else None
    deps = [stage.key, BENCHMARKS, SHARDS, MIXTURE] + ([parent] if parent else []) + ([REWARD] if judged else [])

    @dg.asset(key=stage.eval_key, deps=deps, group_name="evals", code_version="1", kinds={"pytorch"},
              description=f"Eval report of models/{stage.name} on the held-out sets.")
    def _eval(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
              config: StageOverrides) -> dg.MaterializeResult:
        cfg = overridden(settings.get().evals, config)
        bench = store.path(BENCHMARKS.path)
        result = evaluate_checkpoint(
            store.path(stage.key.path), bench, cfg, shards_dir=store.path(SHARDS.path),
            parent_dir=store.path(parent.path) if parent and judged else None,
            judge=store.path(REWARD.path) if judged else None, log=context.log.info)
        # Contamination of each eval set with the training data, before vs after decontamination.
        contamination = {"before_decontamination": contamination_report(_raw_files(store), bench),
                         "after_decontamination": contamination_report(_mixture_train_files(store), bench)}
        result["contamination"] = contamination
        final = store.asset_path(context)
        with store.writing(final) as work:
            (work / "eval.json").write_text(json.dumps(result, indent=2, default=str))
        metrics = {k: v for k, v in result["metrics"].items() if v is not None}
        rows = [{"set": name, "before": round(contamination["before_decontamination"]["sets"][name]["fraction"], 4),
                 "after": round(contamination["after_decontamination"]["sets"][name]["fraction"], 4)}
                for name in contamination["after_decontamination"]["sets"]]
        samples = [{"prompt": s["prompt"][:80], "completion": str(s["completion"])[:120].replace("\n", " ")
                    .replace("|", "\\|")} for s in result.get("samples", [])]
        return dg.MaterializeResult(metadata={
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
            "metrics": dg.MetadataValue.json(metrics), "contamination": md_table(rows),
            "samples": md_table(samples), "num_params": result.get("num_params"),
            "wall_time_s": round(result["wall_time_s"], 1), "report": path_md(final / "eval.json")})

    return _eval
