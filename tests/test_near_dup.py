"""Near-duplicate confirmation (pipeline_assets/corpus/near_dup.py) and its place in dedup.find_duplicates.

Run: pytest tests/test_near_dup.py   (~30 s, CPU only)

A planted set (bench/near_dup_recall.py's generator, smaller) goes through the product path,
``signatures`` -> ``find_duplicates`` -> ``deduplicate_partition``, on datatrove's local executor.
"""

from __future__ import annotations

import itertools
import json
import pickle
import struct
from pathlib import Path

import dill
import numpy as np
import pytest
from datatrove.pipeline.dedup import MinhashDedupSignature

from bench.near_dup_recall import BANDS, planted_set, run_dedup, score
from pipeline_assets.corpus.blocks import RegexWordTokenizer
from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.corpus.dedup import _reader, minhash_config
from pipeline_assets.corpus.near_dup import NearDupConfirm, SignedFile, groups, jaccard, shingles
from resources.launcher import LauncherResource

CFG = CorpusConfig()
RUN = LauncherResource(kind="local", datatrove_workers=1).run_datatrove
TEXT = ("The quick brown fox jumps over the lazy dog on 12 March 2024, then -- quite unexpectedly -- "
        "reads version 3.11.7 of the manual, twice: once in English and once in French. ") * 3


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("near_dup")
    sources, pairs = planted_set(root, pairs_per_band=6, singles=8)
    return {"sources": sources, "pairs": pairs, **run_dedup(sources, root / "new", CFG, RUN)}


@pytest.mark.parametrize("keep_numbers", [False, True])
def test_shingles_are_the_sets_minhash_signed(tmp_path: Path, keep_numbers: bool):
    mh = minhash_config(CFG, keep_numbers=keep_numbers)
    step = MinhashDedupSignature(str(tmp_path), config=mh, language=RegexWordTokenizer())
    assert np.array_equal(shingles(TEXT, mh, RegexWordTokenizer()), np.unique(step.get_shingles(TEXT)))
    other = minhash_config(CFG, keep_numbers=not keep_numbers)
    assert not np.array_equal(shingles(TEXT, mh, RegexWordTokenizer()), shingles(TEXT, other, RegexWordTokenizer()))


def test_planted_recall_and_precision(planted: dict):
    threshold = CFG.near_dup_jaccard
    pairs, kept = planted["pairs"], planted["kept"]
    above = [p for p in pairs if p.copy and p.jaccard >= threshold + 0.05]
    caught = [p for p in above if (p.base in kept) != (p.copy in kept)]
    assert len(above) >= 20 and caught == above, [(p.copy, round(p.jaccard, 3)) for p in above if p not in caught]
    near = [p for p in pairs if p.copy and threshold <= p.jaccard < threshold + 0.05]
    assert sum((p.base in kept) != (p.copy in kept) for p in near) >= 0.9 * len(near)
    below = [p for p in pairs if p.copy and p.jaccard < threshold]
    assert len(below) >= 10
    assert all(p.base in kept and p.copy in kept for p in below), "a pair below the threshold lost a copy"
    assert all(p.base in kept for p in pairs if p.copy is None), "an unpaired document was removed"
    s = score(pairs, kept, threshold)
    assert s["precision"] == 1.0 and s["both_removed"] == 0
    assert sum(n for n, _ in s["bands"].values()) == sum(p.copy is not None for p in pairs)
    assert set(s["bands"]) == set(BANDS)


def test_counts_reported(planted: dict):
    report = planted["report"]
    assert report["near_dup_jaccard"] == CFG.near_dup_jaccard
    assert 0 < report["confirmed_pairs"] <= report["candidate_pairs"]
    assert report["rejected_pairs"] == report["candidate_pairs"] - report["confirmed_pairs"]
    # 25x5 proposes most planted pairs at 0.3-0.7 (p = 0.23-0.99): confirmation is what keeps them
    assert report["rejected_pairs"] >= 5 and report["confirm_s"] >= 0
    removed = sum(p.copy is not None and (p.base in planted["kept"]) != (p.copy in planted["kept"])
                  for p in planted["pairs"])
    assert report["near_duplicates_to_remove"] == removed
    assert {"clusters", "exact_duplicates", "documents_total", "cross_source_clusters"} <= set(report)


def test_candidate_rejected_by_exact_jaccard_is_kept(tmp_path: Path):
    """One pair at ~0.85: always an LSH candidate; a 0.95 cut rejects it, no confirmation removes it."""
    sources, pairs = planted_set(tmp_path / "docs", pairs_per_band=1, singles=0, bands=((0.8, 0.9),))
    (pair,) = pairs
    strict = run_dedup(sources, tmp_path / "strict", CorpusConfig(near_dup_jaccard=0.95), RUN)
    assert {pair.base, pair.copy} <= strict["kept"]
    assert strict["report"]["candidate_pairs"] == strict["report"]["rejected_pairs"] == 1
    assert strict["report"]["confirmed_pairs"] == strict["report"]["near_duplicates_to_remove"] == 0
    loose = run_dedup(sources, tmp_path / "loose", CorpusConfig(near_dup_jaccard=None), RUN)
    assert (pair.base in loose["kept"]) != (pair.copy in loose["kept"])
    assert loose["report"]["rejected_pairs"] == 0 and loose["report"]["confirmed_pairs"] >= 1


def _dups(path: Path, pairs: list[tuple[int, int, int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(struct.pack("<4I", *p) for p in pairs))


def test_dissimilar_member_does_not_split_a_band_group(tmp_path: Path):
    """A band group A, X, B (written as the chain A-X, X-B) with A ~ B and X unrelated confirms A-B only."""
    docs = tmp_path / "docs"
    docs.mkdir()
    words = ["".join(w) for w in itertools.product("abcdefgh", repeat=3)]  # letters only: digits normalize away
    a, x = " ".join(words[:180]), " ".join(words[200:380])
    b = a.replace(f" {words[90]} ", " changed ")
    (docs / "00.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate((a, x, b))))
    mh = minhash_config(CFG)
    _dups(tmp_path / "buckets" / "00000_00.dups", [(0, 0, 0, 1), (0, 1, 0, 2)])
    _dups(tmp_path / "buckets" / "00001_00.dups", [(0, 0, 0, 2)])
    step = NearDupConfirm(str(tmp_path / "buckets"), str(tmp_path / "out"), [SignedFile(_reader(docs), 0, 1, mh)],
                          0.7, RegexWordTokenizer())
    step.run(None, 0, 1)
    out = [struct.unpack("<4I", (tmp_path / "out" / f).read_bytes()) for f in ("00000_00.dups", "00001_00.dups")]
    assert out == [(0, 0, 0, 2), (0, 0, 0, 2)]
    # A-X, then B against both heads (A-B, X-B); A-B is scored once although two bands propose it
    assert step.stats["candidate_pairs"].total == 3 and step.stats["rejected_pairs"].total == 2
    assert jaccard(shingles(a, mh, RegexWordTokenizer()), shingles(b, mh, RegexWordTokenizer())) >= 0.7
    # Slurm pickles the pipeline with dill, Ray with cloudpickle (pickle-compatible): the step must survive both.
    for module in (dill, pickle):
        assert module.loads(module.dumps(step)).threshold == 0.7


def test_groups_follow_chains():
    assert groups([((0, 1), (0, 2)), ((0, 2), (1, 5)), ((0, 7), (1, 0))]) == [[(0, 1), (0, 2), (1, 5)],
                                                                            [(0, 7), (1, 0)]]


@pytest.mark.parametrize("bad", [{"near_dup_jaccard": 0.0}, {"near_dup_jaccard": 1.5}, {"minhash_buckets": 0}])
def test_config_rejects_bad_near_dup_settings(bad: dict):
    with pytest.raises(ValueError, match=next(iter(bad))):
        CorpusConfig(**bad).validate()
    CorpusConfig(near_dup_jaccard=None).validate()
