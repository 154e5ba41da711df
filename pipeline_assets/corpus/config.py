"""The curation stage's knobs (profiles set the values): CorpusConfig, the quality classifier's and the
content-safety filters'. Plain dataclasses, so the definitions load without datatrove, spaCy or fastText."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DOMAINS = ("prose", "code", "legal", "web", "math")


@dataclass(frozen=True)
class CorpusConfig:
    # Ingest: built-in sources are capped so the tiny profile curates in minutes on 2 cores.
    max_bytes_per_source: int | None = 3_000_000
    max_doc_bytes: int = 1_000_000  # GopherQuality ran >340 s on one 50 MB record: quarantine above this
    tasks: int = 2  # datatrove ranks per partition; fixed per run because dedup stages replay them
    # Language ID (fastText lid.176, the model datatrove's LanguageFilter uses)
    languages: tuple[str, ...] = ("en",)
    language_threshold: float = 0.65
    # MinHash near-dup. LSH only proposes candidates; a pair is removed when the exact Jaccard of its word
    # 5-gram sets is >= near_dup_jaccard. datatrove's 14x8 shape detects a pair at 0.70 with p=0.56 (0.81: 0.94),
    # so it cannot back a 0.7 cut; 25x5 proposes one at 0.70 with p=0.990 (0.75: 0.999) for 125 hashes (+12%),
    # and at 0.3 with p=0.06 (20x4 / 28x4 reach 0.996+ at 0.70 but propose 15-20% of pairs at 0.3).
    minhash_ngrams: int = 5
    minhash_buckets: int = 25
    minhash_hashes_per_bucket: int = 5
    # 0.7 keeps the boundary where datatrove's default shape had it (its 50% point is (1/14)^(1/8) = 0.72),
    # now a hard cut instead of a coin toss. None: no confirmation, every LSH candidate pair is clustered.
    near_dup_jaccard: float | None = 0.7
    # Decontamination: 8-word n-grams; eval prompts are short, 13-grams (GPT-3) would miss most of them
    decont_ngrams: int = 8
    # Mixture
    val_fraction: float = 0.05
    # math: the synthetic verified arithmetic stream (corpus/synthetic.py), the task SFT and GRPO then train on.
    domain_weights: dict[str, float] = field(
        default_factory=lambda: {"prose": 0.35, "code": 0.3, "legal": 0.05, "web": 0.2, "math": 0.1}
    )
    max_repeats: float = 4.0  # up to ~4 epochs of repeated data costs little (Muennighoff et al. 2023)
    seed: int = 1234

    def validate(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {self.tasks}")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        unknown = set(self.domain_weights) - set(DOMAINS)
        if unknown:
            raise ValueError(f"unknown domains {sorted(unknown)} in domain_weights; valid: {DOMAINS}")
        if any(w < 0 for w in self.domain_weights.values()) or sum(self.domain_weights.values()) <= 0:
            raise ValueError(f"domain_weights must be >= 0 with a positive sum, got {self.domain_weights}")
        if self.max_repeats < 1:
            raise ValueError(f"max_repeats must be >= 1 (1 = never repeat data), got {self.max_repeats}")
        if min(self.minhash_ngrams, self.minhash_buckets, self.minhash_hashes_per_bucket) < 1:
            raise ValueError("minhash_ngrams, minhash_buckets and minhash_hashes_per_bucket must be >= 1, got "
                             f"{self.minhash_ngrams}, {self.minhash_buckets}, {self.minhash_hashes_per_bucket}")
        if self.near_dup_jaccard is not None and not 0 < self.near_dup_jaccard <= 1:
            raise ValueError(f"near_dup_jaccard must be in (0, 1] or None (no confirmation), "
                             f"got {self.near_dup_jaccard}")
        if self.decont_ngrams < 3:
            raise ValueError(f"decont_ngrams must be >= 3 or everything matches, got {self.decont_ngrams}")


@dataclass(frozen=True)
class QualityClassifierConfig:
    # None = the built-in reference (corpus/quality.py docstring); else a folder of reference text (a landing folder)
    reference_path: str | None = None
    reference_max_bytes: int | None = 3_000_000  # per built-in reference source (READMEs, licences); None: all
    # Bound on reference chunks (and on each kind of negative): ~8 s of training at any corpus size. Over 4 seeds,
    # 2,000 chunks x 25 epochs let 2-7% of shuffled documents through at 0.5; 4,000 x 50 far fewer.
    sample_docs: int = 4000
    chunk_words: int = 60  # documents are cut into paragraph-aligned chunks of about this many words
    # Shuffles per reference chunk: over 4 trainings, 1 let shuffled documents score up to 0.72 (a fixture one
    # passed the web threshold); 3 kept them <= 0.45 while unseen clean documents stayed >= 0.955.
    salads_per_chunk: int = 3
    heldout_fraction: float = 0.2  # of reference DOCUMENTS: no chunk (or shuffled twin) of a test doc is trained on
    heldout_lq_share: float = 0.1  # the prevalence metrics are reported at: low quality is the minority after
    # heuristic filtering; balanced metrics are reported beside it
    # fastText on skeletons: trigrams of function words and shapes; lr 0.1 hit NaN on licence chunks, 0.05 did not
    epoch: int = 50
    learning_rate: float = 0.05
    dim: int = 20  # a multiple of 10: see corpus/quality.py, _train_fasttext
    word_ngrams: int = 3
    bucket: int = 100_000  # skeleton trigrams: ~50k distinct on the reference; 8 MB model
    # Per-domain P(hq) under which a document is dropped; a domain not listed is not scored: code, math and
    # licences are not prose. web: over 4 trainings, 340 shuffled copies of unseen clean documents scored at
    # most 0.22-0.45 and the clean documents at least 0.955, so 0.6 sits between. prose, the reference's own
    # domain (its held-out documents, not their shuffles, decide the threshold): 0.5.
    thresholds: dict[str, float] = field(default_factory=lambda: {"web": 0.6, "prose": 0.5})
    seed: int = 1234

    def validate(self) -> None:
        if not 0 < self.heldout_fraction < 0.5:
            raise ValueError(f"heldout_fraction must be in (0, 0.5), got {self.heldout_fraction}")
        if not 0 < self.heldout_lq_share < 1:
            raise ValueError(f"heldout_lq_share must be in (0, 1), got {self.heldout_lq_share}")
        if self.sample_docs < 50:
            raise ValueError(f"sample_docs must be >= 50 to train and hold out, got {self.sample_docs}")
        if self.dim % 10:
            raise ValueError(f"dim must be a multiple of 10 (fastText 0.9.2 leaves the rest of its matrix "
                             f"uninitialised), got {self.dim}")
        if self.chunk_words < 20:
            raise ValueError(f"chunk_words must be >= 20, got {self.chunk_words}")
        bad = {d: t for d, t in self.thresholds.items() if not 0 <= t <= 1}
        if bad:
            raise ValueError(f"thresholds are probabilities of 'hq' in [0, 1], got {bad}")
        if self.reference_path is not None and not Path(self.reference_path).is_dir():
            raise ValueError(f"reference_path {self.reference_path!r} is not a directory")


@dataclass(frozen=True)
class ContentSafetyConfig:
    """Thresholds of the content-safety filters, measured on tests/fixtures/content_safety.jsonl, the pydoc
    topics and the 213 installed packages' READMEs (the profile section ``content_safety``)."""

    toxicity: bool = True
    malware: bool = True
    # A unit at or above this counts as toxic: 4 of 48,188 benign units (pydoc topics, 213 READMEs, the
    # fixture) reach 0.9 against 21 at 0.8; the fixture's closest benign unit ("A bastard sword is...") is 0.89.
    toxicity_threshold: float = 0.9
    # Drop when this share of units is toxic: the worst benign document has 0.020 (alt-profanity-check's README,
    # 3 of 147 units quote profanity); a rant with no unit over toxicity_max_threshold has 2 of 3.
    toxic_unit_fraction: float = 0.2
    # One unit at or above this drops the document however long it is: the highest benign unit without
    # profanity is 0.959 (a contributor named "Dick" in tabulate's README), the lowest abusive peak 0.982.
    toxicity_max_threshold: float = 0.97
    # Sentences shorter than this are merged with the next one before scoring: one- or two-token fragments
    # ("```sh tox```", where the model reads "sh" as a profanity stem) are noise; 20 cuts benign units >= 0.8
    # from 56 to 21 and still scores a one-sentence insult on its own.
    min_unit_chars: int = 20

    def validate(self) -> None:
        for name in ("toxicity_threshold", "toxic_unit_fraction", "toxicity_max_threshold"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"content_safety.{name}={value} must be in (0, 1]")
        if self.toxicity_max_threshold < self.toxicity_threshold:
            raise ValueError(f"content_safety.toxicity_max_threshold={self.toxicity_max_threshold} is below "
                             f"toxicity_threshold={self.toxicity_threshold}: a single-unit drop must need a "
                             "higher score than a toxic unit")
        if self.min_unit_chars < 0:
            raise ValueError(f"content_safety.min_unit_chars={self.min_unit_chars} must be >= 0")
