"""CorpusConfig: every knob of the curation stage, one frozen dataclass (profiles set the values)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
