"""``python -m pipeline_assets.daemon``: Dagster's own daemon, trimmed to what one backfill needs.

``llmdag materialize`` runs this when no daemon serves the instance yet, and stops it when the backfill
ends. Everything is ``dagster-daemon run`` unchanged except three module-level settings of the pinned
dagster (1.13.27), set before the daemon starts:

- Backfills tick every 10 s instead of 30 (``LLMDAG_DAEMON_TICK_S``). The default graph's backfill has
  four phases (per-source curation, cross-source clusters, per-source dedup, one run for everything
  after the mixture); at 30 s that is ~1 minute of waiting. Not 2 s: each tick of the full graph's
  backfill costs ~0.3 s of CPU in sqlite queries, so at 2 s the daemon took 14% of a core (py-spy) from
  the ~18 minute training run beside it, and a 2-thread torch step stalls when either core is taken.
  The backfill loop reads the constant when it starts.
- Only the backfill's daemons run: backfill, run queue, and run monitoring and retries where the
  instance enables them (``LLMDAG_DAEMON_TYPES``, a comma list of Dagster daemon types, or ``all``).
  Sensors and the automation-condition daemon are for a deployment (``dagster dev``,
  ``dagster-daemon``), and here they cost the training steps beside them a fifth of their speed: on 2
  cores a daemon thread waking up stalls both torch threads. Measured on the reward stage inside a
  backfill (120 LoRA steps): 0.43 s/step with every daemon, 0.33 with these, 0.35 with no daemon at all
  (``dagster asset materialize``). What the sources sensor does for the graph (register the sources,
  give the pools a limit) ``llmdag materialize`` does itself before submitting.
- The code location is loaded once (``LLMDAG_DAEMON_RELOAD_S``, default an hour) instead of every 60 s:
  each reload starts a new code server that imports the whole project (~2.5 s of CPU), and a backfill
  should run the code it was submitted with.

It also stops when the ``llmdag materialize`` that started it is gone (``LLMDAG_DAEMON_PARENT``, which that
command sets), however it went: it runs in a session of its own, so a kill of the command alone (kill -9,
the OOM killer, ``timeout``'s SIGTERM) left it ticking for ever. It stops the way the command stops it
(SIGINT to its process group): the daemon and its code server end, while a run already executing finishes
on its own (the code server waits for it; in a kill -9 of the command mid-pretraining its run went on to
SUCCESS), and the next ``llmdag materialize`` cancels the backfill nobody waits for
(pipeline_assets/cli.py, cancel_abandoned_backfills).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

BACKFILL_DAEMONS = "BACKFILL,QUEUED_RUN_COORDINATOR,MONITORING,EVENT_LOG_CONSUMER"
PARENT_ENV = "LLMDAG_DAEMON_PARENT"
PARENT_POLL_S = 5.0  # a getppid() per poll: free beside training, and the daemon outlives the command <= 5 s


def configure(env: dict[str, str]) -> None:
    """Apply the settings above (from ``env``, e.g. ``os.environ``) to this process's dagster."""
    from dagster import DagsterInstance

    # Private: dagster 1.13.27 has no setting for the daemon's tick or its workspace reload interval (neither in
    # dagster.yaml nor on the `dagster-daemon run` command line); these module constants are the only knob
    # (tests/test_daemon.py checks they still exist and take effect).
    from dagster._daemon import controller

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(env.get("LLMDAG_DAEMON_TICK_S", "10"))
    controller.RELOAD_WORKSPACE_INTERVAL = int(env.get("LLMDAG_DAEMON_RELOAD_S", "3600"))
    keep = env.get("LLMDAG_DAEMON_TYPES", BACKFILL_DAEMONS)
    if keep != "all":
        wanted = set(keep.split(","))
        required = DagsterInstance.get_required_daemon_types
        # The controller starts, and checks the heartbeats of, exactly the types this returns.
        DagsterInstance.get_required_daemon_types = lambda self: [t for t in required(self) if t in wanted]


def exit_with_parent(env: dict[str, str]) -> threading.Thread | None:
    """Once process ``env[PARENT_ENV]`` is no longer this process's parent (it died and this one was
    re-parented), interrupt this process group as ``llmdag materialize`` does when it stops its daemon."""
    if not env.get(PARENT_ENV):
        return None
    parent = int(env[PARENT_ENV])
    # A command started in the background by a non-interactive shell (`llmdag materialize &`, CI scripts)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the interrupt below,
    # and the command's own stop, would do nothing. Called from the main thread, before the daemon starts.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        # The command starts this daemon as a session leader (start_new_session); anywhere else, only itself.
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, name="llmdag-exit-with-parent", daemon=True)
    thread.start()
    return thread


def main() -> None:
    # Private: `dagster-daemon run` is public only as a console script, and the settings above must be applied in
    # the process that runs it; this is the function that script calls.
    from dagster._daemon.cli import main as daemon_cli

    configure(dict(os.environ))
    exit_with_parent(dict(os.environ))
    sys.argv = ["dagster-daemon", "run", "-m", "pipeline_assets.definitions", *sys.argv[1:]]
    sys.exit(daemon_cli())


if __name__ == "__main__":
    main()
