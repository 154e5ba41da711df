"""The daemon ``llmdag materialize`` starts: trimmed to a backfill's daemons, and never mistaken for alive.

The whole path (submit, start the daemon, wait, stop it) runs in test_corpus.py's fixture, which drives
the real CLI over the corpus group.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from dagster._core.instance import DagsterInstance
from dagster._daemon import controller
from dagster._daemon.types import DaemonHeartbeat

from pipeline_assets import cli, daemon


@pytest.fixture
def restore_dagster(monkeypatch):
    # configure() patches dagster process-wide; monkeypatch puts the originals back after the test.
    for owner, name in [(DagsterInstance, "get_required_daemon_types"),
                        (controller, "DEFAULT_DAEMON_INTERVAL_SECONDS"), (controller, "RELOAD_WORKSPACE_INTERVAL")]:
        monkeypatch.setattr(owner, name, getattr(owner, name))


def beat(instance, daemon_type="BACKFILL", age_s=0.0):
    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time() - age_s, daemon_type, "test-daemon", []))


def test_only_a_backfills_daemons_run_and_ticks_are_short(instance, restore_dagster):
    assert {"SENSOR", "BACKFILL"} <= set(instance.get_required_daemon_types())  # dagster's own list
    daemon.configure({})
    types = instance.get_required_daemon_types()
    assert "BACKFILL" in types and "QUEUED_RUN_COORDINATOR" in types
    assert not {"SENSOR", "ASSET", "SCHEDULER"} & set(types)
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 10 and controller.RELOAD_WORKSPACE_INTERVAL == 3600


def test_every_daemon_on_request(instance, restore_dagster):
    daemon.configure({"LLMDAG_DAEMON_TYPES": "all", "LLMDAG_DAEMON_TICK_S": "30"})
    assert "SENSOR" in instance.get_required_daemon_types()
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 30


def test_a_stopped_daemons_heartbeats_do_not_pass_for_a_live_one(instance):
    # Before: a second `llmdag materialize` within a minute of the first saw fresh heartbeats, started no
    # daemon and waited forever for a backfill nobody ran.
    beat(instance)
    assert cli.daemon_running(instance)
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    cli.stop_daemon(proc, instance)
    assert not cli.daemon_running(instance)


def test_the_keeper_starts_a_daemon_only_when_none_beats_and_fails_if_it_dies(instance, monkeypatch):
    started = []

    def fake_start():
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                        start_new_session=True))
        return started[-1]

    monkeypatch.setattr(cli, "start_daemon", fake_start)
    keeper = cli.DaemonKeeper(instance, log=lambda line: None)
    beat(instance)
    keeper.check()
    assert not started  # a live daemon (e.g. `dagster dev`) serves the instance
    instance.wipe_daemon_heartbeats()
    beat(instance, age_s=cli.DAEMON_FRESH_S + 5)  # ... and then it stopped mid-backfill
    keeper.check()
    assert len(started) == 1
    keeper.check()
    assert len(started) == 1  # ours is running: not a second one
    started[0].kill()
    started[0].wait()
    with pytest.raises(SystemExit, match="daemon this command started exited"):
        keeper.check()
    keeper.stop()
    assert not cli.daemon_running(instance)
