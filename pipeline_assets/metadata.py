"""Turning plain result dicts into Dagster metadata a user reads: tables, paths, embedded plots."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipeline_assets.figures import png_markdown

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


def png_md(png: bytes, alt: str = "plot") -> dg.MetadataValue:
    """Dagster has no image metadata type; a base64 PNG inside markdown renders inline in the UI."""
    return dg.MetadataValue.md(png_markdown(png, alt))


def path_md(path: Path) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(path))
