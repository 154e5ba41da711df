"""Curation throughput: our datatrove blocks vs datatrove's stock defaults, same documents, same process.

    python bench/curation_throughput.py                 # ~5 MB of local stdlib source + reference text
    python bench/curation_throughput.py --mb 20

Rows: MinHash signatures and 8-gram decontamination with ``RegexWordTokenizer`` vs datatrove's default
English tokenizer (spaCy), and language ID on the whole document (both use datatrove's filters).
Prints MB/s per core and the speed-up ratio; single process, one rank, so numbers are per core.
"""

from __future__ import annotations

import argparse
import sysconfig
import tempfile
import time
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.filters import GopherRepetitionFilter

from pipeline_assets.corpus.blocks import OfflineLanguageFilter, RegexWordTokenizer
from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.corpus.decontaminate import build_index, make_filter
from pipeline_assets.corpus.dedup import minhash_config


def load_docs(mb: float) -> list[Document]:
    docs, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        text = path.read_text(errors="replace")
        docs.append(Document(text=text, id=str(path)))
        total += len(text.encode())
        if total > mb * 1e6:
            break
    return docs


def timed(fn, docs: list[Document]) -> float:
    t0 = time.perf_counter()
    fn(docs)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=5.0, help="MB of text to process")
    args = parser.parse_args()
    docs = load_docs(args.mb)
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    cfg = CorpusConfig()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def minhash(language):
            step = MinhashDedupSignature(f"{tmp}/sig-{id(language)}", config=minhash_config(cfg), language=language)
            return lambda ds: step.run(iter(ds), rank=0, world_size=1)  # terminal step: returns None

        rows.append(("minhash signatures", timed(minhash("en"), docs), timed(minhash(RegexWordTokenizer()), docs)))
        build_index({"bench": [docs[0].text[:2000]]}, Path(tmp) / "index", cfg)
        ours = make_filter(Path(tmp) / "index", cfg)
        stock = type(ours)(str(Path(tmp) / "index"), config=ours.config)  # datatrove default language: spaCy

        rows.append(("8-gram decontamination", timed(lambda ds: [stock.filter(d) for d in ds], docs),
                     timed(lambda ds: [ours.filter(d) for d in ds], docs)))
        rep_stock, rep_ours = GopherRepetitionFilter(), GopherRepetitionFilter(language=RegexWordTokenizer())
        rows.append(("gopher repetition", timed(lambda ds: [rep_stock.filter(d) for d in ds], docs),
                     timed(lambda ds: [rep_ours.filter(d) for d in ds], docs)))
        lid = OfflineLanguageFilter(["en"])
        t = timed(lambda ds: [lid.filter(d) for d in ds], docs)
        rows.append(("language ID (lid.176, offline)", t, t))
    print(f"{len(docs)} documents, {mb:.1f} MB\n")
    print("| step | datatrove default MB/s | ours MB/s | speed-up |\n|---|---|---|---|")
    for name, base, ours_t in rows:
        print(f"| {name} | {mb / base:.2f} | {mb / ours_t:.2f} | {base / ours_t:.1f}x |")


if __name__ == "__main__":
    main()
