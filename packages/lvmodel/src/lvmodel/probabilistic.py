"""Probabilistic forecast scores: quantiles of samples, CRPS and interval coverage.

A sampled forecast is ``samples`` (B, S, H, n_vars): S continuations per series, NaN where a
sample's value was invalid. Invalid sample values are replaced by the fallback (the last observed
value of the history, persistence) before any quantile is taken, as ``mse_filled`` does for point
forecasts: an invalid answer costs what the naive forecast costs, never nothing.

**CRPS as LLMTime computes it** (Gruver et al. 2023, ``data/metrics.py::calculate_crps``): the
samples' quantiles at the ``Q = 20`` levels ``0.05, 0.10, ..., 1.00`` (numpy's default linear
interpolation, like ``jnp.quantile``), the pinball loss of each,
``2 |(q_pred - y) (1{y <= q_pred} - q)|``, summed over levels and values, and divided by
``Q * sum |y|``. So the number is **normalised by the mean absolute truth**: dimensionless (a
weighted quantile loss), comparable across series scales and with LLMTime's tables, 0 for a
forecast that puts all its mass on the truth. For a point forecast ``x`` of one value ``y`` it
is ``0.95 |x - y| / |y|`` when ``x > y`` and ``1.05 |x - y| / |y|`` when ``x < y`` (LLMTime's grid
has 1.0 but not 0.0, so it is not symmetric about 0.5). Per-step values (``crps_step{h}``) normalise by that step's truth.
With many levels it converges to the integral CRPS ``E|X - y| - E|X - X'| / 2`` of the empirical
distribution, divided by ``mean |y|``; tests check it against that direct computation.

**Coverage** of the central 80% interval: the share of true values within the samples' 0.1 and
0.9 quantiles (inclusive); a calibrated forecaster covers 0.8 of them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = [
    "LLMTIME_LEVELS",
    "QUANTILES",
    "crps",
    "filled_samples",
    "interval_coverage",
    "probabilistic_metrics",
    "sample_quantiles",
]

QUANTILES = (0.1, 0.5, 0.9)
"""The quantiles a sampled forecast reports by default (the 80% interval and the median)."""

LLMTIME_LEVELS = tuple(float(q) for q in np.linspace(0.0, 1.0, 21)[1:])
"""LLMTime's CRPS levels: ``linspace(0, 1, 21)[1:]`` = 0.05, 0.10, ..., 1.00."""


def _check(samples: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(samples, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if s.ndim != 4 or t.ndim != 3 or s.shape[:1] + s.shape[2:] != t.shape:
        raise ValueError(
            f"samples must be (B, S, H, n_vars) and truth (B, H, n_vars) of the same B, H and "
            f"n_vars, got {s.shape} and {t.shape}"
        )
    if s.shape[1] < 1:
        raise ValueError("samples must hold at least one sample per series")
    if not np.all(np.isfinite(t)):
        raise ValueError("truth must be finite")
    return s, t


def filled_samples(samples: Any, fallback: Any = None) -> np.ndarray:
    """``samples`` (B, S, H, n_vars) with NaN values replaced by ``fallback`` (B, n_vars), the
    last observed value of each history; without a fallback they stay NaN."""
    s = np.asarray(samples, dtype=np.float64)
    if fallback is None:
        return s
    f = np.asarray(fallback, dtype=np.float64)
    if f.shape != (s.shape[0], s.shape[3]):
        raise ValueError(
            f"fallback must be (B, n_vars) = {(s.shape[0], s.shape[3])}, got {f.shape}"
        )
    return np.where(np.isfinite(s), s, f[:, None, None, :])


def sample_quantiles(samples: Any, levels: Any = QUANTILES) -> np.ndarray:
    """Quantiles (B, H, n_vars, L) of ``samples`` (B, S, H, n_vars) over the samples, ignoring
    NaN ones (all-NaN values stay NaN); numpy's linear interpolation."""
    s = np.asarray(samples, dtype=np.float64)
    q = np.asarray(levels, dtype=np.float64)
    if q.ndim != 1 or q.size == 0 or np.any((q < 0) | (q > 1)):
        raise ValueError(f"quantile levels must be a non-empty list in [0, 1], got {levels!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN values stay NaN on purpose
        out = np.nanquantile(s, q, axis=1)  # (L, B, H, V)
    return np.moveaxis(out, 0, -1)


def _pinball_sums(q_pred: np.ndarray, truth: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """LLMTime's ``2 |(q_pred - y)(1{y <= q_pred} - q)|`` summed over the levels, per value."""
    y = truth[..., None]
    return (2.0 * np.abs((q_pred - y) * ((y <= q_pred).astype(np.float64) - levels))).sum(-1)


def crps(
    samples: Any,
    truth: Any,
    fallback: Any = None,
    levels: Any = LLMTIME_LEVELS,
    axis: tuple[int, ...] | None = None,
) -> Any:
    """LLMTime's CRPS of ``samples`` (B, S, H, n_vars) against ``truth`` (B, H, n_vars).

    ``sum(pinball losses over levels and values) / (len(levels) * sum |truth|)``, over the values
    of ``axis`` of the (B, H, n_vars) grid (None: all, a float). Invalid sample values are
    replaced by ``fallback`` first (see the module docstring); a value whose samples are all
    invalid and that has no fallback makes the result NaN.
    """
    s, t = _check(samples, truth)
    lv = np.asarray(levels, dtype=np.float64)
    q_pred = sample_quantiles(filled_samples(s, fallback), lv)
    losses = _pinball_sums(q_pred, t, lv)
    scale = len(lv) * np.abs(t)
    if axis is None:
        return float(losses.sum() / scale.sum()) if scale.sum() > 0 else float("nan")
    with np.errstate(all="ignore"):
        return losses.sum(axis=axis) / scale.sum(axis=axis)


def interval_coverage(
    samples: Any,
    truth: Any,
    fallback: Any = None,
    lower: float = 0.1,
    upper: float = 0.9,
    axis: tuple[int, ...] | None = None,
) -> Any:
    """Share of ``truth`` values inside the samples' [``lower``, ``upper``] quantiles (inclusive),
    over ``axis`` of the (B, H, n_vars) grid (None: all). Invalid samples are filled first."""
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"need 0 <= lower < upper <= 1, got {lower}, {upper}")
    s, t = _check(samples, truth)
    q = sample_quantiles(filled_samples(s, fallback), (lower, upper))
    inside = (t >= q[..., 0]) & (t <= q[..., 1])
    return float(inside.mean()) if axis is None else inside.mean(axis=axis)


def probabilistic_metrics(samples: Any, truth: Any, fallback: Any = None) -> dict[str, float]:
    """``crps`` and ``coverage80`` over all values, and per horizon step (``crps_step1`` ...,
    ``coverage80_step1`` ...): the keys :func:`lvmodel.metrics.score` adds for a sampled
    forecast."""
    out = {
        "crps": crps(samples, truth, fallback),
        "coverage80": interval_coverage(samples, truth, fallback),
    }
    per_crps = crps(samples, truth, fallback, axis=(0, 2))
    per_cov = interval_coverage(samples, truth, fallback, axis=(0, 2))
    for h, (c, v) in enumerate(zip(per_crps, per_cov, strict=True)):
        out[f"crps_step{h + 1}"] = float(c)
        out[f"coverage80_step{h + 1}"] = float(v)
    return out
