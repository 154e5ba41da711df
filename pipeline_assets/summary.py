"""The one summary file of every asset: ``<published dir>/summary.json``, the asset's result dict as JSON.

Written last and atomically (a temp file, then a rename), so its presence marks a complete artifact and no
reader ever sees half of it. The report card, tests and users read any asset's numbers from this name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"


def write_summary(out_dir: Path, result: dict[str, Any]) -> Path:
    path = Path(out_dir) / SUMMARY_FILE
    tmp = path.with_name(SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_summary(asset_dir: Path) -> dict[str, Any] | None:
    """The summary in ``asset_dir``, or None where there is none (not materialized, or an unreadable file)."""
    try:
        return json.loads((Path(asset_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
