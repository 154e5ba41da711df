"""Post-training assets: datasets and checkpoints after pretraining, each an HF dir with lineage.

datasets/sft -> models/sft -> datasets/ai_feedback -> datasets/preferences -> models/reward, models/dpo;
models/reward -> models/rlhf; datasets/reasoning -> models/grpo -> models/distilled, models/quantized.
Each asset converts its profile config (plus run-config overrides), calls one plain function from this
folder, and turns the returned dict into metadata: loss curve, before/after metrics, samples, parents.
"""

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_assets.asset_keys import (
    AI_FEEDBACK,
    BASE,
    BENCHMARKS,
    DISTILLED,
    DPO,
    GRPO,
    PREFERENCES,
    QUANTIZED,
    REASONING,
    REWARD,
    RLHF,
    SFT,
    SFT_DATA,
    SHARDS,
)
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.metadata import path_md, png_md, table
from pipeline_assets.pools import TRAINING_POOL
from pipeline_assets.posttrain import data
from pipeline_assets.posttrain.config import (
    DistillConfig,
    DPOStageConfig,
    FeedbackConfig,
    GRPOStageConfig,
    PreferenceDataConfig,
    QuantizeConfig,
    RewardModelConfig,
    RLHFConfig,
    SFTStageConfig,
)
from pipeline_assets.posttrain.data import ReasoningDataConfig, SFTDataConfig
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import resolved, stage_config
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore, Draft, fingerprint

SFTDataRunConfig = stage_config("SFTDataRunConfig", SFTDataConfig, "sft_data")
ReasoningDataRunConfig = stage_config("ReasoningDataRunConfig", ReasoningDataConfig, "reasoning_data")
FeedbackRunConfig = stage_config("FeedbackRunConfig", FeedbackConfig, "feedback")
PreferenceDataRunConfig = stage_config("PreferenceDataRunConfig", PreferenceDataConfig, "preference_data")
SFTRunConfig = stage_config("SFTRunConfig", SFTStageConfig, "sft")
RewardRunConfig = stage_config("RewardRunConfig", RewardModelConfig, "reward")
DPORunConfig = stage_config("DPORunConfig", DPOStageConfig, "dpo")
RLHFRunConfig = stage_config("RLHFRunConfig", RLHFConfig, "rlhf")
GRPORunConfig = stage_config("GRPORunConfig", GRPOStageConfig, "grpo")
DistillRunConfig = stage_config("DistillRunConfig", DistillConfig, "distill")
QuantizeRunConfig = stage_config("QuantizeRunConfig", QuantizeConfig, "quantize")

TRAINING_CHECK = "loss_finite_and_reloads"
SUMMARY_FILE = "summary.json"  # = posttrain.common.SUMMARY_FILE (not imported: common needs torch)
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
        (draft.work / SUMMARY_FILE).write_text(json.dumps(result, indent=2, default=str))
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


def _preference_prompts(sft_data: Path, limit: int, task: data.SFTDataConfig,
                        unseen: bool = True) -> list[dict]:
    """Prompt records for pair building and RLHF: the SFT rows' prompts to train on (arithmetic with answers,
    harmful, benign), and as the held-out prompts the training-split problems no SFT row used, so held-out
    pair accuracy and RLHF's held-out numbers are measured on prompts the policy never trained on."""
    rows = read_jsonl(sft_data / data.SFT_FILE) + read_jsonl(sft_data / data.SFT_VAL_FILE)
    out: list[dict] = []
    for r in rows:
        user, reply = r["messages"][0]["content"], r["messages"][-1]["content"]
        if r["kind"] == "arithmetic":
            out.append({"prompt": user, "answer": reply, "heldout": False})
        elif r["kind"] == "refusal":
            out.append({"prompt": user, "label": "harmful", "heldout": False})
        elif r["kind"] == "benign":
            out.append({"prompt": user, "label": "benign", "response": reply, "heldout": False})
    arithmetic = [p for p in out if "answer" in p][:limit]
    safety = [p for p in out if "label" in p][: max(limit // 10, 8)]
    if not unseen:
        return arithmetic + safety
    held = data.unseen_arithmetic({r["messages"][0]["content"] for r in rows}, task.operand_max, task.operators)
    return arithmetic + safety + [{**p, "heldout": True} for p in held]


@dg.asset(key=AI_FEEDBACK, deps=[SFT, SFT_DATA, BENCHMARKS], group_name="datasets", code_version="1",
          kinds={"pytorch"})
def ai_feedback(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                config: FeedbackRunConfig) -> dg.MaterializeResult:
    """RLAIF: the judge (the SFT model by default) rates policy samples against constitution.txt."""
    from pipeline_assets.posttrain import feedback
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    prompts = _preference_prompts(reads(SFT_DATA), cfg.prompts, settings.config(SFTDataConfig, "sft_data"),
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
    prompts = _preference_prompts(reads(SFT_DATA), cfg.prompts, settings.config(SFTDataConfig, "sft_data"))
    # AI-feedback pairs come from SFT prompts: training pairs only, the held-out ones are prompts SFT never saw.
    extra = [{**pair, "heldout": False} for pair in read_jsonl(reads(AI_FEEDBACK) / "pairs.jsonl")]
    draft, result = _train(context, store, lambda work: preference_data.build_preference_pairs(
        reads(SFT), prompts, work, cfg, extra_pairs=extra, log=context.log.info))
    return finish(context, store, draft, reads, _scalars(result))


# --- models --------------------------------------------------------------------------------------------------


@dg.asset(key=SFT, deps=[BASE, SFT_DATA, SHARDS], group_name="models", code_version="2", kinds={"pytorch"},
          pool=TRAINING_POOL, check_specs=_check(SFT))
def sft_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
              config: SFTRunConfig) -> dg.MaterializeResult:
    """TRL SFTTrainer on the chat rows (plus pretraining replay from the shards); full fine-tune, or LoRA (peft)
    with a merged copy as the checkpoint."""
    from pipeline_assets.posttrain import sft
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    bench = read_jsonl(reads(BENCHMARKS) / "arithmetic.jsonl")  # reported (test split)
    dev = read_jsonl(reads(SFT_DATA) / data.HELDOUT_FILE)  # early stop and curve (dev split)

    def run(work: Path) -> dict:
        # LoRA: the adapter lives in adapter/, the merged model is the asset dir itself (plain from_pretrained).
        out = work / "adapter" if cfg.use_lora else work
        return sft.run_sft(cfg, reads(BASE), reads(SFT_DATA) / data.SFT_FILE, out,
                           merged_dir=work if cfg.use_lora else None, log=context.log.info, heldout=bench,
                           val_dataset_path=reads(SFT_DATA) / data.SFT_VAL_FILE, checkpoint_dir=work / TRAINER_DIR,
                           replay_shards=reads(SHARDS) if cfg.replay_fraction else None, dev=dev)

    draft, result = _train(context, store, run, _resume_key(reads, [BASE, SFT_DATA, SHARDS], cfg))
    return _model_result(context, store, draft, reads, result)


@dg.asset(key=REWARD, deps=[DPO, PREFERENCES], group_name="models", code_version="2", kinds={"pytorch"},
          pool=TRAINING_POOL, check_specs=_check(REWARD))
def reward_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                 config: RewardRunConfig) -> dg.MaterializeResult:
    """TRL RewardTrainer: a scalar head on the DPO policy's trunk (the SFT policy after DPO on the same train
    pairs), trained on the preference pairs; the held-out pairs stay unseen by both."""
    from pipeline_assets.posttrain import reward
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    draft, result = _train(context, store, lambda work: reward.run_reward_model(
        cfg, reads(DPO), reads(PREFERENCES), work, log=context.log.info, checkpoint_dir=work / TRAINER_DIR),
        _resume_key(reads, [DPO, PREFERENCES], cfg))
    return _model_result(context, store, draft, reads, result)


@dg.asset(key=DPO, deps=[SFT, PREFERENCES], group_name="models", code_version="1", kinds={"pytorch"},
          pool=TRAINING_POOL, check_specs=_check(DPO))
def dpo_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
              config: DPORunConfig) -> dg.MaterializeResult:
    """TRL DPOTrainer (loss_type sigmoid/ipo/...; algorithm kto/orpo/simpo by config)."""
    from pipeline_assets.posttrain import dpo
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    draft, result = _train(context, store, lambda work: dpo.run_dpo(
        cfg, reads(SFT), reads(PREFERENCES), work, log=context.log.info, checkpoint_dir=work / TRAINER_DIR),
        _resume_key(reads, [SFT, PREFERENCES], cfg))
    return _model_result(context, store, draft, reads, result)


@dg.asset(key=RLHF, deps=[SFT, REWARD, SFT_DATA], group_name="models", code_version="1", kinds={"pytorch"},
          pool=TRAINING_POOL, check_specs=_check(RLHF))
def rlhf_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
               config: RLHFRunConfig) -> dg.MaterializeResult:
    """The SFT policy optimized against models/reward with a KL penalty (TRL RLOO; TRL 1.16 has no PPO)."""
    from pipeline_assets.posttrain import rlhf
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    # The preference stage's prompts, so RLHF's held-out prompts are the reward model's held-out pairs'.
    prompts = _preference_prompts(reads(SFT_DATA), settings.config(PreferenceDataConfig, "preference_data").prompts,
                                  settings.config(SFTDataConfig, "sft_data"))
    draft, result = _train(context, store, lambda work: rlhf.run_rlhf(
        cfg, reads(SFT), reads(REWARD), prompts, work, log=context.log.info, checkpoint_dir=work / TRAINER_DIR),
        _resume_key(reads, [SFT, REWARD, SFT_DATA], cfg, prompts=prompts))
    return _model_result(context, store, draft, reads, result)


@dg.asset(key=GRPO, deps=[SFT, REASONING], group_name="models", code_version="1", kinds={"pytorch"},
          pool=TRAINING_POOL, check_specs=_check(GRPO))
def grpo_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
               config: GRPORunConfig) -> dg.MaterializeResult:
    """TRL GRPOTrainer with verifiable rewards (exact answer + format) on datasets/reasoning."""
    from pipeline_assets.posttrain import rl
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    heldout = read_jsonl(reads(REASONING) / data.HELDOUT_FILE)
    draft, result = _train(context, store, lambda work: rl.run_grpo(
        cfg, reads(SFT), reads(REASONING) / data.REASONING_FILE, work, heldout,
        log=context.log.info, checkpoint_dir=work / TRAINER_DIR), _resume_key(reads, [SFT, REASONING], cfg))
    from pipeline_assets.posttrain.sandbox import sandbox_probe  # which isolation the code rewards ran under

    result["sandbox_mode"] = sandbox_probe().mode if "code_execution" in cfg.reward_funcs else "unused"
    return _model_result(context, store, draft, reads, result)


@dg.asset(key=DISTILLED, deps=[GRPO, SFT_DATA, REASONING], group_name="models", code_version="1", kinds={"pytorch"},
          pool=TRAINING_POOL, check_specs=_check(DISTILLED))
def distilled_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                    config: DistillRunConfig) -> dg.MaterializeResult:
    """A smaller student trained from the GRPO teacher."""
    from pipeline_assets.posttrain import distill
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    draft, result = _train(context, store, lambda work: distill.run_distill(
        cfg, reads(GRPO), reads(SFT_DATA) / data.SFT_FILE, work, log=context.log.info,
        heldout=read_jsonl(reads(REASONING) / data.HELDOUT_FILE), checkpoint_dir=work / TRAINER_DIR),
        _resume_key(reads, [GRPO, SFT_DATA, REASONING], cfg))
    return _model_result(context, store, draft, reads, result)


@dg.asset(key=QUANTIZED, deps=[GRPO], group_name="models", code_version="1", kinds={"pytorch"},
          pool=TRAINING_POOL, check_specs=_check(QUANTIZED))
def quantized_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                    config: QuantizeRunConfig) -> dg.MaterializeResult:
    """int8 weight-only deploy artifact (torchao via transformers), with size and speed vs its parent."""
    from pipeline_assets.posttrain import quantize
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    draft, result = _train(context, store, lambda work: quantize.quantize(
        cfg, reads(GRPO), work, log=context.log.info))
    return _model_result(context, store, draft, reads, result, trained=False)


posttrain_assets = [sft_dataset, reasoning_dataset, ai_feedback, preference_pairs, sft_model, reward_model,
                    dpo_model, rlhf_model, grpo_model, distilled_model, quantized_model]
