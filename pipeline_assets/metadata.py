"""Turning plain result dicts into Dagster metadata a user reads: tables, paths, embedded plots."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import dagster as dg

_TABLE_TYPES = {bool: "bool", int: "int", float: "float"}


def _column_type(values: list) -> str:
    kinds = {_TABLE_TYPES.get(type(v), "string") for v in values if v is not None}
    return kinds.pop() if len(kinds) == 1 else "string"


def table(rows: list[dict]) -> dg.MetadataValue:
    """Rows as Dagster's table metadata (a sortable table in the UI); non-scalar cells become text."""
    cols = list(rows[0]) if rows else []
    types = {c: _column_type([r.get(c) for r in rows]) for c in cols}
    records = [dg.TableRecord({c: None if r.get(c) is None else (r[c] if types[c] != "string" else str(r[c]))
                               for c in cols}) for r in rows]
    return dg.MetadataValue.table(records=records,
                                  schema=dg.TableSchema(columns=[dg.TableColumn(c, types[c]) for c in cols]))


def figure_png(fig: Any) -> bytes:
    """A Matplotlib figure (object API, Agg canvas) laid out tight and rendered as PNG bytes."""
    import io

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_md(png: bytes, alt: str = "plot") -> dg.MetadataValue:
    """Dagster has no image metadata type; a base64 PNG inside markdown renders inline in the UI."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def path_md(path: Path) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(path))
