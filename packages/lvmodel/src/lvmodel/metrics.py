"""Forecast metrics with invalid (NaN) predictions, and the simple reference forecasters.

How invalid values enter the numbers (:func:`forecast_metrics`):

* ``mse``, ``mae`` and their per-variable (``mse_prey`` ...) and per-step (``mse_step1`` ...)
  versions average over the **valid** predicted values only (original units);
* ``invalid_rate`` (share of NaN predicted values) is reported beside them, because a model
  that answers only where it is sure could otherwise look good on valid values alone;
* ``mse_filled`` / ``mae_filled`` (when ``fallback`` is given) replace every invalid value by the
  fallback, the last observed history value (persistence), and average over **all** values: an
  invalid answer then costs what the naive forecast costs, so garbage can never look good.

Written with numpy instead of scikit-learn's ``mean_squared_error``: that function rejects NaN
input outright and applies one mask to all outputs, while these metrics need a separate validity
mask per value (and per variable and horizon step) plus the filled variant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lvmodel.probabilistic import probabilistic_metrics

__all__ = [
    "VAR_NAMES",
    "baseline_forecasts",
    "forecast_metrics",
    "last_values",
    "mase",
    "protocol_split",
    "scaled_errors",
    "score",
]

VAR_NAMES = ("prey", "predator")
"""Names of the two variables in metric keys (others are ``var{j}``)."""


def _var_name(j: int, n_vars: int) -> str:
    return VAR_NAMES[j] if n_vars == len(VAR_NAMES) else f"var{j}"


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else float("nan")


def forecast_metrics(pred: Any, truth: Any, fallback: Any = None) -> dict[str, float]:
    """Error metrics of forecasts ``pred`` against ``truth``, both (B, H, n_vars), original units.

    A predicted value is invalid when it is not finite (NaN marks a malformed model output).
    ``truth`` must be finite. Keys (``H`` = horizon, variables ``prey``/``predator`` when
    ``n_vars == 2``, else ``var0``, ``var1``, ...):

    * ``mse``, ``mae``: over all valid predicted values (NaN if there are none);
    * ``mse_prey``, ``mse_predator``, ``mae_prey``, ``mae_predator``: valid values of one variable;
    * ``mse_step1`` .. ``mse_stepH``, ``mae_step1`` .. ``mae_stepH``: valid values of one horizon step;
    * ``invalid_rate``: invalid values / all values;
    * with ``fallback`` (B, n_vars), the last observed value of each history:
      ``mse_filled``, ``mae_filled`` over all values, invalid ones replaced by the fallback
      (a persistence forecast), so invalid outputs are penalised, never dropped.
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.ndim != 3 or p.shape != t.shape:
        raise ValueError(f"pred and truth must both be (B, H, n_vars), got {p.shape}, {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("truth must be finite")
    _, horizon, n_vars = p.shape
    valid = np.isfinite(p)
    err = np.where(valid, p - t, 0.0)
    sq, ab = err**2, np.abs(err)

    out: dict[str, float] = {"mse": _mean(sq[valid]), "mae": _mean(ab[valid])}
    for j in range(n_vars):
        name, v = _var_name(j, n_vars), valid[:, :, j]
        out[f"mse_{name}"] = _mean(sq[:, :, j][v])
        out[f"mae_{name}"] = _mean(ab[:, :, j][v])
    for h in range(horizon):
        v = valid[:, h, :]
        out[f"mse_step{h + 1}"] = _mean(sq[:, h, :][v])
        out[f"mae_step{h + 1}"] = _mean(ab[:, h, :][v])
    out["invalid_rate"] = float(1.0 - valid.mean()) if valid.size else 0.0

    if fallback is not None:
        f = np.asarray(fallback, dtype=np.float64)
        if f.shape != (p.shape[0], n_vars):
            raise ValueError(
                f"fallback must be (B, n_vars) = {(p.shape[0], n_vars)}, got {f.shape}"
            )
        filled = np.where(valid, p, f[:, None, :])
        out["mse_filled"] = _mean((filled - t) ** 2)
        out["mae_filled"] = _mean(np.abs(filled - t))
    return out


def last_values(histories: Any) -> np.ndarray:
    """(B, n_vars) last observed value of each history: (B, T, n_vars) array or (T_i, n) list."""
    return np.stack([np.asarray(h, dtype=np.float64)[-1] for h in histories])


def baseline_forecasts(histories: Any, horizon: int, train_values: Any) -> dict[str, np.ndarray]:
    """The two trivial reference forecasts, each (B, horizon, n_vars) in original units.

    * ``"train_mean"``: the mean of each variable over the training values (all series, all
      steps: ``train_values`` is (..., n_vars)), the same for every series and step;
    * ``"persistence"``: the last observed value of each history, repeated.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    last = last_values(histories)
    train = np.asarray(train_values, dtype=np.float64)
    n_vars = last.shape[1]
    if train.shape[-1] != n_vars:
        raise ValueError(f"train_values must end in n_vars={n_vars}, got shape {train.shape}")
    mean = train.reshape(-1, n_vars).mean(axis=0)
    b = last.shape[0]
    return {
        "train_mean": np.broadcast_to(mean, (b, horizon, n_vars)).copy(),
        "persistence": np.repeat(last[:, None, :], horizon, axis=1),
    }


def protocol_split(series: np.ndarray, history_steps: int, horizon: int) -> tuple[np.ndarray, ...]:
    """(histories, truth): steps [0, K) and [K, K+H) of every series."""
    if series.ndim != 3 or series.shape[1] < history_steps + horizon:
        raise ValueError(
            f"series of shape {series.shape} cannot give {history_steps} history steps and "
            f"{horizon} forecast steps"
        )
    return series[:, :history_steps], series[:, history_steps : history_steps + horizon]


def scaled_errors(
    predictions: Any, histories: Any, truth: Any, fallback: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each series' and variable's MAE over the horizon divided by its history's in-sample
    one-step naive MAE, mean |x_t - x_(t-1)|, (B, n_vars), 0 where that scale is 0; and where it
    is not (B, n_vars). Invalid predictions (NaN) count as ``fallback`` (persistence)."""
    pred = np.asarray(predictions, dtype=np.float64)
    hist = np.asarray(histories, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if fallback is not None:
        pred = np.where(np.isfinite(pred), pred, np.asarray(fallback, dtype=np.float64)[:, None])
    scale = np.abs(np.diff(hist, axis=1)).mean(axis=1)  # (B, n_vars)
    err = np.abs(pred - y).mean(axis=1)  # (B, n_vars)
    ok = scale > 0
    return np.where(ok, err / np.where(ok, scale, 1.0), 0.0), ok


def mase(predictions: Any, histories: Any, truth: Any, fallback: Any = None) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006; GluonTS and fev scale by the same, per
    item): :func:`scaled_errors` averaged over series and variables. Invalid predictions (NaN)
    count as ``fallback`` (persistence), as in ``mae_filled``. A history that never moves has no
    scale: such a series is left out (NaN when all are)."""
    scaled, ok = scaled_errors(predictions, histories, truth, fallback)
    return float(scaled[ok].mean()) if ok.any() else float("nan")


def score(
    predictions: np.ndarray,
    histories: np.ndarray,
    truth: np.ndarray,
    samples: np.ndarray | None = None,
) -> dict[str, float]:
    """`forecast_metrics` of the protocol: invalid values penalised by persistence in `*_filled`,
    and `mase` (filled the same way); with `samples` (B, S, H, n_vars) of a sampled forecast, also
    its CRPS, WQL, energy score and 80% coverage
    (:func:`lvmodel.probabilistic.probabilistic_metrics`, invalid samples filled the same way)."""
    fallback = last_values(histories)
    out = forecast_metrics(predictions, truth, fallback=fallback)
    out["mase"] = mase(predictions, histories, truth, fallback)
    if samples is not None:
        out.update(probabilistic_metrics(samples, truth, fallback))
    return out
