"""Reference forecasters: what an LLM forecaster is judged against (numpy, scipy, scikit-learn).

Every forecaster has the same two calls: ``fit(train_values, time)`` on the training split
(``(N, T, 2)`` prey/predator values and the ``(T,)`` time grid; a no-op where nothing is learnt)
and ``predict(histories, horizon)``: ``(B, K, 2)`` histories in original units -> ``(B, horizon,
2)`` forecasts in original units. Histories are the first ``K`` steps of their series; only
``rm_ode`` looks at the time grid (its ``start`` says where histories begin on it, default 0).

* ``persistence``: the last value, repeated (:func:`lvmodel.metrics.baseline_forecasts`);
* ``train_mean``: the training mean of each variable (:func:`lvmodel.metrics.baseline_forecasts`);
* ``var``: a vector autoregression of order ``p`` on log values, fitted by least squares
  (scikit-learn ``LinearRegression``) to each history alone and iterated;
* ``knn``: a nearest-neighbour analog over every window of the training series: the last
  ``window`` log values (relative to the last one, plus the weighted last log level) are matched
  with scikit-learn ``NearestNeighbors``; the forecast is the last value times the
  distance-weighted mean of the neighbours' growth ratios ``future / last``;
* ``rm_ode``: the Rosenzweig-MacArthur ODE (the generator of the coursework data, see
  :mod:`lvdata.simulate`) fitted to each history, then integrated forward with LSODA.

The ``rm_ode`` fit runs in three stages, batched over histories and deterministic: (A) a seeded
draw of ``n_candidates`` rate sets from the (slightly widened) :class:`lvdata.RMParams` ranges,
each simulated from the history's first point with a vectorised RK4 and scored on
``log(value + floor)``; (B) Levenberg-Marquardt on log-rates from the ``n_starts`` best
candidates (RK4, finite differences), the best fit kept; (C) Levenberg-Marquardt, then a
Gauss-Newton walk, on the values of the generator's own integrator (LSODA at default tolerances
over the whole time grid, as :func:`lvdata.integrate`; Jacobian from RK4). Stage C matters:
LSODA's step-size errors (MSE 1e-6 to 1e-4 against the exact ODE) are part of the data and are
only reproduced by the same solver with nearly the same rates. Its objective is rough and gets
rougher with the history's length, so a history that stage C does not fit to float32
precision is fitted again via shorter ``prefixes`` of itself first. The forecast integrates the
fitted rates from the history's first point, again with LSODA over the whole grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from scipy.integrate import LSODA
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import NearestNeighbors

from lvdata.simulate import RMParams, rm_rhs
from lvmodel.metrics import baseline_forecasts, protocol_split, score

__all__ = [
    "RATE_NAMES",
    "REFERENCE_FORECASTERS",
    "KNNAnalog",
    "Persistence",
    "RMOde",
    "ReferenceForecaster",
    "TrainMean",
    "VARLog",
    "evaluate",
    "make_reference",
    "rm_bounds",
    "rm_lsoda",
    "rm_rk4",
    "select_on_validation",
]

RATE_NAMES = ("r", "K", "b", "h", "e", "c")
"""The six Rosenzweig-MacArthur rates in the order ``rm_ode`` uses (fields of RMParams)."""
_TINY = 1e-8  # floor of values before taking logs (data are positive, down to ~4e-5)


class ReferenceForecaster(Protocol):
    """What every reference forecaster offers."""

    name: str

    def fit(self, train_values: Any, time: Any) -> ReferenceForecaster: ...

    def predict(self, histories: Any, horizon: int) -> np.ndarray: ...


def _as_histories(histories: Any) -> np.ndarray:
    h = np.asarray(histories, dtype=np.float64)
    if h.ndim != 3 or h.shape[1] < 1:
        raise ValueError(f"histories must be (B, K, n_vars) with K >= 1, got {h.shape}")
    return h


def _check_horizon(horizon: int) -> int:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return int(horizon)


class _Base:
    name = "base"

    def fit(self, train_values: Any, time: Any) -> Any:
        return self

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({kw})"


class Persistence(_Base):
    """The last observed value of each history, repeated."""

    name = "persistence"

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        h = _as_histories(histories)
        return baseline_forecasts(h, _check_horizon(horizon), h[:, -1])["persistence"]


class TrainMean(_Base):
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
        h = _as_histories(histories)
        return baseline_forecasts(h, _check_horizon(horizon), self._train)["train_mean"]


class VARLog(_Base):
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
        logs = np.log(np.maximum(np.asarray(history, dtype=np.float64), _TINY))
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
        logs = np.log(np.maximum(hist, _TINY))
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
        h = _as_histories(histories)
        horizon = _check_horizon(horizon)
        return np.stack([self._one(x, horizon) for x in h])


class KNNAnalog(_Base):
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
        logs = np.log(np.maximum(windows, _TINY))
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
            ratios = future / np.maximum(last, _TINY)
            k = min(self.n_neighbors, len(feats))
            self._index[key] = (NearestNeighbors(n_neighbors=k).fit(feats), ratios)
        return self._index[key]

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        h = _as_histories(histories)
        horizon = _check_horizon(horizon)
        window = min(self.window, h.shape[1])
        nn, ratios = self._lookup(window, horizon)
        dist, idx = nn.kneighbors(self._features(h[:, -window:]))
        exact = dist == 0.0
        w = np.where(exact.any(axis=1, keepdims=True), exact, 1.0 / np.maximum(dist, 1e-300))
        w = w / w.sum(axis=1, keepdims=True)
        mean_ratio = np.einsum("bk,bkhv->bhv", w, ratios[idx])
        out: np.ndarray = h[:, -1:, :] * mean_ratio
        return out


# --------------------------------------------------------------------------- Rosenzweig-MacArthur


def rm_bounds(widen: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the six rates: :class:`lvdata.RMParams` ranges widened by ``widen`` x width."""
    ranges = RMParams()
    lo, hi = [], []
    for name in RATE_NAMES:
        a, b = getattr(ranges, name)
        lo.append(max(a - widen * (b - a), 0.5 * a))
        hi.append(b + widen * (b - a))
    return np.array(lo), np.array(hi)


def rm_rk4(rates: np.ndarray, z0: np.ndarray, time: np.ndarray, substeps: int = 4) -> np.ndarray:
    """Rosenzweig-MacArthur solutions by classic RK4, vectorised over parameter sets.

    ``rates`` (M, 6) in :data:`RATE_NAMES` order, ``z0`` (M, 2); returns (M, len(time), 2) with
    ``substeps`` RK4 steps between grid points (about 1e-6 relative error on the coursework grid).
    """
    r, cap, b, h, e, c = (rates[:, i] for i in range(6))
    x, y = z0[:, 0].astype(np.float64), z0[:, 1].astype(np.float64)
    out = np.empty((len(x), len(time), 2))
    out[:, 0, 0], out[:, 0, 1] = x, y

    def f(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eat = b * x * y / (1.0 + h * x)
        return r * x * (1.0 - x / cap) - eat, e * eat - c * y

    for i in range(len(time) - 1):
        dt = (time[i + 1] - time[i]) / substeps
        for _ in range(substeps):
            a1, b1 = f(x, y)
            a2, b2 = f(x + 0.5 * dt * a1, y + 0.5 * dt * b1)
            a3, b3 = f(x + 0.5 * dt * a2, y + 0.5 * dt * b2)
            a4, b4 = f(x + dt * a3, y + dt * b3)
            x = x + dt / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
            y = y + dt / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
        out[:, i + 1, 0], out[:, i + 1, 1] = x, y
    return out


def rm_lsoda(rates: Sequence[float], z0: Sequence[float], time: np.ndarray, n: int) -> np.ndarray:
    """The generator's solve (LSODA, default tolerances, span ``time[0]..time[-1]``), first ``n``.

    What ``solve_ivp(..., method="LSODA", t_eval=time)`` does, step by step, but stopping after
    the step that passes ``time[n - 1]``: the steps and the interpolated values are those of the
    whole-span solve (of :func:`lvdata.integrate`). Returns (n, 2); raises RuntimeError when the
    solver fails.
    """
    rhs = rm_rhs(*(float(v) for v in rates))
    t = np.asarray(time, dtype=np.float64)
    solver = LSODA(rhs, float(t[0]), [float(v) for v in z0], float(t[-1]))
    out, done = np.empty((n, 2)), 0
    while done < n:
        solver.step()
        if solver.status == "failed":
            raise RuntimeError(f"LSODA failed at t={solver.t:g}")
        new = min(n, int(np.searchsorted(t, solver.t, side="right")))
        if new > done:
            out[done:new] = solver.dense_output()(t[done:new]).T
            done = new
        elif solver.status == "finished":
            raise RuntimeError("LSODA finished before the last time step")
    if not np.all(np.isfinite(out)):
        raise RuntimeError("LSODA returned non-finite values")
    return out


def _batched_lm(
    q: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    residuals: Callable[[np.ndarray, np.ndarray], np.ndarray],
    jacobian: Callable[[np.ndarray, np.ndarray], np.ndarray],
    iters: int,
    walk: int = 0,
    tick: Callable[[], None] | None = None,
    tol: float = 1e-24,
) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on M problems at once, each with its own damping; ``q`` (M, P).

    ``residuals(q, idx)`` returns (len(idx), n) for the problems ``idx`` at points ``q``;
    ``jacobian(q, idx)`` their (len(idx), n, P) Jacobians (it may come from a smoother model than
    the residuals). For ``iters`` iterations a step is kept only where it lowers the sum of
    squares (a problem stops when its damping passes 1e8); then for ``walk`` iterations every
    step is taken (Gauss-Newton, damping 1e-6), which crosses the small ridges of a rough
    objective, and the best point seen is kept. A problem whose cost is at most ``tol`` is done.
    ``tick`` is called once per iteration. Returns ``(q, cost)`` of the best points.
    """
    q = q.copy()
    m, p = q.shape
    every = np.arange(m)
    r, jac = residuals(q, every), jacobian(q, every)
    cost, lam = (r**2).sum(axis=1), np.full(m, 1e-3)
    best_q, best_cost = q.copy(), cost.copy()
    eye = np.eye(p)[None]
    for it in range(iters + walk):
        if tick is not None:
            tick()
        monotone = it < iters
        act = np.flatnonzero(((lam < 1e8) | (not monotone)) & (best_cost > tol))
        if len(act) == 0:
            continue
        if not monotone:
            lam[act] = 1e-6
        ja, ra = jac[act], r[act]
        jtj = np.einsum("mnp,mnq->mpq", ja, ja)
        grad = np.einsum("mnp,mn->mp", ja, ra)
        damp = lam[act, None, None] * eye * (np.einsum("mpp->mp", jtj)[:, :, None] + 1e-12)
        step = np.linalg.solve(jtj + damp, -grad[..., None])[..., 0]
        q_new = np.clip(q[act] + step, bounds[0], bounds[1])
        r_new = residuals(q_new, act)
        cost_new = (r_new**2).sum(axis=1)
        ok = (cost_new < cost[act]) | (not monotone)
        acc = act[ok]
        q[acc], r[acc], cost[acc] = q_new[ok], r_new[ok], cost_new[ok]
        if len(acc):
            jac[acc] = jacobian(q[acc], acc)
        lam[act] = np.where(ok, lam[act] / 3.0, lam[act] * 4.0)
        better = cost < best_cost
        best_q[better], best_cost[better] = q[better], cost[better]
    return best_q, best_cost


class RMOde(_Base):
    """The Rosenzweig-MacArthur ODE fitted to each history, integrated forward with LSODA.

    Args:
        n_candidates: seeded rate sets scored per history (stage A).
        n_starts: best candidates refined per history (stage B).
        lm_iters: Levenberg-Marquardt iterations of stage B (RK4 residuals).
        polish_iters: Levenberg-Marquardt iterations of stage C (LSODA residuals; 0 skips C).
        walk_iters: Gauss-Newton walk iterations after them (the best point seen is kept).
        prefixes: fractions of the history fitted first, in turn, for the histories that stage C
            left above an RMS misfit of 1e-6 (chosen on the validation split).
        floor: stages A and B compare ``log(value + floor)``; stage C compares values.
        widen: rates are bounded to the :class:`lvdata.RMParams` ranges widened by this x width.
        start: index in the time grid of the first history step.
        seed: seed of the candidate draw.
        progress: called as ``progress(done, total)`` after each batched iteration (``total`` is
            an upper bound: early stops jump to it), e.g. to drive a tqdm bar.

    The initial state is the first history point (exact in the coursework data). The time grid
    comes from ``fit``; without it, ``linspace(0, 200, 100)`` (the coursework's), extended with its
    step when ``start + K + horizon`` exceeds it. ``fitted_rates_`` holds the last fit, (B, 6).
    """

    name = "rm_ode"

    def __init__(
        self,
        n_candidates: int = 512,
        n_starts: int = 4,
        lm_iters: int = 40,
        polish_iters: int = 30,
        walk_iters: int = 20,
        prefixes: Sequence[float] = (0.5, 0.25),
        floor: float = 1e-2,
        widen: float = 0.1,
        start: int = 0,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not all(0 < f < 1 for f in prefixes):
            raise ValueError(f"prefixes must be fractions in (0, 1), got {prefixes}")
        if n_candidates < n_starts or n_starts < 1:
            raise ValueError(f"need n_candidates >= n_starts >= 1, got {n_candidates}, {n_starts}")
        self.n_candidates, self.n_starts = int(n_candidates), int(n_starts)
        self.lm_iters, self.polish_iters = int(lm_iters), int(polish_iters)
        self.walk_iters, self.prefixes = int(walk_iters), tuple(float(f) for f in prefixes)
        self.floor, self.widen = float(floor), float(widen)
        self.start, self.seed = int(start), int(seed)
        self.progress = progress
        self._time = np.linspace(0.0, 200.0, 100)
        self.fitted_rates_: np.ndarray | None = None

    def fit(self, train_values: Any, time: Any) -> RMOde:
        t = np.asarray(time, dtype=np.float64)
        if t.ndim != 1 or len(t) < 2 or np.any(np.diff(t) <= 0):
            raise ValueError("time must be an increasing 1-D grid of at least 2 points")
        self._time = t
        return self

    def _grid(self, n: int) -> np.ndarray:
        t = self._time[self.start :]
        if len(t) < n:
            step = self._time[-1] - self._time[-2]
            t = np.concatenate([t, t[-1] + step * np.arange(1, n - len(t) + 1)])
        return t

    def _log(self, v: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(v, 0.0) + self.floor)

    def _rk4_residuals(
        self, z0: np.ndarray, target: np.ndarray, t: np.ndarray, transform: Callable[..., Any]
    ) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
        """RK4 residual and finite-difference Jacobian functions of log-rates for LM."""
        p, eps = 6, 1e-6
        steps = np.concatenate([np.zeros((1, p)), eps * np.eye(p)])

        def residuals(q: np.ndarray, idx: np.ndarray) -> np.ndarray:
            sim = transform(rm_rk4(np.exp(q), z0[idx], t)[:, 1:]).reshape(len(q), -1)
            out: np.ndarray = sim - target[idx]
            return out

        def jacobian(q: np.ndarray, idx: np.ndarray) -> np.ndarray:
            qq = (q[:, None, :] + steps[None]).reshape(-1, p)
            sim = rm_rk4(np.exp(qq), np.repeat(z0[idx], p + 1, axis=0), t)[:, 1:]
            sim = transform(sim).reshape(len(q), p + 1, -1)
            out: np.ndarray = (sim[:, 1:] - sim[:, :1]).transpose(0, 2, 1) / eps
            return out

        return residuals, jacobian

    def fit_rates(self, histories: Any) -> np.ndarray:
        """Fit the six rates to each history; returns (B, 6) in :data:`RATE_NAMES` order."""
        h = _as_histories(histories)
        b, k, n_vars = h.shape
        if n_vars != 2 or k < 4:
            raise ValueError(f"rm_ode needs (B, K >= 4, 2) histories, got {h.shape}")
        t, z0 = self._grid(k), h[:, 0]
        lo, hi = rm_bounds(self.widen)
        bounds = (np.log(lo), np.log(hi))
        rng = np.random.default_rng(self.seed)
        cand = np.exp(rng.uniform(bounds[0], bounds[1], (self.n_candidates, 6)))
        target = self._log(h[:, 1:]).reshape(b, -1)
        chunk = max(1, 8192 // self.n_candidates)
        n_chunks = -(-b // chunk)
        n_polish = (1 + 2 * len(self.prefixes)) * (self.polish_iters + self.walk_iters)
        total = n_chunks + self.lm_iters + n_polish * (self.polish_iters > 0)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if self.progress is not None:
                self.progress(done, total)

        # stage A: score every candidate on every history (RK4, chunks of histories)
        starts = np.empty((b, self.n_starts, 6))
        for i in range(0, b, chunk):
            zc = np.repeat(z0[i : i + chunk], self.n_candidates, axis=0)
            sim = self._log(rm_rk4(np.tile(cand, (len(zc) // len(cand), 1)), zc, t[:k])[:, 1:])
            score = (sim.reshape(-1, len(cand), target.shape[1]) - target[i : i + chunk, None]) ** 2
            best = np.argsort(score.sum(axis=2), axis=1, kind="stable")[:, : self.n_starts]
            starts[i : i + chunk] = np.log(cand[best])
            tick()

        # stage B: LM from every start (RK4, log residuals); keep each history's best
        res, jac = self._rk4_residuals(
            np.repeat(z0, self.n_starts, axis=0),
            np.repeat(target, self.n_starts, axis=0),
            t[:k],
            self._log,
        )
        q, cost = _batched_lm(starts.reshape(-1, 6), bounds, res, jac, self.lm_iters, tick=tick)
        q = q.reshape(b, self.n_starts, 6)[np.arange(b), cost.reshape(b, -1).argmin(axis=1)]

        if self.polish_iters <= 0:
            if self.progress is not None:
                self.progress(total, total)
            return np.exp(q)

        # stage C: LM then a Gauss-Newton walk on the generator's own LSODA values (Jacobian
        # from RK4); where that misses the data, again via fits to shorter prefixes first (the
        # roughness of LSODA's objective grows with the history's length)
        q_b = q
        q, cost = self._polish(q_b, h, t, bounds, tick)
        for frac in self.prefixes:
            todo = np.flatnonzero(cost > self._tol(k))
            if len(todo) == 0:
                break
            q_p, _ = self._polish(q_b[todo], h[todo, : max(4, round(frac * k))], t, bounds, tick)
            q_p, cost_p = self._polish(q_p, h[todo], t, bounds, tick)
            better = cost_p < cost[todo]
            q[todo[better]], cost[todo[better]] = q_p[better], cost_p[better]
        if self.progress is not None:
            self.progress(total, total)
        return np.exp(q)

    @staticmethod
    def _tol(k: int) -> float:
        """Stage C is done at an RMS misfit of 1e-6 (float32 data: the forecast is then exact)."""
        return 1e-12 * 2 * (k - 1)

    def _polish(
        self,
        q: np.ndarray,
        h: np.ndarray,
        t: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray],
        tick: Callable[[], None],
    ) -> tuple[np.ndarray, np.ndarray]:
        b, k = h.shape[:2]
        z0, raw = h[:, 0], h[:, 1:].reshape(b, -1)
        _, jac = self._rk4_residuals(z0, raw, t[:k], lambda v: v)

        def lsoda_residuals(q: np.ndarray, idx: np.ndarray) -> np.ndarray:
            out = np.full((len(idx), raw.shape[1]), 1e3)
            for row, i in enumerate(idx):
                with contextlib.suppress(RuntimeError):
                    out[row] = rm_lsoda(np.exp(q[row]), z0[i], t, k)[1:].ravel() - raw[i]
            return out

        iters, walk = self.polish_iters, self.walk_iters
        return _batched_lm(q, bounds, lsoda_residuals, jac, iters, walk, tick, self._tol(k))

    def forecast_from(self, rates: np.ndarray, histories: Any, horizon: int) -> np.ndarray:
        """Integrate fitted ``rates`` (B, 6) from each history's first point past its end."""
        h = _as_histories(histories)
        k, horizon = h.shape[1], _check_horizon(horizon)
        t = self._grid(k + horizon)
        out = np.empty((h.shape[0], horizon, 2))
        for i in range(h.shape[0]):
            try:
                sol = rm_lsoda(rates[i], h[i, 0], t, k + horizon)
            except RuntimeError:
                sol = rm_rk4(rates[i : i + 1], h[i : i + 1, 0], t[: k + horizon])[0]
            out[i] = sol[k:]
        return out

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        h = _as_histories(histories)
        self.fitted_rates_ = self.fit_rates(h)
        return self.forecast_from(self.fitted_rates_, h, horizon)


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
