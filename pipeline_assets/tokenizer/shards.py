"""Tokenize JSONL documents into numpy token shards for pretraining (format "llmdag-token-shards/1").

    python -m pipeline_assets.tokenizer.shards --tokenizer-tokenizer /tmp/tok --out /tmp/shards \
        --split train=data/train/a.jsonl,data/train/b.jsonl --split val=data/val/a.jsonl

`tokenize_to_shards(...)` is what the `tokenizer/tokenized_shards` asset calls. Output in `out_dir`:
- `{split}_{idx:05d}.npy`: 1-D uint16 (uint32 when ids do not fit) arrays of exactly `shard_tokens` tokens,
  the last shard of a split shorter. Each document is encoded without special tokens and followed by eos,
  so documents may continue into the next shard, and a shard's `documents` counts the eos ids it holds.
- `index.json`, written last (a dir without it is unfinished): counts per split and shard, the UTF-8 `bytes`
  of the texts (for bits-per-byte), the eos/bos ids and the exact source files; each split's `segments`
  give every input file's token range in the split's stream with its exact bytes and domain.
Same inputs and tokenizer give byte-identical files: nothing time- or host-dependent goes into them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from pipeline_assets.config_flags import parse_config_args
from pipeline_assets.tokenizer.train import iter_documents, require_files

SHARD_FORMAT = "llmdag-token-shards/1"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # split names become file names


@dataclass(frozen=True)
class ShardConfig:
    """Used by: tokenizer/tokenized_shards."""

    shard_tokens: int = 1 << 22  # 8 MiB per uint16 shard: few files, and one shard mmaps cheaply
    batch_documents: int = 256  # documents per encode_batch call; larger batches give rayon more to split

    def validate(self) -> None:
        if self.shard_tokens < 1:
            raise ValueError(f"shard_tokens={self.shard_tokens} must be >= 1")
        if self.batch_documents < 1:
            raise ValueError(f"batch_documents={self.batch_documents} must be >= 1")


def load_tokenizer(tokenizer_dir: Path) -> tuple[Tokenizer, int, int]:
    """The Rust tokenizer of a saved tokenizer dir plus its (eos_id, bos_id), read from tokenizer_config.json
    so this stage needs no transformers import."""
    tokenizer_dir = Path(tokenizer_dir)
    tok_file, cfg_file = tokenizer_dir / "tokenizer.json", tokenizer_dir / "tokenizer_config.json"
    if not tok_file.is_file() or not cfg_file.is_file():
        raise FileNotFoundError(f"{tokenizer_dir} has no tokenizer.json/tokenizer_config.json; "
                                "materialize tokenizer/tokenizer first")
    tok = Tokenizer.from_file(str(tok_file))
    config = json.loads(cfg_file.read_text())
    ids = []
    for name in ("eos_token", "bos_token"):
        token = config.get(name)
        if isinstance(token, dict):  # older transformers store AddedToken dicts
            token = token.get("content")
        token_id = tok.token_to_id(token) if isinstance(token, str) else None
        if token_id is None:
            raise ValueError(f"{cfg_file}: {name}={token!r} is not in the vocabulary; retrain the tokenizer")
        ids.append(token_id)
    # A document that contains the literal text "<|im_end|>" must not get a real eos inside it: that would
    # forge a document boundary (and, after SFT, a turn end). Encode special-token strings as plain text.
    tok.encode_special_tokens = True
    return tok, ids[0], ids[1]


class _ShardWriter:
    """Cuts one split's token stream into fixed-size shards; each file appears under its final name only when
    complete (written to `.tmp`, fsynced, then renamed)."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, dtype: np.dtype, eos_id: int,
                 log: Callable[[str], None]) -> None:
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.dtype, self.eos_id, self.log = dtype, eos_id, log
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, tokens: np.ndarray) -> None:
        self.pending.append(tokens)
        self.pending_tokens += len(tokens)
        if self.pending_tokens < self.shard_tokens:
            return
        # One concatenation, then slices: re-concatenating the rest after each shard is quadratic when a
        # batch holds many shards' worth of tokens.
        stream = np.concatenate(self.pending)
        full = len(stream) // self.shard_tokens * self.shard_tokens
        for start in range(0, full, self.shard_tokens):
            self._write(stream[start : start + self.shard_tokens])
        rest = stream[full:]
        self.pending, self.pending_tokens = ([rest] if len(rest) else []), len(rest)

    def close(self) -> list[dict[str, Any]]:
        if self.pending_tokens:
            self._write(np.concatenate(self.pending))
        self.pending, self.pending_tokens = [], 0
        return self.shards

    def _write(self, tokens: np.ndarray) -> None:
        name = f"{self.split}_{len(self.shards):05d}.npy"
        tmp = self.out_dir / f"{name}.tmp"
        with tmp.open("wb") as f:
            np.save(f, tokens, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.out_dir / name)
        documents = int(np.count_nonzero(tokens == self.eos_id))
        self.shards.append({"file": name, "tokens": int(len(tokens)), "documents": documents})
        self.log(f"shards | {name} {len(tokens):,} tokens, {documents:,} docs")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _tokenize_split(tok: Tokenizer, split: str, files: list[Path], out_dir: Path, cfg: ShardConfig,
                    dtype: np.dtype, eos_id: int, log: Callable[[str], None],
                    domains: dict[str, str]) -> tuple[dict[str, Any], float]:
    """One split's index entry and the seconds spent inside the encoder."""
    skipped: Counter[str] = Counter()
    writer = _ShardWriter(out_dir, split, cfg.shard_tokens, dtype, eos_id, log)
    n_docs = n_bytes = n_tokens = 0
    encode_s = 0.0
    batch: list[str] = []
    batch_files: list[int] = []  # a batch may span files: each document's tokens go to its own file's segment
    # One segment per input file: its token range in the split's stream and its exact UTF-8 bytes, so the
    # evals can report bits-per-byte per source and domain without re-reading the documents.
    segments = [{"file": str(p), "source": p.name.split(".")[0], "domain": domains.get(str(p)),
                 "documents": 0, "bytes": 0, "tokens": 0} for p in files]

    def flush() -> None:
        nonlocal encode_s, n_tokens
        t = time.perf_counter()
        # encode_batch_fast skips offset tracking, which we never use; rayon spreads the batch over cores.
        encoded = tok.encode_batch_fast(batch, add_special_tokens=False)
        encode_s += time.perf_counter() - t
        ids = [enc.ids for enc in encoded]
        for doc, f in zip(ids, batch_files, strict=True):
            segments[f]["tokens"] += len(doc) + 1
        # One array per batch, each document followed by eos: ~30 ms per 1M tokens, vs ~1.5 s encoding them.
        tokens = np.fromiter(itertools.chain.from_iterable(doc + [eos_id] for doc in ids), dtype=dtype,
                             count=sum(map(len, ids)) + len(ids))
        writer.add(tokens)
        n_tokens += len(tokens)
        batch.clear()
        batch_files.clear()

    for f, path in enumerate(files):
        for doc in iter_documents(path, skipped):
            batch.append(doc.text)
            batch_files.append(f)
            n_docs += 1
            n_bytes += doc.nbytes
            segments[f]["documents"] += 1
            segments[f]["bytes"] += doc.nbytes
            if len(batch) == cfg.batch_documents:
                flush()
    if batch:
        flush()
    pos = 0
    for seg in segments:
        seg["stream_range"] = [pos, pos + seg["tokens"]]
        pos += seg["tokens"]
    if n_docs == 0:
        raise ValueError(f"split {split!r} has no usable documents in {[str(p) for p in files]}; "
                         f"skipped: {dict(skipped)}; each line must be a JSON object with a non-empty "
                         "string 'text'")
    shards = writer.close()
    log(f"shards | {split}: {n_docs:,} docs, {n_tokens:,} tokens, {n_bytes / n_tokens:.3f} bytes/token, "
        f"{len(shards)} shard(s)" + (f", skipped {dict(skipped)}" if skipped else ""))
    info = {"tokens": n_tokens, "documents": n_docs, "bytes": n_bytes, "shards": shards,
            "segments": [seg for seg in segments if seg["documents"]], "skipped_records": dict(skipped)}
    return info, encode_s


def tokenize_to_shards(
    tokenizer_dir: Path,
    split_files: dict[str, list[Path]],
    out_dir: Path,
    cfg: ShardConfig,
    log: Callable[[str], None] = print,
    domains: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Encode every split's JSONL files (file order, line order) into shards under the existing, empty dir
    `out_dir`; returns the index plus wall_time_s, tokens_per_s, docs_per_s and skipped_records.

    `domains` maps an input file (as a str) to its domain, recorded in its split's `segments`."""
    cfg.validate()
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"out_dir {out_dir} does not exist; the caller must create it first")
    if (out_dir / "index.json").exists() or any(out_dir.glob("*.npy")):
        raise FileExistsError(f"{out_dir} already holds shards; pass an empty dir so no stale shard survives")
    if not split_files:
        raise ValueError("split_files is empty; pass e.g. {'train': [...jsonl], 'val': [...jsonl]}")
    for split, files in split_files.items():
        if not _SPLIT_NAME.match(split):
            raise ValueError(f"split name {split!r} must match {_SPLIT_NAME.pattern}: it names the files")
        if not files:
            raise ValueError(f"split {split!r} has no input files; the mixture manifest must list its JSONL")
        require_files(files, f"split {split!r}", "materialize corpus/training_mixture, or fix the paths")

    tok, eos_id, bos_id = load_tokenizer(tokenizer_dir)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    dtype = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
    splits: dict[str, dict[str, Any]] = {}
    encode_s = 0.0
    for split, files in split_files.items():
        splits[split], split_encode_s = _tokenize_split(tok, split, [Path(p) for p in files], out_dir, cfg,
                                                        dtype, eos_id, log, domains or {})
        encode_s += split_encode_s

    index = {
        "format": SHARD_FORMAT,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "eos_id": eos_id,
        "bos_id": bos_id,
        "tokenizer_dir": str(tokenizer_dir),
        "splits": splits,
        "source_files": {split: [str(p) for p in files] for split, files in split_files.items()},
    }
    _write_json(out_dir / "index.json", index)  # last: its presence marks the dir complete
    wall = time.perf_counter() - t_start
    total_tokens = sum(s["tokens"] for s in splits.values())
    total_docs = sum(s["documents"] for s in splits.values())
    log(f"shards | done: {total_tokens:,} tokens in {wall:.1f}s ({total_tokens / wall:,.0f} tok/s end to "
        f"end, {total_tokens / max(encode_s, 1e-9):,.0f} tok/s in encode_batch_fast)")
    return {
        **index,
        "wall_time_s": round(wall, 3),
        "encode_time_s": round(encode_s, 3),
        "tokens_per_s": round(total_tokens / wall, 1),
        "docs_per_s": round(total_docs / wall, 1),
        "encode_tokens_per_s": round(total_tokens / max(encode_s, 1e-9), 1),
        "skipped_records": {split: info["skipped_records"] for split, info in splits.items()},
    }


def _split_arg(value: str) -> tuple[str, list[Path]]:
    split, sep, files = value.partition("=")
    if not sep or not split or not files:
        raise argparse.ArgumentTypeError(f"--split takes NAME=FILE[,FILE...], got {value!r}")
    return split, [Path(p) for p in files.split(",")]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Tokenize JSONL splits into llmdag token shards.")
    parser.add_argument("--tokenizer-tokenizer", type=Path, required=True, help="tokenizer/tokenizer dir")
    parser.add_argument("--split", type=_split_arg, action="append", required=True, metavar="NAME=FILE,...",
                        help="one split and its JSONL files; repeat per split")
    parser.add_argument("--out", type=Path, required=True, help="empty (or new) dir for the shards")
    args, cfg = parse_config_args(parser, ShardConfig, "shards", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    split_files: dict[str, list[Path]] = {}
    for split, files in args.split:
        split_files.setdefault(split, []).extend(files)
    result = tokenize_to_shards(args.tokenizer_tokenizer, split_files, args.out, cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "splits"}, indent=2))
    return result


if __name__ == "__main__":
    main()
