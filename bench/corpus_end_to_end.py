"""Corpus group end to end: MB of raw text per second through Dagster's daemon, against the filters alone.

    python bench/corpus_end_to_end.py                 # default sources + two small landing folders
    python bench/corpus_end_to_end.py --no-builtin    # landing folders only (fast smoke run)
    python bench/corpus_end_to_end.py --in-process    # also the in-process runner (one run per source per wave)

1. ``backfill``: what users run: ``llmdag materialize --select +group:corpus`` on a fresh DAGSTER_HOME (one asset
   backfill on Dagster's daemon: a run per source for the per-source steps, in parallel, and one run per
   cross-source step).
2. ``filters alone``: ``corpus.filters.filter_partition`` (language ID, heuristic, quality and safety filters, PII)
   on the raw documents that backfill ingested, every source one after another in this process, the tiny
   profile's datatrove settings: the curation work without Dagster, runs, ingest, dedup or decontamination.
3. ``in_process`` (``--in-process``): the tests' in-process runner, the profile's datatrove settings.

Prints raw MB in, wall seconds and MB/s for each, and the backfill's rate as a share of the filters' rate (issue
31's target: the backfill >= 0.3 MB/s on 2 cores). All start from empty artifact roots.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from pydoc_data.topics import topics


def make_landing(landing: Path) -> None:
    """Two small user sources of real prose: one JSONL, one of text files."""
    names = sorted(topics)
    (landing / "user_jsonl").mkdir(parents=True)
    with (landing / "user_jsonl" / "part.jsonl").open("w") as f:
        for name in names[::3]:
            f.write(json.dumps({"id": name, "text": topics[name]}) + "\n")
    (landing / "user_text").mkdir()
    for name in names[1::5]:
        (landing / "user_text" / f"{name}.txt").write_text(topics[name])


def raw_mb(root: Path) -> float:
    total = 0
    for stats in root.glob("corpus/raw_documents/*/*/current/summary.json"):
        total += json.loads(stats.read_text())["bytes"]  # UTF-8 bytes of every kept document
    return total / 1e6


def run_backfill(work: Path, builtin: bool) -> float:
    env = {**os.environ, "DAGSTER_HOME": str(work / "home"), "LLMDAG_HOME": str(work / "root"),
           "LLMDAG_LANDING": str(work / "landing"), "LLMDAG_BUILTIN_SOURCES": "1" if builtin else "0"}
    (work / "home").mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline_assets.cli", "materialize", "--select", "+group:corpus"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_in_process(work: Path, builtin: bool) -> float:
    import dagster as dg

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import materialize_in_process

    from pipeline_assets.definitions import build_definitions

    defs = build_definitions(root=str(work / "root"), landing=str(work / "landing"), builtin_sources=builtin)
    t0 = time.perf_counter()
    with dg.instance_for_test() as instance:
        materialize_in_process(defs, instance, dg.AssetSelection.groups("corpus").upstream())
    return time.perf_counter() - t0


def filters_alone(work: Path, builtin: bool) -> float:
    """Seconds to filter every source's ingested raw documents again, in this process (``backfill``'s root)."""
    from pipeline_assets.asset_keys import QUALITY_CLASSIFIER
    from pipeline_assets.corpus.config import ContentSafetyConfig, CorpusConfig
    from pipeline_assets.corpus.filters import filter_partition
    from pipeline_assets.profiles import section_config
    from pipeline_assets.summary import read_summary
    from resources.launcher import LauncherResource
    from resources.sources import SourcesResource
    from resources.storage import ArtifactStore

    root = work / "root"
    cfg = section_config(CorpusConfig, "corpus", "tiny")
    safety = section_config(ContentSafetyConfig, "content_safety", "tiny")
    sources = SourcesResource(landing=str(work / "landing"), builtin=builtin)
    classifier = ArtifactStore(root=str(root), profile="tiny").current(QUALITY_CLASSIFIER.path)
    trained = read_summary(classifier)
    launcher = LauncherResource(kind="local")
    raws = sorted(root.glob("corpus/raw_documents/*/tiny/current"))
    t0 = time.perf_counter()
    for raw in raws:
        domain = sources.spec(raw.parents[1].name).domain
        threshold = trained["thresholds"].get(domain)
        quality = (str(classifier / trained["model"]), threshold) if threshold is not None else None
        out = Path(tempfile.mkdtemp(prefix="bench-filters-"))
        filter_partition(raw, out, domain, cfg, launcher.run_datatrove, quality, safety)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-builtin", action="store_true", help="landing folders only")
    parser.add_argument("--in-process", action="store_true", help="also the in-process runner")
    args = parser.parse_args()
    builtin = not args.no_builtin
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    make_landing(work / "landing")
    rows = [("backfill", run_backfill(work, builtin)), ("filters alone", filters_alone(work, builtin))]
    mb = raw_mb(work / "root")
    if args.in_process:
        other = Path(tempfile.mkdtemp(prefix="bench-in-process-"))
        make_landing(other / "landing")
        rows.append(("in_process", run_in_process(other, builtin)))
    for name, seconds in rows:
        print(f"{name:13s} {mb:7.2f} MB raw  {seconds:7.1f} s  {mb / seconds:6.3f} MB/s", flush=True)
    print(f"backfill / filters alone throughput: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
