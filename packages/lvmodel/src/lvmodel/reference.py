"""Reference forecasters: what an LLM forecaster is judged against (numpy, scipy, scikit-learn).

Every forecaster has the same two calls: ``fit(train_values, time)`` on the training split
(``(N, T, 2)`` prey/predator values and the ``(T,)`` time grid; a no-op where nothing is learnt)
and ``predict(histories, horizon)``: ``(B, K, 2)`` histories in original units -> ``(B, horizon,
2)`` forecasts in original units. Histories are the first ``K`` steps of their series; only
``rm_ode`` looks at the time grid (its ``start`` says where histories begin on it, default 0).

The forecasters live in modules of their own; this one holds the protocol, the registry and the
scoring helpers:

* ``persistence``, ``train_mean``, ``var``, ``knn``: :mod:`lvmodel.simple_forecasters`;
* ``rm_ode``: the Rosenzweig-MacArthur ODE fitted to each history, :mod:`lvmodel.rosenzweig`;
* shared argument checks and the base class: :mod:`lvmodel.forecaster_base`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from lvmodel.metrics import protocol_split, score
from lvmodel.rosenzweig import RMOde
from lvmodel.simple_forecasters import KNNAnalog, Persistence, TrainMean, VARLog

__all__ = [
    "REFERENCE_FORECASTERS",
    "KNNAnalog",
    "Persistence",
    "RMOde",
    "ReferenceForecaster",
    "TrainMean",
    "VARLog",
    "evaluate",
    "make_reference",
    "select_on_validation",
]


class ReferenceForecaster(Protocol):
    """What every reference forecaster offers."""

    name: str

    def fit(self, train_values: Any, time: Any) -> ReferenceForecaster: ...

    def predict(self, histories: Any, horizon: int) -> np.ndarray: ...


REFERENCE_FORECASTERS: dict[str, type[Any]] = {
    "persistence": Persistence,
    "train_mean": TrainMean,
    "var": VARLog,
    "knn": KNNAnalog,
    "rm_ode": RMOde,
}
"""Name -> class of every reference forecaster (``make_reference(name, **kw)`` builds one)."""


def make_reference(name: str, **kwargs: Any) -> Any:
    """A new (unfitted) reference forecaster by registry name, with constructor ``kwargs``."""
    if name not in REFERENCE_FORECASTERS:
        raise ValueError(
            f"unknown reference forecaster {name!r}; choose one of {sorted(REFERENCE_FORECASTERS)}"
        )
    return REFERENCE_FORECASTERS[name](**kwargs)


def evaluate(forecaster: Any, series: Any, context: int, horizon: int) -> dict[str, float]:
    """:func:`lvmodel.metrics.forecast_metrics` of ``forecaster`` on series (B, T, 2): history =
    the first ``context`` steps, truth = the next ``horizon`` (persistence as the fallback)."""
    hist, truth = protocol_split(np.asarray(series, dtype=np.float64), context, horizon)
    return score(forecaster.predict(hist, horizon), hist, truth)


def select_on_validation(
    name: str,
    grid: Mapping[str, Iterable[Any]],
    train_values: Any,
    time: Any,
    val_series: Any,
    contexts: int | Sequence[int],
    horizon: int,
    metric: str = "mse",
    **fixed: Any,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]]:
    """Pick the constructor arguments of ``name`` over the product ``grid`` on validation series.

    The score of a setting is ``metric`` averaged over the history lengths ``contexts``.
    Returns ``(best_kwargs, [(kwargs, score), ...])`` (lowest score wins; ties: first).
    """
    ks = [contexts] if isinstance(contexts, int) else list(contexts)
    combos: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        combos = [{**c, key: v} for c in combos for v in values]
    table = []
    for kw in combos:
        model = make_reference(name, **fixed, **kw).fit(train_values, time)
        score = float(np.mean([evaluate(model, val_series, k, horizon)[metric] for k in ks]))
        table.append((kw, score))
    best = min(table, key=lambda row: row[1])[0]
    return best, table
