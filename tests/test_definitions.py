"""The graph's contract (asset keys users type), profiles, storage atomicity, run-config overrides."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline_assets.cli import waves
from pipeline_assets.definitions import build_definitions, defs
from pipeline_assets.profiles import PROFILES, get_profile
from pipeline_assets.run_config import StageOverrides, overridden
from resources.storage import ArtifactStore

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


def test_waves_order_partitioned_and_global_steps():
    order = [(p, [k.to_user_string() for k in keys]) for p, keys in waves(defs, dg.AssetSelection.all())]
    wave = {k: i for i, (_, keys) in enumerate(order) for k in keys}  # within a wave, Dagster orders steps
    assert wave["corpus/minhash_signatures"] < wave["corpus/duplicate_clusters"] < wave["corpus/deduplicated_documents"]
    assert wave["evals/benchmarks"] < wave["corpus/decontaminated_documents"] < wave["corpus/training_mixture"]
    assert wave["corpus/training_mixture"] <= wave["tokenizer/tokenizer"] <= wave["models/base"]
    for partitioned, keys in order:  # a wave never mixes per-source and all-source assets
        assert all((defs.resolve_asset_graph().get(dg.AssetKey.from_user_string(k)).partitions_def is not None)
                   == partitioned for k in keys)


def test_profiles_validate_and_unknown_profile_is_a_clear_error():
    for profile in PROFILES.values():
        profile.corpus.validate()
        profile.pretrain.validate()
        profile.tokenizer.validate()
    with pytest.raises(ValueError, match="unknown profile 'huge'.*scale"):
        get_profile("huge")
    with pytest.raises(ImportError, match="pip install"):
        build_definitions(profile="scale")  # k8s executor needs the [scale] extra


def test_overrides_replace_fields_and_reject_typos():
    base = get_profile("tiny").pretrain
    assert overridden(base, StageOverrides(max_steps=70)).max_steps == 70
    with pytest.raises(ValueError, match="unknown config fields \\['max_step'\\].*max_steps"):
        overridden(base, StageOverrides(max_step=7))


def test_artifact_store_writes_atomically(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    final = store.path("a/b", "p1")
    with store.writing(final) as work:
        (work / "x").write_text("v1")
    assert (final / "x").read_text() == "v1"
    with pytest.raises(RuntimeError), store.writing(final) as work:
        (work / "x").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (final / "x").read_text() == "v1"  # the old version stays; the half-written one is gone
    assert [p.name for p in final.parent.iterdir()] == ["p1"]
    with pytest.raises(RuntimeError), store.writing(final, resume_key="k1") as work:
        (work / "done_rank_0").write_text("1")
        raise RuntimeError("killed")
    with store.writing(final, resume_key="k1") as work:  # same key: the work dir is handed back
        assert (work / "done_rank_0").exists()
