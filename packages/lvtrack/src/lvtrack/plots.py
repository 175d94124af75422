"""Figures logged as run artifacts (matplotlib, headless).

Every figure is a plain :class:`matplotlib.figure.Figure`, not one made through `pyplot`: pyplot
keeps each figure it makes in a global registry until it is closed, so a process that plots in a
loop (the in-process sweep) would hold every figure. These are freed with their last reference,
and need no backend (`fig.savefig`, which `mlflow.log_figure` calls, draws with Agg).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

NAMES = ("prey", "predator")


def plot_series_grid(time: np.ndarray, series: np.ndarray, title: str = "") -> Figure:
    """One panel per series (N, T, 2): prey and predator against time."""
    n = len(series)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(4 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
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


def plot_forecasts(
    time: np.ndarray,
    histories: np.ndarray,
    truth: np.ndarray,
    predictions: np.ndarray,
    title: str = "",
) -> Figure:
    """History (solid), truth (dots) and forecast (dashed) of a few series, one panel each."""
    n = len(histories)
    cols = min(n, 3)
    rows = -(-n // cols)
    k, h = histories.shape[1], truth.shape[1]
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, hist, tru, pred in zip(axes.flat, histories, truth, predictions, strict=False):
        for v, (name, color) in enumerate(zip(NAMES, ("tab:blue", "tab:orange"), strict=True)):
            ax.plot(time[:k], hist[:, v], color=color, label=name)
            ax.plot(time[k : k + h], tru[:, v], "o", color=color, ms=3)
            ax.plot(time[k : k + h], pred[:, v], "--", color=color)
        ax.axvline(time[k - 1], color="grey", lw=0.5)
        ax.set_xlim(time[max(0, k - 20)], time[k + h - 1] + (time[1] - time[0]))
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict[str, float]]) -> Figure:
    """Training and validation loss, and the validation forecasting metric, against step."""
    fig = Figure(figsize=(10, 3.5))
    ax_loss, ax_mse = fig.subplots(1, 2)
    for key, style in (("train_loss", "-"), ("val_loss", "o-")):
        pts = [(r["step"], r[key]) for r in history if key in r]
        if pts:
            ax_loss.plot(*zip(*pts, strict=True), style, label=key, ms=3)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (nats/token)")
    ax_loss.legend()
    pts = [(r["step"], r["val_mse"]) for r in history if "val_mse" in r]
    if pts:
        ax_mse.plot(*zip(*pts, strict=True), "o-", label="val_mse (subset)")
        ax_mse.set_yscale("log")
        ax_mse.legend()
    ax_mse.set_xlabel("step")
    fig.tight_layout()
    return fig


def plot_grid(
    scores: dict[tuple[float, int], float],
    lrs: tuple[float, ...],
    ranks: tuple[int, ...],
    metric: str,
) -> Figure:
    """Heat map of a sweep's metric over learning rate x LoRA rank (log colour scale)."""
    grid = np.array([[scores.get((lr, r), np.nan) for r in ranks] for lr in lrs])
    fig = Figure(figsize=(1.6 * len(ranks) + 2, 1.0 * len(lrs) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(np.log10(grid), cmap="viridis_r")
    ax.set_xticks(range(len(ranks)), [str(r) for r in ranks])
    ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("learning rate")
    for i in range(len(lrs)):
        for j in range(len(ranks)):
            ax.text(j, i, f"{grid[i, j]:.2e}", ha="center", va="center", fontsize=8, color="w")
    fig.colorbar(im, ax=ax, label=f"log10 {metric}")
    fig.tight_layout()
    return fig


def plot_search_history(trials: Sequence[Any]) -> Figure:
    """A search's trials in order: each rung score reached (pruned trials grey), the completed
    trials' scores, and the best so far. `trials`: Optuna `FrozenTrial`s."""
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    best, best_x, best_y = np.inf, [], []
    for t in trials:
        marks = sorted(t.intermediate_values.items())
        if marks:
            ax.plot([t.number] * len(marks), [v for _, v in marks], ".", color="0.7", ms=4)
        if t.state.name == "COMPLETE" and t.value is not None:
            ax.plot(t.number, t.value, "o", color="C0", ms=5)
            best = min(best, t.value)
        if np.isfinite(best):
            best_x.append(t.number)
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="C3", label="best completed")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel("val MSE (filled), decayed branch")
    ax.set_yscale("log")
    ax.set_title("optimization history (grey: rung scores of every trial)")
    fig.tight_layout()
    return fig


def plot_rungs(trials: Sequence[Any], rung_flops: Sequence[float]) -> Figure:
    """How far trials went: per rung (its training FLOPs), the trials scored there and the
    trials that stopped there (pruned, or completed at the top)."""
    reached = [0] * len(rung_flops)
    stopped: dict[str, list[int]] = {
        "pruned": [0] * len(rung_flops),
        "completed": [0] * len(rung_flops),
    }
    for t in trials:
        n = len(t.intermediate_values)
        if t.state.name == "COMPLETE":
            n = len(rung_flops)  # the top rung is scored but not reported
        if n == 0:
            continue
        for k in range(min(n, len(rung_flops))):
            reached[k] += 1
        kind = "completed" if t.state.name == "COMPLETE" else "pruned"
        stopped[kind][min(n, len(rung_flops)) - 1] += 1
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    x = np.arange(len(rung_flops))
    ax.bar(x - 0.2, reached, 0.4, label="scored at the rung")
    ax.bar(x + 0.2, stopped["pruned"], 0.4, label="pruned there", color="C1")
    ax.bar(
        x + 0.2, stopped["completed"], 0.4, bottom=stopped["pruned"], label="completed", color="C2"
    )
    ax.set_xticks(x, [f"rung {k}\n{f:.2e} FLOPs" for k, f in enumerate(rung_flops)])
    ax.set_ylabel("trials")
    ax.legend()
    ax.set_title("successive halving: trials per rung")
    fig.tight_layout()
    return fig


#: Quantile levels of the fan charts' band and median (`lvmodel.probabilistic.QUANTILES`).
FAN_LEVELS = (0.1, 0.5, 0.9)
COLORS = ("tab:blue", "tab:orange")


def plot_fan(
    time: np.ndarray,
    histories: np.ndarray,
    truth: np.ndarray,
    quantiles: np.ndarray,
    median: np.ndarray,
    title: str = "",
) -> Figure:
    """Fan charts of a sampled forecast, one panel per series (the first 6): history (solid),
    truth (dots), median (dashed) and the 10-90% band (shaded) of prey and predator.

    `time` covers history and horizon (K + H); `histories` (B, K, V), `truth` and `median`
    (B, H, V); `quantiles` (B, H, V, 3) at the levels :data:`FAN_LEVELS` (low, median, high).
    """
    if quantiles.ndim != 4 or quantiles.shape[-1] != len(FAN_LEVELS):
        raise ValueError(f"quantiles must be (B, H, V, {len(FAN_LEVELS)}), got {quantiles.shape}")
    n = min(len(histories), 6)
    cols = min(n, 3)
    rows = -(-n // cols)
    k, h = histories.shape[1], truth.shape[1]
    ahead = time[k : k + h]
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat[:n]):
        for v, (name, color) in enumerate(zip(NAMES, COLORS, strict=True)):
            ax.plot(time[:k], histories[i, :, v], color=color, label=name)
            ax.fill_between(
                ahead, quantiles[i, :, v, 0], quantiles[i, :, v, 2], color=color, alpha=0.25, lw=0
            )
            ax.plot(ahead, median[i, :, v], "--", color=color)
            ax.plot(ahead, truth[i, :, v], "o", color=color, ms=3)
        ax.axvline(time[k - 1], color="grey", lw=0.5)
        ax.set_xlim(time[max(0, k - 20)], time[k + h - 1] + (time[1] - time[0]))
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or "median (dashed), 10-90% interval (band), truth (dots)")
    fig.tight_layout()
    return fig


def plot_step_errors(errors: Mapping[str, Sequence[float]], metric: str = "MSE") -> Figure:
    """Error against the step ahead (1..H), one line per forecaster, log scale. Forecasters
    whose name starts with "LLM" are drawn thick, in colour, in front; the reference
    forecasters thin and dashed beside them."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    refs = iter(("0.35", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"))
    llms = iter(("tab:red", "tab:blue", "tab:orange", "black"))
    for name, values in errors.items():
        steps = np.arange(1, len(values) + 1)
        if name.startswith("LLM"):
            ax.plot(steps, values, "o-", lw=2.5, color=next(llms, None), label=name, zorder=3)
        else:
            ax.plot(steps, values, ".--", lw=1.2, color=next(refs, None), label=name, zorder=2)
    longest = max((len(v) for v in errors.values()), default=0)
    if longest:
        ax.set_xticks(range(1, longest + 1))
    ax.set_yscale("log")
    ax.set_xlabel("step ahead")
    ax.set_ylabel(f"{metric} (original units)")
    ax.set_title(f"{metric} against the step ahead")
    if errors:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
