"""PNG plots of training runs (matplotlib's Agg canvas: no display needed, safe on servers and in tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from qcompress.atomic import atomic_file


def plot_training(rows: Sequence[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Plot a training log (the rows of train_log.jsonl): loss vs step, and validation NDCG@10 vs epoch when the
    log has validation rows. Written atomically as PNG.

    Example:
        >>> import tempfile, pathlib
        >>> rows = [{"kind": "step", "step": 1, "loss": 1.7}, {"kind": "step", "step": 2, "loss": 1.2},
        ...         {"kind": "validation", "step": 2, "epoch": 1, "ndcg_cut_10": 0.31}]
        >>> out = plot_training(rows, pathlib.Path(tempfile.mkdtemp()) / "curve.png")
        >>> out.read_bytes()[:4]
        b'\\x89PNG'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r for r in rows if r.get("kind") == "step"]
    validation = [r for r in rows if r.get("kind") == "validation"]
    # A Figure on an Agg canvas, not pyplot: no display, no global state, nothing leaks between calls.
    fig = Figure(figsize=(10 if validation else 6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if validation else 1, 1)
    x, y = [r["step"] for r in steps], [r["loss"] for r in steps]
    ax.plot(x, y, lw=0.8, alpha=0.5, label="loss")
    if len(y) >= 10:  # a running mean makes the trend visible through batch-to-batch noise
        window = max(5, len(y) // 20)
        parts = [y[max(0, i - window + 1) : i + 1] for i in range(len(y))]
        smooth = [sum(part) / len(part) for part in parts]
        ax.plot(x, smooth, lw=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.grid(alpha=0.3)
    ax.legend()
    if validation:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.plot([r["epoch"] for r in validation], [r["ndcg_cut_10"] for r in validation], marker="o")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel(f"validation NDCG@10 ({validation[0].get('split', '')}, {validation[0].get('protocol', '')})")
        ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
