"""Where the default run's time went: per asset wall time, CPU time and peak memory, and the critical path.

Plain Python: the report card asset (reports/assets.py) reads each asset's latest materialization per partition
from the Dagster instance (its step's start and end from Dagster's step stats, CPU and memory from its
metadata: pipeline_assets/step_usage.py) and hands them here as ``StepTime``s, with each asset's parents.

    {"assets": [{"asset", "partitions", "start_s", "elapsed_s", "step_s", "cpu_s", "peak_rss_mb"}, ...],
     "critical_path": {"assets": [asset, ...], "elapsed_s": float},
     "span_s": float, "step_s": float, "cpu_s": float}

``elapsed_s``: from the asset's first step start to its last step end (its partitions run side by side);
``step_s``: its steps' wall times added up; ``start_s``: seconds after the first step of the table started.
The critical path is the chain of dependent assets with the largest summed ``elapsed_s``: what no amount of
parallelism shortens. ``span_s`` is the first start to the last end of the whole table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any


@dataclass(frozen=True)
class StepTime:
    asset: str
    partition: str | None
    start: float  # unix seconds (Dagster step stats)
    end: float
    cpu_s: float | None  # None: materialized before step_usage existed
    peak_rss_mb: float | None


def time_table(steps: Sequence[StepTime], parents: Mapping[str, Sequence[str]]) -> dict[str, Any] | None:
    """The table, critical path and totals of ``steps``; None when there are none."""
    if not steps:
        return None
    t0 = min(s.start for s in steps)
    by_asset: dict[str, list[StepTime]] = {}
    for s in steps:
        by_asset.setdefault(s.asset, []).append(s)
    rows = {}
    for asset, group in by_asset.items():
        cpu = [s.cpu_s for s in group if s.cpu_s is not None]
        rss = [s.peak_rss_mb for s in group if s.peak_rss_mb is not None]
        rows[asset] = {
            "asset": asset, "partitions": len(group),
            "start_s": round(min(s.start for s in group) - t0, 1),
            "elapsed_s": round(max(s.end for s in group) - min(s.start for s in group), 1),
            "step_s": round(sum(s.end - s.start for s in group), 1),
            "cpu_s": round(sum(cpu), 1) if cpu else None,
            "peak_rss_mb": max(rss) if rss else None}
    # Longest chain by elapsed time; parents outside the table (not materialized) are skipped.
    order = TopologicalSorter({a: [p for p in parents.get(a, ()) if p in rows] for a in rows}).static_order()
    best: dict[str, tuple[float, list[str]]] = {}
    for asset in order:
        before = max((best[p] for p in parents.get(asset, ()) if p in best), key=lambda b: b[0], default=(0.0, []))
        best[asset] = (before[0] + rows[asset]["elapsed_s"], [*before[1], asset])
    total, path = max(best.values(), key=lambda b: b[0])
    cpu_all = [r["cpu_s"] for r in rows.values() if r["cpu_s"] is not None]
    return {"assets": sorted(rows.values(), key=lambda r: (r["start_s"], r["asset"])),
            "critical_path": {"assets": path, "elapsed_s": round(total, 1)},
            "span_s": round(max(s.end for s in steps) - t0, 1),
            "step_s": round(sum(r["step_s"] for r in rows.values()), 1),
            "cpu_s": round(sum(cpu_all), 1) if cpu_all else None}
