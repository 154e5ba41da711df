"""A rerun of ``llmdag materialize`` after a crash that killed every process of the last one.

Before: the dead run stayed STARTED and kept the one ``llmdag_training`` pool slot, so the rerun's
``models/base`` waited for ever (its run QUEUED behind the pool, or "Step blocked by limit for pool
llmdag_training"), and the dead backfill stayed REQUESTED. The unit tests below fake the dead run in an
instance (seconds); the last test kills a real ``llmdag materialize`` mid-training with SIGKILL, reruns it,
and checks that training resumed from the checkpoint on the tokenizer the dead run had made.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import latest_metadata, materialize_in_process
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.utils import make_new_run_id
from dagster._daemon.types import DaemonHeartbeat

from pipeline_assets import cli, recovery
from pipeline_assets.pools import TRAINING_POOL

REPO = Path(__file__).resolve().parents[1]
STEP = "models__base"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def started_run(instance: dg.DagsterInstance, pid: int | None, age_s: float = 0.0,
                status: dg.DagsterRunStatus = dg.DagsterRunStatus.STARTED, tags: dict | None = None) -> dg.DagsterRun:
    """A run in ``status`` whose RUN_START was emitted ``age_s`` ago by process ``pid`` (as a run worker's is)."""
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id=make_new_run_id(), status=status,
                        tags={recovery.HOST_TAG: socket.gethostname(), **(tags or {})})
    instance.add_run(run)
    if pid is not None:
        instance.event_log_storage.store_event(EventLogEntry(
            error_info=None, level="DEBUG", user_message="", run_id=run.run_id, timestamp=time.time() - age_s,
            dagster_event=DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value,
                                       job_name=run.job_name, pid=pid)))
    return run


def claims(instance: dg.DagsterInstance) -> list[str]:
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(TRAINING_POOL).claimed_slots]


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    [event] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return event.dagster_event.message


def test_dead_run_is_failed_and_its_pool_slot_freed(instance):
    storage = instance.event_log_storage
    storage.set_concurrency_slots(TRAINING_POOL, 1)
    dead = started_run(instance, dead_pid())
    live = started_run(instance, os.getpid())
    assert storage.claim_concurrency_slot(TRAINING_POOL, dead.run_id, STEP).is_claimed
    rerun = make_new_run_id()
    assert not storage.claim_concurrency_slot(TRAINING_POOL, rerun, STEP).is_claimed  # the defect: blocked

    logged = []
    assert recovery.recover_dead_runs(instance, log=logged.append) == [dead.run_id]
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert "is gone" in failure_message(instance, dead.run_id)
    assert "resumes training from the last complete checkpoint" in failure_message(instance, dead.run_id)
    assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED
    assert dead.run_id not in claims(instance)
    assert storage.claim_concurrency_slot(TRAINING_POOL, rerun, STEP).is_claimed  # the rerun's step goes on
    assert "marked failed, its pool slots freed" in logged[0]
    assert recovery.recover_dead_runs(instance) == []  # nothing twice


def test_a_reused_pid_does_not_pass_for_the_dead_worker(instance):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # The worker started 60 s ago; the process that has its pid now started after it.
        run = started_run(instance, other.pid, age_s=60)
        assert recovery.recover_dead_runs(instance) == [run.run_id]
    finally:
        other.kill()
        other.wait()


def test_worker_pid_from_dagsters_started_process_event(instance):
    # A launched run's worker reports "Started process for run (pid: N)" before its RUN_START.
    from dagster._grpc import impl

    assert f'f"{recovery.WORKER_STARTED} (pid: {{pid}})."' in inspect.getsource(impl)  # the text dagster 1.13.27 writes
    run = started_run(instance, None, status=dg.DagsterRunStatus.STARTING)
    pid = dead_pid()
    instance.report_engine_event(f"{recovery.WORKER_STARTED} (pid: {pid}).", run, EngineEventData.in_process(pid))
    assert recovery.run_process(instance, run.run_id)[0] == pid
    assert recovery.recover_dead_runs(instance) == [run.run_id]


def test_starting_run_without_worker_fails_only_after_dagsters_start_timeout(instance, monkeypatch):
    run = started_run(instance, None, status=dg.DagsterRunStatus.STARTING)
    assert recovery.recover_dead_runs(instance) == []  # its worker may still be starting
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + instance.run_monitoring_start_timeout_seconds + 5)
    assert recovery.recover_dead_runs(instance) == [run.run_id]


def test_canceling_run_with_dead_worker_ends_canceled(instance):
    run = started_run(instance, dead_pid(), status=dg.DagsterRunStatus.CANCELING)
    recovery.recover_dead_runs(instance)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED


def test_other_hosts_runs_are_left_alone(instance):
    run = started_run(instance, dead_pid(), tags={recovery.HOST_TAG: "another-host"})
    assert recovery.recover_dead_runs(instance) == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


def test_slots_kept_by_a_run_its_code_server_failed_are_freed(instance, monkeypatch):
    # A worker killed alone (OOM killer): its code server reports the run failed, but Dagster keeps its slots.
    storage = instance.event_log_storage
    storage.set_concurrency_slots(TRAINING_POOL, 1)
    run = started_run(instance, dead_pid())
    storage.claim_concurrency_slot(TRAINING_POOL, run.run_id, STEP)
    instance.report_run_failed(run)
    assert claims(instance) == [run.run_id]
    recovery.recover_dead_runs(instance)
    assert claims(instance) == [run.run_id]  # within SLOT_GRACE_S of its end: its worker may be finishing
    monkeypatch.setattr(recovery, "SLOT_GRACE_S", -1.0)
    recovery.recover_dead_runs(instance)
    assert claims(instance) == []


@dg.asset
def _one() -> None:
    pass


def _backfill(instance: dg.DagsterInstance, tags: dict) -> str:
    return cli.submit_backfill(dg.Definitions(assets=[_one]), instance, [_one.key], None, None, "test", tags=tags)


def test_abandoned_backfill_is_canceled_and_its_queued_runs_with_it(instance):
    gone = {recovery.HOST_TAG: socket.gethostname(), recovery.OWNER_PID_TAG: str(dead_pid()),
            recovery.OWNER_STARTED_TAG: f"{time.time() - 5:.2f}"}
    abandoned = _backfill(instance, gone)
    waited_for = _backfill(instance, cli.owner_tags(wait=True))  # this process waits for it
    handed_to_dagster_dev = _backfill(instance, cli.owner_tags(wait=False))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("llmdag"), "__repository__"),
                             "__ASSET_JOB")  # a queued run needs one
    queued, unsubmitted = (instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=make_new_run_id(),
                                                          tags={"dagster/backfill": abandoned},
                                                          remote_job_origin=origin)) for _ in range(2))
    instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.RUN_ENQUEUED.value, queued.job_name), queued.run_id)
    assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.QUEUED

    assert recovery.recover_after_crash(instance, log=lambda line: None) == ([], [abandoned])
    assert instance.get_backfill(abandoned).status == cli.BulkActionStatus.CANCELING  # the daemon ends it
    assert instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.CANCELED
    assert instance.get_run_by_id(unsubmitted.run_id).status == dg.DagsterRunStatus.CANCELED
    for backfill_id in (waited_for, handed_to_dagster_dev):
        assert instance.get_backfill(backfill_id).status == cli.BulkActionStatus.REQUESTED


def test_backfill_without_owner_is_canceled_when_its_run_died(instance):
    # Submitted by an llmdag that recorded no owner: abandoned when one of its runs was found dead.
    old = _backfill(instance, {})
    run = started_run(instance, dead_pid(), tags={"dagster/backfill": old})
    assert recovery.recover_after_crash(instance, log=lambda line: None) == ([run.run_id], [old])


@dg.asset
def _upstream() -> None:
    pass


@dg.asset(deps=[_upstream])
def _downstream() -> None:
    pass


def test_rerun_of_the_same_request_keeps_what_the_crashed_one_materialized(instance):
    defs = dg.Definitions(assets=[_upstream, _downstream])
    keys = [_upstream.key, _downstream.key]
    gone = {recovery.HOST_TAG: socket.gethostname(), recovery.OWNER_PID_TAG: str(dead_pid()),
            recovery.OWNER_STARTED_TAG: f"{time.time() - 5:.2f}"}
    crashed = cli.submit_backfill(defs, instance, keys, None, {}, "test", tags=gone)
    # Its run materialized the upstream asset, then died in the downstream one.
    dg.materialize([_upstream], instance=instance, tags={"dagster/backfill": crashed})
    _, abandoned = recovery.recover_after_crash(instance, log=lambda line: None)
    assert abandoned == [crashed]

    rerun = cli.new_backfill(defs, instance, keys, None, {}, "test", cli.owner_tags(wait=True))
    rest = recovery.continuation(defs, instance, rerun, abandoned)
    assert rest.asset_selection == [_downstream.key]
    assert rest.tags[recovery.PARENT_BACKFILL_TAG] == rest.tags[recovery.ROOT_BACKFILL_TAG] == crashed
    assert rest.tags[recovery.OWNER_PID_TAG] == str(os.getpid())
    # ... and after a second crash, the continuation's runs count too (the root request is compared).
    instance.add_backfill(rest.with_status(cli.BulkActionStatus.CANCELED))
    again = recovery.continuation(defs, instance, rerun, [rest.backfill_id])
    assert again.asset_selection == [_downstream.key] and again.tags[recovery.ROOT_BACKFILL_TAG] == crashed
    # Another request, or other run config: everything is requested again.
    other = cli.new_backfill(defs, instance, [_downstream.key], None, {}, "test", {})
    assert recovery.continuation(defs, instance, other, abandoned) is None
    configured = cli.new_backfill(defs, instance, keys, None, {"ops": {"_upstream": {}}}, "test", {})
    assert recovery.continuation(defs, instance, configured, abandoned) is None


def test_heartbeats_of_a_dead_llmdag_daemon_do_not_pass_for_a_live_one(instance, monkeypatch):
    # After a crash the dead daemon's heartbeats stay fresh for up to DAEMON_FRESH_S: the rerun waited that long.
    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "BACKFILL", "dead-daemon", []))
    assert cli.daemon_running(instance)  # nothing known about it: could be `dagster dev`
    record = {"host": socket.gethostname(), "pid": dead_pid(), "started_at": time.time() - 30,
              "daemon_id": "dead-daemon"}
    (Path(instance.root_directory) / cli.DAEMON_RECORD).write_text(json.dumps(record))
    assert not cli.daemon_running(instance)
    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "BACKFILL", "dagster-dev", []))
    assert cli.daemon_running(instance)  # another daemon beats now


def test_the_keeper_records_the_daemon_it_started(instance, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    monkeypatch.setattr(cli, "start_daemon", lambda: proc)
    keeper = cli.DaemonKeeper(instance, log=lambda line: None)
    keeper.check()
    assert keeper.proc is proc and not (Path(instance.root_directory) / cli.DAEMON_RECORD).exists()
    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() + 1, "BACKFILL", "ours", []))
    keeper.check()
    record = json.loads((Path(instance.root_directory) / cli.DAEMON_RECORD).read_text())
    assert record["pid"] == proc.pid and record["daemon_id"] == "ours"
    assert cli.daemon_running(instance)  # alive
    keeper.stop()
    assert not (Path(instance.root_directory) / cli.DAEMON_RECORD).exists()


def test_the_daemon_stops_when_the_command_that_started_it_is_gone(tmp_path):
    # The command (here a stand-in) starts the daemon in a session of its own, then dies with kill -9.
    daemon = ("import os, time; from pipeline_assets import daemon; daemon.PARENT_POLL_S = 0.1; "
              "daemon.exit_with_parent(dict(os.environ)); time.sleep(60)")
    command = (f"import os, subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {daemon!r}], "
               "start_new_session=True, env={**os.environ, 'LLMDAG_DAEMON_PARENT': str(os.getpid())}); "
               "print(p.pid, flush=True); os.kill(os.getpid(), 9)")
    out = subprocess.run([sys.executable, "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.time() + 30
    while recovery.process_start_time(pid) is not None:
        assert time.time() < deadline, "the daemon outlived the command that started it"
        time.sleep(0.1)


# --- end to end: kill -9 every process of `llmdag materialize` while models/base trains, then rerun ---------

BASE = {"max_steps": 40, "eval_every": 40, "checkpoint_every": 10, "log_every": 10}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """An artifact root of its own with the curated corpus (~30 s on 2 cores): the CLI publishes a tokenizer
    and a models/base into it that no other test may read."""
    from pipeline_assets.definitions import build_definitions

    root = tmp_path_factory.mktemp("crash_root")
    defs = build_definitions(root=str(root), landing=str(root / "landing"), builtin_sources=True)
    with dg.instance_for_test() as inst:
        materialize_in_process(defs, inst, dg.AssetSelection.groups("corpus").upstream())
    return root


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2:].split()[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _kill_everything(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the command and every process it started (its daemon runs in a process group of its own, the
    code server and the run worker in the daemon's). Frozen first, so none sees another die and reacts (a code
    server would report its dead worker's run failed: the crash leaves nobody to do that)."""
    tree = _descendants(proc.pid)
    for pid in tree:
        os.kill(pid, signal.SIGSTOP)
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    return tree


def _checkpoints(root: Path) -> list[int]:
    return sorted(int(p.parent.name.removeprefix("step_")) for p in root.glob("_runs/models/base/*/*/step_*/meta.json"))


def test_rerun_after_kill_9_of_everything_finishes_and_resumes_training(corpus, tmp_path):
    # The tokenizer and models/base run in one run (Dagster plans one for the unpartitioned assets), so the run
    # that dies in models/base has materialized the tokenizer: the rerun must keep it, or models/base trains
    # from new token shards, in a new run dir, from step 0.
    home = tmp_path / "dagster_home"
    (tmp_path / "base.yaml").write_text(json.dumps({"ops": {"models__base": {"config": BASE}}}))
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDAG_HOME": str(corpus),
           "LLMDAG_LANDING": str(corpus / "landing"), "LLMDAG_DAEMON_TICK_S": "2"}
    cmd = [sys.executable, "-m", "pipeline_assets.cli", "materialize",
           "--select", 'group:tokenizer or key:"models/base"', "--config", str(tmp_path / "base.yaml")]
    t0 = time.time()
    with open(tmp_path / "first.log", "w") as out:
        first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            while not _checkpoints(corpus):  # a complete checkpoint: training is under way
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.time() - t0 < 300, "no checkpoint within 300 s"
                time.sleep(0.5)
        finally:
            killed = _kill_everything(first)
    assert len(killed) >= 4  # the command, its daemon, the code server, the run worker
    resume_step = _checkpoints(corpus)[-1]
    assert resume_step < BASE["max_steps"]

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    shards = dg.AssetKey(["tokenizer", "tokenized_shards"])
    try:
        [dead] = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED  # what the crash leaves: nothing marks it failed
        assert claims(instance) == [dead.run_id]  # ... and it keeps the training pool's one slot
        [old_backfill] = instance.get_backfills()
        # The dead daemon's heartbeats are still fresh: the rerun must not take them for a live daemon (it waited
        # up to DAEMON_FRESH_S for them to age before starting its own).
        assert time.time() - instance.get_daemon_heartbeats()["BACKFILL"].timestamp < cli.DAEMON_FRESH_S
        assert not cli.daemon_running(instance)
        shards_version = latest_metadata(instance, ["tokenizer", "tokenized_shards"])["dagster/uri"]
        t1 = time.time()
        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        rerun_s = time.time() - t1
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
        assert f"run {dead.run_id[:8]} (models/base, " in rerun.stdout and "process that executed it" in rerun.stdout
        assert f"interrupted (backfill {old_backfill.backfill_id}): 2 of its 3 asset partitions" in rerun.stdout
        runs = instance.get_runs()
        assert not [r for r in runs if r.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING)]
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert "is gone" in failure_message(instance, dead.run_id)
        assert instance.get_backfill(old_backfill.backfill_id).status == cli.BulkActionStatus.CANCELED
        assert claims(instance) == []
        # The tokenizer the dead run made is kept; models/base trained on it and resumed from its checkpoint.
        assert len(instance.fetch_materializations(shards, limit=5).records) == 1
        assert latest_metadata(instance, ["tokenizer", "tokenized_shards"])["dagster/uri"] == shards_version
        meta = latest_metadata(instance, ["models", "base"])
        assert meta["resumed_from_step"] == resume_step and meta["steps"] == BASE["max_steps"]
        print(f"first run killed after {t1 - t0:.0f}s at checkpoint {resume_step}; rerun {rerun_s:.0f}s")
    finally:
        instance.dispose()


def test_a_wall_clock_jump_does_not_make_live_processes_look_reused(monkeypatch):
    """A VM snapshot restored later moves /proc/stat's btime forward by the pause: the live processes must still
    pass for the ones recorded before it (a fresh clone's `llmdag materialize` stopped a live SFT run so)."""
    btime = recovery._read_btime()
    me = recovery.process_start_time(os.getpid())
    assert me is not None and recovery.process_alive(os.getpid(), me)
    monkeypatch.setattr(recovery, "_read_btime", lambda: btime + 3600.0)  # the clock jumped an hour forward
    assert recovery.process_start_time(os.getpid()) == me
    assert recovery.process_alive(os.getpid(), me)
