"""Cleaning synthetic rows the way the corpus is cleaned, with the corpus's own datatrove pieces.

* Decontamination: datatrove's ``NGramsDecontFilter`` over the index ``corpus/decontaminate.build_index``
  writes from ``evals/benchmarks`` (the corpus's n-gram rule and size), plus the held-out prompt rule of the
  dataset builders (an arithmetic row shorter than 8 words has no 8-gram to match).
* Near-duplicates: datatrove's MinHash signatures of each row's text, LSH buckets of the corpus's shape,
  every candidate pair confirmed by its exact shingle Jaccard (corpus/near_dup.py) at the corpus's
  threshold. Run in memory: a materialization holds a few thousand short rows, where writing datatrove's
  bucket files for its disk pipeline would cost more than the rows.
* Diversity: distinct-n (share of unique word n-grams among all) over the accepted rows' text.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.utils.hashing import HashConfig, create_hash_func
from datatrove.utils.text import TextNormConfig

from pipeline_assets.corpus.blocks import RegexWordTokenizer
from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.corpus.decontaminate import build_index, make_filter
from pipeline_assets.corpus.near_dup import jaccard
from pipeline_assets.tasks.heldout import decontamination_texts, heldout_keys, normalize_prompt


def row_text(row: dict) -> str:
    """The text a chat row trains on: every message's content, in order."""
    return "\n".join(m["content"] for m in row["messages"])


class Decontaminator:
    """True for a row that shares an n-gram with, or asks, a held-out eval item."""

    def __init__(self, bench_dir: Path, corpus: CorpusConfig):
        self._dir = tempfile.TemporaryDirectory(prefix="synthetic-decont-")
        build_index(decontamination_texts(bench_dir), Path(self._dir.name), corpus)
        self._filter = make_filter(Path(self._dir.name), corpus)
        self._prompts = set().union(*heldout_keys(bench_dir).values())

    def __call__(self, row: dict) -> str | None:
        """The eval set (or "heldout_prompt") the row overlaps, None when clean."""
        if normalize_prompt(row["messages"][0]["content"]) in self._prompts:
            return "heldout_prompt"
        doc = Document(text=row_text(row), id="row")
        verdict = self._filter.filter(doc)
        return None if verdict is True else doc.metadata.get("contaminated_task", "contaminated")

    def close(self) -> None:
        self._dir.cleanup()


class NearDuplicates:
    """MinHash LSH over rows added one by one; ``add`` returns the id of an earlier row it near-duplicates."""

    def __init__(self, corpus: CorpusConfig, ngrams: int):
        self.config = MinhashConfig(hash_config=HashConfig(precision=64), n_grams=ngrams,
                                    num_buckets=corpus.minhash_buckets,
                                    hashes_per_bucket=corpus.minhash_hashes_per_bucket,
                                    norm_config=TextNormConfig(norm_numbers=False))
        self.threshold = corpus.near_dup_jaccard or 1.0
        self._sig = MinhashDedupSignature(output_folder=tempfile.gettempdir(), config=self.config,
                                          language=RegexWordTokenizer())
        self._hash = create_hash_func(self.config.hash_config)
        self._buckets: list[dict[tuple[int, ...], list[str]]] = [defaultdict(list)
                                                                 for _ in range(self.config.num_buckets)]
        self._shingles: dict[str, np.ndarray] = {}

    def _shingle_set(self, text: str) -> np.ndarray:
        # get_shingles returns an (N, 1) array of hashed word n-grams; a text shorter than n has none, so its
        # whole normalized text is one shingle (two such rows are duplicates only when equal).
        shingles = self._sig.get_shingles(text)
        if not shingles.size:
            shingles = np.array([[self._hash(" ".join(text.lower().split()))]], dtype=np.uint64)
        return shingles

    def add(self, row_id: str, text: str, *, register: bool = True) -> str | None:
        shingles = self._shingle_set(text)
        unique = np.unique(shingles.ravel())
        candidates: set[str] = set()
        signature = self._sig.get_signature(shingles)
        for bucket, band in zip(self._buckets, signature, strict=True):
            candidates.update(bucket.get(tuple(band), ()))
        match = next((c for c in sorted(candidates) if jaccard(unique, self._shingles[c]) >= self.threshold), None)
        if match is None and register:
            for bucket, band in zip(self._buckets, signature, strict=True):
                bucket[tuple(band)].append(row_id)
            self._shingles[row_id] = unique
        return match


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique word n-grams / all word n-grams over ``texts`` (Li et al. 2016); None without any n-gram."""
    grams = [tuple(words[i:i + n]) for text in texts for words in [text.split()] for i in range(len(words) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else None
