"""Hostile names and symlinks at every entry: nothing resolves, is created or is written outside the artifact root.

Entry points: the name validator itself, ``ArtifactStore`` (every path-building method), ``SourcesResource``
(config and ``spec``), the landing and sources sensors, the ``llmdag`` CLI, the chat CLI's stage names, and a
``sources`` partition added straight to a Dagster instance (as the UI or GraphQL would) and materialized.
Each test snapshots the tree around a tmp artifact root before and after: a refusal must leave it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from conftest import capture_logs
from pydantic import ValidationError

from pipeline_assets.automation import landing_sensor_factory, sources_sensor
from pipeline_assets.names import SEGMENT, check_segment, is_source_name, validate_source_name
from resources.settings import PipelineSettings
from resources.sources import SourcesResource, UserSource
from resources.storage import ArtifactStore, Version

HOSTILE = ["../../x", "a/b", ".hidden", "x\x00y", "x" * 300, "..", ".", "", "a\\b", "docs\n", "tab\there",
           "-dash", "/abs", "x" * 65]
IDS = ["dotdot-x", "slash", "hidden", "nul", "300", "dotdot", "dot", "empty", "backslash", "newline", "tab",
       "dash", "abs", "65"]


def _tree(top: Path) -> set[str]:
    """Every path under ``top`` (links not followed): what a refusal must leave exactly as it was."""
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@pytest.fixture
def area(tmp_path: Path) -> dict[str, Path]:
    """``tmp/root`` (the artifact root) beside ``tmp/outside`` (where an escape would land)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return {"top": tmp_path, "root": root, "outside": outside}


# ---------------------------------------------------------------------------------------------------------
# the validator


@pytest.mark.parametrize("bad", HOSTILE, ids=IDS)
def test_validator_refuses_hostile_names_saying_why(bad):
    assert not is_source_name(bad)
    with pytest.raises(ValueError, match=r"invalid source name .*: it (is|contains|starts|has) .*; use letters"):
        validate_source_name(bad)


def test_validator_keeps_the_landing_contract_names():
    for good in ["docs", "my_source", "web-2024.v1", "A", "0", "x" * 64, "python_stdlib"]:
        assert validate_source_name(good) == good
    assert check_segment("_runs", "asset key part") == "_runs"  # segments may start with '_' (not sources)
    for bad in ["..", ".x", "a/b", "x\x00", "x" * 129, "a\n"]:
        with pytest.raises(ValueError, match="invalid asset key part"):
            check_segment(bad, "asset key part")
    with pytest.raises(ValueError, match="not a string"):
        validate_source_name(None)


# ---------------------------------------------------------------------------------------------------------
# ArtifactStore


@pytest.mark.parametrize("bad", HOSTILE, ids=IDS)
def test_every_store_method_refuses_a_hostile_partition_before_touching_disk(area, bad):
    store = ArtifactStore(root=str(area["root"]))
    before = _tree(area["top"])
    for call in (lambda: store.slot("corpus/raw_documents", bad),
                 lambda: store.has_current("corpus/raw_documents", bad),
                 lambda: store.current("corpus/raw_documents", bad),
                 lambda: store.writing("corpus/raw_documents", bad).__enter__()):
        with pytest.raises(ValueError, match="invalid partition key"):
            call()
    if not SEGMENT.match(bad):  # "x" * 65 is a fine asset key part, profile or resume key (up to 128)
        with pytest.raises(ValueError, match="invalid asset key part"):
            store.slot(["corpus", bad], "p1")
        with pytest.raises(ValueError, match="invalid profile"):
            ArtifactStore(root=str(area["root"]), profile=bad).slot("a", "p1")
        with pytest.raises(ValueError, match="invalid resume key"):
            store.writing("a", "p1", resume_key=bad).__enter__()
    assert store.partitions_with_current("corpus/raw_documents", [bad]) == []  # never raises: has none
    assert _tree(area["top"]) == before


def _published(store: ArtifactStore, key: str = "a/b", partition: str = "p1") -> Version:
    with store.writing(key, partition) as draft:
        (draft.work / "x").write_text("inside")
    store.publish(draft.version)
    return draft.version


def test_symlinked_partition_or_key_dir_leading_outside_is_refused(area):
    root, outside = area["root"], area["outside"]
    (root / "a" / "b").mkdir(parents=True)
    os.symlink(outside, root / "a" / "b" / "p1")  # partition dir -> outside
    os.symlink(outside, root / "k")  # asset key dir -> outside
    store = ArtifactStore(root=str(root))
    before = _tree(area["top"])
    for call in (lambda: store.slot("a/b", "p1"), lambda: store.writing("a/b", "p1").__enter__(),
                 lambda: store.current("k", "p1"), lambda: store.writing("k").__enter__()):
        with pytest.raises(ValueError, match="outside the artifact root"):
            call()
    assert _tree(area["top"]) == before and not any(outside.iterdir())


def test_current_link_or_version_dir_leading_outside_is_refused(area):
    root, outside = area["root"], area["outside"]
    store = ArtifactStore(root=str(root))
    version = _published(store)
    slot = version.path.parent
    (outside / "secret").write_text("not an artifact")
    # `current` swapped for a link outside the root
    os.replace(slot / "current", slot / "saved")
    os.symlink(outside, slot / "current")
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.current("a/b", "p1")
    # a version dir that is itself a link outside, with `current` pointing at it
    os.unlink(slot / "current")
    os.symlink(outside, slot / "20990101T000000Z-evil")
    os.symlink("20990101T000000Z-evil", slot / "current")
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.current("a/b", "p1")
    with pytest.raises(ValueError, match="not a version dir"):
        store.publish(Version(slot / "20990101T000000Z-evil"))
    with pytest.raises(ValueError, match="not a version dir|outside the artifact root"):
        store.publish(Version(outside))
    # `current` pointing at a sibling slot inside the root is refused too: it is not this slot's version
    other = _published(store, "a/c")
    os.unlink(slot / "current")
    os.symlink(other.path, slot / "current")
    with pytest.raises(ValueError, match="not at a version dir"):
        store.current("a/b", "p1")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "not an artifact"


def test_symlinked_work_dir_and_lock_file_are_never_written_through(area):
    root, outside = area["root"], area["outside"]
    store = ArtifactStore(root=str(root))
    slot = store.slot("a/b", "p1")
    slot.mkdir(parents=True)
    os.symlink(outside, slot / ".work-r-k1")  # a resume dir planted as a link
    with pytest.raises(ValueError, match="symbolic link"), store.writing("a/b", "p1", resume_key="k1") as d:
        (d.work / "x").write_text("escaped")
    os.symlink(outside / "lockfile", slot / ".work-r-k2.lock")  # a lock file planted as a link
    with pytest.raises(ValueError, match="lock file .* symbolic link"), \
            store.writing("a/b", "p1", resume_key="k2") as d:
        (d.work / "x").write_text("escaped")
    with pytest.raises(ValueError, match="outside the artifact root"), store.exclusive(outside / "run"):
        pass
    with pytest.raises(ValueError, match="outside the artifact root"):
        store.prune(outside)
    assert not any(outside.iterdir())


def test_prune_unlinks_a_symlinked_version_without_following_it(area):
    root, outside = area["root"], area["outside"]
    (outside / "keep").write_text("x")
    store = ArtifactStore(root=str(root), keep=0)
    version = _published(store)
    os.symlink(outside, version.path.parent / "00000000T000000Z-evil")
    store.prune(version.path.parent)
    assert not (version.path.parent / "00000000T000000Z-evil").exists() and (outside / "keep").exists()


# ---------------------------------------------------------------------------------------------------------
# SourcesResource, sensors


@pytest.mark.parametrize("bad", HOSTILE, ids=IDS)
def test_sources_resource_refuses_hostile_names_in_config_and_spec(area, bad):
    with pytest.raises(ValidationError, match="invalid configured source name"):
        UserSource(name=bad, path=str(area["outside"]))
    with pytest.raises(ValidationError, match="invalid configured source name"):
        SourcesResource(landing=str(area["root"] / "landing"), extra=[{"name": bad, "path": str(area["outside"])}])
    sources = SourcesResource(landing=str(area["root"] / "landing"), builtin=False)
    with pytest.raises(ValueError, match="invalid source partition key .*delete it from the 'sources' partitions"):
        sources.spec(bad)
    # bypassing pydantic (model_construct) still never yields a source with that name
    sneaky = SourcesResource.model_construct(landing=str(area["root"] / "landing"), builtin=False,
                                             extra=[UserSource.model_construct(name=bad, path=str(area["outside"]))])
    assert bad not in sneaky.specs()


def _hostile_landing(landing: Path, outside: Path) -> list[str]:
    """Folders whose names the file system allows but the contract does not; returns the ones to be warned about."""
    warned = ["x" * 65, "-dash", "has space", "new\nline", "tab\there", "linked"]
    for name in ["good", ".hidden", *warned[:-1]]:
        (landing / name).mkdir(parents=True)
        (landing / name / "a.txt").write_text("text")
        (landing / name / "_READY").write_text("")
    os.symlink(outside, landing / "linked")
    return warned


def test_landing_and_sources_sensors_skip_hostile_folders_with_a_warning(area, instance, monkeypatch):
    monkeypatch.setenv("LLMDAG_LANDING_SETTLE_S", "0")
    landing = area["root"] / "landing"
    warned = _hostile_landing(landing, area["outside"])
    before = _tree(area["top"])

    context = dg.build_sensor_context(instance=instance)
    log = capture_logs(context)
    result = landing_sensor_factory(str(landing))(context)
    assert [r.partition_key for r in result.run_requests] == ["good"]
    assert [k for req in result.dynamic_partitions_requests for k in req.partition_keys] == ["good"]
    assert len(log.warnings()) == len(warned)  # one counted warning per bad folder; .hidden is not a source
    for name in warned:
        assert any(repr(name) in w or f"{landing / name}" in w for w in log.warnings()), name

    resource = SourcesResource(landing=str(landing), builtin=False)
    context = dg.build_sensor_context(instance=instance, resources={"sources": resource,
                                                                    "settings": PipelineSettings(profile="tiny")})
    log = capture_logs(context)
    result = sources_sensor(context)
    assert [k for req in result.dynamic_partitions_requests for k in req.partition_keys] == ["good"]
    assert len(log.warnings()) == len(warned)
    assert _tree(area["top"]) == before


# ---------------------------------------------------------------------------------------------------------
# CLIs


@pytest.mark.parametrize("bad", HOSTILE, ids=IDS)
def test_llmdag_cli_refuses_a_hostile_partition_before_anything_is_made(area, bad, monkeypatch):
    from pipeline_assets.cli import main

    home = area["top"] / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LLMDAG_HOME", str(area["root"]))
    before = _tree(area["top"])
    with pytest.raises(SystemExit, match=r"invalid --partition .*: it .*; use letters"):
        main(["materialize", "--partition", "good", f"--partition={bad}", "--no-wait"])
    assert _tree(area["top"]) == before and not home.exists()


def test_register_sources_leaves_out_a_hostile_registered_partition(area, instance):
    from pipeline_assets.cli import register_sources
    from pipeline_assets.definitions import build_definitions

    landing = area["root"] / "landing"
    (landing / "good").mkdir(parents=True)
    (landing / "good" / "a.txt").write_text("text")
    defs = build_definitions(root=str(area["root"]), landing=str(landing), builtin_sources=False)
    instance.add_dynamic_partitions("sources", ["../../x", ".hidden"])  # as the UI would
    lines: list[str] = []
    assert register_sources(defs, instance, log=lines.append) == ["good"]
    assert len(lines) == 2 and all("left out" in line for line in lines)


# ".." itself is an existing path, which chat takes as given (a checkpoint dir the user names is theirs).
@pytest.mark.parametrize("bad", ["../../x", "models/../../x", "models/..", ".hidden", "x\x00y", "x" * 300, "a/b"])
def test_chat_stage_names_resolve_only_inside_the_root(area, bad, monkeypatch):
    from pipeline_assets.chat import resolve_model_dir

    monkeypatch.chdir(area["top"] / "root")  # so "../x"-style names do not accidentally name a real dir
    with pytest.raises(ValueError, match="stage name|not a directory, nor a stage name"):
        resolve_model_dir(bad, root=area["root"])


def test_chat_refuses_a_current_link_leading_outside(area, monkeypatch):
    from pipeline_assets.chat import resolve_model_dir

    (area["outside"] / "config.json").write_text("{}")
    slot = area["root"] / "models" / "sft" / "_" / "tiny"
    slot.mkdir(parents=True)
    os.symlink(area["outside"], slot / "current")
    with pytest.raises(ValueError, match="outside the artifact root"):
        resolve_model_dir("sft", root=area["root"])
    monkeypatch.setenv("LLMDAG_PROFILE", "../tiny")
    with pytest.raises(ValueError, match="invalid LLMDAG_PROFILE"):
        resolve_model_dir("sft", root=area["root"])


# ---------------------------------------------------------------------------------------------------------
# a partition key added straight to the instance (UI / GraphQL), then materialized


@pytest.mark.parametrize("bad", ["../../x", "a/b", ".hidden", "x" * 300, "..", "x\x00y"],
                         ids=["dotdot-x", "slash", "hidden", "300", "dotdot", "nul"])
def test_materializing_a_hostile_ui_partition_fails_with_the_validators_message(area, bad):
    from pipeline_assets.definitions import build_definitions

    landing = area["root"] / "landing"
    landing.mkdir()
    defs = build_definitions(root=str(area["root"]), landing=str(landing), builtin_sources=False)
    with dg.instance_for_test() as instance:
        try:
            instance.add_dynamic_partitions("sources", [bad])
        except Exception as e:  # Dagster refuses some keys itself (NUL, newlines): nothing to run then
            assert "\x00" in bad, e
            return
        before = _tree(area["top"])
        for key in ("corpus/raw_documents", "corpus/minhash_signatures"):
            result = dg.materialize(list(defs.assets), selection=[dg.AssetKey(key.split("/"))], partition_key=bad,
                                    instance=instance, resources=defs.resources, raise_on_error=False)
            assert not result.success
            [failure] = [e for e in result.all_events if e.is_step_failure]
            error, message = failure.step_failure_data.error, ""
            while error is not None:  # Dagster wraps the asset's own error: read the whole chain
                message, error = message + error.message, error.cause
            assert "invalid source partition key" in message or "invalid partition key" in message, message
            assert "use letters, digits" in message
        assert _tree(area["top"]) == before
