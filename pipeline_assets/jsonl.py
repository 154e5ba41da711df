"""Parsing the JSONL files the pipeline itself writes (datasets, benchmarks): one record per "\n" line."""

from __future__ import annotations

import json


def parse_jsonl(text: str, source: object, fix: str) -> list[dict]:
    """Records of `text`, blank lines skipped; a bad line raises ValueError naming `source`:line and `fix`.

    split("\n"), not splitlines(): a JSON string may hold U+2028, U+0085 or \\x1c raw, which splitlines cuts.
    """
    rows = []
    for line_no, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{source}:{line_no}: not valid JSON ({err}); {fix}") from err
    return rows
