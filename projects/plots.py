"""Figures logged as run artifacts (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

NAMES = ("prey", "predator")


def plot_series_grid(time: np.ndarray, series: np.ndarray, title: str = "") -> Figure:
    """One panel per series (N, T, 2): prey and predator against time."""
    n = len(series)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, s in zip(axes.flat, series, strict=False):
        for v, name in enumerate(NAMES):
            ax.plot(time, s[:, v], label=name)
        ax.set_xlabel("time")
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
