"""ArtifactStore: where every asset writes, and how it writes without ever exposing half a result.

Layout: ``<root>/<asset key path>/<partition or "_">/``. An asset gets a fresh temp directory next to
its final one, fills it, and ``commit`` renames it into place; a crash leaves only a ``.tmp-*`` dir
that the next attempt ignores and deletes.
"""

from __future__ import annotations

import contextlib
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

    def asset_path(self, context: dg.AssetExecutionContext | dg.OpExecutionContext) -> Path:
        """Final directory of the asset being materialized (its partition if it has one)."""
        key = context.asset_key.path
        partition = context.partition_key if context.has_partition_key else None
        return self.path(key, partition)

    @contextlib.contextmanager
    def writing(self, final: Path) -> Iterator[Path]:
        """Yield a temp dir beside ``final``; on success it atomically replaces ``final``.

        The rename is atomic on one filesystem; the old version is moved aside first (a dir cannot
        be replaced by ``os.replace`` while non-empty) and deleted only after the new one is in place.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if final.exists():
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def scratch(self, key: str | Sequence[str], partition: str | None = None) -> Path:
        """A persistent work dir for resumable state (datatrove logging dirs, training runs)."""
        parts = key.split("/") if isinstance(key, str) else list(key)
        path = Path(self.root).expanduser().resolve().joinpath("_work", *parts, partition or UNPARTITIONED)
        path.mkdir(parents=True, exist_ok=True)
        return path
