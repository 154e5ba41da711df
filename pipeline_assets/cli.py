"""``llmdag``: submit the graph to Dagster headless, as the UI's "Materialize all" does.

    llmdag materialize                          # every asset, every source: one asset backfill
    llmdag materialize --select "group:corpus"  # Dagster's asset selection syntax
    llmdag materialize --partition my_source    # these source partitions (+ what every source feeds)
    llmdag materialize --config run.yaml        # Dagster run config (typed; checked before anything runs)
    llmdag sources                              # list the sources and whether they are registered

``materialize`` registers the sources (what the ``sources`` sensor does in ``dagster dev``), submits one
asset backfill to the DAGSTER_HOME instance (it shows in the UI's Backfills tab), and, unless a Dagster
daemon is already running for that instance, runs ``dagster-daemon`` until the backfill ends. Dagster
decides the runs: per-source assets once per source, cross-source assets once, after every source.

After a crash that killed the last ``materialize`` mid-run (OOM killer, power loss), the next one first marks
the runs whose process is gone failed and gives back their pool slots, cancels the backfill nobody waits for
any more, and, when it is asked for the same thing, requests only what the crashed one had not materialized,
so training resumes from its last complete checkpoint (``recover_after_crash``, ``continuation``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import typing
import warnings
from pathlib import Path

import dagster as dg
import yaml

# No public export in dagster 1.13.27 (dir(dagster) has no BulkActionStatus and no backfill API): the status of
# a backfill is read and set with the enum the UI's GraphQL layer uses (tests/test_crash_recovery.py covers it).
from dagster._core.execution.backfill import BulkActionStatus

from pipeline_assets.asset_keys import RELEASE
from pipeline_assets.automation import ensure_pool_limits, training_limit_below
from pipeline_assets.corpus.assets import sources_partitions
from pipeline_assets.instance_config import ensure_instance_config
from pipeline_assets.names import source_name_problem, validate_source_name
from pipeline_assets.recovery import (
    HOST_TAG,
    OWNER_PID_TAG,
    OWNER_STARTED_TAG,
    PARENT_BACKFILL_TAG,
    RECOVER_EVERY_S,
    continuation,
    process_alive,
    process_start_time,
    recover_after_crash,
    recover_dead_runs,
)

DAEMON_FRESH_S = 60  # a daemon heartbeat younger than this means one is running for this instance


def register_sources(defs: dg.Definitions, instance: dg.DagsterInstance, log=print) -> list[str]:
    """Register every known source as a partition (only valid names); returns the valid registered ones.

    A registered key that is not a valid source name (added through the UI or GraphQL) is warned about and
    left out, so an all-partitions backfill never plans a run that could only fail.
    """
    specs = defs.resources["sources"].specs()
    known = instance.get_dynamic_partitions(sources_partitions.name)
    new = [name for name in specs if name not in known and not source_name_problem(name)]
    if new:
        instance.add_dynamic_partitions(sources_partitions.name, new)
    registered = instance.get_dynamic_partitions(sources_partitions.name)
    for name in registered:
        if problem := source_name_problem(name):
            log(f"warning: registered 'sources' partition {name!r} left out: {problem}; delete it in the UI "
                "(or instance.delete_dynamic_partition('sources', key))")
    return [name for name in registered if not source_name_problem(name)]


def check_partitions(partitions: list[str] | None) -> list[str] | None:
    """``--partition`` values, each a valid source name, else SystemExit naming the bad one and the rule."""
    try:
        return None if partitions is None else [validate_source_name(p, "--partition") for p in partitions]
    except ValueError as e:
        raise SystemExit(str(e)) from None


def validate_run_config(defs: dg.Definitions, keys: list[dg.AssetKey], run_config: dict) -> None:
    """Reject unknown assets, fields and wrong types before any run starts, naming the valid choices."""
    ops = run_config.get("ops", {})
    by_op = {"__".join(k.path): k for k in keys}
    unknown = sorted(set(ops) - set(by_op))
    if unknown:
        raise SystemExit(f"run config names assets that are not selected or do not exist: {unknown}; "
                         f"valid: {sorted(by_op)} (asset key with '/' written as '__')")
    try:
        dg.validate_run_config(defs.resolve_implicit_global_asset_job_def(), {"ops": ops} if ops else {})
    except dg.DagsterInvalidConfigError as e:
        raise SystemExit(f"invalid run config: {e}") from None
    # Types and field names are Dagster's check; ranges are the stage dataclass's validate().
    from pipeline_assets.run_config import check_op_config

    graph = defs.resolve_asset_graph()
    profile = defs.resources["settings"].profile  # the profile name (resources/settings.py)
    for op, op_config in ops.items():
        fn = graph.get(by_op[op]).assets_def.op.compute_fn.decorated_fn
        config_cls = typing.get_type_hints(fn).get("config")
        if isinstance(config_cls, type) and op_config.get("config"):
            try:
                check_op_config(config_cls, op_config["config"], profile)
            except ValueError as e:
                raise SystemExit(f"invalid run config for {by_op[op].to_user_string()}: {e}") from None


def new_backfill(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetKey],
                 partitions: list[str] | None, run_config: dict | None, title: str,
                 tags: dict[str, str] | None = None):
    """The asset backfill of ``keys`` over ``partitions`` (all when None), not yet submitted."""
    # Private module, public behaviour: this is what the UI's launchPartitionBackfill mutation submits; dagster
    # 1.13.27 has no public API that submits an asset backfill without a running webserver.
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    return PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=defs.resolve_asset_graph(), partition_names=partitions,
        asset_selection=keys, backfill_timestamp=time.time(),
        tags={"llmdag/submitted_by": "cli", **(tags or {})},
        dynamic_partitions_store=instance, all_partitions=partitions is None, title=title, description=None,
        run_config=run_config)


def submit_backfill(defs: dg.Definitions, instance: dg.DagsterInstance, keys: list[dg.AssetKey],
                    partitions: list[str] | None, run_config: dict | None, title: str,
                    tags: dict[str, str] | None = None) -> str:
    backfill = new_backfill(defs, instance, keys, partitions, run_config, title, tags)
    instance.add_backfill(backfill)
    return backfill.backfill_id


def owner_tags(wait: bool) -> dict[str, str]:
    """This host, and with ``wait`` this process as the backfill's owner (``--no-wait`` hands it to a daemon)."""
    tags = {HOST_TAG: socket.gethostname()}
    started = process_start_time(os.getpid())
    if wait and started is not None:
        tags |= {OWNER_PID_TAG: str(os.getpid()), OWNER_STARTED_TAG: f"{started:.2f}"}
    return tags


def backfill_title(select: str) -> str:
    """The Backfills tab's title; Dagster refuses % * and quotes in titles, and titles over 100 characters."""
    title = "llmdag materialize " + ("(all assets)" if select == "*" else re.sub(r'[%*"]', "", select))
    return title if len(title) <= 100 else title[:97] + "..."


DAEMON_RECORD = "llmdag-daemon.json"  # in DAGSTER_HOME: the daemon this command last started, and its heartbeat id


def _daemon_record(instance: dg.DagsterInstance) -> Path:
    return Path(instance.root_directory) / DAEMON_RECORD


def _beat_of_dead_daemon(instance: dg.DagsterInstance, daemon_id: str) -> bool:
    """Whether heartbeat id ``daemon_id`` is that of a daemon a `llmdag materialize` on this host started and
    that is gone: after a crash its heartbeats stay younger than DAEMON_FRESH_S for up to a minute, and a
    rerun that took them for a live daemon waited that minute before starting its own."""
    try:
        record = json.loads(_daemon_record(instance).read_text())
    except (OSError, ValueError):
        return False
    return (record.get("daemon_id") == daemon_id and record.get("host") == socket.gethostname()
            and not process_alive(int(record["pid"]), float(record["started_at"])))


def daemon_running(instance: dg.DagsterInstance) -> bool:
    beats = instance.get_daemon_heartbeats()
    beat = beats.get("BACKFILL")
    return (beat is not None and time.time() - beat.timestamp < DAEMON_FRESH_S
            and not _beat_of_dead_daemon(instance, beat.daemon_id))


def start_daemon() -> subprocess.Popen:
    # Own process group, SIGINT not ignored: it then stops in under a second (../shared/notes/ops.md §5).
    log = open(Path(os.environ["DAGSTER_HOME"]) / "llmdag-daemon.log", "ab")  # noqa: SIM115 (lives with the child)
    # LLMDAG_DAEMON_PARENT: the daemon stops when this process is gone, however it died (pipeline_assets/daemon.py).
    return subprocess.Popen([sys.executable, "-m", "pipeline_assets.daemon"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "LLMDAG_DAEMON_PARENT": str(os.getpid())})


def stop_daemon(proc: subprocess.Popen, instance: dg.DagsterInstance) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Its last heartbeats stay younger than DAEMON_FRESH_S for up to a minute: a `llmdag materialize` started
    # in that minute took them for a live daemon and waited for a backfill nobody ran. This daemon was started
    # because none was beating, so the heartbeats are its own; a daemon started meanwhile beats again in 30 s.
    instance.wipe_daemon_heartbeats()
    _daemon_record(instance).unlink(missing_ok=True)


class DaemonKeeper:
    """Runs our own daemon whenever no daemon serves the instance, for as long as a backfill is waited for.

    Checked at every poll, not only at the start: a `dagster dev` that was serving the instance can be
    stopped mid-backfill, and then the backfill would wait forever. The daemon it starts is recorded with its
    heartbeat id (DAEMON_RECORD) once it beats, so a rerun after a crash knows those heartbeats for a dead one's.
    """

    def __init__(self, instance: dg.DagsterInstance, log=print) -> None:
        self.instance, self.log, self.proc = instance, log, None
        self.started_at: float | None = None
        self.recorded = False

    def check(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is not None:
                raise SystemExit(f"the Dagster daemon this command started exited with {self.proc.returncode}; "
                                 "see $DAGSTER_HOME/llmdag-daemon.log")
            if not self.recorded:
                self._record()
            return
        if not daemon_running(self.instance):
            self.log(f"no Dagster daemon has a heartbeat younger than {DAEMON_FRESH_S}s on this instance: "
                     "starting one (log: $DAGSTER_HOME/llmdag-daemon.log)")
            self.proc = start_daemon()
            self.started_at = process_start_time(self.proc.pid)

    def _record(self) -> None:
        beat = self.instance.get_daemon_heartbeats().get("BACKFILL")
        if beat is None or self.started_at is None or beat.timestamp < self.started_at:
            return  # not beating yet: it beats when its daemon loops start
        record = {"host": socket.gethostname(), "pid": self.proc.pid, "started_at": self.started_at,
                  "daemon_id": beat.daemon_id}
        path = _daemon_record(self.instance)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
        self.recorded = True

    def stop(self) -> None:
        if self.proc is not None:
            stop_daemon(self.proc, self.instance)
            self.proc = None


def wait_for(instance: dg.DagsterInstance, backfill_id: str, log=print, poll_s: float = 2.0,
             each_poll: typing.Callable[[], None] = lambda: None):
    seen: dict[str, str] = {}
    while True:
        each_poll()
        backfill = instance.get_backfill(backfill_id)
        for run in instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id})):
            status = run.status.value
            if seen.get(run.run_id) != status:
                seen[run.run_id] = status
                keys = ", ".join(sorted(k.to_user_string() for k in run.asset_selection or []))
                part = run.tags.get("dagster/partition", "")
                log(f"  run {run.run_id[:8]} {status:9s} {keys}" + (f" [{part}]" if part else ""))
        if backfill.status not in (BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING):
            return backfill
        time.sleep(poll_s)


def failed_assets(backfill) -> set[dg.AssetKey]:
    data = backfill.asset_backfill_data
    return set(data.failed_and_downstream_subset.asset_keys) if data is not None else set()


def release_report(instance: dg.DagsterInstance) -> tuple[bool | None, str]:
    """Whether the last release gate evaluation passed, and its reasons (the ``gates_pass`` check)."""
    from pipeline_assets.reports.assets import GATES_CHECK, RELEASE

    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(RELEASE, GATES_CHECK), limit=1)
    if not records or records[0].event is None:
        return None, "release/model was not evaluated"
    evaluation = records[0].event.dagster_event.event_specific_data
    if not isinstance(evaluation, dg.AssetCheckEvaluation):  # planned, but its run failed before the check ran
        return None, "release/model was not evaluated (its run failed before the gates check)"
    return evaluation.passed, evaluation.description or ""


class Every:
    """Call ``fn`` at most once per ``period_s``."""

    def __init__(self, period_s: float, fn: typing.Callable[[], object]) -> None:
        self.period_s, self.fn, self.last = period_s, fn, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.period_s:
            self.last = time.monotonic()
            self.fn()


def _load_config(path: str | None) -> dict | None:
    if not path:
        return None
    text = Path(path).read_text()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def serve(args: argparse.Namespace) -> None:
    """``llmdag serve``: no Dagster instance needed, only the artifact root (LLMDAG_HOME / DAGSTER_HOME)."""
    import dataclasses

    from pipeline_assets.profiles import section_config
    from pipeline_assets.serving.config import ServeConfig
    from pipeline_assets.serving.running import serve_forever

    cfg = section_config(ServeConfig, "serve")
    if args.device:
        cfg = dataclasses.replace(cfg, device=args.device)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the models "
              "(there is no authentication)", file=sys.stderr)
    try:
        serve_forever(args.models, cfg, args.host, args.port)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"llmdag serve: {err}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llmdag", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="submit an asset backfill and run it to the end")
    mat.add_argument("--select", default="*", help='Dagster asset selection, e.g. "group:corpus" (default: all)')
    mat.add_argument("--partition", action="append", help="only this source partition (repeatable)")
    mat.add_argument("--config", help="Dagster run config file (YAML or JSON): {ops: {models__base: {config: ...}}}")
    mat.add_argument("--strict", action="store_true", help="exit non-zero when the release gates block")
    mat.add_argument("--no-wait", action="store_true", help="submit only (a running `dagster dev` executes it)")
    sub.add_parser("sources", help="list the sources this configuration knows")
    srv = sub.add_parser("serve", help="serve checkpoints over an OpenAI-compatible API, with a chat page",
                         description="Serve checkpoints over an OpenAI-compatible API (/v1/models, "
                                     "/v1/chat/completions, /v1/completions, /health), the chat page at /chat.")
    srv.add_argument("models", nargs="*", metavar="STAGE|PATH",
                     help="stage names (grpo, models/sft, release) or checkpoint dirs; default: release "
                          "(what release/model published). Clients send the stage name (or the path) as `model`")
    srv.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--device", help="cpu, cuda, auto (default: the profile's serve.device)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "materialize":
        args.partition = check_partitions(args.partition)  # before any instance or artifact dir is made
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")  # Dagster's own API notes

    if not os.environ.get("DAGSTER_HOME"):
        raise SystemExit("set DAGSTER_HOME (e.g. export DAGSTER_HOME=$PWD/.dagster): backfills run on a "
                         "persistent Dagster instance, the one `dagster dev` shows")
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    ensure_instance_config(Path(os.environ["DAGSTER_HOME"]))
    from pipeline_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    if args.command == "sources":
        from pipeline_assets.corpus.sources import landing_sources_checked

        registered = set(instance.get_dynamic_partitions(sources_partitions.name))
        for name, spec in defs.resources["sources"].specs().items():
            print(f"{name:24s} {spec.kind:16s} {spec.domain:6s} {'registered' if name in registered else 'new'}")
        for problem in landing_sources_checked(Path(defs.resources["sources"].landing))[1]:
            print(f"ignored: {problem.message}", file=sys.stderr)
        for name in sorted(registered):
            if problem := source_name_problem(name):
                print(f"ignored: registered partition {name!r} is not a valid source name ({problem}); delete "
                      "it in the UI", file=sys.stderr)
        return
    selection = dg.AssetSelection.all() if args.select == "*" else dg.AssetSelection.from_string(args.select)
    keys = sorted(selection.resolve(defs.resolve_asset_graph()))
    if not keys:
        raise SystemExit(f"--select {args.select!r} matches no asset")
    run_config = _load_config(args.config)
    if run_config:
        validate_run_config(defs, keys, run_config)
    registered = register_sources(defs, instance)
    # The sources sensor does this in `dagster dev`; the daemon started below runs no sensors.
    training_limit = defs.resources["settings"].pipeline().training_pool_limit
    for pool, limit in ensure_pool_limits(instance, training_limit).items():
        print(f"pool {pool!r} had no limit: set to {limit} (change it in the UI under Deployment > Concurrency)")
    if (below := training_limit_below(instance, training_limit)) is not None:
        print(f"warning: {below}")
    unknown = sorted(set(args.partition or []) - set(registered))
    if unknown:
        raise SystemExit(f"unknown source partitions {unknown}; registered: {registered}")
    dead, abandoned = recover_after_crash(instance)
    if dead or abandoned:
        print(f"recovered from a crash: {len(dead)} run(s) whose process was gone marked failed, "
              f"{len(abandoned)} abandoned backfill(s) canceled")
    t0 = time.time()
    backfill = new_backfill(defs, instance, keys, args.partition, run_config, title=backfill_title(args.select),
                            tags=owner_tags(wait=not args.no_wait))
    rest = continuation(defs, instance, backfill, abandoned) if abandoned else None
    if rest is not None:
        parent = rest.tags[PARENT_BACKFILL_TAG]
        graph = defs.resolve_asset_graph()
        total = backfill.get_asset_backfill_data(graph).target_subset.num_partitions_and_non_partitioned_assets
        left = rest.get_asset_backfill_data(graph).target_subset.num_partitions_and_non_partitioned_assets
        print(f"the same request was interrupted (backfill {parent}): {total - left} of its {total} asset partitions "
              f"were materialized and are kept; training resumes from its checkpoints")
        backfill = rest
    instance.add_backfill(backfill)
    backfill_id = backfill.backfill_id
    print(f"submitted backfill {backfill_id}: {len(keys)} assets over {len(args.partition or registered)} sources "
          f"(see it in `dagster dev` -> Overview -> Backfills)")
    if args.no_wait:
        return
    daemon = DaemonKeeper(instance)
    # Also while waiting: a run worker killed alone (OOM killer) leaves its slots held although its code server
    # reports the run failed; one whose code server died too stays STARTED.
    recover = Every(RECOVER_EVERY_S, lambda: recover_dead_runs(instance))
    try:
        backfill = wait_for(instance, backfill_id, each_poll=lambda: (daemon.check(), recover()))
    finally:
        daemon.stop()
    print(f"backfill {backfill_id} {backfill.status.value} in {time.time() - t0:.0f}s; "
          f"artifacts under {defs.resources['store'].root}")
    failed = {k.to_user_string() for k in failed_assets(backfill)}
    released, why = release_report(instance) if "release/model" in {k.to_user_string() for k in keys} \
        else (None, "")
    behind_release = {k.to_user_string() for k in dg.AssetSelection.assets(RELEASE).downstream().resolve(
        defs.resolve_asset_graph())}  # release/model and what serves it (serving/smoke)
    if released is False and failed <= behind_release:
        # The gate did its job: every asset before it is materialized, the release stays unpublished.
        print("!" * 80 + f"\nrelease/model was not published: the gates blocked it:\n{why}\n"
              "(see the gates_pass check of release/model; --strict makes this an error)\n" + "!" * 80)
        if args.strict:
            raise SystemExit(2)
    elif backfill.status.value != "COMPLETED_SUCCESS":
        raise SystemExit(f"the backfill did not succeed; failed: {sorted(failed) or 'see the daemon log'} "
                         f"(runs and logs in `dagster dev`; daemon log in $DAGSTER_HOME/llmdag-daemon.log)")


if __name__ == "__main__":
    main()
