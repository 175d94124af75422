"""Probabilistic forecast scores: quantiles of samples, CRPS, WQL, energy score, interval coverage.

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

**WQL**, the weighted quantile loss of GluonTS (``mean_weighted_sum_quantile_loss``) and fev: at
each level q of ``WQL_LEVELS`` = 0.1, 0.2, ..., 0.9, ``2 sum |(y - q_pred)(1{y <= q_pred} - q)|
/ sum |y|`` over all values, averaged over the levels; so it is LLMTime's CRPS formula at those
nine levels (``wql`` calls ``crps`` with them). fev and Chronos rank probabilistic forecasters by it.

**Energy score** of the joint (prey, predator) forecast at each series and step, ``E||X - y|| -
E||X - X'|| / 2`` over the samples (the multivariate CRPS: it rewards getting the two variables'
joint spread right, which per-variable scores cannot see), in original units, averaged over
series and steps. Computed by ``scoringrules.es_ensemble`` (its default ``nrg`` estimator, the
exact sample formula); tests check it by hand.

**Coverage** of the central 80% interval: the share of true values within the samples' 0.1 and
0.9 quantiles (inclusive); a calibrated forecaster covers 0.8 of them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scoringrules

__all__ = [
    "LLMTIME_LEVELS",
    "QUANTILES",
    "WQL_LEVELS",
    "crps",
    "crps_grid",
    "energy_grid",
    "energy_score",
    "filled_samples",
    "inside_grid",
    "interval_coverage",
    "probabilistic_metrics",
    "sample_quantiles",
    "wql",
]

QUANTILES = (0.1, 0.5, 0.9)
"""The quantiles a sampled forecast reports by default (the 80% interval and the median)."""

LLMTIME_LEVELS = tuple(float(q) for q in np.linspace(0.0, 1.0, 21)[1:])
"""LLMTime's CRPS levels: ``linspace(0, 1, 21)[1:]`` = 0.05, 0.10, ..., 1.00."""


WQL_LEVELS = tuple(round(0.1 * k, 1) for k in range(1, 10))
"""The weighted quantile loss's levels (GluonTS, fev): 0.1, 0.2, ..., 0.9."""


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


def crps_grid(
    samples: Any, truth: Any, fallback: Any = None, levels: Any = LLMTIME_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """The CRPS's numerator and denominator at each value of the (B, H, n_vars) grid: the pinball
    losses summed over ``levels``, and ``len(levels) * |truth|``. A sum of the one over a sum of
    the other is the CRPS of those values (``crps``); series-level bootstraps resample them."""
    s, t = _check(samples, truth)
    lv = np.asarray(levels, dtype=np.float64)
    q_pred = sample_quantiles(filled_samples(s, fallback), lv)
    return _pinball_sums(q_pred, t, lv), len(lv) * np.abs(t)


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
    losses, scale = crps_grid(samples, truth, fallback, levels)
    if axis is None:
        return float(losses.sum() / scale.sum()) if scale.sum() > 0 else float("nan")
    with np.errstate(all="ignore"):
        return losses.sum(axis=axis) / scale.sum(axis=axis)


def wql(samples: Any, truth: Any, fallback: Any = None) -> float:
    """The weighted quantile loss at ``WQL_LEVELS`` over all values (see the module docstring)."""
    return float(crps(samples, truth, fallback, levels=WQL_LEVELS))


def energy_grid(samples: Any, truth: Any, fallback: Any = None) -> np.ndarray:
    """The energy score of the joint forecast of all ``n_vars`` variables at each series and step,
    (B, H); invalid samples are filled first."""
    s, t = _check(samples, truth)
    fct = np.moveaxis(filled_samples(s, fallback), 1, 2)  # (B, H, S, n_vars)
    return np.asarray(scoringrules.es_ensemble(t, fct, m_axis=-2, v_axis=-1), dtype=np.float64)


def energy_score(samples: Any, truth: Any, fallback: Any = None) -> float:
    """Mean energy score over series and steps (see the module docstring)."""
    return float(np.mean(energy_grid(samples, truth, fallback)))


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
    inside = inside_grid(samples, truth, fallback, lower, upper)
    return float(inside.mean()) if axis is None else inside.mean(axis=axis)


def inside_grid(
    samples: Any, truth: Any, fallback: Any = None, lower: float = 0.1, upper: float = 0.9
) -> np.ndarray:
    """Whether each value of the (B, H, n_vars) grid lies within the samples' [``lower``,
    ``upper``] quantiles (inclusive), invalid samples filled first."""
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"need 0 <= lower < upper <= 1, got {lower}, {upper}")
    s, t = _check(samples, truth)
    q = sample_quantiles(filled_samples(s, fallback), (lower, upper))
    return (t >= q[..., 0]) & (t <= q[..., 1])


def probabilistic_metrics(samples: Any, truth: Any, fallback: Any = None) -> dict[str, float]:
    """``crps``, ``coverage80``, ``wql`` and ``energy`` over all values, and per horizon step (``crps_step1`` ...,
    ``coverage80_step1`` ...): the keys :func:`lvmodel.metrics.score` adds for a sampled
    forecast."""
    out = {
        "crps": crps(samples, truth, fallback),
        "coverage80": interval_coverage(samples, truth, fallback),
        "wql": wql(samples, truth, fallback),
        "energy": energy_score(samples, truth, fallback),
    }
    per_crps = crps(samples, truth, fallback, axis=(0, 2))
    per_cov = interval_coverage(samples, truth, fallback, axis=(0, 2))
    for h, (c, v) in enumerate(zip(per_crps, per_cov, strict=True)):
        out[f"crps_step{h + 1}"] = float(c)
        out[f"coverage80_step{h + 1}"] = float(v)
    return out
