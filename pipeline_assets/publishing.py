"""How an asset reads its upstream versions and publishes its own: the one place assets touch storage.

``Reads`` resolves each upstream's published version (``current``) and remembers which one it read:
that is the lineage a materialization records (``upstream_versions``). ``finish`` publishes the new
version only when every blocking check passed, so a failed gate leaves the previous good version in
place for downstream, and records ``dagster/uri`` (the version dir) and what the step cost
(``cpu_time_s``, ``peak_rss_mb``: pipeline_assets/step_usage.py) on the materialization. Weights
(any ``*.safetensors`` in the version) are checked finite first: a NaN model is never published.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg

from pipeline_assets.finite import assert_finite_weights
from pipeline_assets.step_usage import step_usage
from resources.storage import ArtifactStore, Draft


class Reads:
    """Upstream artifacts one materialization reads, resolved to the versions published right now."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self.versions: dict[str, str] = {}
        self._paths: dict[str, Path] = {}

    def __call__(self, key: dg.AssetKey, partition: str | None = None) -> Path:
        """The version published now; the same one on every later call, even if ``current`` moves meanwhile."""
        label = key.to_user_string() + (f"[{partition}]" if partition else "")
        if label not in self._paths:
            self._paths[label] = self.store.current(key.path, partition)
            self.versions[label] = self._paths[label].name
        return self._paths[label]

    def many(self, key: dg.AssetKey, partitions: Sequence[str]) -> dict[str, Path]:
        """Every partition of ``key`` that has a published version (unpublished ones are skipped)."""
        return {p: self(key, p) for p in self.store.partitions_with_current(key.path, partitions)}


def partition_of(context: dg.AssetExecutionContext) -> str | None:
    return context.partition_key if context.assets_def.partitions_def is not None else None


@contextlib.contextmanager
def writing(context: dg.AssetExecutionContext, store: ArtifactStore,
            resume_key: str | None = None) -> Iterator[Draft]:
    with store.writing(context.asset_key.path, partition_of(context), context.run_id, resume_key) as draft:
        yield draft


def finish(context: dg.AssetExecutionContext, store: ArtifactStore, draft: Draft, reads: Reads | None,
           metadata: dict, check_results: Sequence[dg.AssetCheckResult] = ()) -> dg.MaterializeResult:
    """Publish ``draft`` unless a blocking check failed; the metadata says which version and from what."""
    assert draft.version is not None, "finish() is called after the writing block"
    blocking = {spec.name for spec in context.assets_def.check_specs if spec.blocking}
    failed = [r.check_name for r in check_results if r.check_name in blocking and not r.passed]
    if failed:
        slot = draft.version.path.parent
        kept = store.current(context.asset_key.path, partition_of(context)).name if (slot / "current").is_dir() \
            else None
        context.log.error(f"blocking checks failed {failed}: {draft.version.name} is kept unpublished; "
                          f"downstream keeps reading {kept or 'nothing (no version passed yet)'}")
    else:
        assert_finite_weights(draft.version.path, where=f"{context.asset_key.to_user_string()} "
                                                        f"{draft.version.name} (kept unpublished)")
        store.publish(draft.version)
    return dg.MaterializeResult(
        metadata={**metadata, **step_usage(), "dagster/uri": dg.MetadataValue.path(str(draft.version.path)),
                  "version": draft.version.name, "published": not failed,
                  **({"upstream_versions": dg.MetadataValue.json(reads.versions)} if reads else {})},
        check_results=list(check_results))
