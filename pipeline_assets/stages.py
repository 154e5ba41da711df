"""The stage registry: every model stage declared once, as data.

A stage's entry says where it comes from (parent checkpoint, input datasets), how it is trained (a
``"module:function"`` trainer and its config dataclass, resolved at run time so this module imports no
stage), and how it proves itself (its held-out target metric, what that target is judged against, the
lm-eval task that reads the same items). Everything else is derived from the registry: the model asset
(posttrain/stage_assets.py), its eval asset (evals/assets.py), its gates (reports/gates.py defaults), its
report-card row and the release lineage.

Adding a model stage: one module with a trainer ``train(cfg, inputs, work, checkpoint_dir, log) -> dict``
and a config dataclass, plus one ``ModelStage`` entry below (README "Adding a stage").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg

from pipeline_assets.asset_keys import (
    BENCHMARKS,
    PREFERENCES,
    REASONING,
    REWARD,
    SFT_DATA,
    SHARDS,
    SYNTHETIC,
    TOOL_USE_DATA,
    eval_key,
    model_key,
)
from pipeline_assets.profiles import section_config

T = TypeVar("T")
Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelStage:
    name: str
    parent: str | None  # the checkpoint it starts from (or distils / quantizes; a from-scratch variant: compares with)
    kind: str = "causal_lm"  # "reward" models are scored on preference pairs, not generations
    description: str = ""
    # --- training (stages the generic model asset trains; None for models/base, which pretrain/ owns)
    trainer: str | None = None  # "module:function", called as train(cfg, inputs, work, checkpoint_dir, log)
    config: str | None = None  # "module:Class", the config dataclass; its values come from profiles[section]
    section: str | None = None  # the profiles.py section (and Launchpad form) of its config
    inputs: tuple[dg.AssetKey, ...] = ()  # assets it trains from beside its parent
    uses_sections: tuple[str, ...] = ()  # other profile sections that shape its data: part of its resume key
    resumable: bool = True  # False: no trainer checkpoints to resume from (a one-shot conversion)
    trained: bool = True  # False: no loss curve is expected (the training check only asks that it reloads)
    code_version: str = "1"
    # --- what the stage is for: its held-out target and how the gates judge it
    target: tuple[str, ...] = ("arithmetic_accuracy",)  # the first metric its eval has is its target
    target_baseline: float | None = None  # judged against this constant instead of the parent (reward: chance)
    target_baseline_metric: str | None = None  # ... or against another metric of its own eval (base: unigram)
    target_alpha: float | None = None  # significance its paired target test must reach (None: GateConfig.alpha)
    min_improvement: float | None = None  # the target gain it must exceed on every profile (None: the profile's)
    retain_fraction: float | None = None  # a cheaper copy: keep this fraction of the parent's target
    # A variant judged by non-inferiority: the worse end of its paired delta's 95% CI vs the parent may lie at most
    # this fraction of the parent's value on the wrong side (0.02: at most 2% worse, with confidence).
    non_inferiority: float | None = None
    retain: bool = False  # a cheaper copy: its target is kept, not improved
    quantized: bool = False  # the quantized gate applies (size and tracked metrics vs the parent)
    max_param_fraction: float | None = None  # must be this much smaller than its parent (distillation)
    keep: tuple[str, ...] = ()  # metrics it must not lose significantly vs its parent
    reward_hacking: bool = False  # optimizes a learned judge: the gold metric must not fall as its score rises
    chat: bool = True  # a chat policy: the safety gate applies (base and reward models are not)
    # A pretrained (not chat-tuned) model, trained by pipeline_assets/pretrain: scored the way it was trained
    # (plain few-shot, no chat template), with the base-model eval sets (evals/sets.py BASE_MODEL_SETS).
    base_model: bool = False
    long_context: bool = False  # a context extension: the long_context gate applies (reports/gates.py)
    tools: bool = False  # trained to call tools: its eval runs the tool-use set (evals/sets.py TOOL_SETS)
    # Its trainer runs under `accelerate launch` as several processes (its module's CLI is stage_cli.stage_main
    # and it writes files on the main process only): the launcher's train_processes_per_node > 1, or Slurm,
    # sends it there through Dagster Pipes (resources/training.py); otherwise it trains in the step's process.
    multi_process: bool = False
    lm_eval_task: str | None = "llmdag_arithmetic_chat"  # the lm-evaluation-harness task of its target

    @property
    def key(self) -> dg.AssetKey:
        return model_key(self.name)

    @property
    def eval_key(self) -> dg.AssetKey:
        return eval_key(self.name)

    @property
    def parent_key(self) -> dg.AssetKey | None:
        return model_key(self.parent) if self.parent else None


def _stage(name: str, parent: str, section: str, module: str, config: str, **kw: Any) -> ModelStage:
    """A post-training stage whose trainer is ``<module>:train`` and config ``posttrain.config:<config>``."""
    return ModelStage(name, parent, section=section, trainer=f"pipeline_assets.posttrain.{module}:train",
                      config=f"pipeline_assets.posttrain.config:{config}", **kw)


_REGISTRY: dict[str, ModelStage] = {}


def register_stage(stage: ModelStage) -> ModelStage:
    """Add ``stage`` to the registry (after its parent); a name already registered is replaced."""
    if stage.parent is not None and stage.parent not in _REGISTRY:
        raise ValueError(f"stage {stage.name!r}: parent {stage.parent!r} is not registered; register it first")
    _REGISTRY[stage.name] = stage
    return stage


def unregister_stage(name: str) -> None:
    _REGISTRY.pop(name, None)


def model_stages() -> tuple[ModelStage, ...]:
    """Every registered stage, parents before children."""
    return tuple(_REGISTRY.values())


def stage(name: str) -> ModelStage:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model stage {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def stages_in(defined: set[dg.AssetKey]) -> list[ModelStage]:
    """The stages whose model asset exists in this Definitions (the graph grows stage by stage)."""
    return [s for s in model_stages() if s.key in defined]


def resolve(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference names (imported now, not when the registry loads)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class StageInputs:
    """What a trainer gets besides its config: the published dir of each input, and the run's profile."""

    paths: Mapping[str, Path]  # asset key ("models/sft", "datasets/sft") -> published dir
    profile: str

    def __call__(self, key: dg.AssetKey | str) -> Path:
        name = key if isinstance(key, str) else key.to_user_string()
        if name not in self.paths:
            raise KeyError(f"{name} is not an input of this stage; inputs: {', '.join(self.paths)}")
        return self.paths[name]

    def config(self, cls: type[T], section: str) -> T:
        """Another stage's config for this run's profile (declare the section in ``uses_sections``)."""
        return section_config(cls, section, self.profile)


for _s in (
    ModelStage("base", None, description="Pretraining from the token shards (pipeline_assets/pretrain).",
               target=("val_bpb",), target_baseline_metric="unigram_val_bpb", chat=False, base_model=True,
               lm_eval_task="llmdag_arithmetic"),
    # Equal active parameters per token and equal tokens: its val bpb is paired with the dense base's window by
    # window, and the 95% CI of the difference must stay under +2% of the dense value (tiny measured +0.6-0.8%).
    ModelStage("base_moe", "base", description="Pretraining with mixture-of-experts FFNs (pipeline_assets/pretrain).",
               target=("val_bpb",), retain=True, non_inferiority=0.02, chat=False, base_model=True,
               lm_eval_task="llmdag_arithmetic"),
    # The loss at 2-4x the base context, paired with the base's on the same val windows; the long_context gate adds
    # the Llama 3 criteria (passkey retrieval at 4x, far positions as good as near, short context recovered).
    ModelStage("long_context", "base", description="models/base's pretraining continued at 4x its context "
               "(pipeline_assets/pretrain, RoPE yarn).", target=("long_loss_2_4x",), chat=False, base_model=True,
               long_context=True, lm_eval_task="llmdag_arithmetic"),
    _stage("sft", "base", "sft", "sft", "SFTStageConfig", inputs=(SFT_DATA, SHARDS, BENCHMARKS), code_version="2",
           target_alpha=0.01, multi_process=True,
           description="TRL SFTTrainer on the chat rows (plus pretraining replay from the shards); full fine-tune, "
                       "or LoRA (peft) with a merged copy as the checkpoint."),
    _stage("dpo", "sft", "dpo", "dpo", "DPOStageConfig", inputs=(PREFERENCES,),
           target=("preference_pair_accuracy", "arithmetic_accuracy"), keep=("arithmetic_accuracy",),
           description="TRL DPOTrainer (loss_type sigmoid/ipo/...; algorithm kto/orpo/simpo by config)."),
    # A scalar head on the DPO trunk: DPO trained the SFT policy on the same train pairs.
    _stage("reward", "dpo", "reward", "reward", "RewardModelConfig", kind="reward", inputs=(PREFERENCES,),
           code_version="2", target=("preference_pair_accuracy", "reward_pairwise_accuracy"),
           target_baseline=0.5, chat=False, lm_eval_task=None,
           description="TRL RewardTrainer: a scalar head on the DPO policy's trunk, trained on the preference "
                       "pairs; the held-out pairs stay unseen by both."),
    # Its target is already a difference to the parent (the judge's score), so its baseline is 0.
    _stage("rlhf", "sft", "rlhf", "rlhf", "RLHFConfig", inputs=(REWARD, SFT_DATA),
           uses_sections=("preference_data", "sft_data"),
           target=("reward_score_delta_vs_parent", "arithmetic_accuracy"), target_baseline=0.0,
           reward_hacking=True, description="The SFT policy optimized against models/reward with a KL penalty "
                                            "(TRL RLOO; TRL 1.16 has no PPO)."),
    _stage("grpo", "sft", "grpo", "grpo", "GRPOStageConfig", inputs=(REASONING,),
           description="TRL GRPOTrainer with verifiable rewards (exact answer + format) on datasets/reasoning."),
    _stage("distilled", "grpo", "distill", "distill", "DistillConfig", inputs=(SFT_DATA, REASONING, SYNTHETIC),
           code_version="2", retain=True, retain_fraction=0.8, max_param_fraction=0.6,
           description="A smaller student trained from the GRPO teacher (plus the datasets/synthetic rows at "
                       "a capped share; the same recipe without them is its ablation)."),
    _stage("quantized", "grpo", "quantize", "quantize", "QuantizeConfig", retain=True, quantized=True,
           resumable=False, trained=False,
           description="int8 weight-only deploy artifact (torchao via transformers), with size and speed vs "
                       "its parent."),
    # Its target is paired within its own eval: the same held-out questions answered with the tools offered vs
    # without (target_baseline_metric), where a tiny model cannot multiply 3-digit numbers in its head.
    ModelStage("tool_use", "sft", section="tool_use", trainer="pipeline_assets.tool_use.train:train",
               config="pipeline_assets.posttrain.config:SFTStageConfig", inputs=(TOOL_USE_DATA, SHARDS, BENCHMARKS),
               target=("tool_answer_accuracy",), target_baseline_metric="no_tool_answer_accuracy", target_alpha=0.01,
               min_improvement=0.30,
               tools=True, lm_eval_task=None,
               description="TRL SFTTrainer on datasets/tool_use: calls to a calculator, a sandboxed Python and a "
                           "docs lookup in the chat template's <tool_call> form, answers from their results."),
):
    register_stage(_s)
