"""Logging what a run scored: its parameters and data set, and an evaluation (headline metrics with
their bootstrap intervals, per-step and per-variable metrics, the per-series terms that paired
comparisons need, and plots). Shared by every run that scores forecasts: training runs, the
baseline and reference runs, the report's cells and the rates probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import mlflow
import numpy as np

from lvmodel.evaluate import Evaluation
from lvmodel.intervals import Terms, intervals, series_terms
from lvtrack.datafile import Prepared
from lvtrack.plots import plot_fan, plot_forecasts, plot_step_errors
from lvtrack.tracking import log_dataset


def log_common(prep: Prepared, params: dict[str, Any]) -> None:
    """Parameters, the codec and the data set of a run."""
    codec = {f"codec_{k}": v for k, v in prep.codec.to_dict().items()}
    mlflow.log_params({**params, **codec})
    log_dataset(prep.traj.values, prep.data_path, name="lotka_volterra", context="training")


#: Metrics over the whole horizon: logged as `{split}_{name}_h{H}` (the others as `{split}_{key}`).
HORIZON_METRICS = (
    "mse", "mae", "mse_filled", "mae_filled", "mase", "crps", "wql", "energy", "coverage80"
)  # fmt: skip


def _headline(split: str, key: str, horizon: int) -> str:
    """`val_mse_h5`, `val_mse_filled_h5`, ...: a whole-horizon metric's logged name."""
    return f"{split}_{key.replace('_filled', '')}{'_filled' if 'filled' in key else ''}_h{horizon}"


def log_evaluation(
    ev: Evaluation,
    split: str,
    horizon: int,
    time: np.ndarray,
    references: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Headline metrics `{split}_mse_h{H}` (and `{split}_crps_h{H}`, `{split}_coverage80_h{H}`
    for a sampled forecast), each with its 95% series-bootstrap interval (`..._lo`, `..._hi`,
    `lvmodel.intervals`), per-step and per-variable ones, the per-series terms of the headline
    metrics (`scores/{split}_series.json`, for paired comparisons), and plots: the forecasts, a fan
    chart of a sampled one (`plots/fan_{split}.png`), and with `references` (name -> MSE at
    steps 1..H of the reference forecasters) the error against the step ahead beside them."""
    named = {
        _headline(split, key, horizon) if key in HORIZON_METRICS else f"{split}_{key}": value
        for key, value in ev.metrics.items()
    }
    bounds, terms = _intervals(ev, lambda key: _headline(split, key, horizon))
    clean = _logged({**named, **bounds})
    # Per-series terms, so that a later comparison can pair this forecast with another's.
    series = {k: {"num": num.tolist(), "den": den.tolist()} for k, (num, den) in terms.items()}
    mlflow.log_dict(series, f"scores/{split}_series.json")
    k = ev.histories.shape[1]
    fig = plot_forecasts(
        time[: k + horizon],
        ev.histories[:6],
        ev.truth[:6],
        ev.predictions[:6],
        title=f"{split}: history, truth and forecast",
    )
    mlflow.log_figure(fig, f"plots/forecast_{split}.png")
    if ev.quantiles is not None and ev.samples is not None:
        fan = plot_fan(
            time[: k + horizon],
            ev.histories[:6],
            ev.truth[:6],
            ev.quantiles[:6],
            ev.predictions[:6],
            title=f"{split}: median and 10-90% interval of {ev.samples.shape[1]} samples",
        )
        mlflow.log_figure(fan, f"plots/fan_{split}.png")
    if references is not None:
        ours = [ev.metrics.get(f"mse_step{h}", float("nan")) for h in range(1, horizon + 1)]
        errors: dict[str, Sequence[float]] = {"LLM (this run)": ours, **references}
        mlflow.log_figure(plot_step_errors(errors, metric="MSE"), f"plots/step_errors_{split}.png")
    return clean


def log_origin(ev: Evaluation, split: str, horizon: int, origin: int) -> dict[str, float]:
    """The whole-horizon metrics of a forecast from another origin (`origin` steps of history),
    each with its 95% series-bootstrap interval, named `{split}_mse_h{H}_k{origin}` etc."""

    def name_of(key: str) -> str:
        return f"{_headline(split, key, horizon)}_k{origin}"

    named = {name_of(key): v for key, v in ev.metrics.items() if key in HORIZON_METRICS}
    bounds, _ = _intervals(ev, name_of)
    return _logged({**named, **bounds})


def _intervals(ev: Evaluation, name_of: Callable[[str], str]) -> tuple[dict[str, float], Terms]:
    """The 95% series-bootstrap interval of each headline metric (`lvmodel.intervals`) as
    `{name_of(key)}_lo` and `_hi`, and the per-series terms they were drawn from."""
    terms = series_terms(ev.predictions, ev.histories, ev.truth, ev.samples)
    bounds = {}
    for key, (lo, hi) in intervals(terms).items():
        bounds[f"{name_of(key)}_lo"], bounds[f"{name_of(key)}_hi"] = lo, hi
    return bounds, terms


def _logged(named: dict[str, float]) -> dict[str, float]:
    """The finite ones of `named`, logged to the active run."""
    clean = {k: float(v) for k, v in named.items() if np.isfinite(v)}
    mlflow.log_metrics(clean)
    return clean
