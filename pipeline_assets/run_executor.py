"""How one run executes its steps: one after another in the run's process, or several at a time in processes
forked from a server that imported torch once.

The multiprocess executor pays for its forkserver once per run: ~5 s of CPU to import the definitions, torch and
transformers, ~17-24 s of wall time when the default backfill's five per-source runs start theirs at once on 2
cores (their steps, a chain of two datatrove passes, took 8 s of the 26). Overlap only pays where a run holds
two or more torch steps (training, evaluation, generation), so a run with fewer executes in process: the
per-source curation runs, a lone model's re-materialization, the run of the small datasets beside the quality
classifier. Which steps are torch steps comes from the assets' declared kinds (``pytorch``).
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from pipeline_assets.profiles import PipelineConfig

# What the multiprocess executor's forkserver imports once per run, so each step process starts with it: the
# definitions (1.6 s; the plain functions import their libraries when they run) and torch + transformers (3.2 s),
# which ~30 of the default run's steps use.
FORKSERVER_PRELOAD = ["pipeline_assets.definitions", "pipeline_assets.model_io"]
TORCH_KIND = "pytorch"
MIN_TORCH_STEPS_TO_FORK = 2


def torch_keys(assets: Iterable[object]) -> frozenset[dg.AssetKey]:
    """The keys of the assets whose steps run torch (declared kind ``pytorch``)."""
    return frozenset(spec.key for a in assets if isinstance(a, dg.AssetsDefinition)
                     for spec in a.specs if TORCH_KIND in spec.kinds)


def forks_steps(selection: frozenset[dg.AssetKey] | None, torch: frozenset[dg.AssetKey]) -> bool:
    """Whether a run of ``selection`` (None: every asset) executes its steps in forked processes."""
    return len(torch if selection is None else torch & selection) >= MIN_TORCH_STEPS_TO_FORK


def _by_run(torch: frozenset[dg.AssetKey]) -> dg.ExecutorDefinition:
    @dg.executor(name="multiprocess", config_schema=dg.multiprocess_executor.config_schema.as_field(),
                 requirements=dg.multiple_process_executor_requirements())
    def by_run(init_context: dg.InitExecutorContext) -> dg.Executor:
        # The run worker reconstructs the job with the run's asset selection (None: the whole graph).
        selection = getattr(init_context.job, "asset_selection", None)
        if forks_steps(frozenset(selection) if selection is not None else None, torch):
            return dg.multiprocess_executor.executor_creation_fn(init_context)
        config = init_context.executor_config
        in_process = {"retries": config["retries"], "step_dependency_config": config.get("step_dependency_config")}
        return dg.in_process_executor.executor_creation_fn(init_context._replace(executor_config=in_process))

    return by_run


def executor_for(pipeline: PipelineConfig, torch: frozenset[dg.AssetKey]) -> dg.ExecutorDefinition:
    """The executor of every run: in_process (one step at a time), or multiprocess, ``max_concurrent_steps`` at
    a time, each step a fork of a server that has imported ``FORKSERVER_PRELOAD`` (Dagster's default start
    method, spawn, imports them again in every step) for runs of two or more torch steps (``torch``)."""
    if pipeline.dagster_executor == "in_process":
        return dg.in_process_executor
    if pipeline.dagster_executor == "multiprocess":
        return _by_run(torch).configured(
            {"max_concurrent": pipeline.max_concurrent_steps,
             "start_method": {"forkserver": {"preload_modules": FORKSERVER_PRELOAD}}}, name="multiprocess")
    raise ValueError(f"unknown dagster executor {pipeline.dagster_executor!r}; valid: in_process, multiprocess")
