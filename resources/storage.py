"""ArtifactStore: where every asset writes, and how it writes without ever exposing half a result.

Layout: ``<root>/<asset key path>/<partition or "_">/``. An asset gets a fresh temp directory next to
its final one, fills it, and ``commit`` renames it into place; a crash leaves only a ``.tmp-*`` dir
that the next attempt ignores and deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
from pydantic import Field

UNPARTITIONED = "_"


def default_root() -> str:
    """``LLMDAG_HOME``, else ``$DAGSTER_HOME/llmdag``, else ``./.llmdag`` (documented in the README)."""
    if os.environ.get("LLMDAG_HOME"):
        return os.environ["LLMDAG_HOME"]
    if os.environ.get("DAGSTER_HOME"):
        return str(Path(os.environ["DAGSTER_HOME"]) / "llmdag")
    return str(Path.cwd() / ".llmdag")


class ArtifactStore(dg.ConfigurableResource):
    """Local artifact root. Assets record paths; big artifacts never go through pickled IO managers."""

    root: str = Field(description="Artifact root directory; see default_root() for the default.")

    def path(self, key: str | Sequence[str], partition: str | None = None) -> Path:
        parts = key.split("/") if isinstance(key, str) else list(key)
        return Path(self.root).expanduser().resolve().joinpath(*parts, partition or UNPARTITIONED)

    def asset_root(self, key: str | Sequence[str]) -> Path:
        """The directory holding every partition of ``key``."""
        return self.path(key).parent

    def asset_path(self, context: dg.AssetExecutionContext | dg.OpExecutionContext) -> Path:
        """Final directory of the asset being materialized (its partition if it has one)."""
        key = context.asset_key.path
        # A run with a partition key may also materialize unpartitioned assets (e.g. dedup clusters).
        partitioned = context.assets_def.partitions_def is not None
        partition = context.partition_key if partitioned and context.has_partition_key else None
        return self.path(key, partition)

    @contextlib.contextmanager
    def writing(self, final: Path, resume_key: str | None = None) -> Iterator[Path]:
        """Yield a work dir beside ``final``; on success it atomically replaces ``final``.

        With ``resume_key`` (a fingerprint of inputs + config) a failed attempt's work dir is kept and
        handed to the next attempt with the same key, so datatrove skips the ranks it completed.
        The old version is moved aside first (``os.replace`` cannot replace a non-empty dir) and
        deleted only after the new one is in place.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        work = final.parent / f".work-{final.name}-{resume_key}" if resume_key else None
        for stale in final.parent.glob(f".work-{final.name}-*"):
            if stale != work:
                shutil.rmtree(stale, ignore_errors=True)
        if work is None:
            work = Path(tempfile.mkdtemp(prefix=f".work-{final.name}-", dir=final.parent))
        work.mkdir(exist_ok=True)
        try:
            yield work
        except BaseException:
            if not resume_key:
                shutil.rmtree(work, ignore_errors=True)
            raise
        old = None
        if final.exists():
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(work, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def fingerprint(*inputs: Path | str | dict) -> str:
    """Short hash of input files (name, size, mtime) and config values: the resume key of a work dir."""
    h = hashlib.sha1()
    for item in inputs:
        if isinstance(item, Path):
            for path in sorted(p for p in ([item] if item.is_file() else item.rglob("*")) if p.is_file()):
                st = path.stat()
                h.update(f"{path}:{st.st_size}:{st.st_mtime_ns};".encode())
        else:
            h.update(json.dumps(item, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
