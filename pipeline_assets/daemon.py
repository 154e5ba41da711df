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
"""

from __future__ import annotations

import os
import sys

BACKFILL_DAEMONS = "BACKFILL,QUEUED_RUN_COORDINATOR,MONITORING,EVENT_LOG_CONSUMER"


def configure(env: dict[str, str]) -> None:
    """Apply the settings above (from ``env``, e.g. ``os.environ``) to this process's dagster."""
    from dagster._core.instance import DagsterInstance
    from dagster._daemon import controller

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(env.get("LLMDAG_DAEMON_TICK_S", "10"))
    controller.RELOAD_WORKSPACE_INTERVAL = int(env.get("LLMDAG_DAEMON_RELOAD_S", "3600"))
    keep = env.get("LLMDAG_DAEMON_TYPES", BACKFILL_DAEMONS)
    if keep != "all":
        wanted = set(keep.split(","))
        required = DagsterInstance.get_required_daemon_types
        # The controller starts, and checks the heartbeats of, exactly the types this returns.
        DagsterInstance.get_required_daemon_types = lambda self: [t for t in required(self) if t in wanted]


def main() -> None:
    from dagster._daemon.cli import main as daemon_cli

    configure(dict(os.environ))
    sys.argv = ["dagster-daemon", "run", "-m", "pipeline_assets.definitions", *sys.argv[1:]]
    sys.exit(daemon_cli())


if __name__ == "__main__":
    main()
