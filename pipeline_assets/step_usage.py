"""What a step cost besides its wall time: CPU seconds and peak memory, recorded as materialization metadata.

Dagster's step stats hold each step's start and end, not what it used. ``step_usage()`` is called once per
materialization (``publishing.finish``) and measures since its previous call in this process, or since the
process started:

- ``cpu_time_s``: user + system CPU of this process and of the children it waited for (datatrove workers,
  torchrun ranks, sandboxed tool calls). With the in-process executor a run's steps run one after another,
  so the previous call marks where this step began (plus the little Dagster does between steps); with the
  multiprocess executor it is the step's process from its fork (tiny: the forkserver imported the libraries).
- ``peak_rss_mb``: this process's peak resident memory since the previous call (Linux resets the peak on
  ``/proc/self/clear_refs`` = 5); children are not counted. None where /proc is not Linux's.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

_PROC = Path("/proc/self")


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_rss_mb() -> float | None:
    try:
        match = re.search(r"VmHWM:\s+(\d+) kB", (_PROC / "status").read_text())
    except OSError:
        return None
    return round(int(match.group(1)) / 1024, 1) if match else None


def _reset_peak() -> None:
    try:
        (_PROC / "clear_refs").write_text("5")
    except OSError:
        pass  # not Linux (or /proc read-only): the peak then runs from the process's start


_last_cpu_s = 0.0  # CPU time at the previous call; 0 = the process's start


def step_usage() -> dict[str, float | None]:
    """``{"cpu_time_s", "peak_rss_mb"}`` since the previous call in this process; starts the next interval."""
    global _last_cpu_s
    now = _cpu_s()
    usage = {"cpu_time_s": round(now - _last_cpu_s, 2), "peak_rss_mb": _peak_rss_mb()}
    _last_cpu_s = now
    _reset_peak()
    return usage
