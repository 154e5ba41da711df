"""The ``dagster.yaml`` that ``llmdag materialize`` writes into a DAGSTER_HOME that has none.

Two variants, chosen by whether ``DAGSTER_PG_URL`` is set when the file is first written:

- local (SQLite, Dagster's default storage): only the run queue is tuned. Dagster checks it every 5 s and
  launches queued runs one after another; the default graph's backfill has ~14 runs in four phases, so that
  default alone adds ~20 s of queueing to a ~2 minute corpus group.
- deployment (``DAGSTER_PG_URL=postgresql+psycopg2://user@host:5432/db``): runs, event log and schedules in
  PostgreSQL, so a webserver, a daemon and run workers on several machines share one instance; run monitoring
  on (``dagster/max_runtime`` tags and crashed run workers are acted on); a run whose worker crashed is retried
  once, while a failed step is not retried at run level: the training assets resume from their own last
  complete checkpoint, which a fresh run would discard; every pool defaults to one step at a time (the
  cross-source corpus pool needs exactly that, and a deployment's GPU trains one step at a time).

The file is the user's after that: it is never rewritten.
"""

from __future__ import annotations

import os
from pathlib import Path

PG_URL_ENV = "DAGSTER_PG_URL"

_RUN_QUEUE = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
    dequeue_num_workers: 4
"""

LOCAL_YAML = ("# Written by `llmdag materialize` because this DAGSTER_HOME had no dagster.yaml; edit freely.\n"
              + _RUN_QUEUE)

POSTGRES_YAML = f"""\
# Written by `llmdag materialize` because this DAGSTER_HOME had no dagster.yaml and {PG_URL_ENV} was set;
# edit freely (pipeline_assets/instance_config.py says why each section is here).
storage:
  postgres:
    postgres_url:
      env: {PG_URL_ENV}
{_RUN_QUEUE}run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  cancel_timeout_seconds: 300
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
concurrency:
  pools:
    granularity: op
    default_limit: 1
telemetry:
  enabled: false
"""


def check_pg_url(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, which dagster-postgres does not install."""
    if not url.startswith("postgresql+psycopg2://"):
        raise SystemExit(f"{PG_URL_ENV}={url.split('@')[-1]!r}...: use a postgresql+psycopg2://user@host:port/db "
                         "URL (a plain postgresql:// URL selects the psycopg 3 driver, which is not installed)")
    return url


def instance_yaml() -> str:
    url = os.environ.get(PG_URL_ENV)
    return POSTGRES_YAML if url and check_pg_url(url) else LOCAL_YAML


def ensure_instance_config(home: Path) -> None:
    """Write the instance config where none exists (atomically: a reader never sees half a file)."""
    if url := os.environ.get(PG_URL_ENV):
        check_pg_url(url)
    path = home / "dagster.yaml"
    if not path.exists():
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(instance_yaml())
        tmp.replace(path)
        storage = "PostgreSQL storage" if os.environ.get(PG_URL_ENV) else "SQLite storage"
        print(f"wrote {path} ({storage}; run queue checked every second)")
