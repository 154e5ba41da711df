"""After a crash: find the runs whose worker died with the machine, fail them and give back their pool
slots, cancel the backfills nobody waits for, and continue the same request from what it had finished.

`llmdag materialize` (pipeline_assets/cli.py) calls ``recover_after_crash`` at start and every
RECOVER_EVERY_S while it waits, and ``continuation`` before submitting a request an abandoned backfill made.
"""

from __future__ import annotations

import os
import socket
import time
import typing
from pathlib import Path

import dagster as dg

# No public export in dagster 1.13.27: the status of a backfill (tests/test_crash_recovery.py covers its use).
from dagster._core.execution.backfill import BulkActionStatus

# Tags on every backfill this command submits (Dagster copies a backfill's tags onto each of its runs): which
# host submitted it and, when the command waits for it, which process owns it (pid and start time, so a pid
# reused after the owner died is not taken for it). A rerun after a crash uses them: see recover_after_crash.
HOST_TAG = "llmdag/host"
OWNER_PID_TAG = "llmdag/owner_pid"
OWNER_STARTED_TAG = "llmdag/owner_started_at"

# When the machine dies mid-run (OOM killer, power loss) with every process of `llmdag materialize` (this
# command, its daemon, the code server, the run worker), nothing in Dagster 1.13.27 notices: the run stays
# STARTED, its training step keeps the one `llmdag_training` pool slot (the next run's step then logs "Step
# blocked by limit for pool" forever) and its backfill stays REQUESTED. Dagster's run monitoring is not the
# fix here: for a STARTED run it asks RunLauncher.check_run_worker_health, which DefaultRunLauncher (this
# instance's launcher: workers are subprocesses of a local code server) does not implement
# (supports_check_run_worker_health is False), so monitoring only times out STARTING and CANCELING runs; it is
# off unless dagster.yaml turns it on, and an instance that already has a dagster.yaml would not get it. Nor
# does DagsterInstance.report_run_failed give back the slots: Dagster frees a finished run's slots only in the
# monitoring daemon's `free_slots_after_run_end_seconds` sweep, off by default as well.
#
# What Dagster does record is the process that executes each run: every event carries the pid of the process
# that emitted it, and the run worker's RUN_START (or, before it, "Started process for run (pid: N)") is
# emitted by the worker itself. That process is alive if a process with that pid exists, is not a zombie, and
# started before the event; a process that started later got a reused pid (pids wrap at pid_max, 32768 on the
# 2-core test machine, and restart from 1 after a reboot).

START_SLACK_S = 2.0  # /proc/stat's btime has 1 s resolution: a start time read back is exact to +-1 s
RECOVER_EVERY_S = 10.0  # while waiting: one check per backfill tick (LLMDAG_DAEMON_TICK_S' default)
# A finished run's worker gives its slots back before it writes its last event (RUN_SUCCESS or RUN_FAILURE);
# one still holding a slot this long after its end lost its worker (its code server reported it failed).
SLOT_GRACE_S = 10.0
WORKER_STARTED = "Started process for run"  # dagster/_grpc/impl.py, written by the run worker itself
LIVE_STATUSES = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when no live process has that pid.

    A zombie counts as gone. Where there is no /proc (not Linux) a live pid's start is unknown: 0.0, so
    it passes for the process it was recorded for (a reused pid is then not detected).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # the command name in parentheses may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


_EARLIEST_BOOT: list[float] = []


def _read_btime() -> float:
    return next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))


def boot_time() -> float:
    """The boot time start times are counted from: the earliest /proc/stat btime this process has read.

    btime is the wall clock minus the uptime, so a wall-clock jump moves it: a VM snapshot restored later
    (the kernel logs "crng reseeded due to virtual machine fork") moved it forward while `llmdag materialize`
    waited, every live run worker then seemed to have started after its own first event, and the command
    marked a training run failed and stopped it. Keeping the earliest value makes such a jump read as an
    older start, which passes; the cost is that a pid reused after a forward jump is taken for the old process.
    """
    _EARLIEST_BOOT[:] = [min([*_EARLIEST_BOOT, _read_btime()])]
    return _EARLIEST_BOOT[0]


def process_alive(pid: int, started_by: float) -> bool:
    """Whether process ``pid`` lives and is the one that existed at ``started_by`` (not a reuse of its pid)."""
    start = process_start_time(pid)
    return start is not None and start <= started_by + START_SLACK_S


def _judged_here(instance: dg.DagsterInstance, tags: typing.Mapping[str, str]) -> bool:
    """Whether this machine can tell if a run's process lives: the run was submitted from here, or the
    instance is a local SQLite file (every daemon and run writing to it runs on this machine)."""
    if HOST_TAG in tags:
        return tags[HOST_TAG] == socket.gethostname()
    return type(instance.run_storage).__name__.startswith("Sqlite")


def run_process(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when) of the process executing the run, as the run's own events recorded it; None if none has."""
    found = None
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.RUN_START, dg.DagsterEventType.ENGINE_EVENT}):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.RUN_START and event.pid is not None:
            found = (event.pid, entry.timestamp)
        elif (event.message or "").startswith(WORKER_STARTED) and "pid" in event.engine_event_data.metadata:
            found = (int(event.engine_event_data.metadata["pid"].value), entry.timestamp)
    return found


def why_dead(instance: dg.DagsterInstance, record: dg.RunRecord, now: float) -> str | None:
    """Why the STARTING / STARTED / CANCELING run of ``record`` has no live process, or None if it may have one."""
    run = record.dagster_run
    process = run_process(instance, run.run_id)
    if process is not None:
        pid, since = process
        if process_alive(pid, since):
            return None
        return (f"the process that executed it (pid {pid} on {socket.gethostname()}) is gone: killed with the "
                "rest of the command, e.g. by the OOM killer or a power loss")
    if run.status == dg.DagsterRunStatus.STARTING:
        # Dagster's own rule for a launch that never started (run monitoring's start_timeout_seconds).
        timeout = instance.run_monitoring_start_timeout_seconds
        launched = instance.get_run_stats(run.run_id).launch_time or record.create_timestamp.timestamp()
        if now - launched > timeout:
            return f"no process started it within {timeout} s of its launch"
    return None


def owner_alive(tags: typing.Mapping[str, str]) -> bool | None:
    """Whether the `llmdag materialize` that waits for this backfill lives; None: none owns it here."""
    if OWNER_PID_TAG not in tags or tags.get(HOST_TAG) != socket.gethostname():
        return None
    start = process_start_time(int(tags[OWNER_PID_TAG]))
    return start is not None and abs(start - float(tags[OWNER_STARTED_TAG])) <= START_SLACK_S


def free_slots_of(instance: dg.DagsterInstance, run_id: str) -> None:
    # No public API gives back a run's pool slots; this is the call Dagster's own monitoring daemon makes
    # (dagster/_daemon/monitoring/concurrency.py), which also drops the run's steps waiting in a pool.
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def recover_dead_runs(instance: dg.DagsterInstance, log=print) -> list[str]:
    """Mark every run whose process is gone as failed (CANCELING ones as canceled) and give back its pool
    slots, and the slots a finished run still holds; returns the runs marked. Only where a run's process
    is a process of this machine: DefaultRunLauncher (other launchers' workers are not local processes, and
    those launchers implement check_run_worker_health for Dagster's run monitoring)."""
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []
    now = time.time()
    marked = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=list(LIVE_STATUSES))):
        run = record.dagster_run
        if not _judged_here(instance, run.tags) or (why := why_dead(instance, record, now)) is None:
            continue
        message = (f"llmdag: {why}. Marked {'canceled' if run.status == dg.DagsterRunStatus.CANCELING else 'failed'} "
                   "by `llmdag materialize`, which gave back its pool slots; rerunning the same `llmdag "
                   "materialize` resumes training from the last complete checkpoint.")
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
        free_slots_of(instance, run.run_id)
        keys = ", ".join(sorted(k.to_user_string() for k in run.asset_selection or []))
        log(f"run {run.run_id[:8]} ({keys}) was {run.status.value} but {why}: marked "
            f"{'canceled' if run.status == dg.DagsterRunStatus.CANCELING else 'failed'}, its pool slots freed")
        marked.append(run.run_id)
    storage = instance.event_log_storage
    holders = storage.get_concurrency_run_ids() if storage.supports_global_concurrency_limits else set()
    if holders:
        for record in instance.get_run_records(dg.RunsFilter(run_ids=list(holders), statuses=FINISHED_STATUSES)):
            if record.end_time is not None and now - record.end_time > SLOT_GRACE_S:
                free_slots_of(instance, record.dagster_run.run_id)
    return marked


def cancel_abandoned_backfills(instance: dg.DagsterInstance, dead_runs: typing.Collection[str],
                               log=print) -> list[str]:
    """Cancel each `llmdag materialize` backfill nobody waits for any more: its owner (the command that
    submitted it and waited) is dead, or, submitted by a version that recorded no owner, one of its runs was
    just found dead. Its queued runs are canceled at once (the run queue would otherwise launch them beside
    the rerun's), runs never submitted are marked canceled, and the backfill becomes CANCELING, as the UI's
    cancel button does: the backfill daemon cancels the rest and marks it CANCELED; returns their ids."""
    dead = set(dead_runs)
    canceled = []
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        if backfill.tags.get("llmdag/submitted_by") != "cli":
            continue
        alive = owner_alive(backfill.tags)
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        if not (alive is False or (HOST_TAG not in backfill.tags and dead & {r.run_id for r in runs})):
            continue
        for run in runs:
            # What Dagster's backfill cancellation does to a queued run (cancel_backfill_runs_and_cancellation_
            # complete); a run never submitted would keep the backfill CANCELING for ever, so it goes too.
            if run.status == dg.DagsterRunStatus.QUEUED:
                instance.report_run_canceling(run, message="Canceling run from the queue.")
                instance.report_run_canceled(run, "llmdag: its backfill was abandoned (its owner is gone)")
            elif run.status == dg.DagsterRunStatus.NOT_STARTED:
                instance.report_run_canceled(run, "llmdag: its backfill was abandoned before it was submitted")
        instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELING))
        log(f"backfill {backfill.backfill_id} ({backfill.title}) was left REQUESTED by a `llmdag materialize` "
            "that is gone: canceled")
        canceled.append(backfill.backfill_id)
    return canceled


def recover_after_crash(instance: dg.DagsterInstance, log=print) -> tuple[list[str], list[str]]:
    """What a rerun does first: dead runs failed and their slots freed, abandoned backfills canceled."""
    dead = recover_dead_runs(instance, log)
    return dead, cancel_abandoned_backfills(instance, dead, log)


# The tags of a re-executed backfill, as the UI's "Re-execute" sets them (dagster/_core/storage/tags.py).
ROOT_BACKFILL_TAG = "dagster/root_backfill_id"
PARENT_BACKFILL_TAG = "dagster/parent_backfill_id"


def continuation(defs: dg.Definitions, instance: dg.DagsterInstance, backfill, abandoned: typing.Sequence[str]):
    """What is left of ``backfill`` after a crash, as a backfill of its own; None when none of the
    ``abandoned`` backfills (newest first) was the same request (assets, partitions, run config).

    Why not simply submit ``backfill`` again: every asset it re-materializes gets a new version, and a
    training stage resumes only from a work dir keyed by the versions it trains from (models/base: the run
    dir's key holds the token shards' version path; the TRL stages: ``_resume_key``, upstream versions and
    config). Re-curating and re-tokenizing first would give models/base and everything after it new keys,
    and training would start from step 0. So, as the UI's "Re-execute backfill > From failure" does, the
    asset partitions the crashed request (and any earlier continuation of it) already materialized are kept
    and only the rest is requested; their materializations are read from the runs' events, since the dead
    run's own ones (e.g. the tokenizer, materialized in the run that then died in models/base) never
    reached the abandoned backfill's bookkeeping.
    """
    # Private: no public API builds a backfill from an asset subset (the UI's retry mutation calls these).
    from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
    from dagster._core.definitions.events import AssetKeyPartitionKey
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    graph = defs.resolve_asset_graph()
    target = backfill.get_asset_backfill_data(graph).target_subset
    for backfill_id in abandoned:
        old = instance.get_backfill(backfill_id)
        root_id = old.tags.get(ROOT_BACKFILL_TAG, old.backfill_id)
        root = instance.get_backfill(root_id)
        try:
            same = (root is not None and (root.run_config or {}) == (backfill.run_config or {})
                    and root.get_asset_backfill_data(graph).target_subset == target)
        except Exception:  # an asset of the old request is gone from the code: not the same request
            same = False
        if not same:
            continue
        runs = [*instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": root_id})),
                *instance.get_runs(dg.RunsFilter(tags={ROOT_BACKFILL_TAG: root_id}))]
        done = {AssetKeyPartitionKey(e.dagster_event.asset_key, e.dagster_event.partition) for run in runs
                for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)}
        rest = target - AssetGraphSubset.from_asset_partition_set(done, graph)
        if rest.is_empty or rest == target:
            return None
        title = f"Re-execution of {root.title or root.backfill_id}"
        return PartitionBackfill.from_asset_graph_subset(
            backfill_id=make_new_backfill_id(), backfill_timestamp=time.time(), dynamic_partitions_store=instance,
            tags={**backfill.tags, PARENT_BACKFILL_TAG: old.backfill_id, ROOT_BACKFILL_TAG: root_id},
            asset_graph_subset=rest, title=title if len(title) <= 100 else title[:97] + "...", description=None,
            run_config=backfill.run_config)
    return None
