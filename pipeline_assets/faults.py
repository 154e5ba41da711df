"""Named kill points for fault-injection tests: ``LLMDAG_FAULT_AT=<point>[,<point>...]`` SIGKILLs the process there.

A point is ``name`` or ``name:n``; a spec without ``:n`` fires on the first call with that name. Code calls
``faults.at("pretrain.after_step", step)``. The points (``n`` is what the call passes):

    pretrain.after_step:n        pretrain/train.py, after optimizer step n
    checkpoint.mid_write:n       pretrain/checkpoint.py, step n's weights written, its meta.json not yet
    posttrain.after_step:n       posttrain/common.py (every TRL stage), step n done, its checkpoint not saved
    posttrain.mid_checkpoint:n   posttrain/common.py, checkpoint-n has weights/optimizer/RNG, no trainer_state
    curation.mid_ingest:n        corpus/ingest.py, after the n-th kept document
    curation.mid_filter:n        corpus/blocks.py, at the n-th document a rank formats (writers half-written)
    curation.after_filter        corpus/filters.py, every filter rank done, the version not yet renamed
    curation.mid_signatures      corpus/dedup.py, MinHash signatures written, exact-dedup ones not yet
    curation.mid_clusters        corpus/dedup.py, MinHash buckets written, no cluster yet
    curation.mid_dedup           corpus/dedup.py, the partition's removal lists written, no document yet
    curation.after_decont        corpus/decontaminate.py, every rank done, the version not yet renamed
The variable is read once, at import: unset, ``at`` is one falsy check (zero cost in production).
Tests run the stage in a subprocess with the variable set, so the kill lands exactly where they ask,
never where timing happens to put it, then rerun it without the variable and compare results.
"""

from __future__ import annotations

import os
import signal

ENV = "LLMDAG_FAULT_AT"


def _parse(spec: str | None) -> dict[str, set[int] | None]:
    points: dict[str, set[int] | None] = {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        name, _, n = item.partition(":")
        if not n:
            points[name] = None
        elif points.get(name, set()) is not None:
            points.setdefault(name, set()).add(int(n))  # type: ignore[union-attr]
    return points


_POINTS = _parse(os.environ.get(ENV))


def armed(name: str) -> bool:
    return name in _POINTS


def at(name: str, n: int | None = None) -> None:
    """SIGKILL this process if ``name`` (with ``n``, when the spec names one) is an armed point."""
    if not _POINTS or name not in _POINTS:
        return
    wanted = _POINTS[name]
    if wanted is None or n in wanted:
        os.kill(os.getpid(), signal.SIGKILL)


def reload() -> None:
    """Re-read the variable (for in-process tests that set it after import)."""
    global _POINTS
    _POINTS = _parse(os.environ.get(ENV))
