"""Evaluation assets: the held-out sets (``evals/benchmarks``) and one eval report per model stage.

``evals/<stage>`` scores the checkpoint of ``models/<stage>`` on the held-out sets with real generations and
log-likelihoods (pipeline_assets/evals/harness.py); stages after SFT are also judged against their parent
by the reward model.
"""

import dataclasses
import json
from pathlib import Path

import dagster as dg

from pipeline_assets.asset_keys import BENCHMARKS, DEDUPED, MIXTURE, PREFERENCES, REWARD, SHARDS, model_key
from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks
from pipeline_assets.evals.config import EvalConfig
from pipeline_assets.evals.sets import BASE_MODEL_SETS, REGISTRY, TOOL_SETS
from pipeline_assets.metadata import table
from pipeline_assets.posttrain.data import WITHOUT_SYNTHETIC_DIR
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import register_section, resolved, stage_config
from pipeline_assets.stages import ModelStage
from pipeline_assets.summary import write_summary
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore

EvalRunConfig = stage_config("EvalRunConfig", EvalConfig, "evals")
register_section("benchmarks", BenchmarkConfig)  # no Launchpad form: the held-out sets are fixed per profile


@dg.asset(key=BENCHMARKS, group_name="evals", code_version="1", kinds={"python"})
def benchmarks(context: dg.AssetExecutionContext, store: ArtifactStore,
               settings: PipelineSettings) -> dg.MaterializeResult:
    """Held-out eval sets (QA, multiple choice, arithmetic, safety): built before training, never trained on."""
    with writing(context, store) as draft:
        result = build_benchmarks(draft.work, settings.config(BenchmarkConfig, "benchmarks"))
    return finish(context, store, draft, None, {"counts": dg.MetadataValue.json(result["counts"]),
                                                "total_items": result["total_items"],
                                                "dagster/row_count": result["total_items"]})


def _mixture_train_files(reads: Reads) -> list[Path]:
    manifest = json.loads((reads(MIXTURE) / "manifest.json").read_text())
    return [reads(MIXTURE) / e["file"] for e in manifest["train"]]


def _raw_files(reads: Reads) -> list[Path]:
    """Deduplicated (not yet decontaminated) documents of every source the mixture was built from."""
    manifest = json.loads((reads(MIXTURE) / "manifest.json").read_text())
    dedup = reads.many(DEDUPED, sorted({e["source"] for e in manifest["train"] + manifest["val"]}))
    return sorted(f for d in dedup.values() for f in (d / "documents").glob("*.jsonl"))


def eval_asset(stage: ModelStage, judged: bool) -> dg.AssetsDefinition:
    parent = model_key(stage.parent) if stage.parent else None
    deps = [stage.key, BENCHMARKS, SHARDS, MIXTURE] + ([parent] if parent else []) + ([REWARD] if judged else [])
    # Held-out preference pairs (prompts no SFT row used) score every post-trained stage, sft included, so
    # dpo's pair accuracy is paired against its parent's on the same pairs.
    paired = not stage.base_model
    deps += [PREFERENCES] if paired else []

    @dg.asset(key=stage.eval_key, deps=deps, group_name="evals", code_version="1", kinds={"pytorch"},
              description=f"Eval report of models/{stage.name} on the held-out sets.")
    def _eval(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
              config: EvalRunConfig) -> dg.MaterializeResult:
        from pipeline_assets.evals.harness import (  # torch: run time only
            ablation_effect,
            contamination_report,
            evaluate_checkpoint,
        )

        cfg = resolved(config, settings.profile)
        chosen = set(cfg.sets) | (set(TOOL_SETS) if stage.tools else set())
        skip = (() if stage.tools else TOOL_SETS) + (() if stage.base_model else BASE_MODEL_SETS)
        cfg = dataclasses.replace(cfg, sets=tuple(s for s in REGISTRY if s in chosen and s not in skip))
        if stage.base_model:  # a base model never saw the chat template: score it the way it was trained
            cfg = dataclasses.replace(cfg, arithmetic_format="plain")
        reads = Reads(store)
        bench = reads(BENCHMARKS)
        result = evaluate_checkpoint(
            reads(stage.key), bench, cfg, shards_dir=reads(SHARDS),
            parent_dir=reads(parent) if parent and judged else None,
            judge=reads(REWARD) if judged else None, log=context.log.info,
            pairs_dir=reads(PREFERENCES) if paired else None)
        # A stage that trained on datasets/synthetic saved the same recipe without it: the paired effect.
        ablation = reads(stage.key) / WITHOUT_SYNTHETIC_DIR
        if (ablation / "config.json").is_file():
            effect = ablation_effect(result, ablation, bench, stage.target[0], cfg, log=context.log.info)
            result["synthetic_effect"] = effect
            result["metrics"].update({"synthetic_effect_delta": effect["delta"],
                                      "synthetic_effect_p_value": effect["p_value"],
                                      f"without_synthetic_{effect['metric']}": effect["without"]})
        # Contamination of each eval set with the training data, before vs after decontamination.
        contamination = {"before_decontamination": contamination_report(_raw_files(reads), bench),
                         "after_decontamination": contamination_report(_mixture_train_files(reads), bench)}
        result["contamination"] = contamination
        with writing(context, store) as draft:
            write_summary(draft.work, result)
        metrics = {k: v for k, v in result["metrics"].items() if v is not None}
        rows = [{"set": name, "before": round(contamination["before_decontamination"]["sets"][name]["fraction"], 4),
                 "after": round(contamination["after_decontamination"]["sets"][name]["fraction"], 4)}
                for name in contamination["after_decontamination"]["sets"]]
        samples = [{"prompt": s["prompt"][:80], "completion": str(s["completion"])[:120].replace("\n", " ")
                    .replace("|", "\\|")} for s in result.get("samples", [])]
        return finish(context, store, draft, reads, {
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
            "metrics": dg.MetadataValue.json(metrics), "contamination": table(rows),
            "samples": table(samples), "num_params": result.get("num_params"),
            **({"synthetic_effect": dg.MetadataValue.json(result["synthetic_effect"])}
               if "synthetic_effect" in result else {}),
            "wall_time_s": round(result["wall_time_s"], 1)})

    return _eval
