"""Corpus group end to end: MB of raw text per second, through Dagster, two ways in one process.

    python bench/corpus_end_to_end.py                 # default sources + two small landing folders
    python bench/corpus_end_to_end.py --no-builtin    # landing folders only (fast smoke run)

1. ``before`` (baseline): how the graph ran before the backfill change: one in-process Dagster run per
   source per wave, in this process, with a 2-worker datatrove pool per executor run.
2. ``in_process``: the same runner with the profile's datatrove settings (tiny: ranks in-process).
3. ``backfill``: what users run: ``llmdag materialize --select +group:corpus`` on a fresh DAGSTER_HOME
   (one asset backfill on Dagster's daemon: a run per source for the per-source steps, in parallel, and
   one run per cross-source step).

Prints raw MB in, wall seconds and MB/s for each, and each one's ratio to ``before``. All start from
empty artifact roots.
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
    for stats in root.glob("corpus/raw_documents/*/*/current/stats.json"):
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


def run_in_process(work: Path, builtin: bool, workers: int | None = None) -> float:
    import dagster as dg

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import materialize_in_process

    from pipeline_assets.definitions import build_definitions

    defs = build_definitions(root=str(work / "root"), landing=str(work / "landing"), builtin_sources=builtin)
    if workers is not None:
        from resources.launcher import LauncherResource

        defs = dg.Definitions(assets=list(defs.assets), resources={
            **defs.resources, "launcher": LauncherResource(kind="local", datatrove_workers=workers)})
    t0 = time.perf_counter()
    with dg.instance_for_test() as instance:
        materialize_in_process(defs, instance, dg.AssetSelection.groups("corpus").upstream())
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-builtin", action="store_true", help="landing folders only")
    args = parser.parse_args()
    rows = []
    modes = (("before", lambda w, b: run_in_process(w, b, workers=2)), ("in_process", run_in_process),
             ("backfill", run_backfill))
    for name, fn in modes:
        work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        make_landing(work / "landing")
        seconds = fn(work, not args.no_builtin)
        mb = raw_mb(work / "root")
        rows.append((name, mb, seconds))
        print(f"{name:11s} {mb:7.2f} MB raw  {seconds:7.1f} s  {mb / seconds:6.3f} MB/s", flush=True)
    _, mb0, s0 = rows[0]
    for name, mb, seconds in rows[1:]:
        print(f"{name} / before throughput: {(mb / seconds) / (mb0 / s0):.2f}x")


if __name__ == "__main__":
    main()
