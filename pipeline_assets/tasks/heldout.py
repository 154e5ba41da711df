"""The held-out sets on disk (written by `evals/benchmarks`, built before any training): what every other
stage may know of them — their names, how to read them, and the keys training data must never contain.

Contract: a training-data builder skips any prompt whose `normalize_prompt(p)` is in
`heldout_keys(bench_dir)[set]`, never builds docstring QA from `HELDOUT_MODULES`, and skips every (a, op, b)
with `is_heldout_arithmetic` true (tasks/arithmetic.py); corpus decontamination drops documents sharing word
n-grams with `decontamination_texts(bench_dir)`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path

from pipeline_assets.jsonl import parse_jsonl

BENCHMARKS: tuple[str, ...] = ("qa", "multiple_choice", "arithmetic", "safety")
MANIFEST = "manifest.json"

# Stable, pure-Python-docstring-rich stdlib modules; together they give ~225 usable docstring sentences on
# Python 3.11, enough for 100 QA + 100 multiple-choice items that share no function. Order matters: it
# is the enumeration order before the seeded shuffle.
HELDOUT_MODULES: tuple[str, ...] = (
    "json", "textwrap", "statistics", "heapq", "difflib", "base64", "shlex",
    "fnmatch", "calendar", "zipfile", "tarfile", "gzip", "fractions", "html",
)


def normalize_prompt(text: str) -> str:
    """Canonical form for held-out lookups: case-folded, quotes/backticks dropped, spaces collapsed.

    Spaces around + - * / = are removed so "What is 3+4" and "what is 3 + 4?" collide; trailing
    punctuation is dropped. Builders must normalize their own prompts with this same function.
    """
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2212", "-")
    text = re.sub(r"[`'\"\u2018\u2019\u201c\u201d]", "", text)
    text = re.sub(r"\s*([+\-*/=])\s*", r"\1", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.rstrip(" .?!:")


def read_manifest(bench_dir: Path) -> dict:
    path = Path(bench_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no {MANIFEST} in {bench_dir}: the benchmarks were never built or the build was interrupted; "
            "materialize evals/benchmarks (or run python -m pipeline_assets.evals.benchmarks --out DIR)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_benchmark(bench_dir: Path, name: str, *, verify: bool = True) -> list[dict]:
    """Records of one set, in file order. With `verify`, the file must match the sha256 in manifest.json."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    manifest = read_manifest(bench_dir)
    path = Path(bench_dir) / f"{name}.jsonl"
    data = path.read_bytes()
    if verify and hashlib.sha256(data).hexdigest() != manifest["sha256"].get(path.name):
        raise ValueError(
            f"{path} does not match the sha256 in {MANIFEST}: it was edited or truncated after the build; "
            "re-materialize evals/benchmarks"
        )
    return parse_jsonl(data.decode("utf-8"), path, "re-materialize evals/benchmarks")


def decontamination_text(name: str, record: dict) -> str:
    """qa: prompt + answer; multiple_choice: question + correct choice; arithmetic and safety: the prompt."""
    if name == "qa":
        return f"{record['prompt']} {record['answer']}"
    if name == "multiple_choice":
        return f"{record['question']} {record['choices'][record['label']]}"
    return record["prompt"]


def decontamination_texts(bench_dir: Path) -> dict[str, list[str]]:
    """Set name -> the texts whose word n-grams must not appear in training data."""
    return {name: [decontamination_text(name, record) for record in load_benchmark(bench_dir, name)]
            for name in BENCHMARKS}


def heldout_keys(bench_dir: Path) -> dict[str, set[str]]:
    """Set name -> normalized prompts (`normalize_prompt`) that dataset builders must exclude."""
    field = {"multiple_choice": "question"}
    return {name: {normalize_prompt(r[field.get(name, "prompt")]) for r in load_benchmark(bench_dir, name)}
            for name in BENCHMARKS}
