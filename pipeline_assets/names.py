"""The one check for every name that becomes a directory under the artifact root or the landing directory.

A source name is a landing folder's name, a ``sources`` partition key and a path segment of every
per-source artifact (``<root>/<asset key>/<source>/<profile>/``), so one rule serves all of them (DESIGN.md:
"every subfolder is one user source, named by the folder"): letters, digits, ``_ . -``, at most 64,
starting with a letter or digit. That excludes ``..``, ``/``, ``\\``, NUL, control characters, a leading
dot (hidden or relative), empty and over-long names. Other segments (asset key parts, the profile) may
also start with ``_`` (``_`` is the unpartitioned slot, ``_runs`` the training run dirs) and be up to 128.

Plain Python (no Dagster import): the chat CLI and the landing reader use it too.
"""

from __future__ import annotations

import re

MAX_SOURCE_NAME = 64
MAX_SEGMENT = 128
# ``\Z``, not ``$``: ``$`` also matches before a trailing newline, so "docs\n" would pass.
SOURCE_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_SOURCE_NAME - 1}}}\Z")
SEGMENT = re.compile(rf"^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_SEGMENT - 1}}}\Z")
SOURCE_RULE = (f"letters, digits, '_', '.', '-' (at most {MAX_SOURCE_NAME}, starting with a letter or digit)")
SEGMENT_RULE = f"letters, digits, '_', '.', '-' (at most {MAX_SEGMENT}, not starting with '.' or '-')"


def _problem(name: object, pattern: re.Pattern, limit: int) -> str | None:
    """Why ``name`` cannot be a path segment, in words; None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if pattern.match(name):
        return None
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "it is a relative path component"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if "\x00" in name:
        return "it contains a NUL byte"
    if not name.isprintable():
        return "it contains a non-printable character"
    if len(name) > limit:
        return f"it is {len(name)} characters long"
    if name.startswith("."):
        return "it starts with '.' (a hidden or relative name)"
    return "it has a character outside the allowed set"


def source_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid source name / ``sources`` partition key; None when it is."""
    return _problem(name, SOURCE_NAME, MAX_SOURCE_NAME)


def is_source_name(name: object) -> bool:
    return source_name_problem(name) is None


def validate_source_name(name: object, what: str = "source name") -> str:
    """``name`` if it is a valid source name (see the module docstring), else a ValueError saying why and the rule."""
    problem = source_name_problem(name)
    if problem:
        raise ValueError(f"invalid {what} {name!r}: {problem}; use {SOURCE_RULE}. It becomes a directory "
                         "name under the artifact root, so nothing else is accepted")
    return name  # type: ignore[return-value]


def check_segment(value: object, what: str) -> str:
    """``value`` if it can be one path segment below the artifact root (asset key part, profile), else ValueError."""
    problem = _problem(value, SEGMENT, MAX_SEGMENT)
    if problem:
        raise ValueError(f"invalid {what} {value!r}: {problem}; use "
                         f"{SEGMENT_RULE}. It becomes a directory name under the artifact root")
    return value  # type: ignore[return-value]
