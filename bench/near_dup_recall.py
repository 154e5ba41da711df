"""Near-duplicate recall and precision: datatrove's 14x8 LSH alone vs the loose shape + exact-Jaccard confirmation.

    python bench/near_dup_recall.py                   # 30 planted pairs per Jaccard band + real licence text (~2 min)
    python bench/near_dup_recall.py --pairs-per-band 60 --real-mb 0

Planted set: base documents are 150-400-word chunks of the Python reference manual (``pydoc_data``) and
stdlib module docstrings, kept only if no two share >= 0.2 of their word 5-grams. Each planted base gets
a copy with evenly spaced words replaced until the exact word-5-gram Jaccard (datatrove's normalisation,
``RegexWordTokenizer``) hits a target drawn in its band; related-but-distinct pairs (0.3-0.7) and
unpaired documents are the negatives. Half the copies sit in the other source partition, half in the
same one. Both rows run the product path, ``signatures`` -> ``find_duplicates`` ->
``deduplicate_partition``, on datatrove's local executor, in this process one after the other.

A pair counts as caught when exactly one copy survives. Precision: of the documents removed, the share
that is one copy of a planted pair at Jaccard >= the threshold whose other copy survived.
``--real-mb``: the same two rows on Debian copyright files (no ground truth; shows the candidate and
confirmation cost on heavily duplicated legal text, and how many documents each row removes).
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import string
import sys
import sysconfig
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_assets.corpus.blocks import RegexWordTokenizer  # noqa: E402
from pipeline_assets.corpus.config import CorpusConfig  # noqa: E402
from pipeline_assets.corpus.dedup import deduplicate_partition, find_duplicates, minhash_config, signatures  # noqa: E402
from pipeline_assets.corpus.near_dup import jaccard, shingles  # noqa: E402

# Negative bands first: pairs below the threshold that must survive.
BANDS = ((0.3, 0.6), (0.6, 0.7), (0.7, 0.75), (0.75, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95))
OLD = CorpusConfig(minhash_buckets=14, minhash_hashes_per_bucket=8, near_dup_jaccard=None)  # datatrove's shape
NEW = CorpusConfig()
MAX_BASE_OVERLAP = 0.2  # bases sharing more than this would be near-duplicates nobody planted


@dataclass(frozen=True)
class Planted:
    base: str  # document id of the original
    copy: str | None  # document id of the edited copy; None for an unpaired document
    jaccard: float  # exact word-5-gram Jaccard of the two (1.0 for unpaired)


def _chunks(text: str, lo: int = 150, hi: int = 400) -> list[str]:
    out, cur = [], []
    for para in text.split("\n\n"):
        cur.append(para)
        words = sum(len(p.split()) for p in cur)
        if words >= lo:
            out.append("\n\n".join(cur) if words <= hi else " ".join(" ".join(cur).split()[:hi]))
            cur = []
    return out


def _docstrings() -> list[str]:
    out = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if {"site-packages", "test", "tests"} & set(path.parts):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(errors="replace")))
        except SyntaxError:
            continue
        out += _chunks(doc or "")
    return out


def base_texts(cfg: CorpusConfig, limit: int) -> list[str]:
    """Up to ``limit`` real-text documents, no two with word-5-gram Jaccard above ``MAX_BASE_OVERLAP``."""
    from pydoc_data.topics import topics

    pool = [c for k in sorted(topics) for c in _chunks(topics[k])] + _docstrings()
    mh, words = minhash_config(cfg), RegexWordTokenizer()
    kept: list[str] = []
    postings: dict[int, list[int]] = defaultdict(list)  # shingle -> kept bases holding it
    sizes: list[int] = []
    for text in pool:
        sh = shingles(text, mh, words)
        if sh.size < 100:
            continue
        overlap = Counter(i for s in sh.tolist() for i in postings.get(s, ()))
        if any(n / (sh.size + sizes[i] - n) > MAX_BASE_OVERLAP for i, n in overlap.items()):
            continue
        for s in sh.tolist():
            postings[s].append(len(kept))
        kept.append(text)
        sizes.append(sh.size)
        if len(kept) == limit:
            break
    return kept


def _fresh_word(rng: random.Random) -> str:
    return "q" + "".join(rng.choices(string.ascii_lowercase, k=7))


def edit_to(text: str, target: float, cfg: CorpusConfig, rng: random.Random) -> tuple[str, float]:
    """Replace evenly spaced words of ``text`` until its word-5-gram Jaccard with the original is ~``target``."""
    mh, words_tok = minhash_config(cfg), RegexWordTokenizer()
    original = shingles(text, mh, words_tok)
    words = text.split(" ")
    fresh = [_fresh_word(rng) for _ in words]
    offset = rng.random()

    def edited(k: int) -> str:
        out = list(words)
        for j in range(k):
            out[int((j + offset) * len(words) / k)] = fresh[j]
        return " ".join(out)

    lo, hi = 1, len(words) // 2  # Jaccard falls as k grows: bisect for the k closest to the target
    while lo < hi:
        mid = (lo + hi) // 2
        if jaccard(original, shingles(edited(mid), mh, words_tok)) > target:
            lo = mid + 1
        else:
            hi = mid
    best = min((k for k in (lo - 1, lo) if k >= 1),
               key=lambda k: abs(jaccard(original, shingles(edited(k), mh, words_tok)) - target))
    copy = edited(best)
    return copy, jaccard(original, shingles(copy, mh, words_tok))


def planted_set(out: Path, pairs_per_band: int, singles: int, cfg: CorpusConfig = NEW,
                bands: tuple = BANDS, seed: int = 0) -> tuple[dict[str, Path], list[Planted]]:
    """Two source partitions ("a", "b") of JSONL documents under ``out``, two files each (ranks 0 and 1)."""
    rng = random.Random(seed)
    bases = base_texts(cfg, pairs_per_band * len(bands) + singles)
    need = pairs_per_band * len(bands) + singles
    if len(bases) < need:
        raise ValueError(f"only {len(bases)} dissimilar base documents, {need} needed: lower --pairs-per-band")
    rows: dict[str, list[dict]] = {"a": [], "b": []}
    planted = []
    for i, text in enumerate(bases):
        rows["a"].append({"id": f"base-{i}", "text": text})
        if i >= pairs_per_band * len(bands):
            planted.append(Planted(f"a/base-{i}", None, 1.0))
            continue
        lo, hi = bands[i % len(bands)]
        copy, j = edit_to(text, rng.uniform(lo + (hi - lo) / 5, hi - (hi - lo) / 5), cfg, rng)
        part = "b" if i % 2 == 0 else "a"
        rows[part].append({"id": f"copy-{i}", "text": copy})
        planted.append(Planted(f"a/base-{i}", f"{part}/copy-{i}", j))
    dirs = {}
    for part, docs in rows.items():
        rng.shuffle(docs)
        dirs[part] = out / "sources" / part
        dirs[part].mkdir(parents=True)
        for f in range(2):
            with (dirs[part] / f"{f:02d}.jsonl").open("w") as fh:
                fh.writelines(json.dumps(d) + "\n" for d in docs[f::2])
    return dirs, planted


def run_dedup(sources: dict[str, Path], work: Path, cfg: CorpusConfig, run) -> dict:
    """The product path; returns ``find_duplicates``' report, the surviving ids and CPU seconds per stage.

    CPU seconds of this process: with one worker datatrove runs every task in it, and CPU time is what
    the loose shape costs, whatever else shares the cores.
    """
    cpu, sig_dirs = {}, {}
    wall = time.perf_counter()
    t = time.process_time()
    for name, docs in sources.items():
        sig_dirs[name] = work / "sigs" / name
        signatures(docs, sig_dirs[name], cfg, run)
    cpu["signatures"] = time.process_time() - t
    t = time.process_time()
    report = find_duplicates(sig_dirs, work / "clusters", cfg, run)
    cpu["find_duplicates"] = time.process_time() - t
    t = time.process_time()
    kept = set()
    for name, docs in sources.items():
        deduplicate_partition(docs, work / "clusters", name, work / "dedup" / name, cfg, run)
        kept |= {f"{name}/{json.loads(line)['id']}" for p in (work / "dedup" / name / "documents").glob("*.jsonl")
                 for line in p.open()}
    cpu["deduplicate"] = time.process_time() - t
    return {"report": report, "kept": kept, "cpu_s": cpu, "wall_s": time.perf_counter() - wall}


def band_of(j: float, bands: tuple = BANDS) -> tuple[float, float]:
    """The band holding ``j``; an edit that overshoots the outermost bands counts in them."""
    return next((b for b in bands if j < b[1]), bands[-1])


def score(planted: list[Planted], kept: set[str], threshold: float, bands: tuple = BANDS) -> dict:
    """Per band: pairs and how many lost exactly one copy; precision over every removed document."""
    by_band: dict[tuple, list[int]] = {b: [0, 0] for b in bands}
    true_removed = removed = both_removed = 0
    for p in planted:
        gone = [d for d in (p.base, p.copy) if d is not None and d not in kept]
        removed += len(gone)
        if p.copy is None:
            continue
        both_removed += len(gone) == 2
        band = by_band[band_of(p.jaccard, bands)]
        band[0] += 1
        band[1] += len(gone) == 1
        true_removed += len(gone) == 1 and p.jaccard >= threshold
    return {"bands": by_band, "removed": removed, "true_removed": true_removed, "both_removed": both_removed,
            "precision": true_removed / removed if removed else 1.0}


def compare(sources: dict[str, Path], work: Path, run, repeats: int) -> dict[str, dict]:
    """Both rows ``repeats`` times, order alternating; times are the minimum over the repeats."""
    results: dict[str, dict] = {}
    for i in range(repeats):
        for name, cfg in ((("old", OLD), ("new", NEW)) if i % 2 == 0 else (("new", NEW), ("old", OLD))):
            r = run_dedup(sources, work / f"{name}-{i}", cfg, run)
            if name in results:
                assert r["kept"] == results[name]["kept"], "dedup is deterministic: same documents every repeat"
                r["cpu_s"] = {k: min(v, results[name]["cpu_s"][k]) for k, v in r["cpu_s"].items()}
                r["wall_s"] = min(r["wall_s"], results[name]["wall_s"])
                r["report"]["confirm_s"] = min(r["report"]["confirm_s"], results[name]["report"]["confirm_s"])
            results[name] = r
    return {name: results[name] for name in ("old", "new")}


def best_match(texts: dict[str, str], ids: set[str], cfg: CorpusConfig) -> dict[str, float]:
    """For each of ``ids``: the highest exact word-5-gram Jaccard with any other document of ``texts``."""
    mh, words = minhash_config(cfg), RegexWordTokenizer()
    sets = {i: shingles(t, mh, words) for i, t in texts.items()}
    return {i: max((jaccard(sets[i], s) for j, s in sets.items() if j != i), default=0.0) for i in sorted(ids)}


def _row(name: str, cfg: CorpusConfig) -> str:
    confirm = f"exact J >= {cfg.near_dup_jaccard}" if cfg.near_dup_jaccard is not None else "none"
    return f"{name}: {cfg.minhash_buckets}x{cfg.minhash_hashes_per_bucket} LSH, confirmation {confirm}"


def _cost_table(results: dict[str, dict]) -> list[str]:
    base = results["old"]
    lines = ["| row | candidate pairs | confirmed | rejected | removed | CPU s: signatures | find_duplicates "
             "(confirm wall s) | deduplicate | total | total vs old | wall s |", "|---" * 11 + "|"]
    for name, r in results.items():
        rep, s = r["report"], r["cpu_s"]
        total = sum(s.values())
        lines.append(f"| {name} | {rep['candidate_pairs']} | {rep['confirmed_pairs']} | {rep['rejected_pairs']} | "
                     f"{rep['near_duplicates_to_remove']} | {s['signatures']:.2f} | {s['find_duplicates']:.2f} "
                     f"({rep['confirm_s']:.2f}) | {s['deduplicate']:.2f} | {total:.2f} | "
                     f"{total / sum(base['cpu_s'].values()):.2f}x | {r['wall_s']:.1f} |")
    return lines


def _licence_sources(out: Path, mb: float) -> tuple[dict[str, Path], dict[str, str]]:
    docs, total = [], 0
    for path in sorted(Path("/usr/share/doc").glob("*/copyright")):
        text = path.read_text(errors="replace")
        docs.append({"id": path.parent.name, "text": text})
        total += len(text.encode())
        if total > mb * 1e6:
            break
    out.mkdir(parents=True)
    for f in range(2):
        with (out / f"{f:02d}.jsonl").open("w") as fh:
            fh.writelines(json.dumps(d) + "\n" for d in docs[f::2])
    return {"licenses": out}, {f"licenses/{d['id']}": d["text"] for d in docs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs-per-band", type=int, default=30, help="planted pairs per Jaccard band")
    parser.add_argument("--singles", type=int, default=30, help="unpaired documents (must all survive)")
    parser.add_argument("--real-mb", type=float, default=3.0, help="MB of Debian copyright files (0: skip)")
    parser.add_argument("--workers", type=int, default=1, help="datatrove workers (1: every task in this process, "
                        "so CPU seconds cover all of it)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per row; times are the per-stage minimum")
    args = parser.parse_args()
    from resources.launcher import LauncherResource

    run = LauncherResource(kind="local", datatrove_workers=args.workers).run_datatrove
    threshold = NEW.near_dup_jaccard
    print(_row("old", OLD))
    print(_row("new", NEW))
    with tempfile.TemporaryDirectory() as tmp:
        sources, planted = planted_set(Path(tmp), args.pairs_per_band, args.singles)
        print(f"\nplanted: {sum(p.copy is not None for p in planted)} pairs, {args.singles} unpaired, "
              f"{sum(len(list(d.glob('*.jsonl'))) for d in sources.values())} files in 2 sources\n")
        results = compare(sources, Path(tmp) / "planted", run, args.repeats)
        scores = {name: score(planted, r["kept"], threshold) for name, r in results.items()}
        print("| exact Jaccard | pairs | old: one copy removed | new: one copy removed |")
        print("|---|---|---|---|")
        for band in BANDS:
            n, old_hit = scores["old"]["bands"][band]
            new_hit = scores["new"]["bands"][band][1]
            kind = "should be removed" if band[0] >= threshold else "should survive"
            print(f"| {band[0]:.2f}-{band[1]:.2f} ({kind}) | {n} | {old_hit} ({old_hit / max(n, 1):.0%}) | "
                  f"{new_hit} ({new_hit / max(n, 1):.0%}) |")
        for name, s in scores.items():
            print(f"\n{name}: removed {s['removed']} documents, {s['true_removed']} of them one copy of a pair at "
                  f">= {threshold} (precision {s['precision']:.3f}); pairs with both copies removed: "
                  f"{s['both_removed']}")
        print("\n" + "\n".join(_cost_table(results)))
        if args.real_mb > 0:
            sources, texts = _licence_sources(Path(tmp) / "licences", args.real_mb)
            print(f"\nreal text: {len(texts)} Debian copyright files ({args.real_mb} MB), one source\n")
            real = compare(sources, Path(tmp) / "real", run, args.repeats)
            print("\n".join(_cost_table(real)))
            for name, other in (("old", "new"), ("new", "old")):
                only = best_match(texts, real[other]["kept"] - real[name]["kept"], NEW)
                print(f"removed only by {name}: {len(only)}; best exact Jaccard with any other file: "
                      + (", ".join(f"{j:.3f}" for j in sorted(only.values())) or "-"))


if __name__ == "__main__":
    main()
