"""How the graph runs without someone clicking: jobs, sensors, schedules, automation conditions, pools.

- ``sources_sensor`` registers every known source as a ``sources`` partition (no runs: "Materialize all"
  in the UI then covers them) and gives the shared pools their limits unless the instance has them.
- ``landing_folders`` curates a landing folder once it is complete (``_READY`` or settled), again
  whenever its content changes, never twice for the same content.
- ``ingest_source`` runs only a source's own assets; what every source feeds (duplicate clusters, then
  each source's dedup/decont, then the mixture) follows by declarative automation, once for all the
  sources that changed together, and evals and the report card follow their checkpoints.
- ``arena_votes`` rebuilds datasets/human_preferences when ``llmdag serve``'s arena appends votes; evals/arena
  and the report card follow by automation.
- ``corpus_refresh`` (daily) re-curates sources whose fingerprint differs from the one recorded on
  ``corpus/raw_documents``; ``retrain`` (weekly) rebuilds tokenizer, datasets, models, evals, report.
- Freshness policies follow those two cadences: the corpus is expected daily, models, evals and the
  report card weekly (``freshness_policy_for``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import dagster as dg

from pipeline_assets.arena_votes import votes_path
from pipeline_assets.asset_keys import (
    BENCHMARKS,
    CLUSTERS,
    DEDUPED,
    FILTERED,
    HUMAN_PREFERENCES,
    RAW,
    REPORT_CARD,
    SIGNATURES,
)
from pipeline_assets.corpus.assets import sources_partitions
from pipeline_assets.corpus.fingerprint import settle_seconds, spec_fingerprint, waiting_reason
from pipeline_assets.corpus.sources import SOURCE_NAME, LandingProblem, SourceSpec, landing_sources_checked
from pipeline_assets.pools import CORPUS_GLOBAL_POOL, TRAINING_POOL
from resources.settings import PipelineSettings
from resources.sources import SourcesResource

FINGERPRINT_METADATA_KEY = "source_fingerprint"  # recorded by corpus/raw_documents: spec_fingerprint(spec)

PER_SOURCE = [RAW, FILTERED, SIGNATURES]
RETRAIN_GROUPS = ("tokenizer", "datasets", "models", "evals", "reports", "release", "serving")
# The schedules' crons and the interval between their ticks (the freshness windows are built on it).
CORPUS_REFRESH_CRON, CORPUS_REFRESH_CADENCE = "0 3 * * *", timedelta(days=1)
RETRAIN_CRON, RETRAIN_CADENCE = "0 4 * * 0", timedelta(weeks=1)
_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]

ingest_job = dg.define_asset_job(
    "ingest_source",
    selection=dg.AssetSelection.assets(*PER_SOURCE),
    partitions_def=sources_partitions,
    description="Curate one source: raw -> filtered -> MinHash signatures. The cross-source assets follow "
                "by automation once every source's signatures are in, so sources dropped together are "
                "clustered and mixed once.",
)

# evals/benchmarks stays out: a new materialization of it is an upstream update of every source's
# decontaminated documents, so automation would rebuild the whole corpus after each retrain.
human_preferences_job = dg.define_asset_job(
    "human_preferences", selection=dg.AssetSelection.assets(HUMAN_PREFERENCES),
    description="The arena's votes as preference pairs; evals/arena and the report card follow by automation.")
retrain_job = dg.define_asset_job(
    "retrain_models",
    selection=dg.AssetSelection.groups(*RETRAIN_GROUPS) - dg.AssetSelection.assets(BENCHMARKS),
    description="Tokenizer, datasets, every model stage, their evals, the report card and the gated release.",
)


# ---------------------------------------------------------------------------------------------------
# declarative automation

# Run when an upstream updates, after every upstream is present and idle, and never past a failed
# blocking check (across runs the check does not stop the step by itself: see DESIGN.md).
FOLLOW_UPSTREAM = (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
                   ).with_label("eager, blocking checks passed")
# An eval describes a checkpoint, and its contamination numbers the mixture that checkpoint was trained
# on: a newer mixture alone (a daily refresh) must not re-evaluate every stage; the retrain does.
FOLLOW_CHECKPOINT = (dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
                     ).ignore(dg.AssetSelection.groups("corpus")).with_label("eager on non-corpus deps, "
                                                                               "blocking checks passed")


# deduplicated_documents[s] reads the latest duplicate_clusters and refuses a version that does not cover s
# ("source 's' is not in corpus/duplicate_clusters version ..."). Eager alone starts it as soon as s's ingest
# ends, on the clusters version on record: duplicate_clusters waits while any other source's ingest is in
# progress, and even when requested on the same tick it is a separate run (one partition vs none), free to
# finish last. So dedup also waits until duplicate_clusters was materialized after s's filtered documents.
# Both sides carry materialization timestamps: when one tick sees both, the later one decides. Automation
# starts duplicate_clusters only once no ingest is in progress, so the next version covers s, unless a
# clusters run was already going when s's ingest started; the sensors hold ingests back then
# (clusters_run_in_flight).
CLUSTERS_COVER_SOURCE = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).allow(
        dg.AssetSelection.assets(CLUSTERS)).with_label("duplicate_clusters updated")
    .since(dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).allow(
        dg.AssetSelection.assets(FILTERED)).with_label("this source's filtered documents updated"))
).with_label("duplicate_clusters updated since this source's documents")
FOLLOW_CLUSTERS = (FOLLOW_UPSTREAM & CLUSTERS_COVER_SOURCE).with_label(
    "eager, blocking checks passed, duplicate_clusters covers this source")


def automation_condition_for(key: dg.AssetKey, group: str | None) -> dg.AutomationCondition | None:
    """The corpus after raw (raw follows its source through the sensor/schedule), evals, the report card.

    Model stages have none: a checkpoint is hours of accelerator time on the larger profiles, so
    training runs when the ``retrain`` schedule or a person says so.
    """
    if key == DEDUPED:
        return FOLLOW_CLUSTERS
    if group == "corpus" and key != RAW:
        return FOLLOW_UPSTREAM
    if (key.path[0] == "evals" and key != BENCHMARKS) or key == REPORT_CARD:
        return FOLLOW_CHECKPOINT
    return None


# ---------------------------------------------------------------------------------------------------
# freshness: what the schedules promise, checked by Dagster's freshness daemon (on in `dagster dev`)


def cadence_freshness(cadence: timedelta, allowance: timedelta) -> dg.FreshnessPolicy:
    """WARN when the run after a scheduled tick is ``allowance`` late, FAIL once a whole tick was missed."""
    return dg.FreshnessPolicy.time_window(fail_window=2 * cadence, warn_window=cadence + allowance)


# Allowances: the whole tiny graph takes 805-988 s (docs/default-run.md); 6 h and 1 day leave room for the
# larger profiles' curation and training before a late run reads as stale. Each cadence is its schedule's cron interval
# (tests/test_freshness.py derives it from the cron string). Freshness counts materializations only, and
# corpus_refresh re-curates only sources whose content changed: after 30 h (WARN) / 48 h (FAIL) with no
# source changed, the corpus reads stale although every refresh ran.
CORPUS_FRESHNESS = cadence_freshness(CORPUS_REFRESH_CADENCE, timedelta(hours=6))
MODELS_FRESHNESS = cadence_freshness(RETRAIN_CADENCE, timedelta(days=1))


def freshness_policy_for(key: dg.AssetKey, group: str | None) -> dg.FreshnessPolicy | None:
    """Daily for the corpus (``corpus_refresh``); weekly for models, their evals and the report card
    (``retrain``). evals/benchmarks is built once, not by either schedule."""
    if group == "corpus":
        return CORPUS_FRESHNESS
    if group == "models" or (key.path[0] == "evals" and key != BENCHMARKS) or key == REPORT_CARD:
        return MODELS_FRESHNESS
    return None


def with_automation(assets: Iterable[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """``assets`` with ``automation_condition_for`` and ``freshness_policy_for`` applied: these tables decide
    for the keys they name (replacing what the asset declared); any other asset keeps its own."""
    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        condition = automation_condition_for(spec.key, spec.group_name)
        policy = freshness_policy_for(spec.key, spec.group_name)
        if condition is not None:
            spec = spec.replace_attributes(automation_condition=condition)
        return spec if policy is None else dg.apply_freshness_policy(spec, policy)

    return [a.map_asset_specs(apply) if isinstance(a, dg.AssetsDefinition) else a for a in assets]


automation_sensor = dg.AutomationConditionSensorDefinition(
    "llmdag_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Cross-source corpus assets, evals and the report card follow their upstream.",
)


# ---------------------------------------------------------------------------------------------------
# helpers shared by the sensors and the schedule


def ensure_pool_limits(instance: dg.DagsterInstance, training_limit: int) -> dict[str, int]:
    """Give each llmdag pool its limit (training: the profile's ``training_pool_limit``, the corpus pool 1) where
    the instance has none; returns the limits it set."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    limits = {TRAINING_POOL: training_limit, CORPUS_GLOBAL_POOL: 1}
    missing = {pool: limit for pool, limit in limits.items() if storage.get_concurrency_info(pool).limit is None}
    for pool, limit in missing.items():
        storage.set_concurrency_slots(pool, limit)
    return missing


def training_limit_below(instance: dg.DagsterInstance, training_limit: int) -> str | None:
    """A warning when the instance's own training pool limit is below the profile's ``training_limit`` (an
    instance set up under another profile, or by hand): its training steps then run fewer at a time."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    limit = storage.get_concurrency_info(TRAINING_POOL).limit
    if limit is None or limit >= training_limit:
        return None
    return (f"pool {TRAINING_POOL!r} has limit {limit} on this instance, below this profile's training_pool_limit "
            f"{training_limit}: training steps run {limit} at a time (raise it in the UI under Deployment > "
            f"Concurrency, or `dagster instance concurrency set {TRAINING_POOL} {training_limit}`)")


def _warn(log, problems: Iterable[LandingProblem]) -> None:
    for problem in problems:
        log.warning(problem.message)


def known_specs(sources: SourcesResource, log) -> dict[str, SourceSpec]:
    """``sources.specs()`` minus what cannot be a partition; each malformed landing folder is warned about
    and left out (``specs()`` already skips it) while every other source goes on."""
    _warn(log, landing_sources_checked(Path(sources.landing))[1])
    specs = sources.specs()
    invalid = sorted(n for n in specs if not SOURCE_NAME.match(n))
    if invalid:
        log.warning(f"sources {invalid} left out: not valid partition keys; use letters, digits, '_', '.', '-'")
    return {n: s for n, s in specs.items() if SOURCE_NAME.match(n)}


def recorded_fingerprint(instance: dg.DagsterInstance, name: str) -> str | None:
    """``source_fingerprint`` of the latest ``corpus/raw_documents`` materialization of ``name``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[name]), limit=1).records
    materialization = records[0].asset_materialization if records else None
    value = materialization.metadata.get(FINGERPRINT_METADATA_KEY) if materialization else None
    return getattr(value, "value", value)


def ingest_in_flight(instance: dg.DagsterInstance, name: str) -> bool:
    """A queued or running run that curates this source: an ``ingest_source`` run, a backfill's run, or a
    backfill still planning it (``llmdag materialize`` or "Materialize all" of the same folder)."""
    runs = instance.get_run_records(dg.RunsFilter(statuses=_IN_FLIGHT, tags={"dagster/partition": name}))
    if any(RAW in (r.dagster_run.asset_selection or ()) for r in runs):
        return True
    from dagster._core.execution.backfill import BulkActionStatus

    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        target = backfill.asset_backfill_data.target_subset if backfill.asset_backfill_data else None
        if target is not None and RAW in target.asset_keys and (
                name in target.get_partitions_subset(RAW).get_partition_keys()):
            return True
    return False


def clusters_run_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The queued or running run that plans ``corpus/duplicate_clusters``, if any.

    It read (or will read) the signatures published when it started: a source curated beside it would be
    left out of that version, and its deduplicated documents would then refuse it. Its ingest waits.
    """
    planned = instance.get_latest_planned_materialization_info(CLUSTERS)
    run = instance.get_run_by_id(planned.run_id) if planned else None
    return run.run_id if run is not None and run.status in _IN_FLIGHT else None


def ingest_request(name: str, fingerprint: str, recorded: str | None) -> dg.RunRequest:
    # The recorded fingerprint is part of the key so that content A -> B -> A curates A again; the
    # same content with the same history gets the same key, which Dagster runs only once.
    key = f"{name}:{fingerprint}" + (f":after:{recorded[:16]}" if recorded else "")
    return dg.RunRequest(partition_key=name, run_key=key, tags={"llmdag/source_fingerprint": fingerprint})


def changed_sources(instance: dg.DagsterInstance, specs: dict[str, SourceSpec], settle_s: float, log
                    ) -> tuple[list[dg.RunRequest], list[str]]:
    """Run requests for sources whose content differs from what was curated; and why the others wait."""
    requests, waiting = [], []
    for name, spec in specs.items():
        if spec.kind == "folder" and spec.path and Path(spec.path).is_dir():
            reason = waiting_reason(Path(spec.path), settle_s)
            if reason:
                waiting.append(f"{name}: {reason}")
                continue
        try:
            fingerprint = spec_fingerprint(spec)
        except OSError as e:
            # Vanished mid-read: still changing. Missing altogether: a configured path to fix.
            log.warning(f"source {name!r} not fingerprinted ({e}); fix its path or wait for the copy to finish")
            waiting.append(f"{name}: {e}")
            continue
        recorded = recorded_fingerprint(instance, name)
        if fingerprint == recorded:
            continue
        if ingest_in_flight(instance, name):
            waiting.append(f"{name}: an ingest_source run for it is queued or running")
            continue
        requests.append(ingest_request(name, fingerprint, recorded))
    clusters_run = clusters_run_in_flight(instance) if requests else None
    if clusters_run:
        waiting += [f"{r.partition_key}: corpus/duplicate_clusters is being rebuilt (run {clusters_run[:8]}); "
                    "curated beside it, this source would be left out of that version" for r in requests]
        requests = []
    return requests, waiting


# ---------------------------------------------------------------------------------------------------
# sensors


@dg.sensor(minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a 'sources' partition for every built-in, landing and configured source (no runs: "
                       "materialize them from the UI); sets the llmdag pools' limits where none is set.")
def sources_sensor(context: dg.SensorEvaluationContext, sources: SourcesResource,
                   settings: PipelineSettings) -> dg.SensorResult | dg.SkipReason:
    for pool, limit in ensure_pool_limits(context.instance, settings.pipeline().training_pool_limit).items():
        context.log.info(f"pool {pool!r} had no limit: set to {limit} (change it under Deployment > Concurrency)")
    known = set(context.instance.get_dynamic_partitions(sources_partitions.name))
    new = [name for name in known_specs(sources, context.log) if name not in known]
    if not new:
        return dg.SkipReason(f"all {len(known)} known sources are registered")
    context.log.info(f"registering sources {new}")
    return dg.SensorResult(dynamic_partitions_requests=[sources_partitions.build_add_request(new)])


def landing_sensor_factory(landing: str) -> dg.SensorDefinition:
    @dg.sensor(job=ingest_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Curates each folder in {landing} once it is complete (a _READY file, or no change "
                           "for LLMDAG_LANDING_SETTLE_S, default 30 s), and again when its content changes.")
    def landing_folders(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if not Path(landing).is_dir():
            return dg.SkipReason(f"no landing directory {landing} yet: create it and add one folder per source")
        specs, problems = landing_sources_checked(Path(landing))
        _warn(context.log, problems)
        requests, waiting = changed_sources(context.instance, specs, settle_seconds(), context.log)
        for line in waiting:
            context.log.info(f"not yet: {line}")
        known = set(context.instance.get_dynamic_partitions(sources_partitions.name))
        new = [r.partition_key for r in requests if r.partition_key not in known]
        if not requests:
            ignored = [p.folder for p in problems]
            return dg.SkipReason("; ".join(
                [f"{len(specs) - len(waiting)} folder(s) in {landing} up to date"]
                + [f"waiting: {line}" for line in waiting]
                + ([f"ignored (see the warnings): {ignored}"] if ignored else [])))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[sources_partitions.build_add_request(new)] if new else [],
        )

    return landing_folders


def arena_votes_sensor_factory(root: str) -> dg.SensorDefinition:
    votes = votes_path(root)

    @dg.sensor(job=human_preferences_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Rebuilds datasets/human_preferences when the arena's votes ({votes}) change.")
    def arena_votes(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if not votes.is_file():
            return dg.SkipReason(f"no votes yet: {votes} appears with the first vote at `llmdag serve`'s /arena")
        stat = votes.stat()
        state = f"{stat.st_size}:{stat.st_mtime_ns}"
        if state == context.cursor:
            return dg.SkipReason(f"no new votes in {votes} since the last run")
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"votes:{state}")], cursor=state)

    return arena_votes


# ---------------------------------------------------------------------------------------------------
# schedules


@dg.schedule(job=ingest_job, cron_schedule=CORPUS_REFRESH_CRON, default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Daily: registers new sources and re-curates every source whose content changed "
                         "(fingerprint vs the one recorded on corpus/raw_documents).")
def corpus_refresh(context: dg.ScheduleEvaluationContext, sources: SourcesResource
                   ) -> list[dg.RunRequest] | dg.SkipReason:
    specs = known_specs(sources, context.log)
    # A schedule cannot return partition requests: add them here, before the runs that target them.
    context.instance.add_dynamic_partitions(sources_partitions.name, list(specs))
    requests, waiting = changed_sources(context.instance, specs, settle_seconds(), context.log)
    for line in waiting:
        context.log.info(f"not now: {line}")
    if not requests:
        return dg.SkipReason(f"no source changed since it was curated ({len(specs)} checked)"
                             + "".join(f"; waiting: {line}" for line in waiting))
    return requests


@dg.schedule(job=retrain_job, cron_schedule=RETRAIN_CRON, default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Weekly: retrain tokenizer and every model stage on the current mixture, then evals, "
                         "report card and the gated release.")
def retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"retrain:{context.scheduled_execution_time:%Y-%m-%dT%H:%M}")


def automation_definitions(landing: str, root: str | None = None) -> dict[str, list]:
    """Everything Definitions needs for automation: ``dg.Definitions(..., **automation_definitions(landing))``;
    with the artifact ``root``, the sensor on its arena votes too."""
    return {
        "jobs": [ingest_job, retrain_job, human_preferences_job],
        "sensors": [sources_sensor, landing_sensor_factory(landing), automation_sensor,
                    *([arena_votes_sensor_factory(root)] if root else [])],
        "schedules": [corpus_refresh, retrain],
    }
