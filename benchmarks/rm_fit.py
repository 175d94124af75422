"""The Rosenzweig-MacArthur fit: the hand-written batched RK4 + Levenberg-Marquardt against scipy.

The work is what the ``reference`` entry point asks of ``rm_ode`` (``projects/reference.py``): fit
to the first ``K`` steps of every validation and test series of the coursework split
(``lvdata.split(n, seed=0)``, 100 + 100 series), forecast the next ``H = 5``; the presets' history
length is ``K = 50``, DESIGN's anchors also use ``K = 76`` (``-k 50 -k 76``). Two implementations do it:

* ``hand``: :class:`lvmodel.rosenzweig.RMOde` (batched over histories: a vectorised RK4 for the
  candidate scores and the Jacobians, a hand-written batched Levenberg-Marquardt, LSODA residuals
  in stage C);
* ``scipy``: :class:`ScipyRM` below, per series: the same seeded candidate draw, scored by one
  ``solve_ivp`` over all candidates at once; ``least_squares`` (trf, the same log-rate
  parameterisation and bounds) on ``log(value + floor)`` from the ``n_starts`` best candidates
  (``solve_ivp`` LSODA residuals), then ``least_squares`` on the values of the generator's own
  solve (``solve_ivp`` LSODA at default tolerances over the whole grid), again through shorter
  prefixes where that misses the data; forecast by ``solve_ivp`` LSODA; ``scipy-1start`` is
  the same from the best candidate only (scipy's fastest setting that still beats the anchors).

All are scored with :func:`lvmodel.reference.evaluate` (MSE in original units at horizon H),
beside DESIGN's anchors and the rounding floor (the MSE of 2-decimal LLMTime text of the truth,
with the project's alpha fitted on the training split). The fits run one after the other in one
process; the figures measured with ``-k 50 -k 76`` are in :mod:`lvmodel.rosenzweig` (comment
above ``rm_rk4``) and in ``packages/lvmodel/README.md``.

Usage: python benchmarks/rm_fit.py [--data FILE] [-k 50 -k 76] [--split val --split test]
       [--series N] [--method hand --method scipy --method scipy-1start]
       [--json OUT]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

import lvdata
from lvdata.simulate import rm_rhs
from lvmodel.forecaster_base import ForecasterBase, as_histories, check_horizon
from lvmodel.reference import evaluate
from lvmodel.rosenzweig import RMOde, rm_bounds

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/lotka_volterra_data.h5"

# DESIGN section 3, "Accuracy anchors": RM ODE fitted to the history, test MSE at H = 5, by K.
ANCHORS = {50: 1.2e-5, 76: 1.7e-5}


class ScipyRM(ForecasterBase):
    """The Rosenzweig-MacArthur fit of :class:`lvmodel.rosenzweig.RMOde`, per series with scipy."""

    name = "rm_ode_scipy"

    def __init__(
        self,
        n_candidates: int = 512,
        n_starts: int = 4,
        max_nfev: int = 100,
        prefixes: tuple[float, ...] = (0.5, 0.25),
        floor: float = 1e-2,
        widen: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.n_candidates, self.n_starts, self.max_nfev = n_candidates, n_starts, max_nfev
        self.prefixes, self.floor, self.widen, self.seed = prefixes, floor, widen, seed
        self._time = np.linspace(0.0, 200.0, 100)
        lo, hi = rm_bounds(widen)
        self._bounds = (np.log(lo), np.log(hi))

    def fit(self, train_values: Any, time: Any) -> ScipyRM:
        self._time = np.asarray(time, dtype=np.float64)
        return self

    def _log(self, v: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(v, 0.0) + self.floor)

    def _solve(self, q: np.ndarray, z0: np.ndarray, n: int) -> np.ndarray | None:
        """The generator's solve (LSODA, default tolerances, whole span), its first ``n`` points."""
        t = self._time

        def stop(tt: float, _z: np.ndarray) -> float:
            return tt - t[n - 1]

        stop.terminal = True  # type: ignore[attr-defined]
        sol = solve_ivp(
            rm_rhs(*np.exp(q)), (t[0], t[-1]), z0, method="LSODA", t_eval=t[:n], events=stop
        )
        if sol.y.shape[1] != n or not np.all(np.isfinite(sol.y)):
            return None
        out: np.ndarray = sol.y.T
        return out

    def _starts(self, hist: np.ndarray) -> np.ndarray:
        """Stage A: the ``n_starts`` best of the seeded candidates (one solve_ivp over all)."""
        k, m = len(hist), self.n_candidates
        rng = np.random.default_rng(self.seed)
        cand = rng.uniform(self._bounds[0], self._bounds[1], (m, 6))
        r, cap, b, h, e, c = np.exp(cand).T

        def f(_t: float, z: np.ndarray) -> np.ndarray:
            x, y = z[:m], z[m:]
            eat = b * x * y / (1.0 + h * x)
            return np.concatenate([r * x * (1.0 - x / cap) - eat, e * eat - c * y])

        z0 = np.concatenate([np.full(m, hist[0, 0]), np.full(m, hist[0, 1])])
        t = self._time[:k]
        sol = solve_ivp(f, (t[0], t[-1]), z0, t_eval=t, rtol=1e-6, atol=1e-6)
        sim = np.stack([sol.y[:m], sol.y[m:]], axis=-1)[:, 1:]
        cost = ((self._log(sim) - self._log(hist[None, 1:])) ** 2).sum(axis=(1, 2))
        return cand[np.argsort(cost, kind="stable")[: self.n_starts]]

    def fit_one(self, hist: np.ndarray) -> np.ndarray:
        """Log-rates fitted to one (K, 2) history."""
        k, z0 = len(hist), hist[0]

        def log_res(q: np.ndarray) -> np.ndarray:
            y = self._solve(q, z0, k)
            if y is None:
                return np.full(2 * (k - 1), 1e3)
            out: np.ndarray = (self._log(y[1:]) - self._log(hist[1:])).ravel()
            return out

        def raw_res(q: np.ndarray, n: int) -> np.ndarray:
            y = self._solve(q, z0, n)
            if y is None:
                return np.full(2 * (n - 1), 1e3)
            out: np.ndarray = (y[1:] - hist[1:n]).ravel()
            return out

        kw: dict[str, Any] = {"bounds": self._bounds, "method": "trf", "max_nfev": self.max_nfev}
        fits = [least_squares(log_res, s, **kw) for s in self._starts(hist)]
        q_b = min(fits, key=lambda fit: fit.cost).x
        tight = {**kw, "xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15}
        best = least_squares(raw_res, q_b, args=(k,), **tight)
        tol = 0.5 * 1e-12 * 2 * (k - 1)  # RMOde's: RMS misfit 1e-6 (cost is half the sum)
        for frac in self.prefixes:
            if best.cost <= tol:
                break
            part = least_squares(raw_res, q_b, args=(max(4, round(frac * k)),), **tight)
            part = least_squares(raw_res, part.x, args=(k,), **tight)
            if part.cost < best.cost:
                best = part
        out: np.ndarray = best.x
        return out

    def predict(self, histories: Any, horizon: int) -> np.ndarray:
        h = as_histories(histories)
        k, horizon = h.shape[1], check_horizon(horizon)
        out = np.empty((len(h), horizon, 2))
        for i, hist in enumerate(h):
            sol = self._solve(self.fit_one(hist), hist[0], k + horizon)
            out[i] = hist[-1] if sol is None else sol[k:]
        return out


METHODS: dict[str, Callable[[], Any]] = {
    "hand": RMOde,
    "scipy": ScipyRM,  # the hand-written fit's 4 starts
    "scipy-1start": lambda: ScipyRM(n_starts=1),  # scipy's fastest setting that beats the anchors
}
DESIGN_FLOOR = 5.5e-6  # DESIGN: the rounding floor of 2-decimal text (alpha^2 = 0.656)


def rounding_floor(train: np.ndarray, truth: np.ndarray) -> float:
    """MSE of 2-decimal LLMTime text of ``truth`` (alpha fitted on ``train``, as the project's)."""
    alpha = lvdata.LLMTimeCodec.fit(train, decimals=2).alpha
    return float(np.mean((np.round(truth / alpha, 2) * alpha - truth) ** 2))


@click.command()
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
    help="Coursework HDF5 file.",
)
@click.option("--contexts", "-k", multiple=True, type=int, default=(50,), show_default=True)
@click.option("--horizon", default=5, show_default=True)
@click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.Choice(["val", "test"]),
    default=("val", "test"),
    show_default=True,
    help="Splits scored (the reference entry point scores both).",
)
@click.option("--series", default=0, show_default=True, help="First N series of a split (0: all).")
@click.option(
    "--method",
    "methods",
    multiple=True,
    type=click.Choice(list(METHODS)),
    default=tuple(METHODS),
    show_default=True,
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path))
def main(
    data_file: Path,
    contexts: tuple[int, ...],
    horizon: int,
    splits: tuple[str, ...],
    series: int,
    methods: tuple[str, ...],
    json_out: Path | None,
) -> None:
    """Wall time and MSE at the horizon of both RM fits on the same work, beside DESIGN's anchors."""
    traj = lvdata.load_trajectories(data_file)
    parts = lvdata.split(traj.values.shape[0], seed=0)
    train = traj.values[parts.train].astype(np.float64)
    data = {p: traj.values[getattr(parts, p)].astype(np.float64) for p in splits}
    if series:
        data = {p: v[:series] for p, v in data.items()}
    click.echo(
        f"{data_file}: {', '.join(f'{p} {len(v)}' for p, v in data.items())} series, "
        f"H={horizon}, original units; anchor = DESIGN's test MSE (100 test series)"
    )
    head = f"{'method':<13}{'split':>6}{'K':>4}{'series':>7}{'seconds':>9}{'MSE':>10}{'anchor':>9}"
    click.echo(head)
    click.echo("-" * len(head))
    rows = []
    for k in contexts:
        for name in methods:
            for part, values in data.items():
                model = METHODS[name]().fit(None, traj.time)
                t0 = time.perf_counter()
                mse = evaluate(model, values, k, horizon)["mse"]
                row = {
                    "method": name,
                    "split": part,
                    "K": k,
                    "series": len(values),
                    "seconds": time.perf_counter() - t0,
                    "mse": mse,
                    "anchor": ANCHORS.get(k) if horizon == 5 else None,
                }
                rows.append(row)
                anchor = "-" if row["anchor"] is None else f"{row['anchor']:.2g}"
                click.echo(
                    f"{name:<13}{part:>6}{k:>4}{len(values):>7}{row['seconds']:>9.1f}"
                    f"{mse:>10.3g}{anchor:>9}"
                )
    click.echo("-" * len(head))
    for k in contexts:
        for part, values in data.items():
            floor = rounding_floor(train, values[:, k : k + horizon])
            rows.append({"method": "rounding floor", "split": part, "K": k, "mse": floor})
            click.echo(f"{'floor':<13}{part:>6}{k:>4}{len(values):>7}{'-':>9}{floor:>10.3g}")
    click.echo(
        f"floor: MSE of 2-decimal text of the truth (alpha fitted on the training split); "
        f"DESIGN's floor {DESIGN_FLOOR:.2g} is for alpha^2 = 0.656"
    )
    if json_out is not None:
        json_out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
