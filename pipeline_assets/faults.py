"""Named kill points for fault-injection tests: ``LLMDAG_FAULT_AT=<point>[,<point>...]`` SIGKILLs the process there.

A point is ``name`` or ``name:n`` (e.g. ``pretrain.after_step:15``, ``checkpoint.mid_write:20``,
``curation.mid_ingest:3``, ``curation.mid_filter:5``, ``curation.after_filter``). Code calls
``faults.at("pretrain.after_step", step)``; a spec without ``:n`` fires on the first call with that name.
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
