"""Post-training assets: datasets and checkpoints after pretraining, each an HF dir with lineage.

datasets/sft -> models/sft -> datasets/ai_feedback -> datasets/preferences -> models/reward, models/dpo;
models/reward -> models/rlhf; datasets/reasoning -> models/grpo -> models/distilled, models/quantized.
Each asset converts its profile config (plus run-config overrides), calls one plain function from this
folder, and turns the returned dict into metadata: loss curve, before/after metrics, samples, parents.
"""

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_assets.asset_keys import (
    AI_FEEDBACK,
    BENCHMARKS,
    PREFERENCES,
    REASONING,
    SFT,
    SFT_DATA,
)
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.metadata import path_md, png_md, table
from pipeline_assets.pools import TRAINING_POOL
from pipeline_assets.posttrain import data
from pipeline_assets.posttrain.config import (
    FeedbackConfig,
    PreferenceDataConfig,
)
from pipeline_assets.posttrain.data import ReasoningDataConfig, SFTDataConfig
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import registered_sections, resolved, stage_config
from pipeline_assets.stages import ModelStage, StageInputs, resolve
from pipeline_assets.summary import write_summary
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore, Draft, fingerprint

SFTDataRunConfig = stage_config("SFTDataRunConfig", SFTDataConfig, "sft_data")
ReasoningDataRunConfig = stage_config("ReasoningDataRunConfig", ReasoningDataConfig, "reasoning_data")
FeedbackRunConfig = stage_config("FeedbackRunConfig", FeedbackConfig, "feedback")
PreferenceDataRunConfig = stage_config("PreferenceDataRunConfig", PreferenceDataConfig, "preference_data")

TRAINING_CHECK = "loss_finite_and_reloads"
# The trainer's resume points, inside the stage's resumable work dir; removed before the version is renamed,
# so the published dir holds only the model.
TRAINER_DIR = ".trainer"
# Config fields that change neither the weights nor the data order: other values resume the same run.
RESUME_FREE_FIELDS = {"save_every", "log_every"}


def _scalars(result: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()
            if isinstance(v, (int, float, str, bool)) or v is None}


def _samples(result: dict) -> dg.MetadataValue:
    rows = [{"prompt": str(s.get("prompt", ""))[:80],
             "completion": str(s.get("completion", s.get("response", "")))[:120].replace("\n", " ").replace("|", "/")}
            for s in result.get("samples", [])[:8]]
    return table(rows)


def _model_result(context: dg.AssetExecutionContext, store: ArtifactStore, draft: Draft, reads: Reads,
                  result: dict, trained: bool = True) -> dg.MaterializeResult:
    """Metadata every checkpoint records, plus the blocking check: loss finite (when trained) and it reloads."""
    import math

    from transformers import AutoConfig

    from pipeline_assets.pretrain.plots import loss_curve_png

    losses = [v for _, v in result.get("loss_history", [])]
    finite = not trained or (bool(losses) and all(math.isfinite(v) for v in losses))
    final = draft.version.path
    reloads = (final / "config.json").exists() and AutoConfig.from_pretrained(final) is not None
    metadata = {**_scalars(result), "samples": _samples(result), "checkpoint_dir": path_md(final)}
    if result.get("loss_history"):
        metadata["loss_curve"] = png_md(loss_curve_png(result["loss_history"], (), title="training loss"))
    return finish(context, store, draft, reads, metadata, [dg.AssetCheckResult(
        check_name=TRAINING_CHECK, passed=finite and reloads,
        metadata={"loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                  "reloads": reloads})])


def _check(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(TRAINING_CHECK, asset=key, blocking=True)]


def _train(context: dg.AssetExecutionContext, store: ArtifactStore, fn: Callable[[Path], dict],
           resume_key: str | None = None) -> tuple[Draft, dict]:
    with writing(context, store, resume_key) as draft:
        result = fn(draft.work)
        shutil.rmtree(draft.work / TRAINER_DIR, ignore_errors=True)
        write_summary(draft.work, result)
    return draft, result


def _resume_key(reads: Reads, inputs: Sequence[dg.AssetKey], cfg: Any, **extra: Any) -> str:
    """The work-dir key of a training stage: the upstream versions it trains from, its config and ``extra``
    (anything else that shapes the training data). A rerun after a kill with the same key finds the killed
    attempt's TRAINER_DIR and resumes; a new input version or config gets a fresh dir, so it never resumes
    another run's optimizer state."""
    for key in inputs:
        reads(key)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_FREE_FIELDS}
    return fingerprint(dict(sorted(reads.versions.items())), config, extra)


# --- datasets ------------------------------------------------------------------------------------------------


@dg.asset(key=SFT_DATA, deps=[BENCHMARKS], group_name="datasets", code_version="2", kinds={"json"})
def sft_dataset(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                config: SFTDataRunConfig) -> dg.MaterializeResult:
    """Chat SFT rows from local material: worked arithmetic, docstring QA, refusals, look-alikes, identity."""
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    draft, result = _train(context, store, lambda work: data.build_sft_dataset(work, cfg, reads(BENCHMARKS)))
    return finish(context, store, draft, reads, {
        "rows": result["rows"], "val_rows": result["val_rows"], "dagster/row_count": result["rows"],
        "counts": dg.MetadataValue.json(result["counts"]),
        "skipped_heldout": dg.MetadataValue.json(result["skipped_heldout"])})


@dg.asset(key=REASONING, deps=[BENCHMARKS], group_name="datasets", code_version="1", kinds={"json"})
def reasoning_dataset(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                      config: ReasoningDataRunConfig) -> dg.MaterializeResult:
    """Prompts with verifiable integer answers for GRPO, plus the held-out arithmetic set to measure on."""
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    draft, result = _train(context, store,
                           lambda work: data.build_reasoning_dataset(work, cfg, reads(BENCHMARKS)))
    return finish(context, store, draft, reads, _scalars(result))


@dg.asset(key=AI_FEEDBACK, deps=[SFT, SFT_DATA, BENCHMARKS], group_name="datasets", code_version="1",
          kinds={"pytorch"})
def ai_feedback(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                config: FeedbackRunConfig) -> dg.MaterializeResult:
    """RLAIF: the judge (the SFT model by default) rates policy samples against constitution.txt."""
    from pipeline_assets.posttrain import feedback
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    prompts = data.preference_prompts(reads(SFT_DATA), cfg.prompts, settings.config(SFTDataConfig, "sft_data"),
                                  unseen=False)  # its pairs join the preference TRAIN split
    draft, result = _train(context, store, lambda work: feedback.label_with_judge(
        None, prompts, reads(SFT), work, cfg, log=context.log.info))
    return finish(context, store, draft, reads, _scalars(result))


@dg.asset(key=PREFERENCES, deps=[SFT, SFT_DATA, AI_FEEDBACK, BENCHMARKS], group_name="datasets", code_version="1",
          kinds={"pytorch"})
def preference_pairs(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                     config: PreferenceDataRunConfig) -> dg.MaterializeResult:
    """On-policy pairs judged by verifiers and rules, plus the AI-feedback pairs."""
    from pipeline_assets.posttrain import preference_data
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    prompts = data.preference_prompts(reads(SFT_DATA), cfg.prompts, settings.config(SFTDataConfig, "sft_data"))
    # AI-feedback pairs come from SFT prompts: training pairs only, the held-out ones are prompts SFT never saw.
    extra = [{**pair, "heldout": False} for pair in read_jsonl(reads(AI_FEEDBACK) / "pairs.jsonl")]
    draft, result = _train(context, store, lambda work: preference_data.build_preference_pairs(
        reads(SFT), prompts, work, cfg, extra_pairs=extra, log=context.log.info))
    return finish(context, store, draft, reads, _scalars(result))


# --- models --------------------------------------------------------------------------------------------------


def model_asset(stage: ModelStage) -> dg.AssetsDefinition:
    """``models/<stage>`` from its registry entry (pipeline_assets/stages.py): the Launchpad form of its config
    section, its parent and inputs as deps, the trainer called on their published dirs, resumable in a work
    dir keyed by those versions and the config, and the blocking training check."""
    config_cls = resolve(stage.config)
    run_config = stage_config(f"{stage.name.capitalize()}RunConfig", config_cls, stage.section)
    deps = [stage.parent_key, *stage.inputs]

    def _model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
               config: dg.Config) -> dg.MaterializeResult:
        reads = Reads(store)
        cfg = resolved(config, settings.profile)
        inputs = StageInputs({key.to_user_string(): reads(key) for key in deps}, settings.profile)
        train = resolve(stage.trainer)  # imports the trainer (torch, TRL) only when the stage runs
        key = None
        if stage.resumable:
            sections = registered_sections()
            key = _resume_key(reads, deps, cfg, **{s: dataclasses.asdict(settings.config(sections[s], s))
                                                   for s in stage.uses_sections})
        draft, result = _train(context, store, lambda work: train(
            cfg, inputs, work, work / TRAINER_DIR if stage.resumable else None, context.log.info), key)
        return _model_result(context, store, draft, reads, result, trained=stage.trained)

    _model.__annotations__["config"] = run_config  # Dagster reads the form's schema from this annotation
    return dg.asset(key=stage.key, deps=deps, group_name="models", code_version=stage.code_version,
                    kinds={"pytorch"}, pool=TRAINING_POOL, check_specs=_check(stage.key),
                    description=stage.description)(_model)


def model_assets(stages: Sequence[ModelStage]) -> list[dg.AssetsDefinition]:
    """The model asset of every registered stage with a trainer (models/base is pretrain/'s own asset)."""
    return [model_asset(s) for s in stages if s.trainer is not None]


dataset_assets = [sft_dataset, reasoning_dataset, ai_feedback, preference_pairs]
