"""The simple reference forecasters: persistence, training mean, VAR on log values, kNN analog.

* ``persistence``: the last value, repeated (:func:`lvmodel.metrics.baseline_forecasts`);
* ``train_mean``: the training mean of each variable (:func:`lvmodel.metrics.baseline_forecasts`);
* ``var``: a vector autoregression of order ``p`` on log values, fitted by least squares
  (scikit-learn ``LinearRegression``) to each history alone and iterated;
* ``knn``: a nearest-neighbour analog over every window of the training series: the last
  ``window`` log values (relative to the last one, plus the weighted last log level) are matched
  with scikit-learn ``NearestNeighbors``; the forecast is the last value times the
  distance-weighted mean of the neighbours' growth ratios ``future / last``.

The calls every forecaster offers are described in :mod:`lvmodel.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import NearestNeighbors

from lvmodel.forecaster_base import TINY, ForecasterBase, as_histories, check_horizon
from lvmodel.metrics import baseline_forecasts

__all__ = ["KNNAnalog", "Persistence", "TrainMean", "VARLog"]


class Persistence(ForecasterBase):
    """The last observed value of each history, repeated."""

    name = "persistence"

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        h = as_histories(histories)
        return baseline_forecasts(h, check_horizon(horizon), h[:, -1])["persistence"]


class TrainMean(ForecasterBase):
    """The mean of each variable over all training values, for every series and step."""

    name = "train_mean"

    def __init__(self) -> None:
        self._train: np.ndarray | None = None

    def fit(self, train_values: Any, time: Any = None) -> TrainMean:
        self._train = np.asarray(train_values, dtype=np.float64)
        return self

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        if self._train is None:
            raise RuntimeError("call fit(train_values, time) first")
        h = as_histories(histories)
        return baseline_forecasts(h, check_horizon(horizon), self._train)["train_mean"]


class VARLog(ForecasterBase):
    """VAR(``order``) with intercept on log values, fitted to each history alone, iterated.

    ``log z_t = c + A_1 log z_{t-1} + ... + A_p log z_{t-p}``, least squares on the pairs the
    history holds (``K - order`` of them; at least ``2 * order + 2`` are needed). The default
    order 4 was picked on the validation split of the coursework data among 1..6 (order 3
    reproduces DESIGN's anchors; ``benchmarks/reference_anchors.py --select``). Log forecasts
    are clipped to ``clip`` decades around the history's range before ``exp``, so an unstable
    fit cannot overflow.
    """

    name = "var"

    def __init__(self, order: int = 4, clip: float = 1.0) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        self.order = int(order)
        self.clip = float(clip)

    def coefficients(self, history: Any) -> tuple[np.ndarray, np.ndarray]:
        """Least-squares fit to one (K, n) history: ``(c (n,), A (order, n, n))`` in log space."""
        p = self.order
        logs = np.log(np.maximum(np.asarray(history, dtype=np.float64), TINY))
        k = logs.shape[0]
        if k - p < 2 * p + 2:
            raise ValueError(f"VAR({p}) needs histories of at least {3 * p + 2} steps, got {k}")
        lagged = np.concatenate([logs[p - 1 - i : k - 1 - i] for i in range(p)], axis=1)
        model = LinearRegression().fit(lagged, logs[p:])
        n = logs.shape[1]
        coefs = model.coef_.reshape(n, p, n).transpose(1, 0, 2)
        return np.asarray(model.intercept_), coefs

    def _one(self, hist: np.ndarray, horizon: int) -> np.ndarray:
        icpt, coefs = self.coefficients(hist)
        logs = np.log(np.maximum(hist, TINY))
        lo = logs.min(axis=0) - self.clip * np.log(10.0)
        hi = logs.max(axis=0) + self.clip * np.log(10.0)
        buf = list(logs[-self.order :])
        out = np.empty((horizon, logs.shape[1]))
        for s in range(horizon):
            z = icpt + sum(a @ buf[-1 - i] for i, a in enumerate(coefs))
            out[s] = np.clip(z, lo, hi)
            buf.append(out[s])
        return np.exp(out)

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        h = as_histories(histories)
        horizon = check_horizon(horizon)
        return np.stack([self._one(x, horizon) for x in h])


class KNNAnalog(ForecasterBase):
    """Nearest-neighbour analog over every ``window``-step window of the training series.

    Features of a window: its log values minus its last log value (the shape), and
    ``level_weight`` times its last log values (the level). The ``n_neighbors`` nearest training
    windows (Euclidean, scikit-learn ``NearestNeighbors``) whose next ``horizon`` steps exist
    vote with weights ``1 / distance`` (only the exact matches when a distance is 0); the
    forecast is the history's last value times the weighted mean of their ratios
    ``next values / last value``. Defaults (window 30, 5 neighbours, level weight 3) were picked
    on the validation split of the coursework data (``benchmarks/reference_anchors.py
    --select``). Histories shorter than ``window`` use their whole length as the window.
    """

    name = "knn"

    def __init__(self, window: int = 30, n_neighbors: int = 5, level_weight: float = 3.0) -> None:
        if window < 1 or n_neighbors < 1:
            raise ValueError(f"window and n_neighbors must be >= 1, got {window}, {n_neighbors}")
        self.window = int(window)
        self.n_neighbors = int(n_neighbors)
        self.level_weight = float(level_weight)
        self._train: np.ndarray | None = None
        self._index: dict[tuple[int, int], tuple[NearestNeighbors, np.ndarray]] = {}

    def _features(self, windows: np.ndarray) -> np.ndarray:
        logs = np.log(np.maximum(windows, TINY))
        shape = (logs - logs[:, -1:, :]).reshape(len(logs), -1)
        return np.concatenate([shape, self.level_weight * logs[:, -1, :]], axis=1)

    def fit(self, train_values: Any, time: Any = None) -> KNNAnalog:
        train = np.asarray(train_values, dtype=np.float64)
        if train.ndim != 3:
            raise ValueError(f"train_values must be (N, T, n_vars), got {train.shape}")
        self._train, self._index = train, {}
        return self

    def _lookup(self, window: int, horizon: int) -> tuple[NearestNeighbors, np.ndarray]:
        key = (window, horizon)
        if key not in self._index:
            if self._train is None:
                raise RuntimeError("call fit(train_values, time) first")
            train = self._train
            n_steps = train.shape[1]
            if n_steps < window + horizon:
                raise ValueError(f"training series of {n_steps} steps < window + horizon")
            starts = range(window, n_steps - horizon + 1)
            feats = np.concatenate([self._features(train[:, t - window : t]) for t in starts])
            last = np.concatenate([train[:, t - 1 : t] for t in starts])
            future = np.concatenate([train[:, t : t + horizon] for t in starts])
            ratios = future / np.maximum(last, TINY)
            k = min(self.n_neighbors, len(feats))
            self._index[key] = (NearestNeighbors(n_neighbors=k).fit(feats), ratios)
        return self._index[key]

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        h = as_histories(histories)
        horizon = check_horizon(horizon)
        window = min(self.window, h.shape[1])
        nn, ratios = self._lookup(window, horizon)
        dist, idx = nn.kneighbors(self._features(h[:, -window:]))
        exact = dist == 0.0
        w = np.where(exact.any(axis=1, keepdims=True), exact, 1.0 / np.maximum(dist, 1e-300))
        w = w / w.sum(axis=1, keepdims=True)
        mean_ratio = np.einsum("bk,bkhv->bhv", w, ratios[idx])
        out: np.ndarray = h[:, -1:, :] * mean_ratio
        return out
