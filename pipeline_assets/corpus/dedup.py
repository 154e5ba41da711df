"""Exact and MinHash near-duplicate removal across every source partition, with datatrove.

datatrove's dedup stages name their files by the stage-1 rank and address documents by their index
in that rank's stream, so the per-source runs are stitched into one global numbering here:

1. ``signatures`` (per partition): exact-dedup and MinHash signatures of the filtered documents.
2. ``find_duplicates`` (all partitions): copies every partition's signature files into one folder as
   global file ``g`` (partitions in the given order, then rank), runs ``ExactFindDedups`` and
   MinHash buckets over all of them, confirms each candidate pair by its exact Jaccard
   (``near_dup.NearDupConfirm``, when ``near_dup_jaccard`` is set), clusters the confirmed pairs, and
   records which ``g`` is which partition/rank.
3. ``deduplicate_partition``: maps global results back to the partition's ranks and runs
   ``ExactDedupFilter`` then ``MinhashDedupFilter`` over the same reader as stage 1.

The LSH shape is loose (a pair at the threshold is a candidate with probability ~0.99, see
``CorpusConfig``), so the confirmation step is what decides: a pair is removed only if its word-n-gram
shingle sets, computed exactly as the signatures were, reach ``near_dup_jaccard``.

Exact duplicates always share a MinHash cluster (identical shingles), so the near-dup removal set
already contains every exact duplicate except the cluster survivor. The exact filter removes the
exact copies (attributed as "exact"), and the MinHash lists are re-indexed to the stream that
remains, so both filters run on aligned indices and each cluster keeps exactly one document.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from datatrove.pipeline.dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import TextNormConfig

from pipeline_assets import faults
from pipeline_assets.corpus.blocks import RegexWordTokenizer
from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.corpus.filters import Runner
from pipeline_assets.corpus.near_dup import PAIR_RECORD, NearDupConfirm, SignedFile
from pipeline_assets.corpus.stats import merged_stats, step_summary

U32 = np.dtype("<u4")
PAIR = np.dtype([("doc", "<u4"), ("value", "<u4")])


def normalized_text(doc) -> str:
    """Exact-dedup key: whitespace-insensitive, so re-wrapped copies of a licence still match."""
    return " ".join(doc.text.split())


def minhash_config(cfg: CorpusConfig, keep_numbers: bool = False) -> MinhashConfig:
    # datatrove rewrites every digit run to "0" before shingling (so dates and versions don't hide a copy).
    # For math documents the numbers ARE the content: normalized, all 400 generated arithmetic documents
    # looked like one. The setting only shapes the shingles; buckets compare the hashes of any sources.
    return MinhashConfig(hash_config=HashConfig(precision=64), n_grams=cfg.minhash_ngrams,
                         num_buckets=cfg.minhash_buckets, hashes_per_bucket=cfg.minhash_hashes_per_bucket,
                         norm_config=TextNormConfig(norm_numbers=not keep_numbers))


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(content_getter=normalized_text)


def _reader(docs_dir: Path) -> JsonlReader:
    # Stage 1 and the final filter must read the same files in the same order with the same tasks.
    return JsonlReader(str(docs_dir), glob_pattern="*.jsonl", compression=None)


def signatures(docs_dir: Path, out_dir: Path, cfg: CorpusConfig, run: Runner, keep_numbers: bool = False) -> dict:
    """Per-partition stage 1: ``out_dir/minhash/bucket_*/<rank>.minhash.sig``, ``out_dir/exact/0000/<rank>.c4_sig``.

    ``keep_numbers``: shingle digits as written (the ``math`` domain), not datatrove's digit normalization.
    """
    words = RegexWordTokenizer()
    run([_reader(docs_dir), MinhashDedupSignature(str(out_dir / "minhash"), config=minhash_config(cfg, keep_numbers),
                                                   language=words)], out_dir / "logs" / "minhash", cfg.tasks)
    faults.at("curation.mid_signatures")  # kill-test hook: MinHash ranks complete, no exact signature yet
    run([_reader(docs_dir), ExactDedupSignature(str(out_dir / "exact"), config=exact_config(), finder_workers=1)],
        out_dir / "logs" / "exact", cfg.tasks)
    docs = step_summary(merged_stats(out_dir / "logs" / "minhash"))[0]["counters"].get("documents", 0)
    result = {"documents": docs, "tasks": cfg.tasks, "minhash_buckets": cfg.minhash_buckets,
              "minhash_hashes_per_bucket": cfg.minhash_hashes_per_bucket, "minhash_ngrams": cfg.minhash_ngrams,
              "numbers_normalized": not keep_numbers}
    # The confirmation stage re-reads the documents these signatures number.
    (out_dir / "signatures.json").write_text(json.dumps(result | {"documents_dir": str(docs_dir)}, indent=1))
    return result


MINHASH_FIELDS = ("minhash_ngrams", "minhash_buckets", "minhash_hashes_per_bucket", "tasks")


def signature_shape(partitions: dict[str, Path], cfg: CorpusConfig) -> CorpusConfig:
    """``cfg`` with the MinHash shape every signatures dir was computed with: buckets only compare alike."""
    shapes = {name: {k: v for k, v in json.loads((d / "signatures.json").read_text()).items() if k in MINHASH_FIELDS}
              for name, d in partitions.items()}
    distinct = {json.dumps(v, sort_keys=True) for v in shapes.values()}
    if len(distinct) > 1:
        raise ValueError(f"the sources' minhash signatures were computed with different settings {shapes}; "
                         "re-materialize corpus/minhash_signatures for every source with the same config")
    return dataclasses.replace(cfg, **next(iter(shapes.values()))) if shapes else cfg


def _signed_documents(sig_dir: Path) -> tuple[Path, bool]:
    """The documents a signatures dir hashed and whether their digits were normalized."""
    info = json.loads((sig_dir / "signatures.json").read_text())
    inputs = sig_dir / "inputs.json"  # the asset's record of what it hashed
    docs = json.loads(inputs.read_text())["documents"] if inputs.exists() else info.get("documents_dir")
    if docs is None:
        raise ValueError(f"{sig_dir} does not record which documents it hashed (no inputs.json, no documents_dir "
                         "in signatures.json): re-materialize corpus/minhash_signatures")
    return Path(docs), info.get("numbers_normalized", True)


def _distinct_pairs(dups_dir: Path) -> int:
    pairs = set()
    for path in dups_dir.glob("*.dups"):
        pairs.update(PAIR_RECORD.iter_unpack(path.read_bytes()))
    return len(pairs)


def confirm_candidates(partitions: dict[str, Path], out_dir: Path, cfg: CorpusConfig, run: Runner) -> dict:
    """``out_dir/buckets`` -> ``out_dir/confirmed``: the candidate pairs whose exact Jaccard >= ``near_dup_jaccard``.

    A datatrove step (one task, like the cluster stage), so it runs on the same executor as the rest.
    """
    files = []
    for sig_dir in partitions.values():
        docs, normalized = _signed_documents(sig_dir)
        files += [SignedFile(_reader(docs), rank, cfg.tasks, minhash_config(cfg, keep_numbers=not normalized))
                  for rank in range(cfg.tasks)]
    started = time.perf_counter()
    run([NearDupConfirm(str(out_dir / "buckets"), str(out_dir / "confirmed"), files, cfg.near_dup_jaccard,
                        RegexWordTokenizer())], out_dir / "logs" / "confirm", 1)
    counters = step_summary(merged_stats(out_dir / "logs" / "confirm"))[0]["counters"]
    return {key: counters.get(key, 0) for key in ("candidate_pairs", "confirmed_pairs", "rejected_pairs")} | {
        "confirm_s": round(time.perf_counter() - started, 2)}


def find_duplicates(partitions: dict[str, Path], out_dir: Path, cfg: CorpusConfig, run: Runner) -> dict:
    """Global stages 2-3 over ``partitions`` (name -> signatures dir, in priority order).

    ``candidate_pairs``: distinct document pairs the LSH buckets proposed and exact Jaccard checked
    (without confirmation: the distinct pairs the bucket stage wrote, all of which are clustered);
    ``confirmed_pairs`` of them reached ``near_dup_jaccard`` and ``rejected_pairs`` did not.
    """
    cfg = signature_shape(partitions, cfg)
    files: list[dict] = []
    for name, sig_dir in partitions.items():
        for rank in range(cfg.tasks):
            g = len(files)
            files.append({"global": g, "partition": name, "rank": rank})
            for b in range(cfg.minhash_buckets):
                src = sig_dir / "minhash" / f"bucket_{b:03d}" / f"{rank:05d}.minhash.sig"
                dst = out_dir / "sigs" / "minhash" / f"bucket_{b:03d}" / f"{g:05d}.minhash.sig"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            src = sig_dir / "exact" / "0000" / f"{rank:05d}.c4_sig"
            dst = out_dir / "sigs" / "exact" / "0000" / f"{g:05d}.c4_sig"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    (out_dir / "file_index.json").write_text(json.dumps(files, indent=1))
    mh = minhash_config(cfg)
    run([MinhashDedupBuckets(str(out_dir / "sigs" / "minhash"), str(out_dir / "buckets"), config=mh)],
        out_dir / "logs" / "buckets", cfg.minhash_buckets)
    faults.at("curation.mid_clusters")  # kill-test hook: buckets written, no cluster yet
    if cfg.near_dup_jaccard is None:
        pairs = _distinct_pairs(out_dir / "buckets")
        confirm = {"candidate_pairs": pairs, "confirmed_pairs": pairs, "rejected_pairs": 0, "confirm_s": 0.0}
        pairs_dir = out_dir / "buckets"
    else:
        confirm = confirm_candidates(partitions, out_dir, cfg, run)
        pairs_dir = out_dir / "confirmed"
    run([MinhashDedupCluster(str(pairs_dir), str(out_dir / "clusters"), config=mh,
                             save_cluster_id=True, save_cluster_size=True)], out_dir / "logs" / "clusters", 1)
    run([ExactFindDedups(str(out_dir / "sigs" / "exact"), str(out_dir / "exact"), config=exact_config())],
        out_dir / "logs" / "exact", 1)
    docs = {name: step_summary(merged_stats(d / "logs" / "minhash"))[0]["counters"].get("documents", 0)
            for name, d in partitions.items()}
    return (cluster_report(out_dir, files) | confirm | {"near_dup_jaccard": cfg.near_dup_jaccard}
            | {"documents_total": sum(docs.values()), "documents_by_partition": docs})


def _read(path: Path, dtype: np.dtype) -> np.ndarray:
    return np.fromfile(path, dtype=dtype) if path.exists() else np.array([], dtype=dtype)


def cluster_report(out_dir: Path, files: list[dict]) -> dict:
    """Cluster sizes, per-partition removals and clusters that span sources, from the binary outputs."""
    members: dict[int, set[str]] = defaultdict(set)
    sizes: dict[int, int] = {}
    remove_by_partition: Counter = Counter()
    exact_by_partition: Counter = Counter()
    for f in files:
        g, part = f["global"], f["partition"]
        remove_by_partition[part] += len(_read(out_dir / "clusters" / f"{g:06d}.remove", U32))
        exact_by_partition[part] += len(_read(out_dir / "exact" / "00000" / f"{g:05d}.c4_dup", U32))
        cluster_ids = _read(out_dir / "clusters" / f"{g:06d}.clusters", PAIR)
        cluster_sizes = _read(out_dir / "clusters" / f"{g:06d}.sizes", PAIR)
        for (_, cid), (_, size) in zip(cluster_ids, cluster_sizes, strict=True):
            members[int(cid)].add(part)
            sizes[int(cid)] = int(size)
    histogram = Counter(sizes.values())
    cross = {cid: sorted(parts) for cid, parts in members.items() if len(parts) > 1}
    return {
        "clusters": len(sizes),
        "documents_in_clusters": sum(sizes.values()),
        "near_duplicates_to_remove": sum(remove_by_partition.values()),
        "exact_duplicates": sum(exact_by_partition.values()),
        "largest_cluster": max(sizes.values(), default=0),
        "cluster_size_histogram": {str(k): v for k, v in sorted(histogram.items())},
        "cross_source_clusters": len(cross),
        "cross_source_examples": [{"cluster": c, "sources": p, "size": sizes[c]} for c, p in list(cross.items())[:10]],
        "to_remove_by_partition": dict(remove_by_partition),
        "exact_duplicates_by_partition": dict(exact_by_partition),
        "partitions": sorted({f["partition"] for f in files}),
    }


def _shift(idx: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Stream index after ``removed`` (sorted) documents were dropped before it."""
    return (idx - np.searchsorted(removed, idx)).astype(U32)


def _localize(clusters_dir: Path, partition: str, work: Path) -> None:
    """Global dedup results -> this partition's rank-named files, MinHash lists re-indexed past exact drops.

    Exact drops are limited to documents MinHash also removes, so the survivor of every cluster is
    untouched and removing exact copies first cannot empty a cluster.
    """
    index = json.loads((clusters_dir / "file_index.json").read_text())
    files = [f for f in index if f["partition"] == partition]
    if not files:
        raise ValueError(f"source {partition!r} is not in duplicate_clusters: re-materialize corpus/duplicate_clusters")
    for f in files:
        g, rank = f["global"], f["rank"]
        near = _read(clusters_dir / "clusters" / f"{g:06d}.remove", U32)
        exact = np.intersect1d(_read(clusters_dir / "exact" / "00000" / f"{g:05d}.c4_dup", U32), near)
        keep_near = np.setdiff1d(near, exact)
        (work / "exact" / "00000").mkdir(parents=True, exist_ok=True)
        exact.astype(U32).tofile(work / "exact" / "00000" / f"{rank:05d}.c4_dup")
        counts = clusters_dir / "exact" / "00000" / f"{g:05d}.c4_counts"
        if counts.exists():
            shutil.copyfile(counts, work / "exact" / "00000" / f"{rank:05d}.c4_counts")
        (work / "minhash").mkdir(parents=True, exist_ok=True)
        _shift(keep_near, exact).tofile(work / "minhash" / f"{rank:06d}.remove")
        for ext in ("clusters", "sizes"):
            pairs = _read(clusters_dir / "clusters" / f"{g:06d}.{ext}", PAIR)
            pairs = pairs[~np.isin(pairs["doc"], exact)]
            pairs["doc"] = _shift(pairs["doc"], exact)
            pairs.tofile(work / "minhash" / f"{rank:06d}.{ext}")


def deduplicate_partition(docs_dir: Path, clusters_dir: Path, partition: str, out_dir: Path,
                          cfg: CorpusConfig, run: Runner) -> dict:
    work = out_dir / "dedup_index"
    _localize(clusters_dir, partition, work)
    faults.at("curation.mid_dedup")  # kill-test hook: the partition's removal lists written, no document yet
    run([
        _reader(docs_dir),
        ExactDedupFilter(str(work / "exact"), config=exact_config(),
                         exclusion_writer=JsonlWriter(str(out_dir / "removed" / "1_exact"), compression=None)),
        MinhashDedupFilter(str(work / "minhash"), load_cluster_ids=True, load_cluster_sizes=True,
                           exclusion_writer=JsonlWriter(str(out_dir / "removed" / "2_minhash"), compression=None)),
        JsonlWriter(str(out_dir / "documents"), compression=None),
    ], out_dir / "logs", cfg.tasks)
    steps = step_summary(merged_stats(out_dir / "logs"))
    exact, near = steps[1], steps[2]
    return {
        "docs_in": exact["in"],
        "exact_duplicates_removed": exact["dropped"],
        "near_duplicates_removed": near["dropped"],
        "docs_out": near["in"] - near["dropped"],
    }
