"""A throwaway PostgreSQL server (Debian's postgresql 15) on a free loopback port, for tests.

Recipe from ../shared/notes/ops.md §4: initdb / pg_ctl as the ``postgres`` user in a temp dir, trust auth,
``listen_addresses=127.0.0.1``, fsync off. Nothing of the machine's own clusters is touched.
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(db: str = "dagster") -> Iterator[str]:
    """Yield a ``postgresql+psycopg2://`` URL to a fresh database; the server is stopped and removed after."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    # The postgres user must reach the data dir: not under pytest's 0700 root-owned tmp.
    base = Path(tempfile.mkdtemp(prefix="llmdag-pg-"))
    shutil.chown(base, "postgres", "postgres")
    port = _free_port()

    def as_postgres(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=120)

    as_postgres(str(bindir / "initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "postgres", "--no-sync",
                "-E", "UTF8")
    as_postgres(str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "server.log"), "-w", "-o",
                f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off", "start")
    try:
        as_postgres(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{db}"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(base / "data"),
                        "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
