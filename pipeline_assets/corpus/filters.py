"""Per-domain quality filtering of one source partition with datatrove.

Why per domain: Gopher / C4 / FineWeb thresholds were tuned on web prose and drop ~100% of source
code and most reference text (../shared/notes/datatrove.md §3). Each domain gets the filters that
mean something for it; every filter writes its rejects to ``removed/{i}_{name}/`` and its drop
reasons to datatrove's stats.

Order: language ID, then the content-safety filters (corpus/safety.py), then the domain's heuristics,
then the quality classifier (corpus/quality.py) on the domains its profile gives a threshold. Safety
runs before the heuristics so a payload or an abusive page is counted as what it is: the web recipe's
C4 curly-bracket rule would otherwise file a PHP web shell under ``curly_bracket``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from pipeline_assets import faults
from pipeline_assets.corpus.blocks import (
    ArithmeticVerifier,
    CodeQualityFilter,
    CountingPIIFormatter,
    OfflineLanguageFilter,
    RegexWordTokenizer,
)
from pipeline_assets.corpus.config import ContentSafetyConfig, CorpusConfig
from pipeline_assets.corpus.quality import SCORE_KEY, QualityFilter, histogram
from pipeline_assets.corpus.safety import safety_recipe
from pipeline_assets.corpus.stats import merged_stats, step_summary

Runner = Callable[[list, Path, int], None]  # (pipeline, logging_dir, tasks) -> runs to completion


def heuristic_recipe(domain: str, cfg: CorpusConfig) -> list[tuple[str, object]]:
    """(name, filter) pairs for a domain; the comment on each deviation from a default says why."""
    words = RegexWordTokenizer()
    lid = ("language", lambda w: OfflineLanguageFilter(list(cfg.languages), cfg.language_threshold,
                                                      exclusion_writer=w))
    repetition = ("gopher_repetition", lambda w: GopherRepetitionFilter(exclusion_writer=w, language=words))
    if domain == "code":
        return [
            ("code_quality", lambda w: CodeQualityFilter(exclusion_writer=w)),
            # Code repeats lines by nature (imports, `return None`): only catch pathological repetition.
            ("gopher_repetition", lambda w: GopherRepetitionFilter(
                dup_line_frac=0.6, dup_para_frac=0.6, dup_line_char_frac=0.5, dup_para_char_frac=0.5,
                top_n_grams=((2, 0.4), (3, 0.36), (4, 0.32)), dup_n_grams=((5, 0.6), (10, 0.5)),
                exclusion_writer=w, language=words)),
        ]
    if domain == "math":
        # Generated problem lines: prose quality and repetition filters would drop every one of them; the
        # verifier checks what matters for this data (correct answers, no eval problem).
        return [("arithmetic_verifier", lambda w: ArithmeticVerifier(exclusion_writer=w))]
    if domain == "legal":
        # Licence texts are clean English but list-like: quality filters would drop them on bullets.
        return [lid, repetition]
    quality = ("gopher_quality", lambda w: GopherQualityFilter(
        exclusion_writer=w, language=words,
        # Reference text quotes code (`x.append(y)`): allow more '#' per word than web prose.
        max_symbol_word_ratio=0.2 if domain == "prose" else 0.1,
        # Punctuation runs are tokens here and URLs split into several: the median share of alphabetic
        # tokens in package READMEs is 0.61 (Gopher's 0.8 assumed whitespace words), so 0.55 keeps
        # prose with links and drops symbol soup (tables of numbers, ASCII art, pasted logs).
        max_non_alpha_words_ratio=0.55))
    c4 = ("c4_quality", lambda w: C4QualityFilter(
        exclusion_writer=w, language=words,
        # Line-level terminal-punctuation removal would strip every code example and list item.
        filter_no_terminal_punct=False, filter_curly_bracket=domain != "prose"))
    fineweb = ("fineweb_quality", lambda w: FineWebQualityFilter(exclusion_writer=w, language=words))
    if domain == "prose":
        return [lid, repetition, quality, c4]
    return [lid, repetition, quality, c4, fineweb]


# Which safety filters screen which domain: math is generated and verified line by line; the profanity model
# was measured on prose and READMEs only (0 false positives in 79 + 212 documents) and reads a bare "sh" in
# code as a profanity stem (0.85), so code and licences get the payload rules only.
SAFETY_DOMAINS = {"toxicity": ("prose", "web"), "malware": ("prose", "web", "legal", "code")}


def recipe(domain: str, cfg: CorpusConfig, quality: tuple[str, float] | None = None,
           safety: ContentSafetyConfig | None = None) -> list[tuple[str, object]]:
    """Language ID, safety (``safety``), the domain's heuristics, the classifier (``quality`` = (model, threshold))."""
    steps = heuristic_recipe(domain, cfg)
    lead = 1 if steps and steps[0][0] == "language" else 0
    screens = [(n, make) for n, make in safety_recipe(safety) if domain in SAFETY_DOMAINS[n]] if safety else []
    steps[lead:lead] = screens
    if quality is not None:
        model, threshold = quality
        steps.append(("quality_classifier", lambda w: QualityFilter(model, threshold, exclusion_writer=w)))
    return steps


def filter_partition(in_dir: Path, out_dir: Path, domain: str, cfg: CorpusConfig, run: Runner,
                     quality: tuple[str, float] | None = None, safety: ContentSafetyConfig | None = None) -> dict:
    """Filter ``in_dir/documents`` into ``out_dir/documents``; rejects under ``out_dir/removed``."""
    applied = recipe(domain, cfg, quality, safety)
    pipeline = [JsonlReader(str(in_dir / "documents"), glob_pattern="*.jsonl", compression=None)]
    for i, (name, make) in enumerate(applied, 1):
        pipeline.append(make(JsonlWriter(str(out_dir / "removed" / f"{i}_{name}"), compression=None)))
    pipeline += [CountingPIIFormatter(), JsonlWriter(str(out_dir / "documents"), compression=None)]
    run(pipeline, out_dir / "logs", cfg.tasks)
    faults.at("curation.after_filter")  # kill-test hook: every rank done, the version not yet renamed
    steps = step_summary(merged_stats(out_dir / "logs"))
    filters = [s for s in steps if "FILTER" in s["step"]]
    pii = next(s for s in steps if "PII" in s["step"])
    docs_in = steps[0]["counters"].get("documents", filters[0]["in"] if filters else 0)
    docs_out = sum(1 for f in (out_dir / "documents").glob("*.jsonl") for _ in f.open())
    return {
        "domain": domain,
        "recipe": [name for name, _ in applied],
        "docs_in": docs_in,
        "docs_out": docs_out,
        "removed_by_filter": {name: s["dropped"] for (name, _), s in zip(applied, filters, strict=True)},
        "drop_reasons": {name: s["reasons"] for (name, _), s in zip(applied, filters, strict=True)},
        "pii_documents_masked": pii["counters"].get("documents_masked", 0),
        "pii_emails_masked": pii["counters"].get("emails_masked", 0),
        "cpu_s_by_step": {s["step"]: s["cpu_s"] for s in steps},
        # parses every written document: only where the classifier ran
        "quality_score_histogram": {"kept": histogram(_scores(out_dir / "documents")),
                                    "dropped": histogram(_scores(out_dir / "removed"))} if quality else None,
    }


def _scores(folder: Path) -> list[float]:
    """The quality classifier's P(hq) of every document under ``folder`` that reached it."""
    return [meta[SCORE_KEY] for f in folder.rglob("*.jsonl") for line in f.open(encoding="utf-8")
            if SCORE_KEY in (meta := json.loads(line).get("metadata", {}))]
