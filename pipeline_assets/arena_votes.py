"""Arena votes: the append-only JSONL the arena page writes under ``<artifact root>/arena/`` and the steps that
read it (datasets/human_preferences, evals/arena). One record per vote:

    {"id", "time" (UTC ISO), "prompt", "choice": "a" | "b" | "tie" | "both_bad",
     "model_a": {"name", "path", "version"}, "model_b": {...}, "response_a", "response_b"}

Appends take an exclusive lock and are fsynced before the vote is acknowledged, so two servers on one root
never interleave lines and an acknowledged vote survives a crash. A reader counts the lines it cannot use
(a torn last line after power loss, a hand edit) instead of failing on them.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VOTES_DIR = "arena"
VOTES_FILE = "votes.jsonl"
CHOICES = ("a", "b", "tie", "both_bad")


def votes_path(root: Path | str) -> Path:
    return Path(root) / VOTES_DIR / VOTES_FILE


def append_vote(path: Path, record: dict[str, Any]) -> None:
    problem = vote_problem(record)
    if problem:
        raise ValueError(f"not a vote record: {problem}")
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def vote_problem(record: Any) -> str | None:
    """Why ``record`` is not a usable vote, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("choice") not in CHOICES:
        return f"choice {record.get('choice')!r} not in {CHOICES}"
    for side in ("a", "b"):
        model = record.get(f"model_{side}")
        if not (isinstance(model, dict) and isinstance(model.get("name"), str) and model["name"]):
            return f"model_{side} needs a name"
        if not isinstance(record.get(f"response_{side}"), str):
            return f"response_{side} must be a string"
    if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
        return "prompt must be a non-empty string"
    if record["model_a"]["name"] == record["model_b"]["name"]:
        return "a model voted against itself"
    return None


@dataclass
class Votes:
    records: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # "line N: why", one per unusable line


def read_votes(path: Path) -> Votes:
    """Every usable vote of ``path`` in file order (none if it does not exist), unusable lines counted."""
    votes = Votes()
    if not path.is_file():
        return votes
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            votes.quarantined.append(f"line {n}: not JSON ({err})")
            continue
        problem = vote_problem(record)
        if problem:
            votes.quarantined.append(f"line {n}: {problem}")
        else:
            votes.records.append(record)
    return votes
