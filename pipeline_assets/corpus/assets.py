"""Corpus assets: thin wrappers that pick paths and config, call one plain function, report metadata.

Partitioned by source (dynamic partitions "sources"); ``duplicate_clusters`` and ``training_mixture``
read every published partition. Each asset carries its data checks, evaluated on the new version
before it is published (pipeline_assets/publishing.py). Every asset reads the exact upstream version
its inputs recorded (signatures -> the filtered documents they hashed -> dedup), so a source
re-curated mid-way never mixes two versions.
"""


import json
from pathlib import Path

import dagster as dg

from pipeline_assets.asset_keys import (
    BENCHMARKS,
    CLUSTERS,
    DECONT,
    DEDUPED,
    FILTERED,
    MIXTURE,
    QUALITY_CLASSIFIER,
    RAW,
    SIGNATURES,
)
from pipeline_assets.corpus import checks
from pipeline_assets.corpus.config import ContentSafetyConfig, CorpusConfig, QualityClassifierConfig
from pipeline_assets.corpus.fingerprint import spec_fingerprint
from pipeline_assets.corpus.ingest import ingest_source
from pipeline_assets.corpus.mixture import build_mixture
from pipeline_assets.metadata import path_md, png_md, table
from pipeline_assets.pools import CORPUS_GLOBAL_POOL
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import register_section, resolved, stage_config
from pipeline_assets.summary import read_summary, write_summary
from pipeline_assets.tasks.heldout import decontamination_texts
from resources.launcher import LauncherResource
from resources.settings import PipelineSettings
from resources.sources import SourcesResource
from resources.storage import ArtifactStore, fingerprint

# The Launchpad config of each corpus asset: the fields of CorpusConfig it alone decides. `tasks` is not
# offered: the dedup stages replay the ranks the filter wrote, so it must not change between per-source steps.
RawRunConfig = stage_config("RawRunConfig", CorpusConfig, "corpus", only=("max_bytes_per_source", "max_doc_bytes"))
FilterRunConfig = stage_config("FilterRunConfig", CorpusConfig, "corpus", only=("languages", "language_threshold"))
QualityRunConfig = stage_config("QualityRunConfig", QualityClassifierConfig, "quality_classifier")
register_section("content_safety", ContentSafetyConfig)  # thresholds per profile; no Launchpad form of its own
SignaturesRunConfig = stage_config("SignaturesRunConfig", CorpusConfig, "corpus",
                                   only=("minhash_ngrams", "minhash_buckets", "minhash_hashes_per_bucket"))
ClustersRunConfig = stage_config("ClustersRunConfig", CorpusConfig, "corpus", only=("near_dup_jaccard",))
DecontRunConfig = stage_config("DecontRunConfig", CorpusConfig, "corpus", only=("decont_ngrams",))
MixtureRunConfig = stage_config("MixtureRunConfig", CorpusConfig, "corpus",
                                only=("val_fraction", "domain_weights", "max_repeats", "seed"))

sources_partitions = dg.DynamicPartitionsDefinition(name="sources")
ALL = dg.AllPartitionMapping()



# The plain functions below import datatrove, spaCy, fastText and matplotlib (~3.5 s): each asset imports them
# when it runs, so a run's process (one per source and phase of a backfill) loads only what its steps use.


def registered_sources(context: dg.AssetExecutionContext) -> list[str]:
    """Registered sources, oldest first: earlier sources win dedup ties."""
    return context.instance.get_dynamic_partitions(sources_partitions.name)


def _inputs_file(version_dir, **inputs) -> None:
    (version_dir / "inputs.json").write_text(json.dumps({k: str(v) for k, v in inputs.items()}, indent=1))


PER_SOURCE = {"partitions_def": sources_partitions, "group_name": "corpus", "code_version": "1"}


@dg.asset(key=RAW, **PER_SOURCE, kinds={"python"},
          check_specs=checks.specs(RAW, ["has_documents", "quarantine_below_half"], sources_partitions))
def raw_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                  sources: SourcesResource, config: RawRunConfig) -> dg.MaterializeResult:
    """Every record of one source, validated into ``{"id", "text", "metadata"}`` JSONL; bad ones quarantined."""
    cfg = resolved(config, settings.profile)
    spec = sources.spec(context.partition_key)
    fingerprint_before = spec_fingerprint(spec)  # before reading: a change during the read re-curates later
    with writing(context, store) as draft:
        result = ingest_source(spec, draft.work, cfg.tasks,
                               cfg.max_bytes_per_source if spec.kind != "folder" else None, cfg.max_doc_bytes)
        write_summary(draft.work, result)
    context.log.info(f"{spec.name}: {result['docs_out']} documents, {result['quarantined']} quarantined")
    return finish(context, store, draft, None, {
        **{k: v for k, v in result.items() if not isinstance(v, dict)},
        "dagster/row_count": result["docs_out"], "domain": spec.domain, "source_kind": spec.kind,
        # what the corpus_refresh schedule and the landing sensor compare to decide "changed"
        "source_fingerprint": fingerprint_before,
        "quarantine_reasons": dg.MetadataValue.json(result["quarantine_reasons"])},
        checks.raw(RAW, result))


@dg.asset(key=QUALITY_CLASSIFIER, group_name="corpus", code_version="1", kinds={"fasttext"},
          check_specs=checks.specs(QUALITY_CLASSIFIER, ["better_than_chance", "keeps_reference"]))
def quality_classifier(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                       config: QualityRunConfig) -> dg.MaterializeResult:
    """fastText quality classifier: reference text vs word salad and keyword spam (corpus/quality.py).

    It learns from text on the machine (or ``reference_path``), not from the sources it then filters, so a
    new landing folder never retrains it and re-curates every other source.
    """
    from pipeline_assets.corpus.filters import heuristic_recipe
    from pipeline_assets.corpus.quality import builtin_reference, folder_reference, train_classifier
    from pipeline_assets.corpus.score_plots import score_histogram_png
    cfg = resolved(config, settings.profile)
    corpus = settings.config(CorpusConfig, "corpus")
    web = [step for step in heuristic_recipe("web", corpus) if step[0] != "language"]
    reference = (folder_reference(cfg.reference_path) if cfg.reference_path
                 else builtin_reference(web, cfg.reference_max_bytes))
    with writing(context, store) as draft:
        result = train_classifier(cfg, reference, draft.work)
        write_summary(draft.work, result)
    held, balanced = result["heldout"], result["heldout_balanced"]
    context.log.info(f"quality classifier: held-out F1 {held['f1']} AUC {held['auc']} at lq share "
                     f"{cfg.heldout_lq_share} (n={held['n']}), {result['model_bytes'] / 1e6:.1f} MB")
    rows = [{"test": name, **{k: m[k] for k in ("n", "n_lq", "precision", "recall", "f1", "auc")}}
            for name, m in (("held out at lq share " + str(cfg.heldout_lq_share), held), ("balanced", balanced))]
    return finish(context, store, draft, None, {
        "heldout_precision": held["precision"], "heldout_recall": held["recall"], "heldout_f1": held["f1"],
        "heldout_auc": held["auc"], "heldout_n": held["n"], "auc_p_value": result["auc_p_value"],
        "heldout_hq_kept": result["heldout_hq_kept"], "metrics": table(rows),
        "recall_by_kind": dg.MetadataValue.json(result["heldout_recall_by_kind"]),
        "reference": dg.MetadataValue.json(result["reference"]), "thresholds": dg.MetadataValue.json(cfg.thresholds),
        "model_bytes": result["model_bytes"], "train_s": result["train_s"],
        "model": path_md(draft.version.path / result["model"]),
        "score_histogram": png_md(score_histogram_png(result["score_histogram"], result["threshold"]),
                                  "held-out P(hq)")},
        checks.quality_classifier(QUALITY_CLASSIFIER, result))


@dg.asset(key=FILTERED, deps=[RAW, QUALITY_CLASSIFIER], **PER_SOURCE, kinds={"datatrove"},
          check_specs=checks.specs(FILTERED, ["has_documents", "drop_ratio_sane"], sources_partitions))
def filtered_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                       sources: SourcesResource, launcher: LauncherResource,
                       config: FilterRunConfig) -> dg.MaterializeResult:
    """Language ID, heuristic and model-based quality filters per domain, PII masking; rejects kept per filter."""
    from pipeline_assets.corpus.filters import filter_partition
    from pipeline_assets.corpus.score_plots import score_histogram_png
    cfg = resolved(config, settings.profile)
    spec = sources.spec(context.partition_key)
    reads = Reads(store)
    raw = reads(RAW, context.partition_key)
    classifier = reads(QUALITY_CLASSIFIER)
    trained = read_summary(classifier)  # the model and the per-domain thresholds it was trained and measured for
    threshold = trained["thresholds"].get(spec.domain)
    quality = (str(classifier / trained["model"]), threshold) if threshold is not None else None
    safety = settings.config(ContentSafetyConfig, "content_safety")
    with writing(context, store, fingerprint(raw, spec.domain, cfg.__dict__, {"quality": quality},
                                             safety.__dict__)) as draft:
        result = filter_partition(raw, draft.work, spec.domain, cfg, launcher.run_datatrove, quality, safety)
        write_summary(draft.work, result)
    rows = [{"filter": name, "dropped": n, "reasons": ", ".join(f"{k}={v}" for k, v in
                                                                 result["drop_reasons"][name].items())}
            for name, n in result["removed_by_filter"].items()]
    return finish(context, store, draft, reads, {
        "docs_in": result["docs_in"], "docs_out": result["docs_out"],
        "dagster/row_count": result["docs_out"], "domain": spec.domain, "drops": table(rows),
        "removed_by_filter": dg.MetadataValue.json(result["removed_by_filter"]),
        "pii_documents_masked": result["pii_documents_masked"], "pii_emails_masked": result["pii_emails_masked"],
        "cpu_s_by_step": dg.MetadataValue.json(result["cpu_s_by_step"]),
        **({"quality_scores": png_md(score_histogram_png(result["quality_score_histogram"], quality[1]),
                                     "P(hq) of kept and dropped documents")} if quality else {})},
        checks.filtered(FILTERED, result))


@dg.asset(key=SIGNATURES, deps=[FILTERED], **PER_SOURCE, kinds={"datatrove"})
def minhash_signatures(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                       sources: SourcesResource, launcher: LauncherResource,
                       config: SignaturesRunConfig) -> dg.MaterializeResult:
    """MinHash and exact-dedup signatures of one source's filtered documents."""
    from pipeline_assets.corpus.dedup import signatures
    cfg = resolved(config, settings.profile)
    reads = Reads(store)
    docs = reads(FILTERED, context.partition_key) / "documents"
    keep_numbers = sources.spec(context.partition_key).domain == "math"
    with writing(context, store, fingerprint(docs, cfg.__dict__, {"keep_numbers": keep_numbers})) as draft:
        result = signatures(docs, draft.work, cfg, launcher.run_datatrove, keep_numbers=keep_numbers)
        _inputs_file(draft.work, documents=docs)  # dedup must read exactly the documents hashed here
    return finish(context, store, draft, reads, result)


@dg.asset(key=CLUSTERS, deps=[dg.AssetDep(SIGNATURES, partition_mapping=ALL)], group_name="corpus",
          code_version="2", kinds={"datatrove"}, pool=CORPUS_GLOBAL_POOL,
          check_specs=checks.specs(CLUSTERS, ["removal_fraction_sane"]))
def duplicate_clusters(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                       launcher: LauncherResource, config: ClustersRunConfig) -> dg.MaterializeResult:
    """Exact and near-duplicate clusters across ALL sources (earlier-registered sources keep their copy);
    every MinHash candidate pair is confirmed by its exact Jaccard before a copy is removed."""
    from pipeline_assets.corpus.dedup import find_duplicates
    cfg = resolved(config, settings.profile)
    reads = Reads(store)
    sig_dirs = reads.many(SIGNATURES, registered_sources(context))
    if not sig_dirs:
        raise ValueError("no corpus/minhash_signatures partition is published yet: materialize the per-source "
                         "corpus assets first (Materialize all, or `llmdag materialize`)")
    context.log.info(f"clustering duplicates across {len(sig_dirs)} sources (priority order): {list(sig_dirs)}")
    with writing(context, store) as draft:
        report = find_duplicates(sig_dirs, draft.work, cfg, launcher.run_datatrove)
        write_summary(draft.work, report)
        sources = {p: json.loads((d / "inputs.json").read_text())["documents"] for p, d in sig_dirs.items()}
        (draft.work / "sources.json").write_text(json.dumps(sources, indent=1))
    return finish(context, store, draft, reads,
                  {k: (dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v) for k, v in report.items()},
                  checks.clusters(CLUSTERS, report))


@dg.asset(key=DEDUPED, deps=[FILTERED, CLUSTERS], **PER_SOURCE, kinds={"datatrove"},
          check_specs=checks.specs(DEDUPED, ["unique_ids"], sources_partitions))
def deduplicated_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                           launcher: LauncherResource) -> dg.MaterializeResult:
    """One source with exact copies and near-duplicates (of any source) removed."""
    from pipeline_assets.corpus.dedup import deduplicate_partition
    cfg = settings.config(CorpusConfig, "corpus")
    reads = Reads(store)
    clusters = reads(CLUSTERS)
    covered = json.loads((clusters / "sources.json").read_text())
    if context.partition_key not in covered:
        raise ValueError(f"source {context.partition_key!r} is not in corpus/duplicate_clusters version "
                         f"{clusters.name} (it covers {sorted(covered)}): materialize corpus/duplicate_clusters")
    # The filtered documents the clusters were computed on, not whatever is newest: ranks must line up.
    docs = Path(covered[context.partition_key])
    reads.versions[f"{FILTERED.to_user_string()}[{context.partition_key}]"] = docs.parent.name
    with writing(context, store, fingerprint(docs, clusters / "file_index.json", cfg.__dict__)) as draft:
        result = deduplicate_partition(docs, clusters, context.partition_key, draft.work, cfg, launcher.run_datatrove)
        write_summary(draft.work, result)
    check = checks.unique_ids(DEDUPED, draft.version.path / "documents")
    return finish(context, store, draft, reads, {**result, "dagster/row_count": result["docs_out"],
                                                 "documents_read": path_md(docs)}, [check])


@dg.asset(key=DECONT, deps=[DEDUPED, BENCHMARKS], **PER_SOURCE, kinds={"datatrove"},
          check_specs=checks.specs(DECONT, ["no_eval_ngrams_left"], sources_partitions))
def decontaminated_documents(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                             launcher: LauncherResource, config: DecontRunConfig) -> dg.MaterializeResult:
    """One source with every document that shares an n-gram with an eval item removed."""
    from pipeline_assets.corpus.decontaminate import build_index, decontaminate_partition
    cfg = resolved(config, settings.profile)
    reads = Reads(store)
    docs = reads(DEDUPED, context.partition_key) / "documents"
    bench = reads(BENCHMARKS)
    with writing(context, store, fingerprint(docs, bench / "manifest.json", cfg.__dict__)) as draft:
        ngram_counts = build_index(decontamination_texts(bench), draft.work / "index", cfg)
        result = decontaminate_partition(docs, draft.work / "index", draft.work, cfg, launcher.run_datatrove)
        write_summary(draft.work, result)
    out = draft.version.path
    check = checks.no_eval_ngrams_left(DECONT, out / "documents", out / "index", cfg)
    return finish(context, store, draft, reads, {
        **{k: v for k, v in result.items() if not isinstance(v, dict)},
        "dagster/row_count": result["docs_out"],
        "contaminated_by_task": dg.MetadataValue.json(result["contaminated_by_task"]),
        "eval_ngrams_indexed": dg.MetadataValue.json(ngram_counts)}, [check])


@dg.asset(key=MIXTURE, deps=[dg.AssetDep(DECONT, partition_mapping=ALL)], group_name="corpus",
          code_version="1", kinds={"python"}, pool=CORPUS_GLOBAL_POOL,
          check_specs=checks.specs(MIXTURE, ["weights_sum_to_one", "train_val_disjoint"]))
def training_mixture(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                     sources: SourcesResource, config: MixtureRunConfig) -> dg.MaterializeResult:
    """Domain-weighted train/val mixture of every decontaminated source, with ``manifest.json``."""
    cfg = resolved(config, settings.profile)
    reads = Reads(store)
    decont = reads.many(DECONT, registered_sources(context))
    if not decont:
        raise ValueError("no corpus/decontaminated_documents partition is published yet")
    specs = sources.specs()
    inputs = {p: (specs[p].domain if p in specs else "web", d / "documents") for p, d in decont.items()}
    with writing(context, store) as draft:
        manifest = build_mixture(inputs, draft.work, cfg)
    rows = [{"split": s, "source": e["source"], "domain": e["domain"], "documents": e["documents"],
             "bytes": e["bytes"], "repeats": e["repeats"]} for s in ("train", "val") for e in manifest[s]]
    return finish(context, store, draft, reads, {
        "train_documents": manifest["totals"]["train"]["documents"],
        "train_bytes": manifest["totals"]["train"]["bytes"],
        "val_documents": manifest["totals"]["val"]["documents"], "val_bytes": manifest["totals"]["val"]["bytes"],
        "dagster/row_count": manifest["totals"]["train"]["documents"] + manifest["totals"]["val"]["documents"],
        "sources": dg.MetadataValue.json(sorted(decont)),
        "domain_weights": dg.MetadataValue.json(manifest["domain_weights"]), "files": table(rows),
        "manifest": path_md(draft.version.path / "manifest.json")},
        checks.mixture(MIXTURE, draft.version.path))


corpus_assets = [raw_documents, quality_classifier, filtered_documents, minhash_signatures, duplicate_clusters,
                 deduplicated_documents, decontaminated_documents, training_mixture]
