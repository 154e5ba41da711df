"""Where the default run's time went: per asset wall time, CPU time and peak memory, and the critical path.

Plain Python: the report card asset (reports/assets.py) reads each asset's latest materialization per partition
from the Dagster instance (its step's start and end from Dagster's step stats, CPU and memory from its
metadata: pipeline_assets/step_usage.py) and hands them here as ``StepTime``s, with each asset's parents.

    {"assets": [{"asset", "partitions", "start_s", "elapsed_s", "step_s", "cpu_s", "peak_rss_mb"}, ...],
     "critical_path": {"assets": [asset, ...], "elapsed_s": float},
     "span_s": float, "step_s": float, "cpu_s": float}

``elapsed_s``: from the asset's first step start to its last step end (its partitions run side by side);
``step_s``: its steps' wall times added up; ``start_s``: seconds after the first step of the table started.
The critical path is the chain the run waited on: from the asset that finished last, back through the parent
that finished last, each time (its ``elapsed_s``: the chain's first start to its last end). Shortening an
asset off that chain does not end the run sooner. ``span_s`` is the first start to the last end of the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    starts = {a: min(s.start for s in group) for a, group in by_asset.items()}
    ends = {a: max(s.end for s in group) for a, group in by_asset.items()}
    rows = {}
    for asset, group in by_asset.items():
        cpu = [s.cpu_s for s in group if s.cpu_s is not None]
        rss = [s.peak_rss_mb for s in group if s.peak_rss_mb is not None]
        rows[asset] = {"asset": asset, "partitions": len(group), "start_s": round(starts[asset] - t0, 1),
                       "elapsed_s": round(ends[asset] - starts[asset], 1),
                       "step_s": round(sum(s.end - s.start for s in group), 1),
                       "cpu_s": round(sum(cpu), 1) if cpu else None, "peak_rss_mb": max(rss) if rss else None}
    # The blocking chain: from the asset that finished last, back through the parent that finished last.
    path = [max(ends, key=ends.__getitem__)]
    while ready := [p for p in parents.get(path[-1], ()) if p in ends]:
        path.append(max(ready, key=ends.__getitem__))
    path.reverse()
    cpu_all = [r["cpu_s"] for r in rows.values() if r["cpu_s"] is not None]
    return {"assets": sorted(rows.values(), key=lambda r: (r["start_s"], r["asset"])),
            "critical_path": {"assets": path, "elapsed_s": round(ends[path[-1]] - starts[path[0]], 1)},
            "span_s": round(max(s.end for s in steps) - t0, 1),
            "step_s": round(sum(r["step_s"] for r in rows.values()), 1),
            "cpu_s": round(sum(cpu_all), 1) if cpu_all else None}
