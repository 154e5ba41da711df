"""Seeded fuzzing of ingestion: random bytes, truncated and corrupted files, mixed encodings.

Each round writes a landing folder of generated files, some intact and holding known-good records, and
ingests it. Whatever the bytes: no exception, strict JSON out, docs_in == docs_out + quarantined (checked
by `_ingest`), every quarantined record has a reason, and every known-good record of an intact file comes
out as a document (nothing silently lost). A seeded generator rather than hypothesis: the same files every
run, so a failure reproduces from its seed alone.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from test_ingest_robustness import _ingest

ENCODINGS = ("utf-8", "latin-1", "cp1252", "utf-16", "utf-8-sig")
WORDS = ("naïve", "café", "Straße", "日本語", "emoji 🙂", "plain", "tab\there", "quote\"d", "back\\slash", "ok")


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))


def _jsonl(rng: random.Random, tag: str, n: int) -> tuple[bytes, list[str]]:
    ids = [f"{tag}-{i}" for i in range(n)]
    lines = [json.dumps({"id": i, "text": _text(rng), "n": rng.random()}, ensure_ascii=rng.random() < 0.5) for i in ids]
    return ("\n".join(lines) + "\n").encode(), ids


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One of: truncate, flip bytes, splice random bytes, duplicate a slice."""
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    cut = rng.randrange(len(data))
    kind = rng.randrange(4)
    if kind == 0:
        return data[:cut]
    if kind == 1:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == 2:
        return data[:cut] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 32))) + data[cut:]
    return data[:cut] + data[cut // 2:]


def _parquet(rng: random.Random, tag: str, n: int) -> tuple[bytes, list[str]]:
    ids = [f"{tag}-{i}" for i in range(n)]
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ids, "text": [_text(rng) for _ in ids]}), buf)
    return buf.getvalue(), ids


def _round(rng: random.Random, root: Path) -> list[str]:
    """Write ~20 generated files under root; returns the ids of the good records in intact files."""
    expected: list[str] = []
    for k in range(rng.randint(12, 24)):
        tag = f"f{k}"
        choice = rng.randrange(7)
        intact = rng.random() < 0.4
        if choice == 0:  # random bytes under a supported suffix
            name = f"{tag}{rng.choice(('.jsonl', '.txt', '.md', '.parquet', '.jsonl.gz', '.JSONL'))}"
            data, ids, intact = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000))), [], False
        elif choice == 1:  # JSONL, maybe with mutated bytes
            data, ids = _jsonl(rng, tag, rng.randint(1, 20))
            name = f"{tag}.jsonl"
        elif choice == 2:  # gzip / zstd JSONL, maybe truncated
            raw, ids = _jsonl(rng, tag, rng.randint(1, 20))
            gz = rng.random() < 0.5
            data = gzip.compress(raw) if gz else zstandard.ZstdCompressor().compress(raw)
            name = f"{tag}.jsonl.{'gz' if gz else 'zst'}"
        elif choice == 3:  # parquet, maybe truncated
            data, ids = _parquet(rng, tag, rng.randint(1, 20))
            name = f"{tag}.parquet"
        elif choice == 4:  # a text document in some encoding
            enc = rng.choice(ENCODINGS)
            data, ids = _text(rng).encode(enc, errors="replace"), []
            name = f"{tag}.txt"
            intact = False  # only UTF-8 text is a document; others are quarantined as non_utf8: both counted
        elif choice == 5:  # JSONL lines in mixed encodings (one line per encoding)
            lines = [json.dumps({"id": f"{tag}-{i}", "text": _text(rng)}, ensure_ascii=False).encode(enc, "replace")
                     for i, enc in enumerate(rng.sample(ENCODINGS, 3))]
            data, ids, intact = b"\n".join(lines) + b"\n", [], False
            name = f"{tag}.jsonl"
        else:  # an empty or whitespace-only file
            data, ids, intact = rng.choice((b"", b"\n\n", b"   \n")), [], False
            name = f"{tag}.jsonl"
        if not intact:
            data = _mutate(rng, data) if choice in (1, 2, 3) else data
        elif ids:
            expected += [f"src/{i}" for i in ids]
        path = root / rng.choice(("", "sub/", "sub/deeper/")) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return expected


@pytest.mark.parametrize("seed", range(25))
def test_fuzzed_landing_folder_never_crashes_and_counts_add_up(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    src = tmp_path / "src"
    src.mkdir()
    expected = _round(rng, src)
    stats, docs, quarantine = _ingest(src, tmp_path / "out")  # asserts the invariant and strict JSON itself
    assert all(q["reason"] for q in quarantine)
    missing = [i for i in expected if i not in docs]
    assert not missing, (seed, missing[:5], stats["quarantine_reasons"])
    assert stats["docs_in"] >= len(expected)


def test_jsonl_readers_keep_records_with_unicode_line_separators(tmp_path: Path) -> None:
    # Found by the fuzz round above: str.splitlines() also cuts at U+2028, U+0085 and \x1c, which JSON writes raw.
    from pipeline_assets.jsonl import read_jsonl

    rows = [{"text": "a\u2028b\x85c\x1cd"}, {"text": "plain"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert read_jsonl(path) == rows
