"""Automation without a single training step: what the sensors, schedules and automation conditions request.

Everything here evaluates against a throw-away Dagster instance with fake (runless) materializations and
check results, so the whole module runs in seconds.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from conftest import capture_logs

# Not exported by dagster: a runless check result must name the materialization it checked, or a
# partitioned check never counts as current (asset_check_state.py: is_current).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from pipeline_assets.arena_votes import append_vote, votes_path
from pipeline_assets.automation import (
    CORPUS_GLOBAL_POOL,
    FINGERPRINT_METADATA_KEY,
    TRAINING_POOL,
    arena_votes_sensor_factory,
    automation_definitions,
    corpus_refresh,
    ensure_pool_limits,
    ingest_job,
    landing_sensor_factory,
    retrain,
    retrain_job,
    sources_sensor,
    training_limit_below,
    with_automation,
)
from pipeline_assets.corpus.fingerprint import source_fingerprint, spec_fingerprint
from pipeline_assets.corpus.sources import BUILTIN_SOURCES, READY_MARKER, SOURCE_FILE, SourceSpec
from pipeline_assets.corpus.sources import landing_sources_checked as landing_specs
from pipeline_assets.profiles import PipelineConfig, section_config
from resources.settings import PipelineSettings
from resources.sources import SourcesResource, UserSource

# evaluate_automation_conditions itself selects with a beta parameter
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
K = dg.AssetKey.from_user_string
RAW = K("corpus/raw_documents")


def _folder(landing: Path, name: str, files: dict[str, str], settings: str | None = None) -> Path:
    folder = landing / name
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    if settings is not None:
        (folder / SOURCE_FILE).write_text(settings)
    return folder


def _run_keys(result) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests}


@pytest.fixture
def settle(monkeypatch):
    def set_settle(seconds: float) -> None:
        monkeypatch.setenv("LLMDAG_LANDING_SETTLE_S", str(seconds))

    set_settle(30)
    return set_settle


@pytest.fixture(scope="module")
def defs(tmp_path_factory) -> dg.Definitions:
    """The real asset graph with the automation applied, as definitions.py wires it."""
    from pipeline_assets.definitions import build_definitions

    root = tmp_path_factory.mktemp("automation_root")
    landing = root / "landing"
    base = build_definitions(root=str(root), landing=str(landing), builtin_sources=False)
    return dg.Definitions(assets=with_automation(list(base.assets)), asset_checks=list(base.asset_checks or []),
                          resources=base.resources, **automation_definitions(str(landing)))


# ---------------------------------------------------------------------------------------------------
# fingerprints


def test_fingerprint_follows_content_not_timestamps(tmp_path):
    folder = _folder(tmp_path, "src", {"a.txt": "alpha", "sub/b.jsonl": '{"id": "1", "text": "beta"}\n'})
    fp = source_fingerprint(folder)
    os.utime(folder / "a.txt", (1, 1))  # a touch, or a re-copy of the same bytes
    (folder / READY_MARKER).write_text("")
    (folder / ".DS_Store").write_text("finder state")  # ingest skips dot-files too
    assert source_fingerprint(folder) == fp
    (folder / "a.txt").write_text("alphA")  # same size, one byte differs
    assert source_fingerprint(folder) != fp
    (folder / "a.txt").write_text("alpha")
    assert source_fingerprint(folder) == fp
    (folder / "a.txt").rename(folder / "c.txt")  # same bytes under another name is another source
    assert source_fingerprint(folder) != fp


def test_spec_fingerprint_per_kind(tmp_path):
    folder = _folder(tmp_path, "src", {"a.txt": "alpha"})
    web = SourceSpec("src", "folder", "web", path=str(folder))
    assert spec_fingerprint(web) == spec_fingerprint(SourceSpec("other", "folder", "web", path=str(folder)))
    assert spec_fingerprint(web) != spec_fingerprint(SourceSpec("src", "folder", "prose", path=str(folder)))
    hub = SourceSpec("hub", "hf", "web", hf_dataset="org/data")
    assert spec_fingerprint(hub) != spec_fingerprint(SourceSpec("hub", "hf", "web", hf_dataset="org/data",
                                                                hf_split="test"))
    docs, stdlib = BUILTIN_SOURCES["python_docs"], BUILTIN_SOURCES["python_stdlib"]
    assert spec_fingerprint(docs) == spec_fingerprint(docs) != spec_fingerprint(stdlib)


def test_landing_specs_report_each_bad_folder_and_keep_the_rest(tmp_path):
    _folder(tmp_path, "good", {"a.txt": "x"}, json.dumps({"domain": "code"}))
    _folder(tmp_path, "bad name", {"a.txt": "x"})
    _folder(tmp_path, "not_json", {"a.txt": "x"}, "{domain: web")
    _folder(tmp_path, "a_list", {"a.txt": "x"}, "[1, 2]")
    _folder(tmp_path, "odd_domain", {"a.txt": "x"}, json.dumps({"domain": "poetry"}))
    specs, problems = landing_specs(tmp_path)
    assert list(specs) == ["good"] and specs["good"].domain == "code"
    by_folder = {p.folder: p.message for p in problems}
    assert set(by_folder) == {"bad name", "not_json", "a_list", "odd_domain"}
    assert "rename it" in by_folder["bad name"]
    assert "not valid JSON" in by_folder["not_json"] and SOURCE_FILE in by_folder["not_json"]
    assert "must be a JSON object" in by_folder["a_list"]
    assert "unknown domain 'poetry'" in by_folder["odd_domain"] and "prose" in by_folder["odd_domain"]


# ---------------------------------------------------------------------------------------------------
# sources sensor


def test_sources_sensor_registers_every_source_without_runs_and_sets_pool_limits(instance, tmp_path):
    landing = tmp_path / "landing"
    _folder(landing, "dropped", {"a.txt": "x"})
    _folder(landing, "broken", {"a.txt": "x"}, "not json")  # makes SourcesResource.specs() raise
    extra = _folder(tmp_path, "configured", {"a.txt": "x"})
    resource = SourcesResource(landing=str(landing), builtin=True,
                               extra=[UserSource(name="extra_docs", path=str(extra), domain="prose")])
    storage = instance.event_log_storage
    storage.set_concurrency_slots(TRAINING_POOL, 3)  # the user's own limit

    context = dg.build_sensor_context(instance=instance, resources={"sources": resource,
                                                                    "settings": PipelineSettings(profile="tiny")})
    log = capture_logs(context)
    result = sources_sensor(context)
    assert not result.run_requests
    [request] = result.dynamic_partitions_requests
    assert request.partitions_def_name == "sources"
    assert "dropped" in request.partition_keys and "extra_docs" in request.partition_keys
    assert {"python_docs", "python_stdlib"} <= set(request.partition_keys)  # built-ins present on any machine
    assert "broken" not in request.partition_keys
    assert "broken" in log.warning_text() and SOURCE_FILE in log.warning_text()
    assert storage.get_concurrency_info(TRAINING_POOL).limit == 3  # kept
    assert storage.get_concurrency_info(CORPUS_GLOBAL_POOL).limit == 1  # set

    instance.add_dynamic_partitions("sources", list(request.partition_keys))
    again = sources_sensor(dg.build_sensor_context(instance=instance, resources={
        "sources": resource, "settings": PipelineSettings(profile="tiny")}))
    assert isinstance(again, dg.SkipReason) and "registered" in again.skip_message


def test_pool_limits_come_from_the_profile(instance):
    """tiny trains two 1-thread steps at once; small (one GPU) one at a time; a limit already set stays."""
    assert ensure_pool_limits(instance, section_config(PipelineConfig, "pipeline", "tiny").training_pool_limit) == {
        TRAINING_POOL: 2, CORPUS_GLOBAL_POOL: 1}
    assert section_config(PipelineConfig, "pipeline", "small").training_pool_limit == 1
    assert ensure_pool_limits(instance, 1) == {}
    assert instance.event_log_storage.get_concurrency_info(TRAINING_POOL).limit == 2
    assert training_limit_below(instance, 2) is None
    instance.event_log_storage.set_concurrency_slots(TRAINING_POOL, 1)  # e.g. set up under the small profile
    assert "limit 1 on this instance, below this profile's training_pool_limit 2" in training_limit_below(instance, 2)


# ---------------------------------------------------------------------------------------------------
# landing sensor


def test_landing_sensor_waits_until_a_folder_settles_or_is_marked_ready(instance, tmp_path, settle):
    landing = tmp_path / "landing"
    _folder(landing, "copying", {"part1.txt": "first half"})
    (landing / "just_made").mkdir()  # made before the copy into it starts
    sensor = landing_sensor_factory(str(landing))
    result = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason)
    assert "copying" in result.skip_message and "still changing" in result.skip_message

    _folder(landing, "marked", {"a.txt": "complete"})
    (landing / "marked" / READY_MARKER).write_text("")
    result = sensor(dg.build_sensor_context(instance=instance))
    assert list(_run_keys(result)) == ["marked"]  # at once, while "copying" still waits
    assert result.dynamic_partitions_requests[0].partition_keys == ["marked"]

    settle(0.3)
    time.sleep(0.4)
    context = dg.build_sensor_context(instance=instance)
    log = capture_logs(context)
    result = sensor(context)
    assert sorted(_run_keys(result)) == ["copying", "marked"]  # "just_made" stays out while empty
    assert "just_made: empty" in "\n".join(r.getMessage() for r in log.records)
    assert all(key.startswith(f"{name}:") for name, key in _run_keys(result).items())


def test_landing_sensor_tick_targets_a_partition_it_registers_in_the_same_tick(instance, tmp_path, settle, defs):
    landing = tmp_path / "landing"
    _folder(landing, "new_src", {"a.txt": "complete", READY_MARKER: ""})
    sensor = landing_sensor_factory(str(landing))
    repo = dg.Definitions(assets=list(defs.assets), resources=defs.resources, jobs=[ingest_job], sensors=[sensor])
    # As the daemon evaluates it: run requests are resolved against the job after the partition requests.
    data = sensor.evaluate_tick(dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=repo))
    [request] = data.run_requests
    assert request.partition_key == "new_src" and request.tags["dagster/partition"] == "new_src"
    assert data.dynamic_partitions_requests[0].partition_keys == ["new_src"]


def test_landing_sensor_skips_bad_folders_with_a_warning_and_takes_the_others(instance, tmp_path, settle):
    settle(0)
    landing = tmp_path / "landing"
    _folder(landing, "good_a", {"a.txt": "a"})
    _folder(landing, "good_b", {"b.txt": "b"}, json.dumps({"domain": "legal"}))
    _folder(landing, "has space", {"a.txt": "a"})
    _folder(landing, "bad_json", {"a.txt": "a"}, '{"domain": ')
    _folder(landing, "bad_domain", {"a.txt": "a"}, json.dumps({"domain": "news"}))
    instance.add_dynamic_partitions("sources", ["good_b"])
    context = dg.build_sensor_context(instance=instance)
    log = capture_logs(context)
    result = landing_sensor_factory(str(landing))(context)
    assert sorted(_run_keys(result)) == ["good_a", "good_b"]
    assert result.dynamic_partitions_requests[0].partition_keys == ["good_a"]  # good_b is registered already
    warnings = log.warning_text()
    assert "'has space' is not a valid source name" in warnings
    assert str(landing / "bad_json" / SOURCE_FILE) in warnings and "not valid JSON" in warnings
    assert "unknown domain 'news'" in warnings


def test_landing_sensor_run_key_changes_with_content_only(instance, tmp_path, settle):
    settle(0)
    landing = tmp_path / "landing"
    folder = _folder(landing, "docs", {"a.txt": "version one", "b.txt": "stays"})
    sensor = landing_sensor_factory(str(landing))
    first = _run_keys(sensor(dg.build_sensor_context(instance=instance)))["docs"]
    os.utime(folder / "b.txt")  # touched, not changed
    assert _run_keys(sensor(dg.build_sensor_context(instance=instance)))["docs"] == first  # Dagster runs it once
    (folder / "a.txt").write_text("version two")
    second = _run_keys(sensor(dg.build_sensor_context(instance=instance)))["docs"]
    assert second != first

    # Once curated (raw_documents recorded this fingerprint) the folder is not requested again ...
    fp = spec_fingerprint(landing_specs(landing)[0]["docs"])
    assert second == f"docs:{fp}"
    instance.add_dynamic_partitions("sources", ["docs"])
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=RAW, partition="docs",
                                                            metadata={FINGERPRINT_METADATA_KEY: fp}))
    assert isinstance(sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    # ... and going back to the first content is a change again (the history is in the key).
    (folder / "a.txt").write_text("version one")
    back = _run_keys(sensor(dg.build_sensor_context(instance=instance)))["docs"]
    assert back not in (first, second) and back.startswith(first)


# ---------------------------------------------------------------------------------------------------
# schedules


def test_corpus_refresh_requests_only_changed_sources(instance, tmp_path, settle, defs):
    settle(0)
    landing = tmp_path / "landing"
    for name in ("same", "edited", "fresh"):
        _folder(landing, name, {"a.txt": f"text of {name}"})
    resource = SourcesResource(landing=str(landing), builtin=False)
    specs = resource.specs()
    instance.add_dynamic_partitions("sources", ["same", "edited"])
    for name, fp in (("same", spec_fingerprint(specs["same"])), ("edited", "fingerprint-before-the-edit")):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=RAW, partition=name,
                                                                metadata={FINGERPRINT_METADATA_KEY: fp}))
    context = dg.build_schedule_context(instance=instance, resources={"sources": resource},
                                        scheduled_execution_time=datetime(2026, 11, 2, 3, tzinfo=UTC),
                                        repository_def=defs.get_repository_def())
    data = corpus_refresh.evaluate_tick(context)
    assert sorted(r.partition_key for r in data.run_requests) == ["edited", "fresh"]
    assert all(r.run_key for r in data.run_requests)
    assert {"same", "edited", "fresh"} <= set(instance.get_dynamic_partitions("sources"))  # fresh registered


def test_retrain_schedule_requests_the_retrain_job(instance, defs):
    context = dg.build_schedule_context(instance=instance,
                                        scheduled_execution_time=datetime(2026, 11, 1, 4, tzinfo=UTC))
    request = retrain(context)
    assert retrain.job_name == "retrain_models" and request.run_key
    graph = defs.resolve_asset_graph()
    groups = {graph.get(k).group_name for k in retrain_job.selection.resolve(graph)}
    assert groups == {"tokenizer", "datasets", "models", "evals", "reports", "release", "serving"}
    assert K("evals/benchmarks") not in retrain_job.selection.resolve(graph)  # it would re-curate the corpus


def test_arena_votes_sensor_requests_human_preferences_once_per_change(instance, tmp_path):
    sensor = arena_votes_sensor_factory(str(tmp_path))
    assert sensor.job_name == "human_preferences"
    skipped = sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason) and "no votes yet" in skipped.skip_message
    vote = {"id": "v1", "prompt": "p", "choice": "a", "model_a": {"name": "grpo"}, "model_b": {"name": "sft"},
            "response_a": "x", "response_b": "y"}
    append_vote(votes_path(tmp_path), vote)
    first = sensor(dg.build_sensor_context(instance=instance))
    assert len(first.run_requests) == 1 and first.cursor
    again = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert isinstance(again, dg.SkipReason)  # nothing new: no second run for the same votes
    append_vote(votes_path(tmp_path), {**vote, "id": "v2"})
    later = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert later.run_requests[0].run_key != first.run_requests[0].run_key


# ---------------------------------------------------------------------------------------------------
# jobs and declarative automation


def test_definitions_load_and_ingest_job_has_only_per_source_assets(defs):
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in ingest_job.selection.resolve(graph)} == {
        "corpus/raw_documents", "corpus/filtered_documents", "corpus/minhash_signatures"}
    conditions = {k.to_user_string(): graph.get(k).automation_condition for k in graph.get_all_asset_keys()}
    assert conditions["corpus/raw_documents"] is None and conditions["evals/benchmarks"] is None
    assert conditions["corpus/duplicate_clusters"] and conditions["evals/sft"] and conditions["reports/report_card"]
    assert not any(conditions[k] for k in conditions if k.split("/")[0] in ("models", "datasets", "tokenizer"))
    assert conditions["release/model"] is None


def _report(instance: dg.DagsterInstance, graph, key: dg.AssetKey, partition: str | None = None,
            passed: bool = True) -> None:
    """A materialization of ``key`` plus a result for each of its blocking checks, as a run would record them."""
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    target = AssetCheckEvaluationTargetMaterializationData(storage_id=record.storage_id, run_id=record.run_id,
                                                            timestamp=record.timestamp)
    for check_key in graph.get(key).check_keys:
        if graph.get(check_key).blocking:
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=key, check_name=check_key.name, passed=passed, partition=partition,
                target_materialization_data=target))


def _requested(result, graph) -> dict[str, set]:
    return {k.to_user_string(): set(result.get_requested_partitions(k))
            for k in graph.get_all_asset_keys() if result.get_num_requested(k)}


def test_cross_source_assets_follow_once_every_source_is_curated(instance, defs):
    graph = defs.resolve_asset_graph()
    instance.add_dynamic_partitions("sources", ["a", "b"])
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    per_source = ["corpus/raw_documents", "corpus/filtered_documents", "corpus/minhash_signatures"]
    for key in per_source:
        _report(instance, graph, K(key), "a")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result, graph) == {}  # b's signatures are missing: clustering now would miss it
    for key in per_source:
        _report(instance, graph, K(key), "b")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result, graph) == {"corpus/duplicate_clusters": {None}}  # once, for both sources
    _report(instance, graph, K("corpus/duplicate_clusters"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    requested = _requested(result, graph)
    assert requested["corpus/deduplicated_documents"] == {"a", "b"}
    assert "corpus/training_mixture" not in requested  # after every source's decontamination


def test_evals_follow_their_checkpoint_unless_a_blocking_check_failed(instance, defs):
    graph = defs.resolve_asset_graph()
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    for key in graph.toposorted_asset_keys:  # every checkpoint and its inputs exist, every eval too
        if graph.get(key).partitions_def is None and key.path[0] not in ("release",):
            _report(instance, graph, key)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    _report(instance, graph, K("corpus/training_mixture"))  # a daily refresh: no checkpoint changed
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result, graph) == {}
    _report(instance, graph, K("models/distilled"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert {"evals/distilled", "reports/report_card"} <= set(_requested(result, graph))
    assert "evals/sft" not in _requested(result, graph)
    for key in ("evals/distilled", "reports/report_card"):
        _report(instance, graph, K(key))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)

    _report(instance, graph, K("models/distilled"), passed=False)  # a new checkpoint that failed its gate
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert "evals/distilled" not in _requested(result, graph) and "reports/report_card" not in _requested(result, graph)


def test_a_failed_check_on_one_source_holds_back_only_that_source(instance, defs):
    graph = defs.resolve_asset_graph()
    has_documents = dg.AssetCheckKey(K("corpus/filtered_documents"), "has_documents")
    if getattr(graph.get(has_documents), "partitions_def", None) is None:
        pytest.skip("corpus checks are recorded unpartitioned here: one result stands for every source")
    instance.add_dynamic_partitions("sources", ["a", "b"])
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    # One result per check and partition: sqlite refuses a second runless one for the same partition.
    for partition in ("a", "b"):
        for key in ("corpus/raw_documents", "corpus/filtered_documents", "corpus/minhash_signatures"):
            _report(instance, graph, K(key), partition, passed=(partition, key) != ("a", "corpus/filtered_documents"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    _report(instance, graph, K("corpus/duplicate_clusters"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result, graph)["corpus/deduplicated_documents"] == {"b"}  # a failed has_documents


def test_a_source_in_a_pending_backfill_is_not_requested_again(instance, defs):
    # `llmdag materialize` submits a backfill, then starts the daemon whose landing sensor would otherwise
    # curate the same folders a second time before the backfill's first run exists.
    from pipeline_assets.automation import ingest_in_flight
    from pipeline_assets.cli import submit_backfill

    instance.add_dynamic_partitions("sources", ["a", "b", "c"])
    keys = sorted(dg.AssetSelection.groups("corpus").resolve(defs.resolve_asset_graph()))
    submit_backfill(defs, instance, keys, ["a", "b"], None, title="llmdag materialize test")
    assert ingest_in_flight(instance, "a") and ingest_in_flight(instance, "b")
    assert not ingest_in_flight(instance, "c")


def test_a_new_source_waits_for_clusters_computed_after_it(instance, defs):
    graph = defs.resolve_asset_graph()
    per_source = ["corpus/raw_documents", "corpus/filtered_documents", "corpus/minhash_signatures"]
    instance.add_dynamic_partitions("sources", ["a"])
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    for key in per_source:
        _report(instance, graph, K(key), "a")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    _report(instance, graph, K("corpus/duplicate_clusters"))  # covers a
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result, graph)["corpus/deduplicated_documents"] == {"a"}
    _report(instance, graph, K("corpus/deduplicated_documents"), "a")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)

    instance.add_dynamic_partitions("sources", ["b"])  # a landing folder curated by its ingest run
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    for key in per_source:
        _report(instance, graph, K(key), "b")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    # The clusters version on record predates b: b's dedup would read it and refuse (not covered).
    assert _requested(result, graph) == {"corpus/duplicate_clusters": {None}}
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert "corpus/deduplicated_documents" not in _requested(result, graph)  # still waiting for clusters
    _report(instance, graph, K("corpus/duplicate_clusters"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert _requested(result, graph)["corpus/deduplicated_documents"] == {"a", "b"}


# ---------------------------------------------------------------------------------------------------
# real runs, launched the way the daemon launches them


class _Daemon:
    """The landing sensor and the automation sensor ticking against one instance, with real corpus runs.

    A requested run is created at once (queued: Dagster counts its assets as in progress) and executed after
    the tick, in the order the daemon would least like: per-source runs before cross-source ones. ``hold``
    keeps a partition's ingest run queued for that many more ticks: a slower folder next to a fast one.
    ``dg.materialize`` cannot stand in: it creates and finishes its run inside one call.
    """

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, landing: Path):
        self.defs, self.instance = defs, instance
        self.graph = defs.resolve_asset_graph()
        # Its runs execute in this process (the daemon's run launcher would start one process per run).
        in_process = dg.Definitions(assets=defs.assets, resources=defs.resources, executor=dg.in_process_executor)
        self.job = in_process.resolve_implicit_global_asset_job_def()
        self.sensor = landing_sensor_factory(str(landing))
        self.cursor = None
        self.queued: list[list] = []  # [run, ticks to hold]
        self.hold: dict[str, int] = {}

    def launch(self, keys: list[dg.AssetKey], partition: str | None, hold: int = 0) -> dg.DagsterRun:
        from dagster._core.execution.api import create_execution_plan

        job = self.job.get_subset(asset_selection=set(keys))
        tags = {"dagster/partition": partition} if partition else {}
        run = self.instance.create_run_for_job(job_def=job, execution_plan=create_execution_plan(job, tags=tags),
                                               tags=tags, asset_selection=frozenset(keys))
        self.queued.append([run, hold])
        return run

    def execute(self, run: dg.DagsterRun) -> None:
        from dagster._core.definitions.job_base import InMemoryJob
        from dagster._core.execution.api import execute_run

        execute_run(InMemoryJob(self.job), run, self.instance)

    def tick(self) -> bool:
        """One sensor tick, one automation tick, then every run not held; False once nothing happened."""
        sensed = self.sensor(dg.build_sensor_context(instance=self.instance))
        if isinstance(sensed, dg.SensorResult):
            for request in sensed.dynamic_partitions_requests:
                self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            for request in sensed.run_requests:
                self.launch(ingest_job.selection.resolve(self.graph), request.partition_key,
                            self.hold.pop(request.partition_key, 0))
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        runs: dict[str | None, list[dg.AssetKey]] = {}
        for key in self.graph.get_all_asset_keys():
            for partition in result.get_requested_partitions(key) if result.get_num_requested(key) else ():
                runs.setdefault(partition, []).append(key)
        for partition, keys in sorted(runs.items(), key=lambda item: item[0] is None):
            self.launch(keys, partition)
        ran = False
        for item in list(self.queued):
            if item[1] > 0:
                item[1] -= 1
                continue
            self.queued.remove(item)
            self.execute(item[0])
            ran = True
        return ran or bool(self.queued) or bool(runs)

    def settle(self, max_ticks: int = 12) -> None:
        for _ in range(max_ticks):
            if not self.tick():
                return
        raise AssertionError(f"automation still running after {max_ticks} ticks")


def _topics_folder(landing: Path, name: str, keys: list[str]) -> None:
    from pydoc_data.topics import topics

    _folder(landing, name, {f"{k}.txt": topics[k] for k in keys} | {READY_MARKER: ""},
            json.dumps({"domain": "prose"}))


def test_two_folders_landing_together_curate_without_a_failed_run(instance, tmp_path, settle):
    """No source's dedup may start before duplicate_clusters covers it ("source 'land_fast' is not in
    corpus/duplicate_clusters version ...": a red run). Real runs of the corpus graph, ~25 s."""
    from pydoc_data.topics import topics

    from pipeline_assets.definitions import build_definitions

    settle(0)
    landing = tmp_path / "landing"
    landing.mkdir()
    defs = build_definitions(root=str(tmp_path / "root"), landing=str(landing), builtin_sources=False)
    # what filtering and decontamination read, built before any source lands
    assert dg.materialize(list(defs.assets), selection=[K("evals/benchmarks"), K("corpus/quality_classifier")],
                          instance=instance, resources=defs.resources).success
    daemon = _Daemon(defs, instance, landing)
    texts = sorted(k for k, v in topics.items() if len(v) > 1500)  # enough text per document to pass the filters
    _topics_folder(landing, "base", texts[0:10])
    daemon.settle()  # one source curated end to end: duplicate_clusters exists and covers it

    _topics_folder(landing, "land_fast", texts[10:18] + texts[:1])  # one document is an exact copy of base's
    _topics_folder(landing, "land_slow", texts[20:28])
    daemon.hold["land_slow"] = 1  # its ingest ends a tick after land_fast's
    daemon.settle()

    failed = [(r.tags.get("dagster/partition"), sorted(k.to_user_string() for k in r.asset_selection or ()))
              for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
    assert failed == []
    sources = {"base", "land_fast", "land_slow"}
    for key in ("corpus/deduplicated_documents", "corpus/decontaminated_documents"):
        assert instance.get_materialized_partitions(K(key)) == sources
    clusters = instance.fetch_materializations(K("corpus/duplicate_clusters"), limit=10).records
    assert len(clusters) == 2  # once per landing: the two folders are clustered together
    mixture = instance.fetch_materializations(K("corpus/training_mixture"), limit=1).records[0]
    assert set(mixture.asset_materialization.metadata["sources"].value) == sources
    fast = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=K("corpus/deduplicated_documents"),
                                                                 asset_partitions=["land_fast"]), limit=1)
    meta = fast.records[0].asset_materialization.metadata
    assert meta["exact_duplicates_removed"].value + meta["near_duplicates_removed"].value == 1  # base's copy


def test_a_landing_folder_waits_while_duplicate_clusters_is_rebuilt(instance, tmp_path, settle, defs):
    settle(0)
    landing = tmp_path / "landing"
    _folder(landing, "late", {"a.txt": "complete", READY_MARKER: ""})
    daemon = _Daemon(defs, instance, landing)
    run = daemon.launch([K("corpus/duplicate_clusters")], None)  # queued, not executed
    result = daemon.sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SkipReason)
    assert "late: corpus/duplicate_clusters is being rebuilt" in result.skip_message and run.run_id[:8] in (
        result.skip_message)
    instance.report_run_canceled(run)
    assert _run_keys(daemon.sensor(dg.build_sensor_context(instance=instance))).keys() == {"late"}
