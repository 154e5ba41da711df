"""``python -m pipeline_assets.daemon``: Dagster's own daemon, ticking backfills every 2 s instead of 30.

``llmdag materialize`` runs this when no daemon serves the instance yet. The default graph's backfill
has about four phases (per-source steps, cross-source clusters, per-source dedup, everything after the
mixture); at Dagster's fixed 30 s backfill tick that is ~2 minutes of waiting on a ~20 minute run. The
interval is a module constant in the pinned dagster (1.13.27), read at each loop start, so setting it
before the daemon starts is enough; everything else is ``dagster-daemon run`` unchanged.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from dagster._daemon import controller
    from dagster._daemon.cli import main as daemon_cli

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = int(os.environ.get("LLMDAG_DAEMON_TICK_S", "2"))
    sys.argv = ["dagster-daemon", "run", "-m", "pipeline_assets.definitions", *sys.argv[1:]]
    sys.exit(daemon_cli())


if __name__ == "__main__":
    main()
