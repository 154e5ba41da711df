"""Score histograms for corpus metadata: ``score_histogram_png(counts, threshold) -> bytes`` (PNG).

The assets embed it as base64 markdown (Dagster has no image metadata type); Matplotlib's Agg backend through
the object API, so no display and no global pyplot state.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline_assets.corpus.quality import BINS
from pipeline_assets.figures import figure_png


def score_histogram_png(counts: dict[str, list[int]], threshold: float | None = None,
                        title: str = "P(hq)") -> bytes:
    """One bar series per label (``counts``: label -> ``BINS`` counts over [0, 1]), the threshold as a line."""
    fig = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(0, 1, BINS + 1)
    width = 1 / BINS / max(len(counts), 1)
    for i, (label, values) in enumerate(counts.items()):
        ax.bar(edges[:-1] + i * width, values, width=width, align="edge", label=f"{label} (n={sum(values)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xlabel(title)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return figure_png(fig)
