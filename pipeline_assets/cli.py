"""``llmdag``: materialize the graph headless, in dependency order, across every source partition.

    llmdag materialize                         # every asset, every source (built-in + landing + config)
    llmdag materialize --select "group:corpus"  # Dagster's asset selection syntax
    llmdag materialize --partition my_source    # one source partition (+ what every source feeds)
    llmdag sources                              # list the sources and whether they are registered

Why not ``dagster asset materialize``: a run has at most one partition key, and this graph alternates
per-source and all-source assets (dedup needs every source's signatures). This command registers
the "sources" partitions, then launches one run per partition for each per-source wave and one run
for each all-source wave, on the DAGSTER_HOME instance, so every run shows in ``dagster dev``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

import dagster as dg

from pipeline_assets.corpus.assets import sources_partitions


def waves(defs: dg.Definitions, selection: dg.AssetSelection) -> list[tuple[bool, list[dg.AssetKey]]]:
    """Group selected assets into (partitioned?, keys) waves so each wave only needs earlier waves."""
    graph = defs.resolve_asset_graph()
    selected = selection.resolve(graph)
    level: dict[dg.AssetKey, int] = {}
    for key in graph.toposorted_asset_keys:
        if key not in selected:
            continue
        part = graph.get(key).partitions_def is not None
        level[key] = max([level[p] + ((graph.get(p).partitions_def is not None) != part)
                          for p in graph.get(key).parent_keys if p in level] or [0])
    grouped: dict[tuple[int, bool], list[dg.AssetKey]] = defaultdict(list)
    for key, lvl in level.items():
        grouped[(lvl, graph.get(key).partitions_def is not None)].append(key)
    # Within a level, partitioned groups go first: a same-level unpartitioned group never depends on them.
    return [(part, keys) for (lvl, part), keys in sorted(grouped.items(), key=lambda x: (x[0][0], not x[0][1]))]


def _release_blocked(result: dg.ExecuteInProcessResult) -> str | None:
    """The gate message when the only failed step is release/model refusing to ship, else None."""
    failures = [e for e in result.all_events if e.is_step_failure]
    if len(failures) != 1 or failures[0].step_key != "release__model":
        return None
    message = str(failures[0].event_specific_data.error.message)
    return message.strip() if "release blocked by gates" in message else None


def register_sources(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[str]:
    specs = defs.resources["sources"].specs()
    known = instance.get_dynamic_partitions(sources_partitions.name)
    new = [name for name in specs if name not in known]
    if new:
        instance.add_dynamic_partitions(sources_partitions.name, new)
    return instance.get_dynamic_partitions(sources_partitions.name)


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, selection: dg.AssetSelection,
                partitions: list[str] | None = None, log=print,
                overrides: dict[str, dict] | None = None, strict: bool = True) -> list[dg.ExecuteInProcessResult]:
    """``overrides``: asset key ("models/base") -> config fields, e.g. {"models/base": {"max_steps": 50}}."""
    all_partitions = register_sources(defs, instance)
    partitions = partitions or all_partitions
    unknown = set(partitions) - set(all_partitions)
    if unknown:
        raise SystemExit(f"unknown source partitions {sorted(unknown)}; registered: {all_partitions}")
    assets = list(defs.assets)
    results = []
    for partitioned, keys in waves(defs, selection):
        names = ", ".join(k.to_user_string() for k in keys)
        ops = {"__".join(k.path): {"config": (overrides or {})[k.to_user_string()]}
               for k in keys if k.to_user_string() in (overrides or {})}
        for pk in partitions if partitioned else [None]:
            t0 = time.time()
            log(f"==> {names}" + (f" [{pk}]" if pk else ""))
            result = dg.materialize(assets, selection=keys, partition_key=pk, instance=instance,
                                    resources=defs.resources, raise_on_error=False,
                                    run_config={"ops": ops} if ops else None)
            if not result.success and _release_blocked(result) and not strict:
                log("!" * 80 + "\n" + _release_blocked(result) + "\n(the release gate did its job: "
                    "every other asset is materialized; --strict makes this an error)\n" + "!" * 80)
            elif not result.success:
                raise SystemExit(f"run {result.run_id} failed at {names}" + (f" [{pk}]" if pk else "")
                                 + ": see its logs in `dagster dev` (DAGSTER_HOME) or above")
            log(f"    ok in {time.time() - t0:.1f}s (run {result.run_id})")
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llmdag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="materialize assets headless, in dependency order")
    mat.add_argument("--select", default="*", help='Dagster asset selection, e.g. "group:corpus" (default: all)')
    mat.add_argument("--partition", action="append", help="only this source partition (repeatable)")
    mat.add_argument("--strict", action="store_true", help="exit non-zero when the release gates block")
    mat.add_argument("--set", action="append", default=[], metavar="ASSET:FIELD=VALUE",
                     help='override a config field for one run, e.g. "models/base:max_steps=50" (repeatable)')
    sub.add_parser("sources", help="list the sources this configuration knows")
    args = parser.parse_args(argv)

    from pipeline_assets.definitions import defs

    if not os.environ.get("DAGSTER_HOME"):
        print("warning: DAGSTER_HOME is unset: runs go to a throw-away instance and will not show in "
              "`dagster dev`", file=sys.stderr)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    if args.command == "sources":
        registered = set(instance.get_dynamic_partitions(sources_partitions.name))
        for name, spec in defs.resources["sources"].specs().items():
            print(f"{name:24s} {spec.kind:16s} {spec.domain:6s} {'registered' if name in registered else 'new'}")
        return
    selection = dg.AssetSelection.all() if args.select == "*" else dg.AssetSelection.from_string(args.select)
    overrides: dict[str, dict] = {}
    for item in args.set:
        asset, _, assignment = item.partition(":")
        field, _, value = assignment.partition("=")
        if not (asset and field and value):
            raise SystemExit(f"--set {item!r}: expected ASSET:FIELD=VALUE, e.g. models/base:max_steps=50")
        overrides.setdefault(asset, {})[field] = json.loads(value) if value[0] in "0123456789-[{tf" else value
    t0 = time.time()
    materialize(defs, instance, selection, args.partition, overrides=overrides, strict=args.strict)
    print(f"done in {time.time() - t0:.1f}s; artifacts under {defs.resources['store'].root}")


if __name__ == "__main__":
    main()
