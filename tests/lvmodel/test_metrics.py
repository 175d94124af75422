"""forecast_metrics and baseline_forecasts against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lvmodel.metrics import baseline_forecasts, forecast_metrics, last_values

NAN = np.nan


@pytest.fixture
def pred() -> np.ndarray:
    # (B=2, H=2, 2): series 0: h1 (1, NaN), h2 (2, 1); series 1: h1 (NaN, NaN), h2 (0, 3)
    return np.array([[[1.0, NAN], [2.0, 1.0]], [[NAN, NAN], [0.0, 3.0]]])


def test_valid_only_metrics_by_hand(pred: np.ndarray) -> None:
    truth = np.zeros_like(pred)
    m = forecast_metrics(pred, truth)
    # valid errors: 1, 2, 1, 0, 3
    assert m["mse"] == pytest.approx(15 / 5)
    assert m["mae"] == pytest.approx(7 / 5)
    # prey: 1, 2, 0; predator: 1, 3
    assert m["mse_prey"] == pytest.approx(5 / 3)
    assert m["mae_prey"] == pytest.approx(1.0)
    assert m["mse_predator"] == pytest.approx(5.0)
    assert m["mae_predator"] == pytest.approx(2.0)
    # h1: 1; h2: 2, 1, 0, 3
    assert m["mse_step1"] == pytest.approx(1.0)
    assert m["mae_step1"] == pytest.approx(1.0)
    assert m["mse_step2"] == pytest.approx(14 / 4)
    assert m["mae_step2"] == pytest.approx(6 / 4)
    assert m["invalid_rate"] == pytest.approx(3 / 8)
    assert "mse_filled" not in m
    assert set(m) == {
        "mse",
        "mae",
        "mse_prey",
        "mae_prey",
        "mse_predator",
        "mae_predator",
        "mse_step1",
        "mae_step1",
        "mse_step2",
        "mae_step2",
        "invalid_rate",
    }


def test_filled_metrics_penalise_invalid_with_fallback(pred: np.ndarray) -> None:
    truth = np.zeros_like(pred)
    fallback = np.array([[10.0, 20.0], [30.0, 40.0]])
    m = forecast_metrics(pred, truth, fallback=fallback)
    # filled values: 1, 20, 2, 1, 30, 40, 0, 3
    assert m["mse_filled"] == pytest.approx((1 + 400 + 4 + 1 + 900 + 1600 + 0 + 9) / 8)
    assert m["mae_filled"] == pytest.approx((1 + 20 + 2 + 1 + 30 + 40 + 0 + 3) / 8)
    assert m["mse"] == pytest.approx(3.0)  # the valid-only value is unchanged


def test_nonzero_truth_and_no_invalid() -> None:
    truth = np.arange(12, dtype=float).reshape(2, 3, 2)
    pred = truth + np.array([0.5, -1.0])
    m = forecast_metrics(pred, truth, fallback=truth[:, -1])
    assert m["mse"] == pytest.approx((0.25 + 1.0) / 2)
    assert m["mae"] == pytest.approx(0.75)
    assert m["mse_prey"] == pytest.approx(0.25)
    assert m["mae_predator"] == pytest.approx(1.0)
    assert m["mse_step3"] == pytest.approx(0.625)
    assert m["invalid_rate"] == 0.0
    assert m["mse_filled"] == pytest.approx(m["mse"])


def test_all_invalid_gives_nan_and_rate_one() -> None:
    pred = np.full((1, 2, 2), NAN)
    truth = np.ones((1, 2, 2))
    m = forecast_metrics(pred, truth, fallback=np.array([[1.0, 3.0]]))
    assert math.isnan(m["mse"]) and math.isnan(m["mae_step1"])
    assert m["invalid_rate"] == 1.0
    assert m["mse_filled"] == pytest.approx(2.0)  # errors 0, 2, 0, 2


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        forecast_metrics(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)))
    with pytest.raises(ValueError):
        forecast_metrics(np.zeros((1, 1, 2)), np.full((1, 1, 2), NAN))
    with pytest.raises(ValueError):
        forecast_metrics(np.zeros((2, 1, 2)), np.zeros((2, 1, 2)), fallback=np.zeros(2))


def test_baseline_forecasts() -> None:
    histories = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0, 6.0]])]
    train = np.array([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]]])
    out = baseline_forecasts(histories, 3, train)
    assert out["train_mean"].shape == (2, 3, 2)
    np.testing.assert_allclose(out["train_mean"], np.broadcast_to([3.0, 4.0], (2, 3, 2)))
    np.testing.assert_allclose(out["persistence"][0], [[3.0, 4.0]] * 3)
    np.testing.assert_allclose(out["persistence"][1], [[5.0, 6.0]] * 3)
    np.testing.assert_allclose(last_values(histories), [[3.0, 4.0], [5.0, 6.0]])
