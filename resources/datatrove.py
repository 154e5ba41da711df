"""DatatroveExecutorResource: the one place that picks datatrove's executor (local, Ray or Slurm).

Curation code builds a list of pipeline steps and asks this resource for an executor; the same steps
then run on 2 local cores, an in-process or remote Ray cluster, or a Slurm array. Nothing here
distributes work itself: datatrove's executors do.

A failed task fails the asset with that task's log: after a local or Ray run every rank must have its
completion marker (datatrove's Ray executor only warns "Only X/Y tasks completed"); a Slurm array is
polled until every marker exists, a task's log shows an error, Slurm reports the job failed, or
``slurm_deadline_s`` passes (``wait_for_ranks``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field


class DatatroveExecutorResource(dg.ConfigurableResource):
    kind: Literal["local", "ray", "slurm"] = Field(default="local", description="datatrove executor.")
    workers: int = Field(default=2, description="Parallel tasks at once (local/ray); -1 = all.")
    ray_address: str | None = Field(default=None, description="Ray cluster; None = in-process.")
    slurm_partition: str = Field(default="cpu", description="Slurm partition for --partition.")
    slurm_time: str = Field(default="02:00:00", description="Slurm --time per task.")
    slurm_cpus_per_task: int = Field(default=1)
    slurm_mem_per_cpu_gb: int = Field(default=2)
    slurm_poll_s: int = Field(default=30, description="How often to look for finished Slurm tasks.")
    slurm_deadline_s: int = Field(default=86_400, description="Fail the asset if the Slurm array has not "
                                  "finished this many seconds after submission (queue time included).")

    def run(self, pipeline: list, logging_dir: Path, tasks: int, workers: int | None = None) -> None:
        """Run ``pipeline`` as ``tasks`` ranks; blocks until every rank has a completion marker.

        Completed ranks are skipped on a rerun (datatrove's ``logging_dir/completions``), so a killed
        materialization resumes where it stopped.
        """
        workers = self.workers if workers is None else workers
        if self.kind == "local":
            from datatrove.executor import LocalPipelineExecutor

            LocalPipelineExecutor(
                pipeline, tasks=tasks, workers=min(workers, tasks) if workers > 0 else -1,
                logging_dir=str(logging_dir), skip_completed=True,
            ).run()
            raise_if_incomplete(logging_dir, tasks, "local")
        elif self.kind == "ray":
            import ray
            from datatrove.executor.ray import RayPipelineExecutor

            started = not ray.is_initialized()
            if started:
                ray.init(address=self.ray_address, include_dashboard=False)
            try:
                RayPipelineExecutor(
                    pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), skip_completed=True,
                    mem_per_cpu_gb=self.slurm_mem_per_cpu_gb,
                ).run()
            finally:
                if started:
                    ray.shutdown()
            raise_if_incomplete(logging_dir, tasks, "ray")
        else:
            from datatrove.executor.slurm import SlurmPipelineExecutor

            executor = SlurmPipelineExecutor(
                pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), skip_completed=True,
                partition=self.slurm_partition, time=self.slurm_time, cpus_per_task=self.slurm_cpus_per_task,
                mem_per_cpu_gb=self.slurm_mem_per_cpu_gb, job_name=logging_dir.name,
            )
            submitted = time.time()
            executor.run()
            # sbatch returns at submission; the asset is done only when every rank has finished.
            job_id = executor.job_id if executor.job_id not in (None, -1) else None
            wait_for_ranks(logging_dir, tasks, poll_s=self.slurm_poll_s, deadline_s=self.slurm_deadline_s,
                           slurm_logs_dir=Path(executor.slurm_logs_folder),
                           job_states=(lambda: sacct_states(str(job_id))) if job_id else None, since=submitted)


class TaskFailed(RuntimeError):
    """A datatrove task failed (or never finished in time); the message carries its log."""


# datatrove's task logger writes "<time> | ERROR    | module:function:line - message" (logger.exception).
_TASK_ERROR = re.compile(r"\|\s*(ERROR|CRITICAL)\s*\|")
# What slurmstepd / the batch script print when a task dies outside Python (OOM kill, time limit, cancel).
_SLURM_ERROR = re.compile(r"slurmstepd: error|CANCELLED|DUE TO TIME LIMIT|oom[-_ ]kill|Out Of Memory|Traceback"
                          r"|Segmentation fault|Killed", re.IGNORECASE)
# sacct states of an array task that will never write its completion marker.
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                 "PREEMPTED"}


def _done(logging_dir: Path) -> set[int]:
    return {int(p.name) for p in (logging_dir / "completions").glob("*") if p.name.isdigit()}


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(unreadable)"


def _task_log(logging_dir: Path, rank: int) -> Path:
    return logging_dir / "logs" / f"task_{rank:05d}.log"


def failed_ranks(logging_dir: Path, tasks: int, since: float = 0.0) -> dict[int, Path]:
    """Ranks without a completion marker whose task log (written at/after ``since``) records an error.

    ``since``: a resumed work dir keeps the logs of the attempt that failed; until the new attempt's task
    starts (and truncates its log) that old log must not count.
    """
    done = _done(logging_dir)
    out = {}
    for rank in range(tasks):
        log = _task_log(logging_dir, rank)
        if rank not in done and log.is_file() and log.stat().st_mtime >= since - 1 and _TASK_ERROR.search(
                log.read_text(errors="replace")):
            out[rank] = log
    return out


def raise_if_incomplete(logging_dir: Path, tasks: int, kind: str) -> None:
    """After an executor returned: every rank must have completed, else raise with the failed tasks' logs."""
    missing = sorted(set(range(tasks)) - _done(logging_dir))
    if missing:
        logs = {r: _task_log(logging_dir, r) for r in missing}
        raise TaskFailed(f"{kind} executor returned with {len(missing)}/{tasks} tasks incomplete (ranks "
                         f"{missing[:10]}) in {logging_dir}:\n" + "\n".join(
                             f"--- {p}\n{_tail(p) if p.is_file() else '(no log: the task never started)'}"
                             for p in list(logs.values())[:3]))


def sacct_states(job_id: str) -> dict[str, str]:
    """{array task id: state} from ``sacct`` ({} when sacct is missing or fails: the logs still decide)."""
    if not shutil.which("sacct"):
        return {}
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-n", "-X", "-P", "-o", "JobID,State"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in out.splitlines():
        job, _, state = line.partition("|")
        states[job.rpartition("_")[2] or job] = state.split()[0] if state else ""
    return states


def wait_for_ranks(logging_dir: Path, tasks: int, *, poll_s: float, deadline_s: float,
                   slurm_logs_dir: Path | None = None, job_states: Callable[[], dict[str, str]] | None = None,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                   since: float | None = None) -> None:
    """Block until every rank has a completion marker; raise ``TaskFailed`` with the log on the first failure.

    A failure is a task log with an ERROR line and no marker, a Slurm log with a slurmstepd/OOM/time-limit
    message, or a ``job_states()`` entry in ``FAILED_STATES``; ``deadline_s`` bounds the whole wait.
    """
    start, since = clock(), time.time() if since is None else since
    while True:
        if len(_done(logging_dir) & set(range(tasks))) >= tasks:
            return
        failed = failed_ranks(logging_dir, tasks, since)
        if failed:
            rank, log = next(iter(failed.items()))
            raise TaskFailed(f"datatrove task {rank} failed ({len(failed)} failed so far, ranks "
                             f"{sorted(failed)[:10]}); its log {log}:\n{_tail(log)}")
        states = job_states() if job_states else {}
        bad = {k: v for k, v in states.items() if v in FAILED_STATES}
        slurm_logs = sorted(slurm_logs_dir.glob("*.out")) if slurm_logs_dir and slurm_logs_dir.is_dir() else []
        bad_logs = [p for p in slurm_logs if _SLURM_ERROR.search(p.read_text(errors="replace"))]
        if bad or bad_logs:
            shown = bad_logs[0] if bad_logs else None
            raise TaskFailed(f"Slurm array task(s) failed: {bad or ''} {[p.name for p in bad_logs]}"
                             + (f"; {shown}:\n{_tail(shown)}" if shown else "")
                             + f"\n(task logs under {logging_dir / 'logs'})")
        if clock() - start > deadline_s:
            missing = sorted(set(range(tasks)) - _done(logging_dir))
            raise TaskFailed(f"Slurm array not finished after {deadline_s:.0f} s (slurm_deadline_s): ranks "
                             f"{missing[:10]} have no completion marker in {logging_dir / 'completions'}; "
                             f"check squeue/sacct and {slurm_logs_dir}")
        sleep(poll_s)
