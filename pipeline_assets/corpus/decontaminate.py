"""Remove training documents that share an n-gram with any held-out eval item (``evals/benchmarks``).

datatrove's ``NGramsDecontIndexer`` fetches eval sets through lighteval from the hub, so the index is
built here with datatrove's own normalisation, tokenizer and hash (the file format its
``NGramsDecontFilter`` loads: ``<task>.index.hashes``, raw uint64); the filter itself is datatrove's.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import create_hash_func
from datatrove.utils.text import ngrams, simplify_text

from pipeline_assets import faults
from pipeline_assets.corpus.blocks import RegexWordTokenizer
from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.corpus.filters import Runner
from pipeline_assets.corpus.stats import merged_stats, step_summary


def decont_config(cfg: CorpusConfig) -> NGramsDecontConfig:
    return NGramsDecontConfig(n_grams=cfg.decont_ngrams)


def build_index(texts: dict[str, list[str]], index_dir: Path, cfg: CorpusConfig) -> dict[str, int]:
    """Hash every n-gram of every eval text; returns n-gram count per task. Index and filter share tokenizer."""
    conf = decont_config(cfg)
    words, hash_fn = RegexWordTokenizer(), create_hash_func(conf.hash_config)
    index_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for task, items in texts.items():
        hashes = {hash_fn(" ".join(g)) for text in items
                  for g in ngrams(words.word_tokenize(simplify_text(text, conf.norm_config)), conf.n_grams)}
        np.array(sorted(hashes), dtype=conf.hash_config.np_descr).tofile(index_dir / f"{task}.index.hashes")
        counts[task] = len(hashes)
    return counts


def make_filter(index_dir: Path, cfg: CorpusConfig, exclusion_writer=None) -> NGramsDecontFilter:
    return NGramsDecontFilter(str(index_dir), config=decont_config(cfg), exclusion_writer=exclusion_writer,
                              language=RegexWordTokenizer())


def decontaminate_partition(docs_dir: Path, index_dir: Path, out_dir: Path, cfg: CorpusConfig,
                            run: Runner) -> dict:
    if not any(docs_dir.glob("*.jsonl")):
        # Dedup can empty a source (every document a copy of an earlier source's): nothing to decontaminate,
        # and datatrove's reader would raise on an empty folder.
        (out_dir / "documents").mkdir(parents=True, exist_ok=True)
        return {"docs_in": 0, "contaminated_removed": 0, "contaminated_by_task": {}, "docs_out": 0,
                "decont_ngrams": cfg.decont_ngrams}
    run([
        JsonlReader(str(docs_dir), glob_pattern="*.jsonl", compression=None),
        make_filter(index_dir, cfg, JsonlWriter(str(out_dir / "removed" / "1_contaminated"), compression=None)),
        JsonlWriter(str(out_dir / "documents"), compression=None),
    ], out_dir / "logs", cfg.tasks)
    faults.at("curation.after_decont")  # kill-test hook: every rank done, the version not yet renamed
    step = step_summary(merged_stats(out_dir / "logs"))[1]
    by_task = {k.removeprefix("contaminated_"): v for k, v in step["counters"].items()
               if k.startswith("contaminated_")}
    return {"docs_in": step["in"], "contaminated_removed": step["dropped"],
            "contaminated_by_task": by_task, "docs_out": step["in"] - step["dropped"],
            "decont_ngrams": cfg.decont_ngrams}


def count_contaminated(docs_dir: Path, index_dir: Path, cfg: CorpusConfig) -> Counter:
    """Eval tasks still overlapping documents under ``docs_dir`` (the post-decontamination audit)."""
    filt = make_filter(index_dir, cfg)
    found: Counter = Counter()
    for path in sorted(docs_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                doc = Document(text=row["text"], id=row["id"], metadata=row.get("metadata", {}))
                if filt.filter(doc) is not True:
                    found[doc.metadata["contaminated_task"]] += 1
    return found
