"""Corpus curation end to end in Dagster: a planted fixture (behaviour) and the real default sources.

The planted fixture runs through the product's headless path: ``llmdag materialize`` submits an asset
backfill to a real DAGSTER_HOME and runs Dagster's daemon until it ends, as a user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from pydoc_data.topics import topics

import dagster as dg
import pandas as pd
import pytest
from conftest import check_evaluations, latest_metadata, published
from dagster._core.instance.ref import InstanceRef

from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks
from pipeline_assets.tasks.heldout import load_benchmark

FRENCH = ("Le musée municipal présente cette année une exposition consacrée aux peintres de la région. "
          "Les visiteurs pourront découvrir des œuvres rarement montrées au public, accompagnées de textes "
          "qui expliquent le contexte historique de chaque tableau. L'entrée est gratuite le dimanche matin "
          "et des visites guidées sont organisées pour les écoles pendant toute la durée de l'exposition.") * 2
JUNK = " ".join(f"{i * 7919 % 10007:05d} @@ ## %% ||" for i in range(120))
PII = "\nFor questions write to jane.doe@example.org or connect to 93.184.216.34 directly."
# Web documents, each labelled: clean prose and benign look-alikes must reach the mixture; word salad, keyword
# spam, harassment and exploit payloads must not (the heuristics miss some of each).
PLANTED = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "planted_web.jsonl").open()]
WANTED = ("clean", "benign")


def _doc(i: str, text: str) -> str:
    return json.dumps({"id": i, "text": text, "metadata": {"url": f"https://example.com/{i}"}})


def _near(text: str) -> str:
    words = text.split(" ")
    words[len(words) // 2] = "CHANGED"
    return " ".join(words) + " One more sentence at the end of the copy."


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("llmdag")
    landing = root / "landing"
    bench = tmp_path_factory.mktemp("bench")
    build_benchmarks(bench, BenchmarkConfig())
    qa = load_benchmark(bench, "qa")[0]
    (landing / "web_a").mkdir(parents=True)
    good = ["\n".join([_doc(k, topics[k]) for k in ("for", "global", "booleans", "truth", "dict")]),
            _doc("dict-copy", "  " + topics["dict"].replace(" ", "  ") + "\n"),  # exact dup modulo whitespace
            _doc("pii", topics["context-managers"] + PII),
            _doc("french", FRENCH), _doc("junk", JUNK),
            _doc("contaminated", topics["return"] + f"\n{qa['prompt']} {qa['answer']}\n"),
            _doc("exceptions", topics["exceptions"])]
    bad = ["{not json", '[1, 2]', '{"text": 123}', '{"id": "no-text"}', '{"text": "   "}',
           json.dumps({"id": "huge", "text": "word " * 300_000})]
    with (landing / "web_a" / "part.jsonl").open("wb") as f:
        f.write(("\n".join(good + bad) + "\n").encode())
        f.write(b'{"id": "latin1", "text": "caf\xe9"}\n')  # non-UTF-8 byte, then a good record after it
        f.write((_doc("after-bad-byte", topics["nonlocal"]) + "\n").encode())
    (landing / "web_a" / "empty.jsonl").write_text("")
    (landing / "web_a" / "blob.bin").write_bytes(b"\x00\x01")
    (landing / "web_b").mkdir()
    pd.DataFrame({"id": ["near", "b1", "b2"],
                  "text": [_near(topics["exceptions"]), topics["assert"], topics["del"]]}).to_parquet(
        landing / "web_b" / "part.parquet")
    (landing / "notes").mkdir()
    (landing / "notes" / "truth.txt").write_text(topics["truth"])  # exact duplicate across partitions
    (landing / "notes" / "yield.txt").write_text(topics["yield"])
    for name in ("web_a", "web_b", "notes"):
        (landing / name / "llmdag_source.json").write_text(json.dumps({"domain": "prose"}))
    (landing / "planted_web").mkdir()  # no llmdag_source.json: the default domain, web
    (landing / "planted_web" / "docs.jsonl").write_text("".join(
        json.dumps({"id": d["id"], "text": d["text"], "metadata": {"label": d["label"]}}) + "\n" for d in PLANTED))
    home = tmp_path_factory.mktemp("dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDAG_HOME": str(root), "LLMDAG_LANDING": str(landing),
           "LLMDAG_BUILTIN_SOURCES": "0"}
    # "+group:corpus": the corpus group with its inputs (evals/benchmarks, which decontamination reads).
    cli = subprocess.run([sys.executable, "-m", "pipeline_assets.cli", "materialize", "--select", "+group:corpus"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    print(cli.stdout)  # the backfill's runs as the CLI reported them (pytest -s shows it)
    # Not `with instance:` — its __enter__ sets a process-wide defs-state storage that __exit__ leaves
    # pointing at the disposed instance (dagster 1.13.27), breaking every later Definitions load.
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    yield {"root": root, "instance": instance, "cli": cli.stdout, "qa": qa}
    instance.dispose()


def _ids(docs_dir: Path) -> set[str]:
    return {json.loads(line)["id"] for p in docs_dir.glob("*.jsonl") for line in p.open()}


def _stage(run, asset: str, partition: str) -> Path:
    return published(run["root"], f"corpus/{asset}", partition)


def test_backfill_runs_each_source_once_and_cross_source_assets_once(fixture_run):
    runs = fixture_run["instance"].get_runs()
    assert {r.tags.get("dagster/backfill") for r in runs} != {None}, "runs came from an asset backfill"
    per_key: dict[str, list] = {}
    for r in runs:
        for key in r.asset_selection or []:
            per_key.setdefault(key.to_user_string(), []).append(r.tags.get("dagster/partition"))
    for key in ("corpus/raw_documents", "corpus/deduplicated_documents", "corpus/decontaminated_documents"):
        assert sorted(per_key[key]) == ["notes", "planted_web", "web_a", "web_b"], (key, per_key[key])
    for key in ("corpus/quality_classifier", "corpus/duplicate_clusters", "corpus/training_mixture",
                "evals/benchmarks"):
        assert per_key[key] == [None], (key, per_key[key])
    assert "COMPLETED_SUCCESS" in fixture_run["cli"]


def test_bad_records_quarantined_with_reasons(fixture_run):
    meta = latest_metadata(fixture_run["instance"], ["corpus", "raw_documents"], "web_a")
    reasons = meta["quarantine_reasons"]
    assert reasons == {"malformed_json": 1, "not_an_object": 1, "non_string_text": 1, "missing_text": 1,
                       "empty_text": 1, "oversized": 1, "non_utf8": 1, "unsupported_file": 1}
    assert meta["quarantined"] == 8
    # the record after the non-UTF-8 line is not lost (datatrove's reader would drop the rest of the file)
    assert "web_a/after-bad-byte" in _ids(_stage(fixture_run, "raw_documents", "web_a") / "documents")
    lines = (_stage(fixture_run, "raw_documents", "web_a") / "quarantine.jsonl").read_text().splitlines()
    assert {json.loads(line)["reason"] for line in lines} == set(reasons)


def test_language_and_quality_filters(fixture_run):
    kept = _ids(_stage(fixture_run, "filtered_documents", "web_a") / "documents")
    assert "web_a/french" not in kept and "web_a/junk" not in kept
    assert {"web_a/for", "web_a/global", "web_a/booleans"} <= kept
    removed = {json.loads(line)["id"]: json.loads(line)["metadata"].get("filter_reason")
               for p in (_stage(fixture_run, "filtered_documents", "web_a") / "removed").rglob("*.jsonl")
               for line in p.open()}
    assert removed["web_a/french"] == "wrong_language_or_low_score"
    meta = latest_metadata(fixture_run["instance"], ["corpus", "filtered_documents"], "web_a")
    assert meta["removed_by_filter"]["language"] >= 2 and meta["docs_in"] == meta["docs_out"] + sum(
        meta["removed_by_filter"].values())


def test_pii_masked(fixture_run):
    docs = [json.loads(line) for p in (_stage(fixture_run, "filtered_documents", "web_a") / "documents").glob("*")
            for line in p.open()]
    text = next(d["text"] for d in docs if d["id"] == "web_a/pii")
    assert "jane.doe@example.org" not in text and "93.184.216.34" not in text
    assert latest_metadata(fixture_run["instance"], ["corpus", "filtered_documents"], "web_a")[
        "pii_documents_masked"] >= 1


def test_exact_and_near_duplicates_removed_across_partitions(fixture_run):
    a = _ids(_stage(fixture_run, "deduplicated_documents", "web_a") / "documents")
    b = _ids(_stage(fixture_run, "deduplicated_documents", "web_b") / "documents")
    notes = _ids(_stage(fixture_run, "deduplicated_documents", "notes") / "documents")
    assert ("web_a/dict" in a) != ("web_a/dict-copy" in a)  # exactly one copy survives
    assert "web_a/exceptions" in a and "web_b/near" not in b  # near-dup in another source removed
    assert ("web_a/truth" in a) != ("notes/truth.txt" in notes)  # cross-source exact dup: one survives
    assert {"web_b/b1", "web_b/b2", "notes/yield.txt", "web_a/for"} <= a | b | notes  # uniques kept
    clusters = latest_metadata(fixture_run["instance"], ["corpus", "duplicate_clusters"])
    assert clusters["cross_source_clusters"] >= 2 and clusters["exact_duplicates"] >= 2
    assert clusters["cluster_size_histogram"]["2"] >= 3
    meta_a = latest_metadata(fixture_run["instance"], ["corpus", "deduplicated_documents"], "web_a")
    meta_b = latest_metadata(fixture_run["instance"], ["corpus", "deduplicated_documents"], "web_b")
    assert meta_a["exact_duplicates_removed"] + meta_a["near_duplicates_removed"] >= 1
    assert meta_b["near_duplicates_removed"] == 1


def test_decontamination_removes_planted_eval_item(fixture_run):
    kept = _ids(_stage(fixture_run, "decontaminated_documents", "web_a") / "documents")
    assert "web_a/contaminated" not in kept and "web_a/for" in kept
    meta = latest_metadata(fixture_run["instance"], ["corpus", "decontaminated_documents"], "web_a")
    assert meta["contaminated_removed"] == 1 and meta["contaminated_by_task"] == {"qa": 1}


def test_mixture_manifest_and_checks(fixture_run):
    mixture = published(fixture_run["root"], "corpus/training_mixture")
    manifest = json.loads((mixture / "manifest.json").read_text())
    assert {e["source"] for e in manifest["train"]} == {"web_a", "web_b", "notes", "planted_web"}
    assert abs(sum(manifest["domain_weights"]["effective"].values()) - 1) < 1e-6
    for e in manifest["train"] + manifest["val"]:
        assert (mixture / e["file"]).exists()
    evaluations = check_evaluations(fixture_run["instance"])
    assert evaluations and all(ev.passed for ev in evaluations), [
        (ev.asset_key, ev.check_name) for ev in evaluations if not ev.passed]
    names = {ev.check_name for ev in evaluations}
    assert {"no_eval_ngrams_left", "unique_ids", "weights_sum_to_one", "has_documents"} <= names
    # per-source checks are recorded per partition: one source passing never hides another
    assert {ev.partition for ev in evaluations if ev.check_name == "no_eval_ngrams_left"} == {
        "web_a", "web_b", "notes", "planted_web"}
    lineage = latest_metadata(fixture_run["instance"], ["corpus", "training_mixture"])["upstream_versions"]
    assert sorted(lineage) == [f"corpus/decontaminated_documents[{p}]" for p in ("notes", "planted_web", "web_a",
                                                                                  "web_b")]


def _removed_reasons(run, partition: str) -> dict[str, str]:
    """id -> the filter (folder ``removed/<i>_<filter>``) that dropped it."""
    removed = _stage(run, "filtered_documents", partition) / "removed"
    return {json.loads(line)["id"]: p.parent.name.split("_", 1)[1] for p in removed.rglob("*.jsonl")
            for line in p.open()}


def test_planted_web_only_clean_and_look_alikes_reach_the_mixture(fixture_run):
    labels = {f"planted_web/{d['id']}": d["label"] for d in PLANTED}
    kept = _ids(_stage(fixture_run, "decontaminated_documents", "planted_web") / "documents")
    mixture = published(fixture_run["root"], "corpus/training_mixture")
    in_mixture = {json.loads(line)["id"] for p in mixture.rglob("*.jsonl") for line in p.open()}
    wanted = {i for i, label in labels.items() if label in WANTED}
    # every wanted document reaches the mixture's input; the mixture samples the web domain to its weight
    assert wanted <= kept, wanted - kept
    assert in_mixture & wanted
    unwanted = set(labels) - wanted
    assert not unwanted & (kept | in_mixture), unwanted & (kept | in_mixture)
    # each removal is attributed: safety reasons to the safety filters, incoherent text to the classifier
    reasons = _removed_reasons(fixture_run, "planted_web")
    assert unwanted <= set(reasons)
    for doc_id, label in labels.items():
        if label == "toxic":
            assert reasons[doc_id] == "toxicity", (doc_id, reasons[doc_id])
        if label == "malware":
            assert reasons[doc_id] == "malware", (doc_id, reasons[doc_id])
    meta = latest_metadata(fixture_run["instance"], ["corpus", "filtered_documents"], "planted_web")
    removed = meta["removed_by_filter"]
    assert removed["toxicity"] == 2 and removed["malware"] == 3 and removed["quality_classifier"] >= 1, removed
    assert "quality_scores" in meta  # the histogram of P(hq), kept vs dropped


def test_default_sources_real_text(default_graph):
    instance = default_graph["instance"]
    parts = instance.get_dynamic_partitions("sources")
    assert {"python_docs", "python_stdlib", "package_readmes"} <= set(parts)
    for p in parts:
        raw = latest_metadata(instance, ["corpus", "raw_documents"], p)
        filt = latest_metadata(instance, ["corpus", "filtered_documents"], p)
        dedup = latest_metadata(instance, ["corpus", "deduplicated_documents"], p)
        decont = latest_metadata(instance, ["corpus", "decontaminated_documents"], p)
        assert raw["docs_out"] >= filt["docs_out"] >= dedup["docs_out"] >= decont["docs_out"] > 0
    clusters = latest_metadata(instance, ["corpus", "duplicate_clusters"])
    assert clusters["near_duplicates_to_remove"] > 0 and clusters["largest_cluster"] >= 3
    mix = latest_metadata(instance, ["corpus", "training_mixture"])
    assert mix["train_bytes"] > 1_000_000 and mix["val_documents"] > 0
    evaluations = check_evaluations(instance)
    assert evaluations and all(ev.passed for ev in evaluations if ev.severity == dg.AssetCheckSeverity.ERROR)


def test_licence_sample_and_ids_do_not_depend_on_the_checkout(tmp_path, monkeypatch):
    """Two checkouts (venvs at different paths, one package a version apart) sample the same licence files under
    the same ids: hashed by absolute path, two fresh clones of one commit trained on different corpora."""
    from pipeline_assets.corpus import sources

    def venv(name: str, version: str) -> Path:
        site = tmp_path / name / "site-packages"
        for dist in (f"alpha-{version}", "beta-2.0", "gamma-0.3"):
            (site / f"{dist}.dist-info" / "licenses").mkdir(parents=True)
            (site / f"{dist}.dist-info" / "licenses" / "LICENSE").write_text(f"{dist.split('-')[0]} licence\n")
        return site

    samples = []
    for site in (venv("clone-a", "1.0"), venv("clone-b", "1.1")):
        monkeypatch.setattr(sources.sysconfig, "get_paths", lambda site=site: {"purelib": str(site),
                                                                                "platlib": str(site)})
        records = [r for r in sources._licenses(None) if ".dist-info/" in r.default_id]
        assert all(r.origin.startswith(str(site)) for r in records)  # where to find it again: the real path
        samples.append([r.default_id for r in records])
    assert samples[0] == samples[1]
    assert sorted(samples[0]) == [f"{n}.dist-info/licenses/LICENSE" for n in ("alpha", "beta", "gamma")]
