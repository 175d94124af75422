"""Scores beside MSE, MAE and CRPS: MASE, the weighted quantile loss (GluonTS/fev) and the energy
score of the joint (prey, predator) forecast, each checked on cases worked out by hand; the WQL
also against GluonTS's formula written out directly, the energy score against a direct sum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lvmodel.intervals import difference_interval, intervals, series_terms
from lvmodel.metrics import mase, score
from lvmodel.probabilistic import WQL_LEVELS, energy_score, wql


def test_mase_by_hand() -> None:
    # One series, two variables. Prey history 1, 2, 4: one-step naive MAE (1 + 2) / 2 = 1.5;
    # forecast 5, 8 against truth 5, 5: MAE 1.5, so 1.0. Predator history 2, 2, 3: scale 0.5;
    # forecast 3, 2 against truth 3, 4: MAE 1.0, so 2.0. The mean: 1.5.
    hist = np.array([[[1.0, 2.0], [2.0, 2.0], [4.0, 3.0]]])
    truth = np.array([[[5.0, 3.0], [5.0, 4.0]]])
    pred = np.array([[[5.0, 3.0], [8.0, 2.0]]])
    assert mase(pred, hist, truth) == pytest.approx((1.0 + 2.0) / 2)


def test_mase_fills_invalid_values_with_persistence_and_skips_flat_histories() -> None:
    hist = np.array([[[1.0], [3.0]], [[2.0], [2.0]]])  # the second never moves: no scale
    truth = np.array([[[4.0]], [[9.0]]])
    pred = np.array([[[np.nan]], [[0.0]]])
    # Series 1: NaN -> last value 3, |3 - 4| = 1, scale 2: 0.5. Series 2 is left out.
    assert mase(pred, hist, truth, fallback=np.array([[3.0], [2.0]])) == pytest.approx(0.5)
    assert np.isnan(mase(pred[1:], hist[1:], truth[1:]))


def test_wql_levels() -> None:
    assert WQL_LEVELS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_wql_of_a_point_forecast_is_its_relative_absolute_error() -> None:
    # Every quantile equals x. Over the nine levels, symmetric about 0.5, the mean of
    # 2 |x - y| (1 - q) (x above y) or 2 |x - y| q (x below) is |x - y|; divided by |y|.
    above = wql(np.full((1, 4, 1, 1), 3.0), np.array([[[2.0]]]))
    below = wql(np.full((1, 4, 1, 1), 1.0), np.array([[[2.0]]]))
    assert above == pytest.approx(0.5) and below == pytest.approx(0.5)


def test_wql_matches_gluonts_formula() -> None:
    rng = np.random.default_rng(0)
    samples = rng.gamma(2.0, 1.0, size=(5, 30, 4, 2))
    truth = rng.gamma(2.0, 1.0, size=(5, 4, 2))
    # GluonTS mean_weighted_sum_quantile_loss: per level, 2 * sum(quantile_loss) / sum(|y|),
    # quantile_loss = |(y - q_pred) * ((y <= q_pred) - q)|; then the mean over levels.
    per_level = []
    for q in WQL_LEVELS:
        q_pred = np.quantile(samples, q, axis=1)
        loss = np.abs((truth - q_pred) * ((truth <= q_pred).astype(float) - q))
        per_level.append(2 * loss.sum() / np.abs(truth).sum())
    assert wql(samples, truth) == pytest.approx(float(np.mean(per_level)), rel=1e-12)


def test_energy_score_by_hand() -> None:
    # Samples (0, 0) and (3, 4) of (prey, predator), truth (0, 0):
    # E||X - y|| = (0 + 5) / 2 = 2.5; E||X - X'|| over all pairs = (0 + 5 + 5 + 0) / 4 = 2.5;
    # the energy score is 2.5 - 2.5 / 2 = 1.25.
    samples = np.array([[[[0.0, 0.0]], [[3.0, 4.0]]]])  # (B=1, S=2, H=1, 2)
    assert energy_score(samples, np.zeros((1, 1, 2))) == pytest.approx(1.25)
    # A perfect point forecast scores 0.
    assert energy_score(np.ones((1, 3, 1, 2)), np.ones((1, 1, 2))) == pytest.approx(0.0)


def test_energy_score_matches_a_direct_sum() -> None:
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(3, 6, 2, 2))
    truth = rng.normal(size=(3, 2, 2))
    direct = []
    for b, h in itertools.product(range(3), range(2)):
        x, y = samples[b, :, h], truth[b, h]
        first = np.mean([np.linalg.norm(xi - y) for xi in x])
        second = np.mean([np.linalg.norm(xi - xj) for xi in x for xj in x])
        direct.append(first - second / 2)
    assert energy_score(samples, truth) == pytest.approx(float(np.mean(direct)), rel=1e-10)


def test_energy_score_fills_invalid_samples() -> None:
    samples = np.array([[[[np.nan, 0.0]], [[3.0, 4.0]]]])
    # The NaN prey becomes the last observed value 0: the hand case above.
    filled = energy_score(samples, np.zeros((1, 1, 2)), fallback=np.array([[0.0, 0.0]]))
    assert filled == pytest.approx(1.25)


def test_score_adds_the_new_keys() -> None:
    rng = np.random.default_rng(2)
    hist = rng.gamma(2.0, 1.0, size=(4, 10, 2))
    truth = rng.gamma(2.0, 1.0, size=(4, 5, 2))
    samples = rng.gamma(2.0, 1.0, size=(4, 7, 5, 2))
    out = score(np.median(samples, axis=1), hist, truth, samples)
    assert out["mase"] == pytest.approx(mase(np.median(samples, axis=1), hist, truth))
    assert out["wql"] == pytest.approx(wql(samples, truth))
    assert out["energy"] == pytest.approx(energy_score(samples, truth))
    assert "wql" not in score(truth, hist, truth)  # a point forecast has no quantiles


def _forecast(seed: int, n: int = 40, invalid: bool = True) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    hist = rng.gamma(2.0, 1.0, size=(n, 10, 2))
    truth = rng.gamma(2.0, 1.0, size=(n, 5, 2))
    samples = truth[:, None] + rng.normal(0.0, 0.5, size=(n, 9, 5, 2))
    pred = np.median(samples, axis=1)
    if invalid:
        samples[0, 0, 0, 0] = np.nan  # an invalid sample value, filled by persistence
        pred[1, 2, 1] = np.nan  # an invalid point value
    return pred, hist, truth, samples


def test_series_terms_add_up_to_the_scores() -> None:
    pred, hist, truth, samples = _forecast(3)
    out = score(pred, hist, truth, samples)
    terms = series_terms(pred, hist, truth, samples)
    assert set(terms) == {
        "mse", "mae", "mse_filled", "mae_filled", "mase", "crps", "wql", "energy", "coverage80"
    }  # fmt: skip
    for name, (num, den) in terms.items():
        assert num.shape == den.shape == (40,)
        assert num.sum() / den.sum() == pytest.approx(out[name], rel=1e-12), name


def test_interval_brackets_the_metric_and_narrows_with_more_series() -> None:
    # Per-series squared errors of known spread: the MSE's interval must contain it and shrink
    # about as 1 / sqrt(n) (a fourfold sample, about half as wide).
    widths = []
    for n in (50, 200):
        pred, hist, truth, samples = _forecast(4, n, invalid=False)
        terms = series_terms(pred, hist, truth, samples)
        lo, hi = intervals(terms)["mse_filled"]
        value = terms["mse_filled"][0].sum() / terms["mse_filled"][1].sum()
        assert lo < value < hi
        widths.append(hi - lo)
    assert 0.35 < widths[1] / widths[0] < 0.7
    # Seeded: the same call gives the same interval.
    assert intervals(terms)["crps"] == intervals(terms)["crps"]


def test_interval_of_identical_series_is_a_point() -> None:
    terms = {"mse": (np.full(10, 2.0), np.full(10, 4.0))}
    assert intervals(terms)["mse"] == (0.5, 0.5)


def test_paired_difference_resolves_what_unpaired_intervals_cannot() -> None:
    # B is A plus a small error added to every series: each series' MSE rises a little, far less
    # than the spread between series. The two intervals overlap; the paired difference excludes 0.
    rng = np.random.default_rng(5)
    sq_a = rng.gamma(1.0, 1.0, size=60)
    sq_b = sq_a + 0.05
    count = np.ones(60)
    a, b = {"mse": (sq_b, count)}, {"mse": (sq_a, count)}
    (alo, ahi), (blo, bhi) = intervals(a)["mse"], intervals(b)["mse"]
    assert alo < bhi and blo < ahi  # overlapping
    lo, hi = difference_interval(a, b, "mse")
    assert 0 < lo <= 0.05 <= hi < 0.06
    with pytest.raises(ValueError, match="same series"):
        difference_interval(a, {"mse": (sq_a[:5], count[:5])}, "mse")
