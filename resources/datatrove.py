"""Curation's pipelines on datatrove's own executors: local cores, a Ray cluster, or a Slurm array.

Curation code builds a list of pipeline steps and hands it to the launcher resource (resources/launcher.py),
which calls ``run_local`` / ``run_ray`` / ``run_slurm`` here. Nothing here distributes work itself:
datatrove's executors do.

A failed task fails the asset with that task's log: after a local or Ray run every rank must have its
completion marker (datatrove's Ray executor only warns "Only X/Y tasks completed"); a Slurm array is
polled until every marker exists, a task's log shows an error, Slurm reports the job failed, or
``slurm.deadline_s`` passes (``wait_for_ranks``); whatever way the wait ends early (a failure, the deadline, a
terminated Dagster run), the step's Slurm jobs are cancelled. Engine settings: resources/engines.py.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from datatrove.executor.slurm import SlurmPipelineExecutor

from resources.engines import RaySettings, SlurmSettings


def run_local(pipeline: list, logging_dir: Path, tasks: int, workers: int) -> None:
    from datatrove.executor import LocalPipelineExecutor

    LocalPipelineExecutor(
        pipeline, tasks=tasks, workers=min(workers, tasks) if workers > 0 else -1,
        logging_dir=str(logging_dir), skip_completed=True,
    ).run()
    raise_if_incomplete(logging_dir, tasks, "local")


def run_ray(pipeline: list, logging_dir: Path, tasks: int, workers: int, settings: RaySettings) -> None:
    import ray
    from datatrove.executor.ray import RayPipelineExecutor

    started = not ray.is_initialized()
    if started:
        # An in-process cluster binds to all interfaces (ops.md §1); one step's tasks are all it runs.
        ray.init(address=settings.address, include_dashboard=False, runtime_env=settings.runtime_env or None,
                 log_to_driver=False)
    try:
        # Stopping the driver (a terminated Dagster step) ends its tasks: Ray fails the work an owner leaves.
        RayPipelineExecutor(
            pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), skip_completed=True,
            cpus_per_task=settings.cpus_per_task, mem_per_cpu_gb=settings.mem_per_cpu_gb,
        ).run()
    finally:
        if started:
            ray.shutdown()
    raise_if_incomplete(logging_dir, tasks, "ray")


def run_slurm(pipeline: list, logging_dir: Path, tasks: int, workers: int, settings: SlurmSettings) -> None:
    # A name unique to this work dir: ``scancel --name`` then reaches the array and its merge_stats job
    # (datatrove does not keep the latter's id) and nothing another run submitted.
    job_name = f"llmdag-{logging_dir.name}-{hashlib.sha1(str(logging_dir.resolve()).encode()).hexdigest()[:8]}"
    executor = SiteSlurmExecutor(
        pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), skip_completed=True,
        partition=settings.partition, time=settings.time, cpus_per_task=settings.cpus_per_task,
        mem_per_cpu_gb=settings.mem_per_cpu_gb, job_name=job_name, qos=settings.qos or "",
        venv_path=settings.activate_script(), sbatch_args=settings.extra_sbatch_args(),
    )
    submitted = time.time()
    executor.run()
    if executor.job_id in (None, -1):
        raise_if_incomplete(logging_dir, tasks, "slurm")  # every rank was already complete
        return
    job_id = str(executor.job_id)
    log = dg.get_dagster_logger()
    log.info(f"Slurm job {job_id} ({job_name}): {tasks} tasks submitted; logs in {executor.slurm_logs_folder}")
    try:
        # sbatch returns at submission; the asset is done only when every rank has finished.
        wait_for_ranks(logging_dir, tasks, poll_s=settings.poll_s, deadline_s=settings.deadline_s,
                       slurm_logs_dir=Path(executor.slurm_logs_folder),
                       job_states=lambda: sacct_states(job_id), since=submitted,
                       progress=lambda done: log.info(f"Slurm job {job_id}: {done}/{tasks} tasks complete"))
        # datatrove's merge_stats job writes into this work dir: it must be gone before the dir is published.
        wait_until_gone(job_name, deadline_s=settings.deadline_s)
    except BaseException:
        # A failed task, the deadline, or a terminated Dagster run (an interrupt raised in this wait):
        # nothing this step submitted keeps running on the cluster.
        scancel(job_name)
        log.warning(f"cancelled Slurm job {job_id} and its merge_stats job ({job_name})")
        raise


class SiteSlurmExecutor(SlurmPipelineExecutor):
    """datatrove's executor, leaving ``--partition`` / ``--qos`` to the cluster's defaults when unset.

    datatrove always writes ``--partition=<value>`` and ``--qos`` defaults to "normal", which many sites do
    not have; a site without a named partition should not have to invent one. Memory goes in whole MiB:
    sbatch refuses "0.5G".
    """

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        args = super().get_sbatch_args(max_array)
        args["mem-per-cpu"] = f"{round(float(self.mem_per_cpu_gb) * 1024)}M"
        return {k: v for k, v in args.items() if not (k in ("partition", "qos") and not v)}


def wait_until_gone(job_name: str, deadline_s: float, poll_s: float = 0.5) -> None:
    """Block until ``squeue`` lists no job named ``job_name`` (no-op without squeue)."""
    if not shutil.which("squeue"):
        return
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "--noheader", "--name", job_name, "-o", "%i"], capture_output=True,
                             text=True, timeout=60)
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(poll_s)
    raise TaskFailed(f"Slurm jobs named {job_name} still queued after {deadline_s:.0f} s")


def scancel(job_name: str) -> None:
    """Cancel this user's jobs named ``job_name`` (pending or running); silent when Slurm is gone."""
    if shutil.which("scancel"):
        try:
            subprocess.run(["scancel", "--name", job_name, "--user", getpass.getuser()], capture_output=True,
                           timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass


class TaskFailed(RuntimeError):
    """A datatrove task failed (or never finished in time); the message carries its log."""


# datatrove's task logger writes "<time> | ERROR    | module:function:line - message" (logger.exception).
_TASK_ERROR = re.compile(r"\|\s*(ERROR|CRITICAL)\s*\|")
# What slurmstepd / the batch script print when a task dies outside Python (OOM kill, time limit, cancel).
# Slurm >= 22.05 names the host: "slurmstepd-<host>: error: *** JOB 10 ON <host> CANCELLED ...".
_SLURM_ERROR = re.compile(r"slurmstepd(-\S+)?: error|CANCELLED|DUE TO TIME LIMIT|oom[-_ ]kill|Out Of Memory|Traceback"
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
                   since: float | None = None, progress: Callable[[int], None] | None = None) -> None:
    """Block until every rank has a completion marker; raise ``TaskFailed`` with the log on the first failure.

    A failure is a task log with an ERROR line and no marker, a Slurm log with a slurmstepd/OOM/time-limit
    message, or a ``job_states()`` entry in ``FAILED_STATES``; ``deadline_s`` bounds the whole wait. Polls start
    at 1 s and back off to ``poll_s``: a short array (a few seconds per task) is not held up by a 30 s poll.
    """
    start, since = clock(), time.time() if since is None else since
    reported, interval = -1, min(1.0, poll_s)
    while True:
        done = len(_done(logging_dir) & set(range(tasks)))
        if done >= tasks:
            return
        if progress and done != reported:
            progress(done)
            reported = done
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
            raise TaskFailed(f"Slurm array not finished after {deadline_s:.0f} s (slurm.deadline_s): ranks "
                             f"{missing[:10]} have no completion marker in {logging_dir / 'completions'}; "
                             f"check squeue/sacct and {slurm_logs_dir}")
        sleep(interval)
        interval = min(poll_s, interval * 1.5)
