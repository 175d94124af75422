"""Generate predator-prey data sets, deterministic by seed.

Default model: Rosenzweig-MacArthur (logistic prey, Holling type II predation), the generator of
the coursework file ``lotka_volterra_data.h5``::

    dx/dt = r x (1 - x/K) - b x y / (1 + h x)
    dy/dt = e b x y / (1 + h x) - c y

Option: classic Lotka-Volterra::

    dx/dt = alpha x - beta x y
    dy/dt = delta x y - gamma y

Each system draws its parameters and initial populations uniformly from documented ranges
(:class:`RMParams`, :class:`LVParams`; frozen dataclasses of ``(low, high)`` pairs that you can
replace with ``dataclasses.replace``) and is integrated with ``scipy.integrate.solve_ivp``, method
LSODA at its default tolerances, evaluated on ``linspace(0, t_end, n_steps)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.integrate import solve_ivp

from lvdata.errors import DataError
from lvdata.trajectories import Trajectories, _as_attrs

__all__ = ["MODELS", "LVParams", "RMParams", "integrate", "sample_params", "simulate"]

Model = Literal["rosenzweig-macarthur", "lotka-volterra"]
Range = tuple[float, float]


@dataclass(frozen=True)
class RMParams:
    """Uniform ranges ``(low, high)`` of the Rosenzweig-MacArthur generator (the coursework's).

    Attributes:
        r: prey growth rate.
        K: prey carrying capacity.
        b: attack rate.
        h: handling-time term of the Holling II response (``b x / (1 + h x)``).
        e: conversion efficiency (prey eaten -> predators born).
        c: predator death rate.
        x0: initial prey population.
        y0: initial predator population.
    """

    r: Range = (0.1, 0.3)
    K: Range = (5.0, 15.0)
    b: Range = (0.2, 0.5)
    h: Range = (0.05, 0.2)
    e: Range = (0.3, 0.7)
    c: Range = (0.1, 0.3)
    x0: Range = (0.8, 1.2)
    y0: Range = (0.8, 1.2)


@dataclass(frozen=True)
class LVParams:
    """Uniform ranges ``(low, high)`` of the classic Lotka-Volterra option.

    With these ranges the coexistence equilibrium ``(gamma/delta, alpha/beta)`` lies between
    1/3 and 3 for both species, so series oscillate around populations of order 1, like the
    coursework's (but on closed orbits: classic LV has no damping).

    Attributes:
        alpha: prey growth rate.
        beta: predation rate.
        delta: predator growth per prey eaten.
        gamma: predator death rate.
        x0: initial prey population.
        y0: initial predator population.
    """

    alpha: Range = (0.1, 0.3)
    beta: Range = (0.1, 0.3)
    delta: Range = (0.1, 0.3)
    gamma: Range = (0.1, 0.3)
    x0: Range = (0.8, 1.2)
    y0: Range = (0.8, 1.2)


MODELS: dict[str, type[RMParams] | type[LVParams]] = {
    "rosenzweig-macarthur": RMParams,
    "lotka-volterra": LVParams,
}


def rm_rhs(r: float, K: float, b: float, h: float, e: float, c: float) -> Callable[..., Any]:
    def rhs(_t: float, z: np.ndarray) -> list[float]:
        x, y = z
        eat = b * x * y / (1.0 + h * x)
        return [r * x * (1.0 - x / K) - eat, e * eat - c * y]

    return rhs


def _lv_rhs(alpha: float, beta: float, delta: float, gamma: float) -> Callable[..., Any]:
    def rhs(_t: float, z: np.ndarray) -> list[float]:
        x, y = z
        return [alpha * x - beta * x * y, delta * x * y - gamma * y]

    return rhs


def integrate(model: Model, theta: Mapping[str, float], time: np.ndarray) -> np.ndarray:
    """Solve one system on ``time`` (first entry is the initial time) and return (T, 2) float64.

    ``theta`` holds the model's rate parameters and ``x0``, ``y0`` (the names of the fields of
    :class:`RMParams` or :class:`LVParams`). Uses solve_ivp, method LSODA, default tolerances.
    Raises :class:`DataError` when the solver fails or returns non-finite values.
    """
    if model == "rosenzweig-macarthur":
        rhs = rm_rhs(*(float(theta[k]) for k in ("r", "K", "b", "h", "e", "c")))
    elif model == "lotka-volterra":
        rhs = _lv_rhs(*(float(theta[k]) for k in ("alpha", "beta", "delta", "gamma")))
    else:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    t = np.asarray(time, dtype=np.float64)
    z0 = [float(theta["x0"]), float(theta["y0"])]
    sol = solve_ivp(rhs, (float(t[0]), float(t[-1])), z0, method="LSODA", t_eval=t)
    if not sol.success or sol.y.shape[1] != t.shape[0] or not np.all(np.isfinite(sol.y)):
        shown = ", ".join(f"{k}={float(v):.6g}" for k, v in theta.items())
        raise DataError(f"{model}: the ODE solve failed ({sol.message}) for {shown}.")
    out: np.ndarray = sol.y.T
    return out


def sample_params(
    n_systems: int, ranges: RMParams | LVParams, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw ``n_systems`` parameter sets: one ``rng.uniform`` call per field, in field order."""
    out: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(ranges):
        low, high = getattr(ranges, f.name)
        if not (np.isfinite(low) and np.isfinite(high) and low <= high):
            raise ValueError(f"range {f.name}={low, high} must be finite with low <= high")
        out[f.name] = rng.uniform(low, high, size=n_systems)
    return out


def simulate(
    n_systems: int = 1000,
    n_steps: int = 100,
    t_end: float = 200.0,
    seed: int = 0,
    model: Model = "rosenzweig-macarthur",
    ranges: RMParams | LVParams | None = None,
    progress: Callable[[int], None] | None = None,
) -> Trajectories:
    """Generate ``n_systems`` series of ``n_steps`` steps on ``linspace(0, t_end, n_steps)``.

    Args:
        n_systems: number of series N.
        n_steps: number of time steps T (including t = 0).
        t_end: last time stamp.
        seed: seed of ``numpy.random.default_rng``; same seed, same data.
        model: ``"rosenzweig-macarthur"`` (default, the coursework's generator) or
            ``"lotka-volterra"``.
        ranges: parameter ranges; default ``RMParams()`` or ``LVParams()`` for the model.
        progress: called with the number of systems done after each solve (for a progress bar).

    Returns:
        Trajectories with ``params`` (the drawn values, arrays of shape (N,)) and ``attrs``
        describing the generator. Values are float32; a value the integrator left slightly below
        zero (an error of at most its absolute tolerance) is set to 0.

    Raises:
        DataError: a solve failed.
        ValueError: bad arguments.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    if n_systems < 1 or n_steps < 2:
        raise ValueError(f"need n_systems >= 1 and n_steps >= 2, got {n_systems}, {n_steps}")
    if not (np.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be positive and finite, got {t_end}")
    if ranges is None:
        ranges = MODELS[model]()
    elif not isinstance(ranges, MODELS[model]):
        raise ValueError(f"model {model!r} needs ranges of type {MODELS[model].__name__}")
    rng = np.random.default_rng(seed)
    params = sample_params(n_systems, ranges, rng)
    time = np.linspace(0.0, float(t_end), n_steps)
    values = np.empty((n_systems, n_steps, 2), dtype=np.float64)
    for i in range(n_systems):
        values[i] = integrate(model, {k: float(p[i]) for k, p in params.items()}, time)
        if progress is not None:
            progress(i + 1)
    np.maximum(values, 0.0, out=values)
    attrs = _as_attrs(
        {
            "generator": "lvdata.simulate",
            "model": model,
            "seed": int(seed),
            "n_systems": int(n_systems),
            "n_steps": int(n_steps),
            "t_end": float(t_end),
            "ranges": dataclasses.asdict(ranges),
            "solver": "scipy.integrate.solve_ivp LSODA default tolerances",
        }
    )
    return Trajectories(values.astype(np.float32), time, params, attrs)
