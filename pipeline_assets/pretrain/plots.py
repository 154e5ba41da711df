"""Loss-curve plot for pretraining metadata: `loss_curve_png(loss_history, val_history) -> bytes` (PNG).

The asset embeds it as base64 inside MetadataValue.md (Dagster has no image metadata type). Matplotlib's Agg
backend is used through the object API, so no display and no global pyplot state. No command of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline_assets.figures import figure_png


def loss_curve_png(
    loss_history: Sequence[Sequence[float]],
    val_history: Sequence[Sequence[float]] = (),
    title: str = "pretraining loss",
) -> bytes:
    """Train loss per step (light line + 20-step moving average) and val loss points, as PNG bytes.

    loss_history: [[step, loss], ...]; val_history: [[step, val_loss, ...], ...] (extra columns ignored).
    """
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if loss_history:
        steps = [float(s[0]) for s in loss_history]
        losses = [float(s[1]) for s in loss_history]
        ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train")
        k = min(20, len(losses))
        if k > 1:
            smooth = [
                sum(losses[max(0, i - k + 1) : i + 1]) / (i + 1 - max(0, i - k + 1))
                for i in range(len(losses))
            ]
            ax.plot(steps, smooth, color="tab:blue", linewidth=1.8, label=f"train ({k}-step mean)")
    if val_history:
        ax.plot(
            [float(v[0]) for v in val_history],
            [float(v[1]) for v in val_history],
            "o-",
            color="tab:orange",
            markersize=4,
            label="val",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if loss_history or val_history:
        ax.legend(loc="upper right", fontsize=8)
    return figure_png(fig)
