"""Exact-Jaccard confirmation of MinHash candidate pairs, as a datatrove step between buckets and clustering.

MinHash LSH only estimates similarity: with a shape loose enough to catch nearly every pair above
the threshold, it also proposes pairs well below it. ``NearDupConfirm`` reads the pairs that
``MinhashDedupBuckets`` wrote, computes the exact Jaccard of the two documents' shingle sets and
writes only the pairs at or above the threshold, in the same ``.dups`` format and file names, for
``MinhashDedupCluster`` to cluster. Run it with ``tasks=1``, like the cluster stage:

    run([NearDupConfirm(buckets, confirmed, files, 0.7, RegexWordTokenizer())], logging_dir, 1)

Shingles are computed with datatrove's own functions (``simplify_text``, the word tokenizer,
``ngrams``, the MinHash hash function) and each file's ``MinhashConfig``, so the sets compared are
the ones the signatures were drawn from. Only the documents named in a candidate pair are shingled
and held in memory, and each file's stream is read only up to the last document it needs.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import SENTINEL, MinhashConfig
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.utils.hashing import create_hash_func
from datatrove.utils.text import ngrams, simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer

# MinhashDedupBuckets writes one record per pair: (file_1, doc_1, file_2, doc_2) as little-endian uint32.
PAIR_RECORD = struct.Struct("<4I")

Doc = tuple[int, int]  # (global file, document index in that file's stream)


@dataclass(frozen=True)
class SignedFile:
    """Where the documents of one signature file come from: the stage-1 reader, rank and MinHash config."""

    reader: BaseDiskReader
    rank: int
    world_size: int
    config: MinhashConfig


def shingles(text: str, config: MinhashConfig, tokenizer: WordTokenizer) -> np.ndarray:
    """Sorted unique hashed n-grams of ``text``: ``MinhashDedupSignature.get_shingles`` as a set."""
    hash_func = create_hash_func(config.hash_config)
    words = tokenizer.word_tokenize(simplify_text(text, config.norm_config))
    return np.unique(np.fromiter((hash_func(" ".join(g)) for g in ngrams(words, config.n_grams)), dtype=np.uint64))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two sorted unique arrays."""
    if not a.size and not b.size:
        return 1.0
    both = np.intersect1d(a, b, assume_unique=True).size
    return both / (a.size + b.size - both)


def read_pairs(data: bytes) -> list[tuple[Doc, Doc]]:
    return [((f1, d1), (f2, d2)) for f1, d1, f2, d2 in PAIR_RECORD.iter_unpack(data)]


def groups(pairs: list[tuple[Doc, Doc]]) -> list[list[Doc]]:
    """Documents that share one band signature, in datatrove's sort order (lower global file first).

    The bucket stage writes a run of k equal signatures as the chain (d1, d2), (d2, d3), ...; a document
    has one signature per band, so one bucket file's chains never share a document.
    """
    out: list[list[Doc]] = []
    for a, b in pairs:
        if out and out[-1][-1] == a:
            out[-1].append(b)
        else:
            out.append([a, b])
    return out


class NearDupConfirm(PipelineStep):
    """Keep a MinHash candidate pair only if the exact Jaccard of its shingle sets is >= ``threshold``.

    Args:
        input_folder: the ``.dups`` files of ``MinhashDedupBuckets``.
        output_folder: confirmed ``.dups`` files, same names (``MinhashDedupCluster`` needs one set per bucket).
        files: global file id -> where its documents are (the ids the signature files were numbered with).
        threshold: exact word-n-gram Jaccard a pair needs to count as a near-duplicate.
        tokenizer: the word tokenizer the signatures were computed with.
    """

    type = "🫂 - DEDUP"
    name = "🎯 MinHash exact-Jaccard confirmation"

    def __init__(self, input_folder: DataFolderLike, output_folder: DataFolderLike, files: list[SignedFile],
                 threshold: float, tokenizer: WordTokenizer) -> None:
        super().__init__()
        self.input_folder = get_datafolder(input_folder)
        self.output_folder = get_datafolder(output_folder)
        self.files = files
        self.threshold = threshold
        self.tokenizer = tokenizer

    def load_shingles(self, needed: set[Doc]) -> dict[Doc, np.ndarray]:
        by_file: dict[int, set[int]] = defaultdict(set)
        for g, idx in needed:
            by_file[g].add(idx)
        out: dict[Doc, np.ndarray] = {}
        for g, wanted in sorted(by_file.items()):
            f = self.files[g]
            last = max(wanted)
            stream = f.reader.run(None, f.rank, f.world_size)
            found = 0
            for idx, doc in enumerate(stream):
                if idx in wanted:
                    out[(g, idx)] = shingles(doc.text, f.config, self.tokenizer)
                    found += 1
                if idx >= last:
                    break
            stream.close()
            if found < len(wanted):
                raise ValueError(f"signature file {g} names document {last}, past the end of rank {f.rank}'s "
                                 "stream: the documents changed after their signatures were computed; "
                                 "re-materialize corpus/minhash_signatures")
            self.stat_update("documents_shingled", value=len(wanted))
        return out

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        assert world_size == 1, "NearDupConfirm compares each candidate pair once across buckets: run it with tasks=1"
        dup_files = self.input_folder.list_files(glob_pattern="*.dups")
        with self.track_time():
            by_file = {}
            for name in dup_files:
                with self.input_folder.open(name, "rb") as f:
                    by_file[name] = read_pairs(f.read())
            needed = {d for pairs in by_file.values() for pair in pairs for d in pair if d[0] != SENTINEL}
            sets = self.load_shingles(needed)
            scores: dict[tuple[Doc, Doc], float] = {}

            def score(a: Doc, b: Doc) -> float:
                key = (a, b) if a < b else (b, a)
                if key not in scores:
                    scores[key] = jaccard(sets[a], sets[b])
                return scores[key]

            for name, pairs in by_file.items():
                kept = [p for p in pairs if p[0][0] == SENTINEL]  # index matches: nothing to compare against
                for group in groups([p for p in pairs if p[0][0] != SENTINEL]):
                    # Each member joins every earlier cluster head it matches, or heads a new cluster: a true
                    # duplicate group costs k-1 comparisons, and one dissimilar member does not split the rest.
                    heads: list[Doc] = []
                    for doc in group:
                        matched = [h for h in heads if score(h, doc) >= self.threshold]
                        kept += [(h, doc) for h in matched]
                        if not matched:
                            heads.append(doc)
                with self.output_folder.open(name, "wb") as out:
                    for a, b in kept:
                        out.write(PAIR_RECORD.pack(*a, *b))
            confirmed = sum(s >= self.threshold for s in scores.values())
            self.stat_update("candidate_pairs", value=len(scores))
            self.stat_update("confirmed_pairs", value=confirmed)
            self.stat_update("rejected_pairs", value=len(scores) - confirmed)
        return data
