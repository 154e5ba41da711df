"""Corpus assets: thin wrappers that pick paths and config, call one plain function, report metadata.

Partitioned by source (dynamic partitions "sources"); ``duplicate_clusters`` and ``training_mixture``
read every partition. Each asset carries its data checks (computed from what it just wrote).
"""


import json

import dagster as dg

from pipeline_assets.corpus import checks
from pipeline_assets.corpus.decontaminate import build_index, decontaminate_partition
from pipeline_assets.corpus.dedup import deduplicate_partition, find_duplicates, signatures
from pipeline_assets.corpus.filters import filter_partition
from pipeline_assets.corpus.ingest import ingest_source
from pipeline_assets.corpus.mixture import build_mixture
from pipeline_assets.evals.assets import BENCHMARKS
from pipeline_assets.evals.benchmarks import decontamination_texts
from pipeline_assets.metadata import md_table, path_md
from resources import ArtifactStore, DatatroveExecutorResource, PipelineSettings, SourcesResource
from resources.storage import fingerprint

sources_partitions = dg.DynamicPartitionsDefinition(name="sources")
ALL = dg.AllPartitionMapping()

RAW = dg.AssetKey(["corpus", "raw_documents"])
FILTERED = dg.AssetKey(["corpus", "filtered_documents"])
SIGNATURES = dg.AssetKey(["corpus", "minhash_signatures"])
CLUSTERS = dg.AssetKey(["corpus", "duplicate_clusters"])
DEDUPED = dg.AssetKey(["corpus", "deduplicated_documents"])
DECONT = dg.AssetKey(["corpus", "decontaminated_documents"])
MIXTURE = dg.AssetKey(["corpus", "training_mixture"])


def materialized_partitions(context: dg.AssetExecutionContext, store: ArtifactStore, key: dg.AssetKey) -> list[str]:
    """Registered sources (oldest first: earlier sources win dedup ties) that have data for ``key``."""
    keys = context.instance.get_dynamic_partitions(sources_partitions.name)
    return [p for p in keys if store.path(key.path, p).is_dir()]


@dg.asset(key=RAW, partitions_def=sources_partitions, group_name="corpus", code_version="1", kinds={"python"},
          check_specs=checks.specs(RAW, ["has_documents", "quarantine_below_half"]))
def raw_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                  sources: SourcesResource) -> dg.MaterializeResult:
    """Every record of one source, validated into ``{"id", "text", "metadata"}`` JSONL; bad ones quarantined."""
    cfg = settings.get().corpus
    spec = sources.spec(context.partition_key)
    final = store.asset_path(context)
    with store.writing(final) as work:
        result = ingest_source(spec, work, cfg.tasks, cfg.max_bytes_per_source if spec.kind != "folder" else None,
                               cfg.max_doc_bytes)
        (work / "stats.json").write_text(json.dumps(result, indent=2))
    context.log.info(f"{spec.name}: {result['documents']} documents, {result['quarantined']} quarantined")
    return dg.MaterializeResult(
        metadata={**{k: v for k, v in result.items() if not isinstance(v, dict)},
                  "quarantine_reasons": dg.MetadataValue.json(result["quarantine_reasons"]),
                  "path": path_md(final)},
        check_results=checks.raw(RAW, result))


@dg.asset(key=FILTERED, deps=[RAW], partitions_def=sources_partitions, group_name="corpus", code_version="1",
          kinds={"datatrove"}, check_specs=checks.specs(FILTERED, ["has_documents", "drop_ratio_sane"]))
def filtered_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                       sources: SourcesResource, datatrove: DatatroveExecutorResource) -> dg.MaterializeResult:
    """Language ID, quality filters per domain, PII masking; rejects kept per filter under ``removed/``."""
    cfg = settings.get().corpus
    spec = sources.spec(context.partition_key)
    raw = store.path(RAW.path, context.partition_key)
    final = store.asset_path(context)
    with store.writing(final, fingerprint(raw / "documents", spec.domain, cfg.__dict__)) as work:
        result = filter_partition(raw, work, spec.domain, cfg, datatrove.run)
        (work / "stats_summary.json").write_text(json.dumps(result, indent=2))
    rows = [{"filter": name, "dropped": n, "reasons": ", ".join(f"{k}={v}" for k, v in
                                                                 result["drop_reasons"][name].items())}
            for name, n in result["dropped_by_filter"].items()]
    return dg.MaterializeResult(
        metadata={"documents_in": result["documents_in"], "documents_out": result["documents_out"],
                  "domain": spec.domain, "drops": md_table(rows),
                  "dropped_by_filter": dg.MetadataValue.json(result["dropped_by_filter"]),
                  "pii_documents_masked": result["pii_documents_masked"],
                  "pii_emails_masked": result["pii_emails_masked"],
                  "cpu_s_by_step": dg.MetadataValue.json(result["cpu_s_by_step"]), "path": path_md(final)},
        check_results=checks.filtered(FILTERED, result))


@dg.asset(key=SIGNATURES, deps=[FILTERED], partitions_def=sources_partitions, group_name="corpus",
          code_version="1", kinds={"datatrove"})
def minhash_signatures(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                       datatrove: DatatroveExecutorResource) -> dg.MaterializeResult:
    """MinHash and exact-dedup signatures of one source's filtered documents."""
    cfg = settings.get().corpus
    docs = store.path(FILTERED.path, context.partition_key) / "documents"
    final = store.asset_path(context)
    with store.writing(final, fingerprint(docs, cfg.__dict__)) as work:
        result = signatures(docs, work, cfg, datatrove.run)
    return dg.MaterializeResult(metadata={**result, "path": path_md(final)})


@dg.asset(key=CLUSTERS, deps=[dg.AssetDep(SIGNATURES, partition_mapping=ALL)], group_name="corpus",
          code_version="1", kinds={"datatrove"},
          check_specs=checks.specs(CLUSTERS, ["removal_fraction_sane"]))
def duplicate_clusters(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                       datatrove: DatatroveExecutorResource) -> dg.MaterializeResult:
    """Exact and near-duplicate clusters across ALL sources (earlier-registered sources keep their copy)."""
    cfg = settings.get().corpus
    parts = materialized_partitions(context, store, SIGNATURES)
    if not parts:
        raise ValueError("no corpus/minhash_signatures partition is materialized yet: materialize the "
                         "per-source corpus assets first (`llmdag materialize`)")
    context.log.info(f"clustering duplicates across {len(parts)} sources (priority order): {parts}")
    sig_dirs = {p: store.path(SIGNATURES.path, p) for p in parts}
    final = store.asset_path(context)
    with store.writing(final) as work:
        report = find_duplicates(sig_dirs, work, cfg, datatrove.run)
        (work / "report.json").write_text(json.dumps(report, indent=2))
    return dg.MaterializeResult(
        metadata={k: (dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v) for k, v in report.items()}
        | {"path": path_md(final)},
        check_results=checks.clusters(CLUSTERS, report))


@dg.asset(key=DEDUPED, deps=[FILTERED, CLUSTERS], partitions_def=sources_partitions, group_name="corpus",
          code_version="1", kinds={"datatrove"}, check_specs=checks.specs(DEDUPED, ["unique_ids"]))
def deduplicated_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                           datatrove: DatatroveExecutorResource) -> dg.MaterializeResult:
    """One source with exact copies and near-duplicates (of any source) removed."""
    cfg = settings.get().corpus
    docs = store.path(FILTERED.path, context.partition_key) / "documents"
    clusters = store.path(CLUSTERS.path)
    final = store.asset_path(context)
    with store.writing(final, fingerprint(docs, clusters / "file_index.json", cfg.__dict__)) as work:
        result = deduplicate_partition(docs, clusters, context.partition_key, work, cfg, datatrove.run)
    return dg.MaterializeResult(metadata={**result, "path": path_md(final)},
                                check_results=[checks.unique_ids(DEDUPED, final / "documents")])


@dg.asset(key=DECONT, deps=[DEDUPED, BENCHMARKS], partitions_def=sources_partitions, group_name="corpus",
          code_version="1", kinds={"datatrove"}, check_specs=checks.specs(DECONT, ["no_eval_ngrams_left"]))
def decontaminated_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                             datatrove: DatatroveExecutorResource) -> dg.MaterializeResult:
    """One source with every document that shares an n-gram with an eval item removed."""
    cfg = settings.get().corpus
    docs = store.path(DEDUPED.path, context.partition_key) / "documents"
    bench = store.path(BENCHMARKS.path)
    final = store.asset_path(context)
    with store.writing(final, fingerprint(docs, bench / "manifest.json", cfg.__dict__)) as work:
        ngram_counts = build_index(decontamination_texts(bench), work / "index", cfg)
        result = decontaminate_partition(docs, work / "index", work, cfg, datatrove.run)
        (work / "stats_summary.json").write_text(json.dumps(result, indent=2))
    return dg.MaterializeResult(
        metadata={**{k: v for k, v in result.items() if not isinstance(v, dict)},
                  "contaminated_by_task": dg.MetadataValue.json(result["contaminated_by_task"]),
                  "eval_ngrams_indexed": dg.MetadataValue.json(ngram_counts), "path": path_md(final)},
        check_results=[checks.no_eval_ngrams_left(DECONT, final / "documents", final / "index", cfg)])


@dg.asset(key=MIXTURE, deps=[dg.AssetDep(DECONT, partition_mapping=ALL)], group_name="corpus",
          code_version="1", kinds={"python"},
          check_specs=checks.specs(MIXTURE, ["weights_sum_to_one", "train_val_disjoint"]))
def training_mixture(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                     sources: SourcesResource) -> dg.MaterializeResult:
    """Domain-weighted train/val mixture of every decontaminated source, with ``manifest.json``."""
    cfg = settings.get().corpus
    parts = materialized_partitions(context, store, DECONT)
    if not parts:
        raise ValueError("no corpus/decontaminated_documents partition is materialized yet")
    specs = sources.specs()
    inputs = {p: (specs[p].domain if p in specs else "web", store.path(DECONT.path, p) / "documents") for p in parts}
    final = store.asset_path(context)
    with store.writing(final) as work:
        manifest = build_mixture(inputs, work, cfg)
    rows = [{"split": s, "source": e["source"], "domain": e["domain"], "documents": e["documents"],
             "bytes": e["bytes"], "repeats": e["repeats"]} for s in ("train", "val") for e in manifest[s]]
    return dg.MaterializeResult(
        metadata={"train_documents": manifest["totals"]["train"]["documents"],
                  "train_bytes": manifest["totals"]["train"]["bytes"],
                  "val_documents": manifest["totals"]["val"]["documents"],
                  "val_bytes": manifest["totals"]["val"]["bytes"],
                  "domain_weights": dg.MetadataValue.json(manifest["domain_weights"]),
                  "files": md_table(rows), "manifest": path_md(final / "manifest.json")},
        check_results=checks.mixture(MIXTURE, final))


corpus_assets = [raw_documents, filtered_documents, minhash_signatures, duplicate_clusters,
                 deduplicated_documents, decontaminated_documents, training_mixture]
