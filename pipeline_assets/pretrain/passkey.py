"""Passkey retrieval: a number hidden at some depth of real text, asked for at the end (the needle-in-a-haystack
test of long-context work; lm-eval's RULER tasks need hub data, so the rows are built here from the shards).

Continued pretraining for long context mixes such rows into its batches (PretrainConfig.passkey_fraction) and
evals/<stage> scores greedy retrieval at 1x, 2x and 4x the base context. Training and eval rows use the same
template, with keys from disjoint ranges: even keys train, odd keys test, so no scored key was ever seen.
Plain numpy + an ``encode`` callable: no torch, no tokenizer class.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
KEY_DIGITS = 5

Encode = Callable[[str], Sequence[int]]


def passkey(rng: np.random.Generator, split: str) -> str:
    """A 5-digit key: even for training rows, odd for eval rows."""
    key = int(rng.integers(10_000, 100_000)) // 2 * 2
    return str(key + (split == "test"))


def passkey_prompt(filler: np.ndarray, key: str, depth: float, length: int, encode: Encode) -> list[int]:
    """``length`` tokens: ``filler`` with the needle at ``depth`` (0 = start, 1 = end) of it, then the question."""
    needle, question = list(encode(NEEDLE.format(key=key))), list(encode(QUESTION))
    room = length - len(needle) - len(question)
    if room < 0 or len(filler) < room:
        raise ValueError(f"a passkey prompt of {length} tokens needs {room} filler tokens; got {len(filler)}")
    at = int(round(depth * room))
    return [*map(int, filler[:at]), *needle, *map(int, filler[at:room]), *question]


def passkey_row(filler: np.ndarray, rng: np.random.Generator, length: int, encode: Encode) -> np.ndarray:
    """A training row of ``length`` tokens: prompt and answer, the key a fresh even number, the depth uniform."""
    key = passkey(rng, "train")
    answer = list(encode(f" {key}"))
    prompt = passkey_prompt(filler, key, float(rng.random()), length - len(answer), encode)
    return np.asarray(prompt + answer, dtype=np.int64)


def answer_of(completion: str) -> str | None:
    """The first run of digits a model answered (``" 12345."`` -> ``"12345"``), or None."""
    match = re.search(r"\d+", completion)
    return match.group(0) if match else None
