"""ArtifactStore: immutable versions, atomic publish, no run touching another's work, paths kept inside the root.

And the same guarantees through Dagster: a failing blocking check keeps the previous version published and
stops downstream, on real corpus assets materialized directly.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import dagster as dg
import pytest
from conftest import latest_metadata, published

from resources.storage import ArtifactStore


def _write(store: ArtifactStore, text: str, partition: str = "p1"):
    with store.writing("a/b", partition, run_id="run" + text) as draft:
        (draft.work / "x").write_text(text)
    return draft.version


def test_versions_are_immutable_and_publish_is_atomic(tmp_path):
    store = ArtifactStore(root=str(tmp_path), profile="tiny", keep=1)
    v1 = _write(store, "v1")
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        store.current("a/b", "p1")  # written is not published
    store.publish(v1)
    assert (store.current("a/b", "p1") / "x").read_text() == "v1"
    assert store.current("a/b", "p1") == tmp_path / "a" / "b" / "p1" / "tiny" / v1.name
    with pytest.raises(RuntimeError), store.writing("a/b", "p1") as draft:
        (draft.work / "x").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (store.current("a/b", "p1") / "x").read_text() == "v1"  # the half-written one never shows
    assert sorted(p.name for p in store.slot("a/b", "p1").iterdir() if not p.name.endswith(".lock")) == \
        sorted([v1.name, "current"])
    v2, v3 = _write(store, "v2"), _write(store, "v3")
    store.publish(v3)  # keep=1: current + the newest other survive; v1 is pruned
    assert {p.name for p in store.slot("a/b", "p1").iterdir()} >= {v2.name, v3.name, "current"}
    assert not v1.path.exists()


def test_profiles_never_share_artifacts(tmp_path):
    tiny, small = ArtifactStore(root=str(tmp_path), profile="tiny"), ArtifactStore(root=str(tmp_path), profile="small")
    tiny.publish(_write(tiny, "t"))
    small.publish(_write(small, "s"))
    assert (tiny.current("a/b", "p1") / "x").read_text() == "t"
    assert (small.current("a/b", "p1") / "x").read_text() == "s"


def test_resume_dir_is_handed_back_but_never_shared_by_live_writers(tmp_path):
    store = ArtifactStore(root=str(tmp_path))
    with pytest.raises(RuntimeError), store.writing("a/b", resume_key="k1") as draft:
        (draft.work / "done_rank_0").write_text("1")
        raise RuntimeError("killed")
    with store.writing("a/b", resume_key="k1") as first:  # same key: the work dir is handed back
        assert (first.work / "done_rank_0").exists()
        with store.writing("a/b", resume_key="k1") as second:  # a concurrent writer gets its own
            assert second.work != first.work and not (second.work / "done_rank_0").exists()
    assert first.version.path.exists() and second.version.path.exists()


@pytest.mark.parametrize("bad", ["../../x", "..", ".hidden", "a/b", "", "x" * 200])
def test_partition_keys_cannot_escape_the_root(tmp_path, bad):
    store = ArtifactStore(root=str(tmp_path))
    with pytest.raises(ValueError, match="invalid partition key"):
        store.slot("a/b", bad)
    with pytest.raises(ValueError, match="invalid asset key part"):
        store.slot(["a", ".."], "p")


def test_symlinked_asset_dir_leading_outside_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    os.symlink(outside, root / "a" / "b")
    with pytest.raises(ValueError, match="outside the artifact root"):
        ArtifactStore(root=str(root)).slot("a/b", "p1")


def _concurrent_writer(root: str, n: int, barrier, names) -> None:
    store = ArtifactStore(root=root)
    with store.writing("corpus/x", "src", run_id=f"writer{n}") as draft:
        barrier.wait(timeout=60)  # both writers are mid-write at once
        for i in range(200):
            (draft.work / f"part_{i:03d}.txt").write_text(f"{n}\n" * 100)
    store.publish(draft.version)
    names.put(draft.version.name)


def test_two_processes_writing_the_same_partition_leave_complete_versions(tmp_path):
    # Two plain processes, not a Pool: a Pool whose worker dies loses its task and waits forever (seen once
    # on a loaded machine); here a dead or stuck writer is a failure with its exit code, within a deadline.
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    writers = [ctx.Process(target=_concurrent_writer, args=(str(tmp_path), n, barrier, queue)) for n in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=180)
        if w.is_alive():
            w.kill()
    assert [w.exitcode for w in writers] == [0, 0], [w.exitcode for w in writers]
    names = [queue.get(timeout=10) for _ in writers]
    store = ArtifactStore(root=str(tmp_path))
    current = store.current("corpus/x", "src")
    assert current.name in names and len(set(names)) == 2
    for name in names:  # each version is whole and holds one writer's content only
        files = sorted((store.slot("corpus/x", "src") / name).iterdir())
        assert len(files) == 200 and len({f.read_text() for f in files}) == 1
    assert not list(store.slot("corpus/x", "src").glob(".work-*[!k]"))  # no work dir left behind


def test_failing_blocking_check_keeps_previous_version_and_stops_downstream(tmp_path):
    from pipeline_assets.definitions import build_definitions

    landing = tmp_path / "landing"
    (landing / "src").mkdir(parents=True)
    good = "\n".join(json.dumps({"id": f"d{i}", "text": f"Document {i} has enough words to be kept here."})
                     for i in range(5))
    (landing / "src" / "a.jsonl").write_text(good + "\n")
    defs = build_definitions(root=str(tmp_path / "root"), landing=str(landing), builtin_sources=False)
    assets = list(defs.assets)
    sel = dg.AssetSelection.from_string('key:"corpus/raw_documents" or key:"corpus/filtered_documents"')
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sources", ["src"])
        first = dg.materialize(assets, selection=dg.AssetSelection.from_string('key:"corpus/raw_documents"'),
                               partition_key="src", instance=instance, resources=defs.resources)
        good_version = published(tmp_path / "root", "corpus/raw_documents", "src").resolve()
        (landing / "src" / "a.jsonl").write_text('{"id": "x", "text": ""}\n{not json\n')  # nothing usable
        second = dg.materialize(assets, selection=sel, partition_key="src", instance=instance,
                                resources=defs.resources, raise_on_error=False)
        [check] = [c for c in second.get_asset_check_evaluations() if c.check_name == "has_documents"]
        assert first.success and not check.passed and check.partition == "src"
        assert published(tmp_path / "root", "corpus/raw_documents", "src").resolve() == good_version
        # the failed gate fails its step, so downstream never runs on the bad version
        assert not second.success
        assert {m.asset_key.to_user_string() for m in second.get_asset_materialization_events()
                for m in [m.materialization]} == {"corpus/raw_documents"}
        meta = latest_metadata(instance, ["corpus", "raw_documents"], "src")
        assert meta["published"] is False and Path(meta["dagster/uri"]).name != good_version.name
