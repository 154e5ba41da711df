"""Token-shard reading for pretraining: a deterministic, resumable train loader and a fixed val set.

Input is the tokenizer stage's shards dir (`index.json` format "llmdag-token-shards/1" and
`{split}_{idx:05d}.npy` 1-D token arrays, documents concatenated, each followed by eos). Every split is cut
into windows of seq_len+1 tokens that overlap by one token (window j = tokens[j*T : j*T+T+1]), so the input
x = w[:-1] and target y = w[1:] cover every token once. Windows never straddle two shards (loses < 1 window
per shard). Used by train.py; no command of its own.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

INDEX_FORMAT = "llmdag-token-shards/1"
# Cap for the unigram baseline's counting pass: np.bincount over 50M uint16 tokens takes 0.8 s here
# (measured), ample for a table of <= 64k ids; counting a 10B-token corpus would add minutes to every start.
UNIGRAM_MAX_TOKENS = 50_000_000


def read_index(shards_dir: Path) -> dict[str, Any]:
    """Load and check index.json; errors say which upstream asset to (re)materialize."""
    path = Path(shards_dir) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no index.json under {shards_dir}; materialize tokenizer/tokenized_shards first"
        )
    index = json.loads(path.read_text())
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(
            f"{path}: format {index.get('format')!r} is not {INDEX_FORMAT!r}; re-tokenize the corpus"
        )
    for key in ("dtype", "vocab_size", "eos_id", "bos_id", "splits"):
        if key not in index:
            raise ValueError(f"{path}: missing key {key!r}; re-materialize tokenizer/tokenized_shards")
    for split in ("train", "val"):
        info = index["splits"].get(split)
        if not info or not info.get("shards"):
            raise ValueError(f"{path}: split {split!r} has no shards; the mixture needs a {split} split")
    return index


class TokenWindows:
    """Random access to the seq_len+1 windows of one split, over memory-mapped shards."""

    def __init__(self, shards_dir: Path, index: dict[str, Any], split: str, seq_len: int) -> None:
        self.shards_dir = Path(shards_dir)
        self.split = split
        self.seq_len = seq_len
        self.vocab_size = int(index["vocab_size"])
        self.info = index["splits"][split]
        self.files: list[str] = [s["file"] for s in self.info["shards"]]
        self.arrays: list[np.ndarray] = []
        counts = []
        for shard in self.info["shards"]:
            path = self.shards_dir / shard["file"]
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is listed in index.json but missing; re-materialize the shards"
                )
            arr = np.load(path, mmap_mode="r")
            if arr.ndim != 1 or arr.dtype != np.dtype(index["dtype"]) or len(arr) != int(shard["tokens"]):
                raise ValueError(
                    f"{path}: expected 1-D {index['dtype']} with {shard['tokens']} tokens, got "
                    f"{arr.ndim}-D {arr.dtype} with {arr.size}; the shard is corrupt, re-tokenize"
                )
            # One pass over each shard: an id >= vocab_size would crash the embedding (on CUDA as an opaque
            # device-side assert), so refuse it here with the file name.
            if len(arr) and int(arr.max()) >= self.vocab_size:
                raise ValueError(
                    f"{path}: token id {int(arr.max())} >= vocab_size {self.vocab_size}; the shards "
                    f"and tokenizer disagree, re-tokenize with this tokenizer"
                )
            self.arrays.append(arr)
            counts.append(max(0, (len(arr) - 1) // seq_len))
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])  # window id -> shard via searchsorted

    def __len__(self) -> int:
        return int(self.starts[-1])

    def gather(self, ids: np.ndarray | list[int]) -> torch.Tensor:
        """(len(ids), seq_len+1) int64 tensor of the given window ids."""
        ids = np.asarray(ids, dtype=np.int64)
        shard = np.searchsorted(self.starts, ids, side="right") - 1
        T = self.seq_len
        out = np.empty((len(ids), T + 1), dtype=np.int64)
        for row, (s, w) in enumerate(zip(shard, ids - self.starts[shard], strict=True)):
            out[row] = self.arrays[s][w * T : w * T + T + 1]
        return torch.from_numpy(out)

    def stream(self) -> np.ndarray:
        """The split's whole token stream, its shards concatenated in order (what stream_ranges index)."""
        return np.concatenate([np.asarray(a) for a in self.arrays])

    def stream_ranges(self) -> list[dict[str, Any]]:
        """Each shard's file, token count and the token range [start, end) it covers in the split's stream."""
        out, pos = [], 0
        for f, arr in zip(self.files, self.arrays, strict=True):
            out.append({"file": f, "tokens": len(arr), "stream_range": [pos, pos + len(arr)]})
            pos += len(arr)
        return out


class TrainLoader:
    """Deterministic, resumable sampler of train windows.

    Each epoch is a permutation of all windows from `np.random.default_rng([seed, epoch])`, so the order is a
    pure function of (seed, epoch, cursor): the state is three ints, saved in checkpoint meta and restored
    exactly, and no RNG stream is shared with dropout or init. Every call consumes batch_size * world_size
    windows of the permutation; rank r takes the r-th slice, so ranks read disjoint data and every rank keeps
    the same (world-size independent) state. A partial global batch at the end of an epoch is dropped.
    """

    def __init__(
        self, windows: TokenWindows, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.windows = windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        if len(windows) < self.global_batch:
            raise ValueError(
                f"train split has {len(windows)} windows of seq_len+1={windows.seq_len + 1} tokens, fewer "
                f"than one global batch ({batch_size} x {world_size} ranks); lower seq_len or batch_size, "
                f"or add data"
            )
        self.epoch = 0
        self.cursor = 0
        self.windows_consumed = 0
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.windows))
            self._perm_epoch = self.epoch
        return self._perm

    def next_batch(self) -> torch.Tensor:
        """(batch_size, seq_len+1) int64 token windows for this rank."""
        if self.cursor + self.global_batch > len(self.windows):
            self.epoch += 1
            self.cursor = 0
        ids = self._permutation()[self.cursor : self.cursor + self.global_batch]
        self.cursor += self.global_batch
        self.windows_consumed += self.global_batch
        return self.windows.gather(ids[self.rank * self.batch_size : (self.rank + 1) * self.batch_size])

    def state_dict(self) -> dict[str, int]:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "cursor": self.cursor,
            "windows_consumed": self.windows_consumed,
            "windows_per_epoch": len(self.windows),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["windows_per_epoch"]) != len(self.windows):
            raise ValueError(
                f"the checkpoint's loader saw {state['windows_per_epoch']} train windows, these shards have "
                f"{len(self.windows)}: the shards or seq_len changed; resume needs the same data, so start a "
                f"new run_dir"
            )
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self.cursor, self.windows_consumed = int(state["cursor"]), int(state["windows_consumed"])

    def consumed(self) -> dict[str, Any]:
        """What the model has seen so far, for lineage in checkpoint meta and asset metadata."""
        n = len(self.windows)
        return {
            "split": self.windows.split,
            "shards": self.windows.stream_ranges(),
            "window_tokens": self.windows.seq_len + 1,
            "windows_per_epoch": n,
            "windows_consumed": self.windows_consumed,
            "tokens_consumed": self.windows_consumed * self.windows.seq_len,  # predicted tokens
            "epochs_consumed": round(self.windows_consumed / n, 6),
            "epoch": self.epoch,
            "cursor": self.cursor,
            "order": f"window permutation numpy default_rng([{self.seed}, epoch]); window j of a shard = "
            f"tokens[j*{self.windows.seq_len} : j*{self.windows.seq_len}+{self.windows.seq_len + 1}]",
        }


def val_batches(
    windows: TokenWindows, batch_size: int, n_batches: int, rank: int = 0, world_size: int = 1
) -> list[torch.Tensor]:
    """The fixed val set: the first n_batches*batch_size windows in order; rank r keeps batches r, r+W, ..."""
    n = min(len(windows), n_batches * batch_size)
    if n == 0:
        raise ValueError(
            f"val split has fewer than seq_len+1={windows.seq_len + 1} tokens in every shard; "
            f"lower seq_len or give the mixture a larger val split"
        )
    ids = np.arange(n)
    batches = [ids[i : i + batch_size] for i in range(0, n, batch_size)]
    return [windows.gather(b) for b in batches[rank::world_size]]


def unigram_val_loss(train: TokenWindows, val: list[torch.Tensor], vocab_size: int) -> float:
    """Cross-entropy (nats/token) of the train unigram distribution on the val targets.

    A model that learnt nothing beyond token frequencies scores this; a trained LM must be clearly below it.
    """
    logp = unigram_log_probs(train, vocab_size)
    targets = np.concatenate([b[:, 1:].reshape(-1).numpy() for b in val]) if val else np.zeros(0, np.int64)
    return float(-logp[targets].mean()) if len(targets) else float("nan")


def unigram_log_probs(train: TokenWindows, vocab_size: int) -> np.ndarray:
    """log P(token) of the train split's unigram distribution, add-one smoothed (unseen val tokens stay
    finite), from at most UNIGRAM_MAX_TOKENS train tokens."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    budget = UNIGRAM_MAX_TOKENS
    for arr in train.arrays:
        take = arr[: min(len(arr), budget)]
        counts += np.bincount(take, minlength=vocab_size)[:vocab_size]
        budget -= len(take)
        if budget <= 0:
            break
    return np.log(counts + 1.0) - math.log(counts.sum() + vocab_size)
