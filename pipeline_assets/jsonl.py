"""The JSONL files the pipeline itself writes (datasets, benchmarks): one record per "\\n" line, written atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


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


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; materialize the dataset asset that writes it first")
    return parse_jsonl(path.read_text(encoding="utf-8"), path, "rebuild the file")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    """Write `rows` as JSON lines atomically (tmp file, then rename); return the bytes' sha256."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # never a half-written file under the final name
    return hashlib.sha256(data).hexdigest()
