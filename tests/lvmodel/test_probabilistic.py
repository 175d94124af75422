"""CRPS (LLMTime's quantile-loss form) and interval coverage of sampled forecasts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lvmodel.metrics import score
from lvmodel.probabilistic import (
    LLMTIME_LEVELS,
    crps,
    interval_coverage,
    probabilistic_metrics,
    sample_quantiles,
)


def _grid(values: list[float]) -> np.ndarray:
    """One series, one step, one variable: samples (1, S, 1, 1)."""
    return np.asarray(values, dtype=np.float64).reshape(1, -1, 1, 1)


def test_llmtime_levels() -> None:
    assert len(LLMTIME_LEVELS) == 20
    assert LLMTIME_LEVELS[0] == pytest.approx(0.05) and LLMTIME_LEVELS[-1] == 1.0


def test_crps_of_a_point_forecast_by_hand() -> None:
    # Every sample 2, truth 1: every quantile is 2; the loss at level q is 2 (2 - 1)(1 - q).
    # Sum over q = 0.05 .. 1.00 of (1 - q) = 20 - 10.5 = 9.5; x 2 = 19; / (20 levels x |1|).
    assert crps(_grid([2.0] * 4), np.ones((1, 1, 1))) == pytest.approx(19 / 20)
    # Below the truth: the loss at level q is 2 (4 - 2) q; sum q = 10.5 -> 2 x 2 x 10.5 / (20 x 4).
    assert crps(_grid([2.0] * 3), np.full((1, 1, 1), 4.0)) == pytest.approx(42 / 80)
    # On the truth: 0.
    assert crps(_grid([3.0, 3.0]), np.full((1, 1, 1), 3.0)) == 0.0


def test_crps_of_two_samples_by_hand() -> None:
    # Samples {0, 2}, truth 1, linear quantiles: q_pred(q) = 2q. For 2q < 1 (q <= 0.45 on the
    # grid, 9 levels) the loss is 2 (1 - 2q) q; for 2q >= 1 (q >= 0.5, 11 levels), 2 (2q - 1)(1 - q).
    levels = [0.05 * i for i in range(1, 21)]
    by_hand = sum(2 * (1 - 2 * q) * q if 2 * q < 1 else 2 * (2 * q - 1) * (1 - q) for q in levels)
    assert crps(_grid([0.0, 2.0]), np.ones((1, 1, 1))) == pytest.approx(by_hand / 20)


def test_crps_matches_the_direct_computation_with_dense_levels() -> None:
    rng = np.random.default_rng(0)
    samples = rng.gamma(2.0, 1.5, size=(3, 200, 2, 2))
    truth = rng.gamma(2.0, 1.5, size=(3, 2, 2))
    # Direct: E|X - y| - E|X - X'| / 2 over each value's empirical distribution, / mean |y|.
    x = samples.transpose(0, 2, 3, 1)[..., :, None]
    direct = np.abs(x[..., 0] - truth[..., None]).mean(-1) - 0.5 * np.abs(
        x - x.swapaxes(-1, -2)
    ).mean((-1, -2))
    expected = direct.sum() / np.abs(truth).sum()
    dense = np.linspace(0, 1, 4001)[1:]
    assert crps(samples, truth, levels=dense) == pytest.approx(expected, rel=2e-3)
    # LLMTime's 20 levels are a coarse approximation of the same number.
    assert crps(samples, truth) == pytest.approx(expected, rel=0.08)


def test_crps_of_a_normal_matches_its_closed_form() -> None:
    rng = np.random.default_rng(1)
    mu, sigma, y = 5.0, 0.5, 5.3
    samples = rng.normal(mu, sigma, size=(1, 20000, 1, 1))
    z = (y - mu) / sigma
    closed = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    dense = np.linspace(0, 1, 2001)[1:]
    assert crps(samples, np.full((1, 1, 1), y), levels=dense) == pytest.approx(closed / y, rel=0.02)


def test_coverage_of_a_known_distribution() -> None:
    rng = np.random.default_rng(2)
    samples = rng.normal(0.0, 1.0, size=(400, 500, 1, 2)) + 10.0
    truth = rng.normal(0.0, 1.0, size=(400, 1, 2)) + 10.0
    # Truth from the forecast's own distribution: 80% inside the 0.1-0.9 quantiles (800 values:
    # standard error 1.4 points).
    assert interval_coverage(samples, truth) == pytest.approx(0.8, abs=0.05)
    # Twice as wide a truth: P(|Z| < 1.2816 / 2) = 0.478.
    wide = (truth - 10.0) * 2.0 + 10.0
    assert interval_coverage(samples, wide) == pytest.approx(0.478, abs=0.05)
    # A 50% interval covers half.
    assert interval_coverage(samples, truth, lower=0.25, upper=0.75) == pytest.approx(0.5, abs=0.05)


def test_invalid_samples_are_filled_with_the_fallback() -> None:
    samples = _grid([np.nan, np.nan, np.nan])  # every sample invalid
    truth = np.full((1, 1, 1), 2.0)
    fallback = np.array([[1.0]])  # the last observed value
    # Filled, the forecast is a point at 1 below the truth 2: 2 x 1 x 10.5 / (20 x 2).
    assert crps(samples, truth, fallback) == pytest.approx(21 / 40)
    assert np.isnan(crps(samples, truth))
    assert interval_coverage(samples, truth, fallback) == 0.0
    q = sample_quantiles(samples)
    assert q.shape == (1, 1, 1, 3) and np.isnan(q).all()


def test_per_step_metrics_and_score() -> None:
    rng = np.random.default_rng(3)
    truth = rng.uniform(1, 3, size=(4, 3, 2))
    samples = truth[:, None] + rng.normal(0, 0.1, size=(4, 9, 3, 2))
    samples[:, :, 2] += 5.0  # step 3 far off: its CRPS is large and its coverage 0
    m = probabilistic_metrics(samples, truth)
    assert m["coverage80_step3"] == 0.0 and m["crps_step3"] > 10 * m["crps_step1"]
    assert m["crps_step1"] == pytest.approx(crps(samples[:, :, :1], truth[:, :1]))
    histories = np.ones((4, 5, 2))
    scored = score(np.median(samples, axis=1), histories, truth, samples)
    assert scored["crps"] == m["crps"] and scored["coverage80"] == m["coverage80"]
    assert "crps" not in score(np.median(samples, axis=1), histories, truth)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="samples must be"):
        crps(np.ones((2, 3, 4)), np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="quantile levels"):
        sample_quantiles(np.ones((1, 2, 1, 1)), (0.5, 1.5))
