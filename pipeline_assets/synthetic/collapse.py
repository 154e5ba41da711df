"""Collapse guard: generations of a tiny LM trained on its own samples, replacing vs accumulating the data.

Gerstgrasser et al. 2024 ("Is Model Collapse Inevitable?"): a model trained only on the previous model's
samples degrades generation after generation (``replace``), while one trained on the real data plus every
synthetic generation so far (``accumulate``) stays near the real-data model. Here: a 2-layer, 64-wide Llama
over printable-ASCII characters, a fresh model per generation, 300 AdamW steps of 32 rows each (fixed
compute: the accumulate arm's growing set gets the same steps), ``TRAIN_ROWS`` = 300 stdlib docstring lines
as the real set and each generation sampling 300 rows at temperature 1.0 with no top-k/top-p. Score: mean
cross-entropy (nats per character-token, EOS included) on 400 held-out docstring lines.

Measured (``bench/synthetic_collapse.py --seeds 6``; mean over seeds 0-5, min-max in brackets):

    generation   0              1              2              3              4
    replace      2.283 (2.26-2.31)  2.592 (2.53-2.65)  2.778 (2.74-2.81)  2.943 (2.87-2.99)  3.057 (3.01-3.11)
    accumulate   2.283 (2.26-2.31)  2.287 (2.26-2.30)  2.309 (2.30-2.32)  2.314 (2.29-2.34)  2.339 (2.32-2.36)

Deciding numbers, every seed: at generation 4 replace is +0.72 to +0.81 nats above generation 0 (x1.31-1.36),
accumulate +0.02 to +0.09 (at most x1.042), and replace sits 0.65-0.77 above accumulate; at generation 3,
+0.61 to +0.72, +0.00 to +0.07 (at most x1.030) and 0.55-0.68. Replace's samples also shorten (mean
55 -> 50 characters by generation 3); accumulate's stay at 53-55. With fewer steps (200) some seeds stall on a
plateau and single runs scatter by ~0.2-0.3 nats, so the margins above need the 300 steps. One thread:
on 2 shared cores, 2 threads ran ~7x slower per step under load. Both arms, 5 generations, one seed:
170-275 s there (generation 0 shared).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import time
from dataclasses import dataclass
from typing import Literal

import torch

Mode = Literal["replace", "accumulate"]
MODES: tuple[Mode, ...] = ("replace", "accumulate")
TRAIN_ROWS, HELDOUT_ROWS, GENERATIONS = 300, 400, 5  # the measured setting (module docstring)

# Character vocabulary: printable ASCII, one token per character (= one byte), plus three specials.
PAD, BOS, EOS = 0, 1, 2
_FIRST, _LAST = 32, 126  # ' ' .. '~'
_OFFSET = 3 - _FIRST
VOCAB_SIZE = 3 + _LAST - _FIRST + 1

# Real text: docstrings of these stdlib modules and of their public functions and classes.
STDLIB_MODULES = (
    "json os re collections itertools functools string textwrap argparse logging pathlib subprocess threading "
    "datetime random statistics math decimal fractions heapq bisect typing dataclasses enum csv sqlite3 shutil "
    "tempfile glob fnmatch pickle copy io struct zipfile tarfile gzip hashlib hmac base64 urllib.parse http.client "
    "email socket asyncio unittest doctest pdb timeit calendar locale gettext operator contextlib abc numbers array "
    "queue sched selectors signal uuid difflib pprint reprlib weakref types inspect ast dis tokenize keyword "
    "traceback warnings codecs unicodedata html configparser shlex optparse getopt platform sysconfig"
).split()


@dataclass(frozen=True)
class CollapseConfig:
    """Model, training and sampling knobs of every generation (the arm, seed and generations are arguments)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    steps: int = 300  # optimizer steps per generation on a training set of the real set's size
    scale_steps: bool = False  # accumulate arm: steps grow with the training set (same epochs every generation)
    batch_size: int = 32
    lr: float = 3e-3
    max_chars: int = 80  # rows are cut to this many characters; samples stop here
    temperature: float = 1.0
    top_k: int = 0  # 0: no truncation (ancestral sampling)
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "steps", "batch_size", "max_chars", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CollapseConfig.{name} must be a positive int, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(f"CollapseConfig.hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if not self.lr > 0:
            raise ValueError(f"CollapseConfig.lr must be > 0, got {self.lr!r}")
        if not self.temperature > 0:
            raise ValueError(f"CollapseConfig.temperature must be > 0, got {self.temperature!r}")
        if self.top_k < 0:
            raise ValueError(f"CollapseConfig.top_k must be >= 0 (0: no truncation), got {self.top_k!r}")


def check_arm(generations: int, mode: str, seed: int) -> None:
    """ValueError unless ``generations`` >= 1, ``mode`` is replace or accumulate and ``seed`` an int."""
    if not isinstance(generations, int) or isinstance(generations, bool) or generations < 1:
        raise ValueError(f"generations must be an int >= 1 (generation 0 trains on the real data), got {generations!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")


# --- real text --------------------------------------------------------------------------------------------------


def stdlib_lines(min_chars: int = 30, max_chars: int = 80) -> list[str]:
    """Distinct printable-ASCII docstring lines of ``STDLIB_MODULES`` (module, public functions and classes)."""
    lines: set[str] = set()
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        objects = [module] + [
            obj for key, obj in sorted(vars(module).items())
            if not key.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module.__name__
        ]
        for obj in objects:
            for line in (inspect.getdoc(obj) or "").splitlines():
                line = line.strip()
                if min_chars <= len(line) <= max_chars and line.isascii() and line.isprintable():
                    lines.add(line)
    return sorted(lines)


def real_split(train_rows: int, heldout_rows: int) -> tuple[list[str], list[str]]:
    """A fixed train/held-out split of ``stdlib_lines``: order by a hash of the line, held-out first."""
    lines = sorted(stdlib_lines(), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    if train_rows + heldout_rows > len(lines):
        raise ValueError(f"{train_rows} + {heldout_rows} rows asked, {len(lines)} docstring lines on this Python")
    return lines[heldout_rows:heldout_rows + train_rows], lines[:heldout_rows]


# --- tokens -----------------------------------------------------------------------------------------------------


def encode(text: str, max_chars: int) -> list[int]:
    """BOS, one id per printable-ASCII character (others dropped), EOS; cut to ``max_chars`` characters."""
    ids = [ord(c) + _OFFSET for c in text if _FIRST <= ord(c) <= _LAST][:max_chars]
    return [BOS, *ids, EOS]


def decode(ids: list[int]) -> str:
    """The characters up to the first EOS (specials dropped)."""
    out = []
    for i in ids:
        if i == EOS:
            break
        if i > EOS:
            out.append(chr(i - _OFFSET))
    return "".join(out)


def _batch(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


# --- one generation ---------------------------------------------------------------------------------------------


def new_model(cfg: CollapseConfig, seed: int):
    """A freshly initialised Llama-shaped causal LM over the character vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=cfg.hidden, intermediate_size=4 * cfg.hidden,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_chars + 2, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def train(rows: list[str], cfg: CollapseConfig, seed: int, steps: int):
    """A fresh model trained ``steps`` AdamW steps on random batches of ``rows`` (warmup, cosine decay)."""
    torch.set_num_threads(cfg.threads)
    model = new_model(cfg, seed)
    data = [encode(r, cfg.max_chars) for r in rows]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))))
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(data), (min(cfg.batch_size, len(data)),), generator=gen).tolist()
        ids, mask = _batch([data[i] for i in pick])
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    return model


@torch.no_grad()
def heldout_loss(model, rows: list[str], cfg: CollapseConfig, batch: int = 256) -> tuple[float, float]:
    """(mean cross-entropy in nats per token, bits per byte) of ``rows``; tokens are characters plus EOS."""
    nats = tokens = chars = 0.0
    for start in range(0, len(rows), batch):
        data = [encode(r, cfg.max_chars) for r in rows[start:start + batch]]
        ids, mask = _batch(data)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nats += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100, reduction="sum").item()
        tokens += int((target != -100).sum())
        chars += sum(len(d) - 2 for d in data)
    return nats / tokens, nats / math.log(2) / chars


@torch.no_grad()
def sample(model, n: int, cfg: CollapseConfig, seed: int, batch: int = 512) -> list[str]:
    """``n`` rows sampled from BOS at ``cfg.temperature`` (no top-k/top-p unless ``cfg.top_k``)."""
    torch.manual_seed(seed)
    out: list[str] = []
    while len(out) < n:
        k = min(batch, n - len(out))
        start = torch.full((k, 1), BOS, dtype=torch.long)
        ids = model.generate(
            input_ids=start, attention_mask=torch.ones_like(start), do_sample=True, temperature=cfg.temperature,
            top_k=cfg.top_k or None, top_p=1.0, max_new_tokens=cfg.max_chars + 1, eos_token_id=EOS,
            pad_token_id=PAD,
        )
        out += [decode(row[1:].tolist()) for row in ids]
    return out


# --- the experiment ---------------------------------------------------------------------------------------------


def _seed(seed: int, generation: int, stream: int) -> int:
    return (seed * 1_000 + generation) * 10 + stream


def run_arms(real_train: list[str], heldout: list[str], *, generations: int, seed: int = 0,
             modes: tuple[Mode, ...] = MODES, config: CollapseConfig | None = None) -> dict[str, list[dict]]:
    """Each arm of ``modes`` for ``generations`` generations; generation 0 (real data only) is trained once.

    Generation g >= 1 trains a fresh model on, per arm, ``replace``: the rows sampled from generation g-1's
    model; ``accumulate``: ``real_train`` plus the samples of generations 1..g. Every generation samples
    ``len(real_train)`` rows. Models of the same generation share their initialisation and batch-order seed
    across arms, so the arms differ only in their data. One dict per generation and arm: generation,
    train_rows, train_tokens, synthetic_rows, steps, heldout_loss (nats/token on ``heldout``), heldout_bpb,
    sample_chars (mean characters of the rows this model sampled), seconds.
    """
    for mode in modes:
        check_arm(generations, mode, seed)
    if not real_train or not heldout:
        raise ValueError("real_train and heldout must both be non-empty")
    cfg = config or CollapseConfig()

    def generation(g: int, rows: list[str], synthetic: int) -> tuple[dict, list[str]]:
        t = time.perf_counter()
        steps = max(1, round(cfg.steps * len(rows) / len(real_train))) if cfg.scale_steps else cfg.steps
        model = train(rows, cfg, _seed(seed, g, 0), steps)
        loss, bpb = heldout_loss(model, heldout, cfg)
        samples = sample(model, len(real_train), cfg, _seed(seed, g, 1)) if g < generations - 1 else []
        return {
            "generation": g, "train_rows": len(rows), "train_tokens": sum(len(r) + 1 for r in rows),
            "synthetic_rows": synthetic, "steps": steps, "heldout_loss": loss, "heldout_bpb": bpb,
            "sample_chars": sum(map(len, samples)) / len(samples) if samples else None,
            "seconds": time.perf_counter() - t,
        }, samples

    first, samples0 = generation(0, list(real_train), 0)
    out: dict[str, list[dict]] = {}
    for mode in modes:
        rows, synthetic, samples = list(real_train), [], samples0
        records = [dict(first)]
        for g in range(1, generations):
            synthetic += samples
            rows = list(samples) if mode == "replace" else list(real_train) + synthetic
            record, samples = generation(g, rows, len(rows) - (0 if mode == "replace" else len(real_train)))
            records.append(record)
        out[mode] = records
    return out


def run_collapse(real_train: list[str], heldout: list[str], *, generations: int, mode: Mode, seed: int = 0,
                 config: CollapseConfig | None = None) -> list[dict]:
    """One arm of ``run_arms``: a dict per generation (generation 0 trains on ``real_train``)."""
    check_arm(generations, mode, seed)
    return run_arms(real_train, heldout, generations=generations, seed=seed, modes=(mode,), config=config)[mode]
