"""A model-based quality classifier (fastText, as DCLM and FineWeb-Edu use) and its datatrove filter step.

What the heuristics miss is what it is for: incoherent text with normal word lengths and stop words (word
salad) and keyword-stuffed lines pass Gopher, C4 and FineWeb alike. Training data, all on the machine or
made by the pipeline, nothing downloaded:

- ``hq`` (the reference): real, human-written text. Default: the Python reference manual (edited prose,
  ``pydoc_data.topics``), the installed packages' READMEs that the web recipe's own heuristic filters keep,
  and licence texts. A user points ``reference_path`` at a folder of their own reference text instead.
- ``lq``: every reference chunk with its words shuffled (word salad), and keyword-stuffed lines drawn from
  its vocabulary (spam). Each salad shares its unigrams with an ``hq`` twin, so only word order separates
  them. Documents the heuristics reject are NOT used as negatives: with them, 44-56% of held-out READMEs the
  heuristics keep were dropped (the classifier learnt README markup, not quality).

The classifier reads a topic-free skeleton of the text (``skeleton``): function words kept, every other word
a shape token. On raw words, trained on this reference, it scored clean prose on unseen topics (a bread
recipe, a council vote) 0.05-0.84 P(hq); on the skeleton 0.99-1.0, with word salad of the same texts 0-0.12.

Held-out metrics are reported at a stated low-quality prevalence (``heldout_lq_share``) besides balanced: a
balanced test flatters (one reported fastText classifier fell from F1 0.87 balanced to 0.47 at 12:1).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters import FastTextClassifierFilter
from spacy.lang.en.stop_words import STOP_WORDS

from pipeline_assets.corpus.config import QualityClassifierConfig

LABEL_HQ, LABEL_LQ = "hq", "lq"
SCORE_KEY = "quality_score"  # the document metadata key of P(hq), kept on every document
_WORDS = re.compile(r"\S+")
BINS = 10  # score histograms: ten bins of 0.1 over [0, 1]
_TOKENS = re.compile(r"[A-Za-z]+(?:'[a-z]+)?|\d+|[^\w\s]")


def skeleton(text: str) -> str:
    """Function words as written (lower-cased), other words as shape tokens, numbers and punctuation kept apart."""
    out = []
    for tok in _TOKENS.findall(text):
        low = tok.lower()
        if low in STOP_WORDS:
            out.append(low)
        elif tok[0].isdigit():
            out.append("<num>")
        elif tok[0].isalpha():
            out.append("<W>" if tok[0].isupper() else "<w>")
        else:
            out.append(tok)
    return " ".join(out)


def chunks(text: str, words: int) -> list[str]:
    """Paragraph-aligned chunks of about ``words`` words (a document is many samples, not one)."""
    out, current, n = [], [], 0
    for block in re.split(r"\n\s*\n", text):
        tokens = _WORDS.findall(block)
        # a paragraph longer than a chunk (a licence with no blank line) is cut by words
        for para in [block] if len(tokens) <= words else [" ".join(tokens[i:i + words])
                                                           for i in range(0, len(tokens), words)]:
            k = len(_WORDS.findall(para))
            if k == 0:
                continue
            current.append(para)
            n += k
            if n >= words:
                out.append("\n\n".join(current))
                current, n = [], 0
    if n >= words // 2:
        out.append("\n\n".join(current))
    return out


def word_salad(text: str, rng: random.Random) -> str:
    """The chunk's words in random order, its paragraph lengths kept."""
    words = _WORDS.findall(text)
    rng.shuffle(words)
    paras, i = [], 0
    for para in re.split(r"\n\s*\n", text):
        k = len(_WORDS.findall(para))
        paras.append(" ".join(words[i:i + k]))
        i += k
    return "\n\n".join(p for p in paras if p)


def keyword_spam(text: str, rng: random.Random) -> str:
    """Lines of the chunk's content words stuffed together, the shape of SEO spam."""
    vocab = sorted({w.strip(".,;:()`'\"").lower() for w in _WORDS.findall(text) if len(w) > 3} - {""})
    if not vocab:
        return ""
    hot = rng.sample(vocab, min(4, len(vocab)))
    lines = []
    for _ in range(rng.randint(4, 10)):
        picks = [rng.choice(hot) if rng.random() < 0.5 else rng.choice(vocab) for _ in range(rng.randint(5, 12))]
        lines.append(rng.choice((", ", " ", " | ", " - ")).join(picks))
    return "\n".join(lines)


def heuristic_rejects(texts: list[str], recipe: list[tuple[str, object]]) -> set[int]:
    """Indices of ``texts`` that some filter of ``recipe`` (the domain's own datatrove filters) rejects."""
    filters = [make(None) for _, make in recipe]
    rejected = set()
    for i, text in enumerate(texts):
        doc = Document(text=text, id=str(i))
        for f in filters:
            verdict = f.filter(doc)
            if verdict is False or (isinstance(verdict, tuple) and not verdict[0]):
                rejected.add(i)
                break
    return rejected


def builtin_reference(web_recipe: list[tuple[str, object]], max_bytes: int | None) -> dict[str, list[str]]:
    """The default reference: name -> documents (module docstring)."""
    from pydoc_data.topics import topics

    from pipeline_assets.corpus.ingest import source_texts
    from pipeline_assets.corpus.sources import BUILTIN_SOURCES

    readmes = source_texts(BUILTIN_SOURCES["package_readmes"], max_bytes)
    rejected = heuristic_rejects(readmes, web_recipe)
    return {"python_docs": [topics[k] for k in sorted(topics)],
            "package_readmes_kept_by_heuristics": [t for i, t in enumerate(readmes) if i not in rejected],
            "licenses": source_texts(BUILTIN_SOURCES["licenses"], max_bytes)}


def folder_reference(path: str) -> dict[str, list[str]]:
    from pipeline_assets.corpus.ingest import source_texts
    from pipeline_assets.corpus.sources import SourceSpec

    texts = source_texts(SourceSpec(name="quality_reference", kind="folder", domain="prose", path=path))
    if not texts:
        raise ValueError(f"reference_path {path!r} holds no readable documents")
    return {path: texts}


def histogram(scores) -> list[int]:
    return np.histogram(np.asarray(scores, dtype=float), bins=BINS, range=(0, 1))[0].tolist()


def _metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Precision/recall/F1 of ``lq`` (the class the filter removes) and ROC AUC, from P(hq) scores."""
    pred_lq = scores < threshold
    tp = int(np.sum(pred_lq & (labels == 0)))
    fp = int(np.sum(pred_lq & (labels == 1)))
    fn = int(np.sum(~pred_lq & (labels == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    pos, neg = scores[labels == 1], scores[labels == 0]
    # AUC = P(a random hq scores above a random lq), ties half (Mann-Whitney U)
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    auc = float(greater / (len(pos) * len(neg))) if len(pos) and len(neg) else float("nan")
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "auc": round(auc, 4), "n": int(len(labels)), "n_lq": int(len(neg)), "n_hq": int(len(pos))}


def auc_ci95(auc: float, n_hq: int, n_lq: int) -> list[float]:
    """95% interval of an AUC (Hanley & McNeil 1982 standard error), clipped to [0, 1]."""
    from math import sqrt

    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    se = sqrt((auc * (1 - auc) + (n_hq - 1) * (q1 - auc * auc) + (n_lq - 1) * (q2 - auc * auc)) / (n_hq * n_lq))
    return [round(max(0.0, auc - 1.96 * se), 4), round(min(1.0, auc + 1.96 * se), 4)]


def auc_p_value(auc: float, n_hq: int, n_lq: int) -> float:
    """One-sided p of AUC > 0.5 under the null of no separation (Mann-Whitney normal approximation)."""
    from math import erfc, sqrt

    sd = sqrt((n_hq + n_lq + 1) / (12 * n_hq * n_lq))
    return 0.5 * erfc((auc - 0.5) / sd / sqrt(2))


def _negatives(texts: list[str], rng: random.Random, cap: int, salads: int = 1) -> dict[str, list[str]]:
    return {"word_salad": [word_salad(t, rng) for t in texts[:cap] for _ in range(salads)],
            "keyword_spam": [s for s in (keyword_spam(t, rng) for t in texts[:cap]) if s]}


def train_classifier(cfg: QualityClassifierConfig, reference: dict[str, list[str]], out_dir: Path) -> dict:
    """Train, evaluate on held-out documents and save ``model-<sha>.bin`` in ``out_dir``; returns the metrics."""
    import fasttext

    if not hasattr(fasttext, "train_supervised"):
        raise ImportError("the installed `fasttext` package cannot train: fasttext-predict overwrote "
                          "fasttext-numpy2-wheel; run `pip install --force-reinstall --no-deps "
                          "fasttext-numpy2-wheel==0.9.2`")
    rng = random.Random(cfg.seed)
    # Exact copies dropped before the split (licence texts repeat across packages): a held-out document
    # must not also be a training document.
    docs = list({" ".join(t.split()): t for texts in reference.values() for t in texts}.values())
    rng.shuffle(docs)
    n_test = max(1, int(len(docs) * cfg.heldout_fraction))
    hq_test = [c for t in docs[:n_test] for c in chunks(t, cfg.chunk_words)]
    hq_train = [c for t in docs[n_test:] for c in chunks(t, cfg.chunk_words)]
    rng.shuffle(hq_test)
    rng.shuffle(hq_train)
    hq_train = hq_train[:cfg.sample_docs]
    # Licences share whole clauses across documents: 10% of held-out chunks were training lines verbatim.
    trained = {skeleton(t) for t in hq_train}
    hq_test = [t for t in hq_test if skeleton(t) not in trained][:max(1, int(cfg.sample_docs * cfg.heldout_fraction))]
    lq_train = _negatives(hq_train, rng, cfg.sample_docs, cfg.salads_per_chunk)
    lq_test = _negatives(hq_test, rng, len(hq_test))

    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"__label__{LABEL_HQ} {skeleton(t)}" for t in hq_train]
    lines += [f"__label__{LABEL_LQ} {skeleton(t)}" for texts in lq_train.values() for t in texts]
    rng.shuffle(lines)
    train_file = out_dir / "train.txt"
    train_file.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    model = _train_fasttext(train_file, cfg)
    train_s = time.perf_counter() - started
    tmp = out_dir / "model.bin.tmp"
    model.save_model(str(tmp))
    # datatrove caches a local model by its path and never re-reads it: one content-hashed name per model
    model_path = out_dir / f"model-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:16]}.bin"
    tmp.rename(model_path)

    def p_hq(texts: list[str]) -> np.ndarray:
        return np.array([hq_probability(model, t) for t in texts])

    hq_scores = p_hq(hq_test)
    lq_scores = {kind: p_hq(texts) for kind, texts in lq_test.items()}
    threshold = max(cfg.thresholds.values(), default=0.5)  # the strictest threshold in use: the worst case
    all_lq = np.concatenate(list(lq_scores.values()))
    # At the stated prevalence: every held-out hq chunk, lq subsampled (evenly over kinds) to the share.
    n_lq = max(1, min(len(all_lq), round(len(hq_scores) * cfg.heldout_lq_share / (1 - cfg.heldout_lq_share))))
    picked = np.random.default_rng(cfg.seed).choice(len(all_lq), size=n_lq, replace=False)
    evaluations = {"heldout": (hq_scores, all_lq[picked]), "heldout_balanced": (hq_scores, all_lq)}
    metrics = {}
    for name, (pos, neg) in evaluations.items():
        labels = np.concatenate([np.ones(len(pos), int), np.zeros(len(neg), int)])
        metrics[name] = _metrics(np.concatenate([pos, neg]), labels, threshold)
    held = metrics["heldout"]
    result = {
        "model": model_path.name, "model_bytes": model_path.stat().st_size, "train_s": round(train_s, 2),
        "reference": {name: len(texts) for name, texts in reference.items()},
        "train_hq": len(hq_train), "train_lq": {k: len(v) for k, v in lq_train.items()},
        "threshold": threshold, "thresholds": dict(cfg.thresholds), "heldout_lq_share": cfg.heldout_lq_share,
        **metrics, "auc_p_value": auc_p_value(held["auc"], held["n_hq"], held["n_lq"]),
        "auc_ci95": auc_ci95(held["auc"], held["n_hq"], held["n_lq"]),
        "heldout_hq_kept": round(float(np.mean(hq_scores >= threshold)), 4),
        "heldout_recall_by_kind": {k: round(float(np.mean(v < threshold)), 4) for k, v in lq_scores.items()},
        "score_histogram": {"hq": histogram(hq_scores), "lq": histogram(all_lq)},
    }
    (out_dir / "heldout.jsonl").write_text("".join(
        json.dumps({"label": label, "kind": kind, "text": t}) + "\n"
        for label, kind, texts in [(LABEL_HQ, "reference", hq_test)] + [(LABEL_LQ, k, v) for k, v in lq_test.items()]
        for t in texts))
    return result


def _train_fasttext(train_file: Path, cfg: QualityClassifierConfig):
    """``fasttext.train_supervised`` with ``thread=10`` and ``dim`` a multiple of 10 (``validate``).

    fastText 0.9.2 allocates its input matrix uninitialised (intgemm's AlignedVector) and fills it in ten
    blocks of ``size // 10``, one per training thread: with fewer threads the other blocks, and with any
    size not divisible by ten the last ``size % 10`` floats, keep whatever the heap held. Measured: with
    ``thread=1`` one process gave 5 different models from identical data and "Encountered NaN"; with
    ``dim=16`` the tail held earlier models' weights. With both fixed, 12 of 12 trainings were finite.
    """
    import fasttext

    return fasttext.train_supervised(str(train_file), epoch=cfg.epoch, lr=cfg.learning_rate, dim=cfg.dim,
                                     wordNgrams=cfg.word_ngrams, bucket=cfg.bucket, minCount=1, seed=cfg.seed,
                                     thread=10, verbose=0)


def hq_probability(model, text: str) -> float:
    """P(hq) of ``text``; a text with no word at all (nothing to judge) scores 0."""
    line = skeleton(text)
    if not line:
        return 0.0
    labels, probs = model.predict(line, k=-1)
    return float(dict(zip(labels, probs, strict=True)).get(f"__label__{LABEL_HQ}", 0.0))


class QualityFilter(FastTextClassifierFilter):
    """datatrove's fastText filter on the text's skeleton; the drop has its own reason, P(hq) its own key.

    Document mode: a document is kept whole or dropped, never cut into its kept paragraphs.
    """

    name = "🎓 Quality classifier"

    def __init__(self, model_path: str, threshold: float, exclusion_writer=None) -> None:
        # newline_replacement=" ": the training lines were space-joined; datatrove's default "" glues words
        super().__init__(model_url=model_path, keep_labels=(LABEL_HQ, threshold), exclusion_writer=exclusion_writer,
                         newline_replacement=" ")
        self.threshold = threshold

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        score = hq_probability(self.model, doc.text)
        doc.metadata[SCORE_KEY] = round(score, 4)
        self.stat_update("scored")
        return True if score >= self.threshold else (False, "low_quality")
