"""The Rosenzweig-MacArthur / Lotka-Volterra generator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lvdata import RMParams, Trajectories, load_trajectories, simulate

PCTS = (50, 90, 95, 99)
DESIGN_PCTS = (0.78, 2.5, 3.5, 6.0)  # DESIGN.md section 3, the coursework file


def test_deterministic_by_seed() -> None:
    a = simulate(5, n_steps=20, seed=1)
    b = simulate(5, n_steps=20, seed=1)
    c = simulate(5, n_steps=20, seed=2)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_shapes_dtypes_params() -> None:
    t = simulate(4, n_steps=30, t_end=60.0, seed=0)
    assert t.values.shape == (4, 30, 2) and t.values.dtype == np.float32
    assert t.time.dtype == np.float64
    np.testing.assert_allclose(t.time, np.linspace(0, 60, 30))
    assert t.params is not None
    assert set(t.params) == {f.name for f in dataclasses.fields(RMParams)}
    np.testing.assert_allclose(t.values[:, 0, 0], t.params["x0"], rtol=1e-6)
    np.testing.assert_allclose(t.values[:, 0, 1], t.params["y0"], rtol=1e-6)
    for f in dataclasses.fields(RMParams):
        low, high = getattr(RMParams(), f.name)
        assert np.all((t.params[f.name] >= low) & (t.params[f.name] <= high))
    assert t.attrs["model"] == "rosenzweig-macarthur" and t.attrs["seed"] == 0


def test_lotka_volterra_option() -> None:
    t = simulate(3, n_steps=20, seed=0, model="lotka-volterra")
    assert t.params is not None and set(t.params) >= {"alpha", "beta", "delta", "gamma"}
    assert np.all(np.isfinite(t.values)) and np.all(t.values >= 0)


def test_custom_ranges_and_progress() -> None:
    seen: list[int] = []
    ranges = dataclasses.replace(RMParams(), K=(10.0, 10.0))
    t = simulate(3, n_steps=10, ranges=ranges, progress=seen.append)
    assert seen == [1, 2, 3]
    assert t.params is not None
    np.testing.assert_array_equal(t.params["K"], 10.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        simulate(2, model="lorenz")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        simulate(0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    t = simulate(6, n_steps=25, seed=3)
    back = load_trajectories(t.save(tmp_path / "sim.h5"))
    np.testing.assert_array_equal(back.values, t.values)
    np.testing.assert_array_equal(back.time, t.time)
    assert back.attrs["seed"] == 3 and back.attrs["model"] == "rosenzweig-macarthur"


def test_percentiles_match_design(simulated_1000: Trajectories) -> None:
    got = np.percentile(simulated_1000.values, PCTS)
    np.testing.assert_allclose(got, DESIGN_PCTS, rtol=0.15)
    assert simulated_1000.values.shape == (1000, 100, 2)


def test_percentiles_match_coursework(
    simulated_1000: Trajectories, coursework: Trajectories
) -> None:
    got = np.percentile(simulated_1000.values, PCTS)
    ref = np.percentile(coursework.values, PCTS)
    np.testing.assert_allclose(got, ref, rtol=0.15)
    # initial populations: uniform on [0.8, 1.2] in both
    for data in (simulated_1000, coursework):
        x0 = data.values[:, 0, :]
        assert x0.min() >= 0.8 and x0.max() <= 1.2
