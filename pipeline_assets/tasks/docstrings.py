"""Docstring QA: "What does `mod.f` do?" answered by the first sentence of its docstring.

The benchmark asks it about HELDOUT_MODULES (tasks/heldout.py), SFT data about other modules; both phrase
the question and cut the sentence the same way.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter

# Split after . ! ? but not inside "e.g." / "i.e." / "etc.", which docstrings use mid-sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!e\.g\.)(?<!i\.e\.)(?<!etc\.)\s+")


def first_sentence(doc: str) -> str:
    paragraph = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    return _SENTENCE_END.split(paragraph)[0]


def docstring_prompt(module: str, qualname: str, is_class: bool) -> str:
    return f"What is the `{module}.{qualname}` class for?" if is_class else f"What does `{module}.{qualname}` do?"


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def answer_tokens(text: str) -> list[str]:
    """SQuAD normalisation: case-folded, punctuation and articles dropped, split on whitespace."""
    return _ARTICLES.sub(" ", re.sub(r"[^\w\s]", " ", text.casefold())).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 of an answer against the reference sentence (the eval's QA metric)."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    same = sum((Counter(pred) & Counter(ref)).values())
    if not same:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)
