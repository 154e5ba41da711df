"""Grounded prompt pools for `datasets/synthetic`: nothing is asked from nothing.

    arithmetic  training-split problems (tasks/arithmetic.py hash split: never dev or test) that no real row
                of the consuming training set asks; the answer is computed
    docstring   "What does `mod.f` do?" for the public functions of the standard-library source documents
                the training mixture holds (parsed with ``ast``); the reference is the document's own first
                docstring sentence, so the question is about text the pipeline trains on
    code        "Write `solve()` returning a + b" for the same arithmetic problems; the test is an assert

Every record is {"kind", "prompt", ...what its verifier needs, "grounding"}; a pool excludes the prompts in
``exclude`` (normalized: real rows, earlier generations, eval items) and is returned in a seeded order.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Iterable
from pathlib import Path

from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.posttrain.data import usable_sentence
from pipeline_assets.tasks.arithmetic import apply, arithmetic_prompt, training_problems
from pipeline_assets.tasks.docstrings import docstring_prompt, first_sentence
from pipeline_assets.tasks.heldout import HELDOUT_MODULES, normalize_prompt

STDLIB_SOURCE = "python_stdlib"  # the built-in source whose documents are module files, id "<source>/<path>.py"


def _fresh(records: Iterable[dict], exclude: set[str], n: int, rng: random.Random) -> list[dict]:
    kept = [r for r in records if normalize_prompt(r["prompt"]) not in exclude]
    rng.shuffle(kept)
    return kept[:n]


def arithmetic_pool(n: int, operand_max: int, operators: tuple[str, ...], exclude: set[str],
                    rng: random.Random) -> list[dict]:
    records = ({"kind": "arithmetic", "prompt": arithmetic_prompt(a, op, b), "answer": str(apply(a, op, b)),
                "grounding": f"train split {a} {op} {b}"}
               for a, op, b in training_problems(operand_max, operators))
    return _fresh(records, exclude, n, rng)


def code_pool(n: int, operand_max: int, operators: tuple[str, ...], exclude: set[str],
              rng: random.Random) -> list[dict]:
    records = ({"kind": "code",
                "prompt": f"Write a Python function `solve()` that returns the value of {a} {op} {b}.",
                "tests": f"assert solve() == {apply(a, op, b)}", "grounding": f"train split {a} {op} {b}"}
               for a, op, b in training_problems(operand_max, operators))
    return _fresh(records, exclude, n, rng)


def module_name(doc_id: str) -> str | None:
    """"python_stdlib/email/utils.py" -> "email.utils"; None for a file that is not a module's source."""
    source, _, path = doc_id.partition("/")
    if source != STDLIB_SOURCE or not path.endswith(".py"):
        return None
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or None


def documented_functions(doc_id: str, text: str) -> list[dict]:
    """Docstring prompt records for the public top-level functions of one module's source document."""
    module = module_name(doc_id)
    if module is None or module.split(".")[0] in HELDOUT_MODULES:
        return []
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):  # a document cut at the source's byte cap, or not Python 3 source
        return []
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            doc = ast.get_docstring(node, clean=False)
            sentence = first_sentence(doc) if doc else ""
            if sentence and usable_sentence(sentence):
                out.append({"kind": "docstring", "prompt": docstring_prompt(module, node.name, False),
                            "reference": sentence, "grounding": doc_id})
    return out


def docstring_pool(n: int, mixture_files: Iterable[Path], exclude: set[str], held_answers: set[str],
                   rng: random.Random) -> list[dict]:
    """Questions about the functions in the mixture's standard-library documents; a reference sentence
    that is a QA benchmark answer is skipped with its question."""
    records = [r for path in mixture_files for doc in read_jsonl(path)
               for r in documented_functions(doc["id"], doc["text"]) if r["reference"] not in held_answers]
    return _fresh(records, exclude, n, rng)
