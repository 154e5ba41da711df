"""The graph's contract (asset keys users type), profiles, run-config overrides."""

from __future__ import annotations

import dagster as dg
import pytest
from conftest import profile_sections

from pipeline_assets.asset_keys import ARENA, BENCHMARKS, REWARD, SFT, eval_key
from pipeline_assets.cli import main, validate_run_config
from pipeline_assets.definitions import build_definitions, defs
from pipeline_assets.pools import CRITICAL_CHAIN
from pipeline_assets.pretrain.assets import PretrainRunConfig
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.profiles import PROFILES, PipelineConfig, section_config
from pipeline_assets.run_config import overridden

CONTRACT = ["corpus/raw_documents", "corpus/filtered_documents", "corpus/minhash_signatures",
            "corpus/duplicate_clusters", "corpus/deduplicated_documents", "evals/benchmarks",
            "corpus/decontaminated_documents", "corpus/training_mixture", "tokenizer/tokenizer",
            "tokenizer/tokenized_shards", "models/base"]


def test_definitions_load_with_contract_keys():
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(CONTRACT) <= keys
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["corpus", "raw_documents"])).partitions_def.name == "sources"
    assert graph.get(dg.AssetKey(["corpus", "duplicate_clusters"])).partitions_def is None


def test_profiles_validate_and_unknown_profile_is_a_clear_error():
    for name in PROFILES:
        profile_sections(name)  # every section of every profile, validated
    with pytest.raises(ValueError, match="unknown profile 'huge'.*scale"):
        section_config(PretrainConfig, "pretrain", "huge")
    # scale's sizes with the local launcher: steps side by side in processes (k8s is LLMDAG_LAUNCHER's choice)
    assert build_definitions(profile="scale", launcher="local").executor.name == "multiprocess"


def test_tiny_runs_two_steps_at_a_time_critical_chain_first():
    """tiny's run steps go two at a time (multiprocess); the chain every eval waits on is started first."""
    assert build_definitions(profile="tiny", launcher="local").executor.name == "multiprocess"
    assert section_config(PipelineConfig, "pipeline", "tiny").max_concurrent_steps == 2
    graph = defs.resolve_asset_graph()
    untrained = {eval_key(name) for name in ("base", "base_moe", "long_context")} | {BENCHMARKS, ARENA}
    evals = {k for k in graph.get_all_asset_keys() if k.path[0] == "evals"} - untrained
    judged = dg.AssetSelection.assets(REWARD).downstream().resolve(graph)
    assert evals and evals <= judged  # the reward model judges every one
    chain = (dg.AssetSelection.assets(SFT).downstream() & dg.AssetSelection.assets(REWARD).upstream()).resolve(graph)
    assert chain == set(CRITICAL_CHAIN)
    prioritized = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable
                   and graph.assets_def_for_key(k).op.tags.get("dagster/priority")}
    assert prioritized == set(CRITICAL_CHAIN)


def test_stage_config_is_typed_with_profile_defaults():
    base = section_config(PretrainConfig, "pretrain", "tiny")
    assert PretrainRunConfig().max_steps == base.max_steps  # the launchpad shows the profile's value
    assert overridden(base, PretrainRunConfig(max_steps=70)).max_steps == 70
    assert overridden(base, PretrainRunConfig()) == base
    # a field left at its default takes the run's own profile value, not tiny's
    small = section_config(PretrainConfig, "pretrain", "small")
    assert overridden(small, PretrainRunConfig()).max_steps == small.max_steps


@pytest.mark.parametrize("ops, message", [
    ({"models__base": {"config": {"max_step": 7}}}, 'unexpected config entry "max_step"'),
    ({"models__base": {"config": {"dtype": 3}}}, "dtype"),
    ({"models__based": {"config": {"max_steps": 7}}}, "models__based.*valid: .*models__base"),
    ({"models__base": {"config": {"max_steps": -5}}}, "invalid run config for models/base: .*max_steps"),
    ({"corpus__training_mixture": {"config": {"val_fraction": 0.9}}},
     "invalid run config for corpus/training_mixture: .*val_fraction"),
    ({"corpus__minhash_signatures": {"config": {"tasks": 4}}}, 'unexpected config entry "tasks"'),
])
def test_bad_run_config_is_rejected_before_anything_runs(ops, message):
    keys = sorted(dg.AssetSelection.all().resolve(defs.resolve_asset_graph()))
    with pytest.raises(SystemExit, match=message):
        validate_run_config(defs, keys, {"ops": ops})


def test_cli_rejects_bad_config_without_submitting(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    bad = tmp_path / "run.yaml"
    bad.write_text("ops: {models__base: {config: {max_steps: 'many'}}}\n")
    with pytest.raises(SystemExit, match="invalid run config"):
        main(["materialize", "--config", str(bad)])
    instance = dg.DagsterInstance.get()  # not `with`: see the note in test_corpus.fixture_run
    assert not instance.get_backfills() and not instance.get_runs()
    instance.dispose()


def test_cli_reads_the_release_gate_from_its_check():
    from pipeline_assets.asset_keys import RELEASE
    from pipeline_assets.cli import release_report
    from pipeline_assets.reports.assets import GATES_CHECK

    @dg.asset(key=RELEASE, check_specs=[dg.AssetCheckSpec(GATES_CHECK, asset=RELEASE, blocking=True)])
    def refused_release():
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(
            passed=False, description="models/grpo: target arithmetic_accuracy 0 did not improve")])

    with dg.instance_for_test() as instance:
        assert release_report(instance) == (None, "release/model was not evaluated")
        dg.materialize([refused_release], instance=instance, raise_on_error=False)
        assert release_report(instance) == (False, "models/grpo: target arithmetic_accuracy 0 did not improve")


@pytest.mark.parametrize("select", ["*", 'key:"models/*"', "+group:corpus",
                                    " or ".join(f'key:"models/{s}" or key:"evals/{s}"' for s in ("dpo", "distilled"))])
def test_backfill_submitted_for_any_selection(select):
    from pipeline_assets.cli import backfill_title, submit_backfill

    keys = sorted(dg.AssetSelection.all().resolve(defs.resolve_asset_graph()))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sources", ["a", "b"])
        backfill_id = submit_backfill(defs, instance, keys, None, None, title=backfill_title(select))
        assert instance.get_backfill(backfill_id).title.startswith("llmdag materialize")


def test_each_profile_reports_arithmetic_on_the_space_it_trains_on():
    for name in PROFILES:
        profile = profile_sections(name)
        task = {(b.operand_max, tuple(b.operators)) for b in (profile.benchmarks, profile.sft_data,
                                                              profile.reasoning_data)}
        assert len(task) == 1, (profile.name, task)


def test_cli_writes_an_instance_config_only_where_none_exists(tmp_path):
    from pipeline_assets.instance_config import ensure_instance_config

    ensure_instance_config(tmp_path)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # Dagster's default is 5
    finally:
        instance.dispose()
    (tmp_path / "dagster.yaml").write_text("# the user's own\n")
    ensure_instance_config(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == "# the user's own\n"
