"""Series-level bootstrap intervals for the headline metrics, and paired ones for differences.

Every headline metric of a forecast is a ratio of sums over series: MSE is the sum of squared
errors over the count of values, CRPS and WQL the summed pinball losses over the summed scaled
truth, and so on. ``series_terms`` gives each series' numerator and denominator, so that the
metric of any set of series is ``sum(num) / sum(den)`` over it (equal to ``lvmodel.metrics.score``
on all of them; tests check it). A bootstrap resample draws series with replacement, whole: the
values of one series (its steps and variables, its samples) are correlated and move together.

The intervals are ``scipy.stats.bootstrap``'s (BCa, 95%, 2,000 resamples, seeded: the same
command gives the same interval). A difference between two forecasts of the same series (the LLM
against a reference forecaster, the final model against the initial one) is bootstrapped
*paired*, the same series drawn for both, which is what makes a small difference resolvable.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

from lvmodel.metrics import last_values, scaled_errors
from lvmodel.probabilistic import LLMTIME_LEVELS, WQL_LEVELS, crps_grid, energy_grid, inside_grid

__all__ = ["LEVEL", "Terms", "difference_interval", "intervals", "series_terms", "value"]

LEVEL = 0.95
N_RESAMPLES = 2000

Terms = dict[str, tuple[np.ndarray, np.ndarray]]
"""metric -> (numerator, denominator), one value per series."""


def series_terms(predictions: Any, histories: Any, truth: Any, samples: Any = None) -> Terms:
    """Per-series numerators and denominators of ``mse``, ``mae``, ``mse_filled``,
    ``mae_filled``, ``mase`` and, with ``samples``, ``crps``, ``wql``, ``energy`` and
    ``coverage80``, as :func:`lvmodel.metrics.score` defines them (invalid values filled by
    persistence where it fills them)."""
    p = np.asarray(predictions, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    h = np.asarray(histories, dtype=np.float64)
    fallback = last_values(h)
    valid = np.isfinite(p)
    err = np.where(valid, p - t, 0.0)
    filled = np.where(valid, p, fallback[:, None, :]) - t
    count = np.full(len(p), float(p.shape[1] * p.shape[2]))
    scaled, ok = scaled_errors(p, h, t, fallback)
    terms: Terms = {
        "mse": ((err**2).sum(axis=(1, 2)), valid.sum(axis=(1, 2)).astype(np.float64)),
        "mae": (np.abs(err).sum(axis=(1, 2)), valid.sum(axis=(1, 2)).astype(np.float64)),
        "mse_filled": ((filled**2).sum(axis=(1, 2)), count),
        "mae_filled": (np.abs(filled).sum(axis=(1, 2)), count),
        "mase": (scaled.sum(axis=1), ok.sum(axis=1).astype(np.float64)),
    }
    if samples is not None:
        for name, levels in (("crps", LLMTIME_LEVELS), ("wql", WQL_LEVELS)):
            num, den = crps_grid(samples, t, fallback, levels)
            terms[name] = (num.sum(axis=(1, 2)), den.sum(axis=(1, 2)))
        es = energy_grid(samples, t, fallback)
        terms["energy"] = (es.sum(axis=1), np.full(len(p), float(es.shape[1])))
        inside = inside_grid(samples, t, fallback).astype(np.float64)
        terms["coverage80"] = (inside.sum(axis=(1, 2)), count)
    return terms


def _ratio(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(num.sum(axis=axis) / den.sum(axis=axis))


def value(terms: Terms, metric: str) -> float:
    """The metric of all the series of ``terms``: ``sum(num) / sum(den)``."""
    return float(_ratio(*terms[metric]))


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Any, seed: int) -> tuple[float, float]:
    """scipy's BCa interval of `statistic` over series resampled together; a statistic that does
    not vary (every series alike) or is not finite gets its one value (or NaN) at both ends."""
    point = float(statistic(*data))
    if not np.isfinite(point) or len(data[0]) < 2:
        return point, point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: handled below
        res = stats.bootstrap(
            data,
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=N_RESAMPLES,
            confidence_level=LEVEL,
            random_state=np.random.default_rng(seed),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return point, point
    return lo, hi


def intervals(terms: Terms, seed: int = 0) -> dict[str, tuple[float, float]]:
    """The 95% series-bootstrap interval of each metric of ``terms``."""
    return {name: _bootstrap((num, den), _ratio, seed) for name, (num, den) in terms.items()}


def difference_interval(a: Terms, b: Terms, metric: str, seed: int = 0) -> tuple[float, float]:
    """The paired 95% interval of ``metric(a) - metric(b)`` over the same series (in the same
    order); resolved when it excludes 0."""
    (na, da), (nb, db) = a[metric], b[metric]
    if len(na) != len(nb):
        raise ValueError(f"paired forecasts must score the same series: {len(na)} vs {len(nb)}")

    def diff(na: Any, da: Any, nb: Any, db: Any, axis: int = -1) -> np.ndarray:
        return _ratio(na, da, axis) - _ratio(nb, db, axis)

    return _bootstrap((na, da, nb, db), diff, seed)
