"""Reference forecasters: exact cases on synthetic data, DESIGN's anchors on the coursework file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import lvdata
from lvdata.simulate import rm_rhs
from lvmodel import rosenzweig, simple_forecasters
from lvmodel.reference import (
    REFERENCE_FORECASTERS,
    KNNAnalog,
    Persistence,
    RMOde,
    VARLog,
    evaluate,
    make_reference,
    select_on_validation,
)
from lvmodel.rosenzweig import RATE_NAMES, rm_bounds, rm_lsoda, rm_rk4

H = 5


@pytest.fixture(scope="module")
def sim() -> lvdata.Trajectories:
    """A small simulated set from the coursework's generator (known rates)."""
    out = lvdata.simulate(40, seed=11)
    assert out.params is not None
    return out


def log_linear_series(order: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """exp of a noise-free stable VAR(order) in log space; returns (series (1, steps, 2), A)."""
    rng = np.random.default_rng(seed)
    coefs = [np.array([[0.9, -0.3], [0.25, 0.85]]) * (0.6 if order > 1 else 1.0)]
    coefs += [rng.uniform(-0.15, 0.15, (2, 2)) for _ in range(order - 1)]
    icpt = np.array([0.05, -0.02])
    logs = [rng.normal(0, 0.5, 2) for _ in range(order)]
    for _ in range(steps - order):
        logs.append(icpt + sum(a @ logs[-1 - i] for i, a in enumerate(coefs)))
    return np.exp(np.array(logs))[None], np.array(coefs)


def test_registry_and_make_reference() -> None:
    assert {"persistence", "var", "knn", "rm_ode", "train_mean"} <= set(REFERENCE_FORECASTERS)
    assert isinstance(make_reference("var", order=2), VARLog)
    assert make_reference("var", order=2).order == 2
    with pytest.raises(ValueError, match="unknown reference forecaster"):
        make_reference("nope")


def test_registry_holds_the_classes_of_the_forecaster_modules() -> None:
    assert REFERENCE_FORECASTERS["rm_ode"] is rosenzweig.RMOde is RMOde
    assert REFERENCE_FORECASTERS["var"] is simple_forecasters.VARLog
    assert REFERENCE_FORECASTERS["knn"] is simple_forecasters.KNNAnalog
    assert REFERENCE_FORECASTERS["persistence"] is simple_forecasters.Persistence
    assert REFERENCE_FORECASTERS["train_mean"] is simple_forecasters.TrainMean


def test_persistence_exact() -> None:
    hist = np.random.default_rng(0).uniform(0.1, 5.0, (3, 7, 2))
    pred = Persistence().fit(None, None).predict(hist, 4)
    assert pred.shape == (3, 4, 2)
    np.testing.assert_array_equal(pred, np.repeat(hist[:, -1:, :], 4, axis=1))


def test_shapes_of_every_forecaster(sim: lvdata.Trajectories) -> None:
    values = sim.values
    fast = {"rm_ode": {"n_candidates": 64, "n_starts": 2, "lm_iters": 5, "polish_iters": 2}}
    for name in REFERENCE_FORECASTERS:
        model = make_reference(name, **fast.get(name, {})).fit(values[:30], sim.time)
        pred = model.predict(values[30:33, :40], 3)
        assert pred.shape == (3, 3, 2), name
        assert pred.dtype == np.float64 and np.all(np.isfinite(pred)), name
        with pytest.raises(ValueError):
            model.predict(values[30:33, :40], 0)


@pytest.mark.parametrize("order", [1, 2])
def test_var_recovers_a_log_linear_system(order: int) -> None:
    series, coefs = log_linear_series(order, 45, seed=order)
    model = VARLog(order=order)
    icpt, fitted = model.coefficients(series[0, :40])
    np.testing.assert_allclose(fitted, coefs, atol=1e-8)
    np.testing.assert_allclose(icpt, [0.05, -0.02], atol=1e-8)
    pred = model.predict(series[:, :40], H)
    np.testing.assert_allclose(pred, series[:, 40:45], rtol=1e-8)


def test_var_order_selected_on_validation() -> None:
    val = np.concatenate([log_linear_series(2, 45, seed=s)[0] for s in range(3)])
    best, table = select_on_validation("var", {"order": [1, 2]}, val, None, val, (30, 40), H)
    assert best == {"order": 2}
    assert [kw["order"] for kw, _ in table] == [1, 2]
    assert table[1][1] < 1e-12 < table[0][1]


def test_var_needs_enough_history() -> None:
    with pytest.raises(ValueError, match="at least"):
        VARLog(order=4).predict(np.ones((1, 10, 2)), H)


def test_knn_returns_the_continuation_of_a_training_window(sim: lvdata.Trajectories) -> None:
    train = sim.values[:20]
    model = KNNAnalog(window=12, n_neighbors=4).fit(train, sim.time)
    hist = np.stack([train[3, 10:40], train[17, 32:62]])  # the last 12 steps are what counts
    pred = model.predict(hist, H)
    # The data are float32 and the analog is rescaled in float64 (measured relative difference
    # 1.8e-8 on one machine, BLAS-order dependent): a few float32 ulps (6e-8 each), not 1e-12.
    np.testing.assert_allclose(pred[0], train[3, 40:45], rtol=1e-6)
    np.testing.assert_allclose(pred[1], train[17, 62:67], rtol=1e-6)
    again = KNNAnalog(window=12, n_neighbors=4).fit(train, sim.time).predict(hist, H)
    np.testing.assert_array_equal(pred, again)
    other = model.predict(sim.values[30:32, :40], H)  # unseen series: a weighted vote
    assert other.shape == (2, H, 2) and np.all(other > 0)


def test_knn_short_history_uses_its_length() -> None:
    train = np.random.default_rng(1).uniform(0.5, 2.0, (5, 30, 2))
    pred = KNNAnalog(window=30).fit(train, np.arange(30.0)).predict(train[:2, :6], H)
    np.testing.assert_allclose(pred, train[:2, 6:11], rtol=1e-12)


def test_rm_lsoda_matches_the_generator(sim: lvdata.Trajectories) -> None:
    for i in range(3):
        assert sim.params is not None
        theta = {k: float(v[i]) for k, v in sim.params.items()}
        full = lvdata.integrate("rosenzweig-macarthur", theta, sim.time)
        rates = [theta[k] for k in RATE_NAMES]
        part = rm_lsoda(rates, [theta["x0"], theta["y0"]], sim.time, 37)
        np.testing.assert_allclose(part, full[:37], rtol=0, atol=1e-12)


def test_rm_bounds_widen_the_generator_ranges() -> None:
    # DESIGN's ranges r U(0.1, 0.3), K U(5, 15), b U(0.2, 0.5), h U(0.05, 0.2), e U(0.3, 0.7),
    # c U(0.1, 0.3), each widened by 10 % of its width (lower ends kept >= half the range's)
    lo, hi = rm_bounds(0.1)
    np.testing.assert_allclose(lo, [0.08, 4.0, 0.17, 0.035, 0.26, 0.08], rtol=1e-12)
    np.testing.assert_allclose(hi, [0.32, 16.0, 0.53, 0.215, 0.74, 0.32], rtol=1e-12)
    lo_wide, _ = rm_bounds(1.0)
    np.testing.assert_allclose(lo_wide, [0.05, 2.5, 0.1, 0.025, 0.15, 0.05], rtol=1e-12)


def test_batched_lm_solves_known_problems() -> None:
    # y = a exp(b t) on 12 points, three problems at once, exact Jacobians
    t = np.linspace(0.0, 1.0, 12)
    true = np.array([[2.0, -1.0], [0.5, 0.7], [3.0, 0.2]])
    data = true[:, :1] * np.exp(true[:, 1:] * t)

    def residuals(q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out: np.ndarray = q[:, :1] * np.exp(q[:, 1:] * t) - data[idx]
        return out

    def jacobian(q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        e = np.exp(q[:, 1:] * t)
        return np.stack([e, q[:, :1] * t * e], axis=2)

    bounds = (np.array([0.1, -3.0]), np.array([5.0, 3.0]))
    q, cost = rosenzweig._batched_lm(np.ones((3, 2)), bounds, residuals, jacobian, iters=60)
    np.testing.assert_allclose(q, true, rtol=1e-8)
    assert np.all(cost < 1e-20)
    # an optimum outside the bounds: a stays on its upper bound
    capped = (bounds[0], np.array([1.5, 3.0]))
    q_c, cost_c = rosenzweig._batched_lm(np.ones((1, 2)), capped, residuals, jacobian, iters=60)
    assert q_c[0, 0] == 1.5 and cost_c[0] > 1e-3
    # a problem already at its optimum is left alone (cost at most tol)
    q_t, _ = rosenzweig._batched_lm(true[:1].copy(), bounds, residuals, jacobian, iters=5)
    np.testing.assert_array_equal(q_t, true[:1])


def test_rm_rk4_against_a_tight_reference_solve(sim: lvdata.Trajectories) -> None:
    assert sim.params is not None
    idx = [0, 1, 2]
    rates = np.stack([sim.params[n][idx] for n in RATE_NAMES], axis=1)
    z0 = np.stack([sim.params["x0"][idx], sim.params["y0"][idx]], axis=1)
    exact = np.stack(
        [
            solve_ivp(
                rm_rhs(*rates[i]), (0.0, 200.0), z0[i], "DOP853", sim.time, rtol=1e-12, atol=1e-14
            ).y.T
            for i in range(len(idx))
        ]
    )
    # RK4 with 4 substeps of 0.5 time units: measured max errors 5e-7 to 6e-5 (absolute)
    err4 = np.abs(rm_rk4(rates, z0, sim.time) - exact).max()
    assert err4 < 2e-4
    # fourth order: twice the substeps, about 16x smaller errors
    err8 = np.abs(rm_rk4(rates, z0, sim.time, substeps=8) - exact).max()
    assert err8 < err4 / 8


def test_rm_ode_recovers_simulated_series(sim: lvdata.Trajectories) -> None:
    idx = [0, 1, 2, 3]
    series = sim.values[idx]
    calls: list[tuple[int, int]] = []
    model = RMOde(progress=lambda done, total: calls.append((done, total))).fit(None, sim.time)
    for k in (50, 76):
        pred = model.predict(series[:, :k], H)
        mse = float(np.mean((pred - series[:, k : k + H]) ** 2))
        assert mse < 1e-6, (k, mse)
    assert sim.params is not None
    true = np.stack([sim.params[n][idx] for n in RATE_NAMES], axis=1)
    assert model.fitted_rates_ is not None
    # K and h trade off against each other; the others are pinned down
    rel = np.abs(model.fitted_rates_ / true - 1)[:, [0, 2, 4, 5]]
    assert np.median(rel) < 1e-3
    assert calls and calls[-1][0] == calls[-1][1]


def test_rm_ode_is_deterministic(sim: lvdata.Trajectories) -> None:
    kw: dict[str, Any] = {"n_candidates": 128, "n_starts": 2, "lm_iters": 10, "polish_iters": 5}
    hist = sim.values[5:7, :40]
    a = RMOde(**kw).fit(None, sim.time).predict(hist, H)
    b = RMOde(**kw).fit(None, sim.time).predict(hist, H)
    np.testing.assert_array_equal(a, b)


def test_rm_ode_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        RMOde(n_candidates=2, n_starts=4)
    with pytest.raises(ValueError):
        RMOde(prefixes=(1.0,))
    with pytest.raises(ValueError):
        RMOde().fit(None, [0.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        RMOde().predict(np.ones((1, 3, 2)), H)


# ------------------------------------------------------------------ DESIGN anchors (coursework)


@pytest.fixture(scope="module", name="coursework")
def coursework_split(coursework_file: Path) -> dict[str, np.ndarray]:
    traj = lvdata.load_trajectories(coursework_file)
    parts = lvdata.split(traj.values.shape[0], seed=0)
    out = {p: traj.values[getattr(parts, p)] for p in ("train", "val", "test")}
    out["time"] = traj.time
    return out


@pytest.mark.parametrize(("k", "anchor"), [(50, 0.349), (76, 0.222)])
def test_persistence_anchor(coursework: dict[str, np.ndarray], k: int, anchor: float) -> None:
    mse = evaluate(Persistence(), coursework["test"], k, H)["mse"]
    assert mse == pytest.approx(anchor, rel=0.02)


@pytest.mark.parametrize(
    ("name", "kw", "anchors", "factor"),
    [
        ("var", {"order": 3}, (0.0080, 0.0094), 1.05),  # the anchor's own order
        ("var", {}, (0.0080, 0.0094), 4.0),  # the order picked on validation
        ("knn", {}, (0.0123, 0.0035), 4.0),
    ],
)
def test_var_and_knn_near_their_anchors(
    coursework: dict[str, np.ndarray],
    name: str,
    kw: dict[str, int],
    anchors: tuple[float, float],
    factor: float,
) -> None:
    model = make_reference(name, **kw).fit(coursework["train"], coursework["time"])
    for k, anchor in zip((50, 76), anchors, strict=True):
        mse = evaluate(model, coursework["test"], k, H)["mse"]
        assert anchor / factor < mse < anchor * factor, (name, kw, k, mse)


def test_rm_ode_on_coursework_test_series(coursework: dict[str, np.ndarray]) -> None:
    model = RMOde().fit(coursework["train"], coursework["time"])
    series = coursework["test"][:8]
    for k in (50, 76):
        assert evaluate(model, series, k, H)["mse"] < 1e-4
