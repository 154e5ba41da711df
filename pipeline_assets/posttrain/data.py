"""Post-training datasets (`datasets/sft`, `datasets/reasoning`), built offline from local material and code.

    python -m pipeline_assets.posttrain.data sft --out /tmp/sft --evals-benchmarks /tmp/benchmarks
    python -m pipeline_assets.posttrain.data reasoning --out /tmp/reasoning --evals-benchmarks /tmp/benchmarks

Plain Python, no Dagster. Same config + same Python version -> byte-identical files (the docstring QA reads
this interpreter's standard library, whose docstrings change between releases).

    sft.jsonl / sft_val.jsonl   {"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "kind": str}
        kinds: arithmetic ("What is 37 + 12?" -> "49"), word_problem (two-step, -> "61"), docstring_qa
        ("What does `shutil.which` do?" -> first docstring sentence), refusal (clearly harmful request ->
        a refusal that `is_refusal` recognises), benign (a look-alike request sharing trigger words ->
        a helpful answer), identity ("Who are you?" -> "I am llmdag-tiny, ...").
    reasoning.jsonl             {"prompt": [{"role": "user", "content": "What is 37 + 12?"}], "answer": "49",
                                 "kind": "arithmetic" | "word_problem"}   (GRPO: `answer` feeds the rewards)
    dev_arithmetic.jsonl    (both datasets) dev-split arithmetic problems {"id", "prompt", "answer", "kind"}
                                 of the same task space: SFT's early stop and in-training curves, GRPO's
                                 curves; never trained on, never reported (evals use the test split).

Held-out contract (pipeline_assets/tasks/heldout.py): every arithmetic problem whose first step is
`is_heldout_arithmetic` is skipped, docstring QA never reads `HELDOUT_MODULES` (nor any object defined
there) and drops a question whose normalized prompt or answer sentence is a benchmark item, and every
prompt whose `normalize_prompt` is in `heldout_keys(bench_dir)` is dropped. The skip counts are returned.

Answer format: a bare integer ("49", "-15"). It is what `check_arithmetic` grades (the last integer in the
completion) and what the GRPO `format_reward` asks for, so SFT teaches exactly the format RL rewards.

`load_chat_dataset(path_or_hf_id, split)` reads user chat data (JSONL / JSON / parquet file, a
`datasets.save_to_disk` dir, or a hub dataset id) and validates its `messages` column.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline_assets.config_flags import add_config_flags, add_profile_flag, config_from_args
from pipeline_assets.jsonl import read_jsonl, write_jsonl
from pipeline_assets.posttrain.safety_rows import benign_pool, refusal_pool
from pipeline_assets.tasks.arithmetic import (
    OPERATORS,
    apply,
    arithmetic_prompt,
    is_heldout_arithmetic,
    split_problems,
    training_problems,
)
from pipeline_assets.tasks.docstrings import docstring_prompt, first_sentence
from pipeline_assets.tasks.heldout import HELDOUT_MODULES, heldout_keys, load_benchmark, normalize_prompt
from pipeline_assets.tasks.refusal import is_refusal

SFT_FILE = "sft.jsonl"
SFT_VAL_FILE = "sft_val.jsonl"
REASONING_FILE = "reasoning.jsonl"
DEV_FILE = "dev_arithmetic.jsonl"
# datasets/synthetic (pipeline_assets/synthetic): accepted chat rows, and the rejected ones with their reason
SYNTHETIC_FILE = "synthetic.jsonl"
REJECTED_FILE = "rejected.jsonl"
# A stage that trains on datasets/synthetic also saves the same recipe trained without those rows here, inside
# its checkpoint dir; its eval scores both on the target's items (the paired synthetic effect).
WITHOUT_SYNTHETIC_DIR = "ablation_without_synthetic"
ROLES = ("system", "user", "assistant", "tool")

# Stdlib modules with plenty of plain one-sentence docstrings; none of them is (or re-exports from) a
# held-out module. Validated against HELDOUT_MODULES, so a user list cannot leak an eval module in.
DOCSTRING_MODULES: tuple[str, ...] = (
    "string", "collections", "itertools", "functools", "os.path", "shutil", "pathlib", "random", "re",
    "copy", "glob", "bisect", "operator", "csv", "urllib.parse", "datetime", "contextlib", "tempfile",
    "uuid", "pprint", "argparse", "logging", "queue", "ipaddress", "mimetypes", "configparser", "inspect",
    "ast", "tokenize", "traceback", "warnings", "enum", "dataclasses", "secrets", "hashlib", "email.utils",
    "types", "weakref", "codecs", "colorsys", "getopt", "sched", "linecache", "numbers", "decimal",
    "zlib", "bz2", "lzma", "struct", "pickle", "threading", "subprocess", "sqlite3", "platform",
)


# ---------------------------------------------------------------------------------------------------------
# Configs


def _check_count(owner: str, name: str, value: Any, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an int >= {minimum}, got {value!r}")


def _check_operators(owner: str, operators: tuple[str, ...]) -> None:
    if not operators or not set(operators) <= set(OPERATORS):
        raise ValueError(f"{owner}.operators={operators!r} must be a non-empty subset of {OPERATORS}")


@dataclass(frozen=True)
class SFTDataConfig:
    """Used by: datasets/sft. Rows per kind (before the val split); the defaults build in ~1 s.

    Arithmetic dominates on purpose: it is the skill the tiny model can measurably learn on CPU in
    minutes (held-out accuracy), and GRPO later starts from it. The other kinds teach the chat format,
    refusals and identity with a few hundred rows each.
    """

    arithmetic: int = 4000
    # Two-step word problems (a op b op c in a sentence). Off for tiny: after 400 steps the ~1M-param model
    # solves only 3-5% of even the one-step 0..99 problems; worth it from the `small` profile up.
    word_problems: int = 0
    docstring_qa: int = 300  # capped by the usable docstrings of `docstring_modules` (502 on Python 3.11)
    refusals: int = 150
    benign: int = 150
    identity: int = 30
    operand_max: int = 99  # operands in [0, operand_max]; the benchmark uses 0..99
    operators: tuple[str, ...] = ("+", "-")  # the benchmark's two; ("+",) is a 2x smaller task
    val_fraction: float = 0.05  # of each kind, written to sft_val.jsonl
    dev_size: int = 250  # dev-split problems (dev_arithmetic.jsonl) for SFT's early stop and curves
    docstring_modules: tuple[str, ...] = DOCSTRING_MODULES
    seed: int = 0

    def validate(self) -> None:
        for name in ("arithmetic", "word_problems", "docstring_qa", "refusals", "benign", "identity"):
            _check_count("SFTDataConfig", name, getattr(self, name))
        if self.total == 0:
            raise ValueError("SFTDataConfig: every count is 0; set at least one of arithmetic, docstring_qa, ...")
        _check_count("SFTDataConfig", "operand_max", self.operand_max, minimum=1)
        _check_count("SFTDataConfig", "dev_size", self.dev_size)
        _check_operators("SFTDataConfig", self.operators)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"SFTDataConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        leaked = sorted({m.split(".")[0] for m in self.docstring_modules} & set(HELDOUT_MODULES))
        if leaked:
            raise ValueError(f"SFTDataConfig.docstring_modules includes held-out eval module(s) {leaked}; "
                             f"remove them (held out: {', '.join(HELDOUT_MODULES)})")

    @property
    def total(self) -> int:
        return (self.arithmetic + self.word_problems + self.docstring_qa + self.refusals + self.benign
                + self.identity)


@dataclass(frozen=True)
class ReasoningDataConfig:
    """Used by: datasets/reasoning (GRPO prompts with verifiable integer answers)."""

    size: int = 4000
    word_problem_fraction: float = 0.0  # share of two-step word problems; the rest are "What is a op b?"
    operand_max: int = 99
    operators: tuple[str, ...] = ("+", "-")
    dev_size: int = 200  # dev-split problems for the in-training accuracy curves
    seed: int = 0

    def validate(self) -> None:
        _check_count("ReasoningDataConfig", "size", self.size, minimum=1)
        _check_count("ReasoningDataConfig", "operand_max", self.operand_max, minimum=1)
        _check_operators("ReasoningDataConfig", self.operators)
        if not 0.0 <= self.word_problem_fraction <= 1.0:
            raise ValueError("ReasoningDataConfig.word_problem_fraction must be in [0, 1], "
                             f"got {self.word_problem_fraction!r}")


# ---------------------------------------------------------------------------------------------------------
# Arithmetic (single and two-step)


# Our own templates (the benchmark's four are never reused, so a word-problem score measures transfer).
_WORD_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("{name} picks {a} {item}, then {b} more, and then gives away {c}. How many {item} does {name} keep?",
     "+", "-"),
    ("There are {a} {item} in a jar. {name} removes {b} and then puts back {c}. How many {item} are in the "
     "jar?", "-", "+"),
    ("{name} collects {a} {item} on Monday, {b} on Tuesday and {c} on Wednesday. How many {item} is that in "
     "total?", "+", "+"),
    ("{name} starts with {a} {item}, loses {b}, and then loses {c} more. How many {item} remain?", "-", "-"),
)
_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Ines", "Jon", "Kim")
_THINGS = ("coins", "cards", "buttons", "beads", "nuts", "tickets", "rocks", "leaves")


def _word_problem(rng: random.Random, operand_max: int,
                  operators: tuple[str, ...]) -> tuple[str, int, tuple[int, str, int]]:
    template, op1, op2 = rng.choice([t for t in _WORD_TEMPLATES if {t[1], t[2]} <= set(operators)])
    while True:
        a, b = rng.randint(2, operand_max), rng.randint(1, operand_max)
        if op1 == "-" and b >= a:
            continue
        if not is_heldout_arithmetic(a, op1, b):  # the benchmark's rule: test the first step
            break
    first = apply(a, op1, b)
    c = rng.randint(1, min(first, operand_max) if op2 == "-" else operand_max)
    prompt = template.format(name=rng.choice(_NAMES), item=rng.choice(_THINGS), a=a, b=b, c=c)
    return prompt, apply(first, op2, c), (a, op1, b)


def _arithmetic_items(n: int, operand_max: int, operators: tuple[str, ...], rng: random.Random,
                      held: set[str]) -> list[tuple[str, str]]:
    pairs = training_problems(operand_max, tuple(operators))
    if n > len(pairs):
        raise ValueError(f"asked for {n} arithmetic problems but operand_max={operand_max}, operators={operators} "
                         f"give only {len(pairs)} non-held-out ones; lower the count or raise operand_max")
    out = []
    for a, op, b in rng.sample(pairs, n):
        prompt = arithmetic_prompt(a, op, b)
        if normalize_prompt(prompt) not in held:  # never true given the hash split; kept as a second lock
            out.append((prompt, str(apply(a, op, b))))
    return out


def _word_items(n: int, operand_max: int, operators: tuple[str, ...], rng: random.Random,
                held: set[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _ in range(50 * n):
        if len(out) == n:
            break
        prompt, answer, _ = _word_problem(rng, operand_max, operators)
        key = normalize_prompt(prompt)
        if key not in held and key not in seen:
            seen.add(key)
            out.append((prompt, str(answer)))
    return out


# ---------------------------------------------------------------------------------------------------------
# Docstring QA

def usable_sentence(sentence: str) -> bool:
    """A first sentence worth a question: 4-30 words, a full sentence, no signature residue."""
    words = sentence.split()
    return (4 <= len(words) <= 30 and "->" not in sentence and sentence[0].isupper()
            and "(" not in words[0] and sentence.endswith("."))


def _owner_ok(obj: Any, module_name: str, allow_heldout: bool = False) -> bool:
    owner = getattr(obj, "__module__", None) or ""
    if not allow_heldout and owner.lstrip("_").split(".")[0] in HELDOUT_MODULES:
        return False
    # Defined in the module itself or its C accelerator (collections -> _collections, os.path -> posixpath).
    short = module_name.split(".")[-1]
    aliases = {module_name, f"_{short}", short, "posixpath" if module_name == "os.path" else module_name}
    return owner in aliases or owner.startswith(f"{module_name}.")


def docstring_items(modules: tuple[str, ...], allow_heldout: bool = False) -> list[tuple[str, str, str]]:
    """(module, qualname, first sentence) for public functions/classes of `modules`, sentence-unique.

    `allow_heldout`: also objects of HELDOUT_MODULES (the lookup tool's index; never for training rows)."""
    found: list[tuple[str, str, str]] = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in sorted(set(names)):
            obj = getattr(module, name, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            # obj.__doc__ (not inspect.getdoc): an inherited docstring would describe the base class.
            if _owner_ok(obj, module_name, allow_heldout) and isinstance(obj.__doc__, str) and obj.__doc__.strip():
                found.append((module_name, name, first_sentence(obj.__doc__)))
    counts = Counter(sentence for _, _, sentence in found)
    # A sentence shared by several names (aliases) has no single right question.
    return [item for item in found if usable_sentence(item[2]) and counts[item[2]] == 1]


def docstring_question(module_name: str, qualname: str) -> str:
    """The docstring-QA prompt for an object of `docstring_items`: class or function phrasing."""
    obj = getattr(importlib.import_module(module_name), qualname)
    return docstring_prompt(module_name, qualname, inspect.isclass(obj))


def _docstring_qa(n: int, modules: tuple[str, ...], rng: random.Random, held: set[str],
                  held_answers: set[str]) -> tuple[list[tuple[str, str]], int]:
    items = docstring_items(modules)
    rng.shuffle(items)
    out, skipped = [], 0
    for module_name, name, sentence in items:
        if len(out) == n:
            break
        prompt = docstring_question(module_name, name)
        if normalize_prompt(prompt) in held or sentence in held_answers:
            skipped += 1
            continue
        out.append((prompt, sentence))
    return out, skipped


# ---------------------------------------------------------------------------------------------------------
# Identity

_IDENTITY: tuple[tuple[str, str], ...] = (
    ("Who are you?", "I am llmdag-tiny, a small language model trained with the llmdag pipeline."),
    ("What are you?", "I am llmdag-tiny, a small language model built by the llmdag pipeline."),
    ("What is your name?", "My name is llmdag-tiny. I am a small language model trained with llmdag."),
    ("Introduce yourself.", "I am llmdag-tiny, a small assistant model. I answer short questions and do "
                            "simple arithmetic."),
    ("Are you a human?", "No. I am llmdag-tiny, a small language model trained with the llmdag pipeline."),
    ("Who made you?", "I was trained by the llmdag pipeline: pretraining, then supervised fine-tuning and RL."),
)


def _safety_items(n: int, pool: list[tuple[str, str]], rng: random.Random,
                  held: set[str]) -> tuple[list[tuple[str, str]], int]:
    """Up to n (prompt, reply) pairs drawn cyclically from a shuffled pool, held-out prompts skipped."""
    kept = [(p, r) for p, r in pool if normalize_prompt(p) not in held]
    skipped = len(pool) - len(kept)
    rng.shuffle(kept)
    if not kept:
        return [], skipped
    # More rows than distinct prompts repeat the pool: a few hundred rows from ~100 prompts is the point.
    return [kept[i % len(kept)] for i in range(n)], skipped


# ---------------------------------------------------------------------------------------------------------
# Builders


def _held(bench_dir: Path | None) -> tuple[dict[str, set[str]], set[str]]:
    if bench_dir is None:
        return {}, set()
    qa_answers = {r["answer"] for r in load_benchmark(bench_dir, "qa")}
    return heldout_keys(bench_dir), qa_answers


def _chat_row(prompt: str, reply: str, kind: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
            "kind": kind}


def build_sft_dataset(out_dir: Path, cfg: SFTDataConfig, bench_dir: Path | None) -> dict[str, Any]:
    """Write sft.jsonl + sft_val.jsonl + dev_arithmetic.jsonl (dev split) into `out_dir`; return counts,
    skip counts, files and sha256.

    `bench_dir` is the evals/benchmarks dir; None skips the prompt-level checks (the arithmetic hash split
    and the HELDOUT_MODULES rule still apply, they need no files) and is meant for tests only.
    """
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys, qa_answers = _held(bench_dir)
    rng = random.Random(f"{cfg.seed}:sft")
    all_held = set().union(*keys.values()) if keys else set()

    kinds: dict[str, list[tuple[str, str]]] = {}
    skipped: dict[str, int] = {}
    held_arith = keys.get("arithmetic", set())
    kinds["arithmetic"] = _arithmetic_items(cfg.arithmetic, cfg.operand_max, cfg.operators, rng, held_arith)
    kinds["word_problem"] = _word_items(cfg.word_problems, cfg.operand_max, cfg.operators, rng, held_arith)
    qa_held = keys.get("qa", set()) | keys.get("multiple_choice", set())
    kinds["docstring_qa"], skipped["docstring_qa"] = _docstring_qa(
        cfg.docstring_qa, cfg.docstring_modules, rng, qa_held, qa_answers)
    kinds["refusal"], skipped["refusal"] = _safety_items(cfg.refusals, refusal_pool(rng), rng, all_held)
    kinds["benign"], skipped["benign"] = _safety_items(cfg.benign, benign_pool(rng), rng, all_held)
    kinds["identity"], skipped["identity"] = _safety_items(cfg.identity, list(_IDENTITY), rng, all_held)

    # A refusal that the eval's own detector would not count is a bug in the templates, not user error.
    bad = [r for p, r in kinds["refusal"] if not is_refusal(r)] + [r for p, r in kinds["benign"] if is_refusal(r)]
    if bad:
        raise AssertionError(f"refusal/benign replies misread by is_refusal: {bad[:3]}")

    train, val = [], []
    for kind, items in kinds.items():
        rows = [_chat_row(p, r, kind) for p, r in items]
        n_val = round(len(rows) * cfg.val_fraction)
        val += rows[:n_val]
        train += rows[n_val:]
    rng.shuffle(train)
    rng.shuffle(val)
    dev = split_arithmetic(cfg.operand_max, cfg.dev_size, cfg.operators, split="dev")
    files = {SFT_FILE: train, SFT_VAL_FILE: val, DEV_FILE: dev}
    sha = {name: write_jsonl(out_dir / name, rows) for name, rows in files.items()}
    return {
        "rows": len(train), "val_rows": len(val), "dev_rows": len(dev),
        "counts": dict(Counter(r["kind"] for r in train)), "val_counts": dict(Counter(r["kind"] for r in val)),
        "skipped_heldout": skipped,
        "heldout_arithmetic_excluded": sum(is_heldout_arithmetic(a, op, b) for op in cfg.operators
                                           for a in range(cfg.operand_max + 1) for b in range(cfg.operand_max + 1)),
        "bench_dir": str(bench_dir) if bench_dir is not None else None,
        "files": {SFT_FILE: str(out_dir / SFT_FILE), SFT_VAL_FILE: str(out_dir / SFT_VAL_FILE)},
        "sha256": sha, "config": asdict(cfg),
    }


def split_arithmetic(operand_max: int = 99, n: int = 200, operators: tuple[str, ...] = OPERATORS,
                       split: str = "test") -> list[dict]:
    """n "What is a op b?" records of one held-out hash split ("test" or "dev") with operands <= operand_max.

    The dev split is what recipes are tuned and in-training curves are drawn on; the test split is what
    evals/benchmarks reports. Both are skipped by every training builder (`is_heldout_arithmetic`).
    """
    pairs = list(split_problems(operand_max, tuple(operators), split))
    random.Random("llmdag-heldout-arithmetic").shuffle(pairs)
    return [{"id": f"arith-{a}{op}{b}", "prompt": arithmetic_prompt(a, op, b), "answer": str(apply(a, op, b)),
             "kind": "single"} for a, op, b in pairs[:n]]


def unseen_arithmetic(seen_prompts: set[str], operand_max: int, operators: tuple[str, ...]) -> list[dict]:
    """Training-split problems of the space whose prompt is not in ``seen_prompts`` (e.g. every SFT row's),
    in a fixed order: held-out prompts for the preference stages that are neither eval items nor SFT data."""
    seen = {normalize_prompt(p) for p in seen_prompts}
    rows = [{"prompt": arithmetic_prompt(a, op, b), "answer": str(apply(a, op, b))}
            for a, op, b in training_problems(operand_max, tuple(operators))]
    return [r for r in rows if normalize_prompt(r["prompt"]) not in seen]


def preference_prompts(sft_data: Path, limit: int, task: SFTDataConfig, unseen: bool = True) -> list[dict]:
    """Prompt records for pair building and RLHF: the SFT rows' prompts to train on (arithmetic with answers,
    harmful, benign), and as the held-out prompts the training-split problems no SFT row used, so held-out
    pair accuracy and RLHF's held-out numbers are measured on prompts the policy never trained on."""
    rows = read_jsonl(sft_data / SFT_FILE) + read_jsonl(sft_data / SFT_VAL_FILE)
    out: list[dict] = []
    for r in rows:
        user, reply = r["messages"][0]["content"], r["messages"][-1]["content"]
        if r["kind"] == "arithmetic":
            out.append({"prompt": user, "answer": reply, "test": False})
        elif r["kind"] == "refusal":
            out.append({"prompt": user, "label": "harmful", "test": False})
        elif r["kind"] == "benign":
            out.append({"prompt": user, "label": "benign", "response": reply, "test": False})
    arithmetic = [p for p in out if "answer" in p][:limit]
    safety = [p for p in out if "label" in p][: max(limit // 10, 8)]
    if not unseen:
        return arithmetic + safety
    held = unseen_arithmetic({r["messages"][0]["content"] for r in rows}, task.operand_max, task.operators)
    return arithmetic + safety + [{**p, "test": True} for p in held]


def build_reasoning_dataset(out_dir: Path, cfg: ReasoningDataConfig, bench_dir: Path | None) -> dict[str, Any]:
    """Write reasoning.jsonl (GRPO prompts + integer answers) and dev_arithmetic.jsonl into `out_dir`.

    The held-out list is the dev split of the same problem space (the benchmark reports the test split).
    """
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys, _ = _held(bench_dir)
    held = keys.get("arithmetic", set())
    rng = random.Random(f"{cfg.seed}:reasoning")
    n_word = round(cfg.size * cfg.word_problem_fraction)
    items = [(p, a, "arithmetic")
             for p, a in _arithmetic_items(cfg.size - n_word, cfg.operand_max, cfg.operators, rng, held)]
    items += [(p, a, "word_problem") for p, a in _word_items(n_word, cfg.operand_max, cfg.operators, rng, held)]
    rng.shuffle(items)
    rows = [{"prompt": [{"role": "user", "content": p}], "answer": a, "kind": k} for p, a, k in items]
    # GRPO's and distillation's in-training curves: the dev split, so nothing is tuned on the reported items.
    dev = split_arithmetic(cfg.operand_max, cfg.dev_size, cfg.operators, split="dev")
    sha = {REASONING_FILE: write_jsonl(out_dir / REASONING_FILE, rows),
           DEV_FILE: write_jsonl(out_dir / DEV_FILE, dev)}
    return {
        "rows": len(rows), "counts": dict(Counter(k for _, _, k in items)), "dev_rows": len(dev),
        "dev_source": "dev split of the arithmetic hash split (evals/benchmarks reports the test split)",
        "files": {REASONING_FILE: str(out_dir / REASONING_FILE), DEV_FILE: str(out_dir / DEV_FILE)},
        "sha256": sha, "config": asdict(cfg),
    }


# ---------------------------------------------------------------------------------------------------------
# User chat data


def validate_messages(rows: Iterator[Any] | list[Any], source: str) -> int:
    """Raise ValueError at the first malformed `messages` value; return how many rows were checked."""
    n = 0
    for i, messages in enumerate(rows):
        n += 1
        where = f"{source}: row {i}"
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: `messages` must be a non-empty list of {{'role', 'content'}} dicts, "
                             f"got {type(messages).__name__}")
        for j, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise ValueError(f"{where}, message {j}: need {{'role': one of {ROLES}, 'content': str}}, "
                                 f"got {str(m)[:120]!r}")
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError(f"{where}: no assistant turn, so there is nothing to train on; drop the row or "
                             "add the reply")
    if n == 0:
        raise ValueError(f"{source}: the dataset has no rows")
    return n


def load_chat_dataset(path_or_hf_id: str | Path, split: str = "train") -> Any:
    """A `datasets.Dataset` with a validated `messages` column, from:

    - a local ``.jsonl`` / ``.json`` / ``.parquet`` file (one conversation a row);
    - a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``split`` picks one);
    - a hub dataset id such as ``"HuggingFaceH4/ultrachat_200k"`` (needs network and HF_HUB_OFFLINE unset;
      ``split`` as on its dataset card, e.g. ``"train_sft"``).
    Columns other than `messages` are kept (e.g. `kind`); trainers select what they need.
    """
    import datasets

    path = Path(path_or_hf_id)
    source = str(path_or_hf_id)
    if path.is_file():
        suffix = path.suffix.lower()
        builders = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
        if suffix not in builders:
            raise ValueError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .parquet, or a "
                             "save_to_disk dir")
        ds = datasets.load_dataset(builders[suffix], data_files=str(path), split="train")
    elif path.is_dir():
        if not ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
                or (path / "state.json").is_file()):
            raise ValueError(f"{path} is a directory but not a datasets.save_to_disk dir (no dataset_info.json / "
                             "dataset_dict.json); pass a .jsonl/.parquet file or a save_to_disk dir")
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{path} has splits {sorted(ds)}, not {split!r}; pass split=<one of them>")
            ds = ds[split]
    elif (re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/"))
          and path.suffix.lower() not in (".jsonl", ".json", ".parquet")):
        # A hub id. Offline (HF_HUB_OFFLINE=1) this raises ConnectionError "Couldn't reach ... on the Hub".
        ds = datasets.load_dataset(source, split=split)
    else:
        raise FileNotFoundError(f"{source} is neither an existing file/dir nor a hub id like 'owner/name'; "
                                "check the path")
    if "messages" not in ds.column_names:
        raise ValueError(f"{source}: no `messages` column (columns: {ds.column_names}); convert rows to "
                         "{'messages': [{'role': 'user', 'content': ...}, {'role': 'assistant', ...}]}")
    validate_messages(iter(ds["messages"]), source)
    return ds


# ---------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """``python -m pipeline_assets.posttrain.data {sft,reasoning} --out DIR [--evals-benchmarks DIR] ...``."""
    parser = argparse.ArgumentParser(description="Build the llmdag SFT or reasoning dataset (offline).")
    kinds = parser.add_subparsers(dest="dataset", required=True)
    for name, cls in (("sft", SFTDataConfig), ("reasoning", ReasoningDataConfig)):
        sub = kinds.add_parser(name, help=f"datasets/{name}")
        sub.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
        sub.add_argument("--evals-benchmarks", type=Path, default=None,
                         help="evals/benchmarks dir whose items to exclude")
        add_profile_flag(sub)
        add_config_flags(sub, cls)
    args = parser.parse_args(argv)
    if args.dataset == "reasoning":
        summary = build_reasoning_dataset(args.out, config_from_args(ReasoningDataConfig, "reasoning_data", args),
                                          args.evals_benchmarks)
    else:
        summary = build_sft_dataset(args.out, config_from_args(SFTDataConfig, "sft_data", args), args.evals_benchmarks)
    log(json.dumps({k: summary[k] for k in ("rows", "counts", "files")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
