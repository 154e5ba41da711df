"""The llmdag Definitions: every asset, check, job, sensor and resource, wired to the active profile.

Load it with ``dagster dev -w workspace.yaml`` or ``dagster asset materialize -m pipeline_assets.definitions``;
headless end to end: ``llmdag materialize`` (pipeline_assets/cli.py submits the asset backfill).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from pipeline_assets.automation import automation_definitions, with_automation
from pipeline_assets.corpus.assets import corpus_assets
from pipeline_assets.evals.assets import arena, benchmarks, eval_asset, test_time_compute_asset
from pipeline_assets.evals.benchmarks import BenchmarkConfig
from pipeline_assets.k8s import k8s_executor, training_steps
from pipeline_assets.posttrain.assets import dataset_assets, model_assets
from pipeline_assets.pretrain.assets import pretrain_assets
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.profiles import PipelineConfig, default_profile, section_config
from pipeline_assets.reports.assets import report_assets
from pipeline_assets.run_executor import executor_for, torch_keys
from pipeline_assets.serving.assets import smoke_asset
from pipeline_assets.stages import model_stages, stages_in
from pipeline_assets.synthetic.assets import synthetic_data
from pipeline_assets.tokenizer.assets import tokenizer_assets
from pipeline_assets.tool_use.assets import tool_use_dataset
from resources.engines import default_launcher
from resources.launcher import LauncherResource
from resources.settings import PipelineSettings
from resources.sources import SourcesResource
from resources.storage import ArtifactStore, default_root

# Offline by default: a hub id typo must fail at once, not after 5 retries (~48 s).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r}: use 1/0, true/false, yes/no or on/off")


def build_resources(root: str | None = None, profile: str | None = None, landing: str | None = None,
                    builtin_sources: bool | None = None, launcher: str | None = None) -> dict:
    root = root or default_root()
    profile_name = profile or default_profile()
    launcher = launcher or default_launcher()
    task = section_config(BenchmarkConfig, "benchmarks", profile_name)
    pipeline = section_config(PipelineConfig, "pipeline", profile_name)
    if builtin_sources is None:
        builtin_sources = _env_flag("LLMDAG_BUILTIN_SOURCES", True)
    return {
        "store": ArtifactStore(root=root, profile=profile_name),
        "settings": PipelineSettings(profile=profile_name),
        "sources": SourcesResource(landing=landing or os.environ.get("LLMDAG_LANDING") or str(Path(root) / "landing"),
                                   builtin=builtin_sources, task_operand_max=task.operand_max,
                                   task_operators=list(task.operators)),
        "launcher": LauncherResource(kind=launcher, datatrove_workers=pipeline.datatrove_workers,
                                     train_processes_per_node=pipeline.train_processes_per_node,
                                     accelerate_config=pipeline.accelerate_config),
    }


def build_definitions(**kwargs) -> dg.Definitions:
    resources = build_resources(**kwargs)
    pipeline = resources["settings"].pipeline()
    models = [*pretrain_assets, *dataset_assets, tool_use_dataset, *model_assets(model_stages())]
    stages = stages_in({key for a in models for key in a.keys})
    has_reward = any(s.name == "reward" for s in stages)
    evals = [eval_asset(s, judged=has_reward and not s.base_model and s.kind != "reward") for s in stages]
    ttc = test_time_compute_asset(stages, pipeline.release_stage)
    evals += [ttc] if ttc is not None else []
    assets = [*corpus_assets, benchmarks, *tokenizer_assets, *models, synthetic_data, *evals, arena]
    if resources["launcher"].kind == "k8s":
        gpus = int(resources["settings"].config(PretrainConfig, "pretrain").device == "cuda")
        executor = k8s_executor(resources["store"].root, training_steps(assets), gpus_per_training_step=gpus)
    else:
        executor = executor_for(pipeline, torch_keys(assets))
    return dg.Definitions(
        assets=with_automation([*assets, *report_assets(stages, assets, test_time_compute=ttc is not None),
                                smoke_asset(pipeline.release_stage)]),
        resources=resources,
        executor=executor,
        **automation_definitions(resources["sources"].landing, resources["store"].root),
    )


defs = build_definitions()
