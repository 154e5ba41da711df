"""Turning plain result dicts into Dagster metadata a user reads: tables, JSON, embedded plots."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg


def md_table(rows: list[dict]) -> dg.MetadataValue:
    if not rows:
        return dg.MetadataValue.md("_(empty)_")
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def png_md(png: bytes, alt: str = "plot") -> dg.MetadataValue:
    """Dagster has no image metadata type; a base64 PNG inside markdown renders inline in the UI."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def path_md(path: Path) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(path))
