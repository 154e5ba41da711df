"""Matplotlib figures as PNG bytes and inline markdown images: plain helpers for the plot modules of every stage,
no Dagster (metadata.png_md wraps `png_markdown` for the UI)."""

from __future__ import annotations

import base64
import io
from typing import Any


def figure_png(fig: Any) -> bytes:
    """A Matplotlib figure (object API, Agg canvas) laid out tight and rendered as PNG bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_markdown(png: bytes, alt: str = "plot") -> str:
    """A PNG as a base64 markdown image: renders inline in the Dagster UI and in report_card.md alike."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
