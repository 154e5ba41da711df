"""Read datatrove's per-rank stats into flat numbers a user reads in the asset's metadata."""

from __future__ import annotations

import json
from pathlib import Path

from datatrove.utils.stats import PipelineStats


def merged_stats(logging_dir: Path) -> list[dict]:
    """Merge ``stats/*.json`` (every rank): after a resume ``stats.json`` covers only the last invocation."""
    files = sorted((logging_dir / "stats").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no datatrove stats under {logging_dir}/stats: did the pipeline run?")
    total = sum((PipelineStats.from_json(json.loads(f.read_text())) for f in files), start=PipelineStats())
    return json.loads(total.to_json())


def count(value: int | dict | None) -> int:
    """Merged stats turn per-rank counters into ``{"total": n, "mean": ...}``; single-rank ones are ints."""
    if isinstance(value, dict):
        return int(value.get("total", 0))
    return int(value or 0)


def _seconds(time_stats: dict | float | None) -> float:
    """A step's total time: datatrove writes a plain number instead of a dict for a step that never timed."""
    return float(time_stats.get("total", 0.0)) if isinstance(time_stats, dict) else float(time_stats or 0.0)


def step_summary(stats: list[dict]) -> list[dict]:
    """One row per pipeline step: name, docs in/dropped, drop reasons, CPU seconds."""
    rows = []
    for step in stats:
        counters = {k: v for k, v in step.get("stats", {}).items() if k != "doc_len"}
        rows.append({
            "step": step["name"],
            "in": count(counters.get("total")),
            "dropped": count(counters.get("dropped")),
            "reasons": {k.removeprefix("dropped_"): count(v) for k, v in counters.items()
                        if k.startswith("dropped_")},
            "counters": {k: count(v) for k, v in counters.items()
                         if not k.startswith("dropped") and k not in ("total", "forwarded")},
            "cpu_s": round(_seconds(step.get("time_stats")), 2),
        })
    return rows
