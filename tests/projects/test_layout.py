"""The layout the README promises: `projects/` holds one small module per MLproject entry point
and nothing else; figures leave no global state behind."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from mlflow.projects._project_spec import load_project

from lvtrack import plots

REPO = Path(__file__).resolve().parents[2]


def test_projects_holds_the_entry_points_only():
    entry_points = set(load_project(str(REPO))._entry_points)
    modules = {p.stem for p in (REPO / "projects").glob("*.py")} - {"__init__"}
    assert modules == entry_points
    long = {
        m: n
        for m in modules
        if (n := len((REPO / "projects" / f"{m}.py").read_text().splitlines())) > 110
    }
    assert not long, f"entry points should stay thin (about 100 lines): {long}"


def test_figures_are_not_kept_by_pyplot():
    """The in-process sweep plots in a loop: no figure may stay in pyplot's registry."""
    before = plt.get_fignums()
    time = np.linspace(0, 10, 20)
    series = np.ones((4, 20, 2))
    figures = [
        plots.plot_series_grid(time, series, title="x"),
        plots.plot_forecasts(time, series[:, :15], series[:, 15:], series[:, 15:], title="y"),
        plots.plot_curves([{"step": 1, "train_loss": 1.0, "val_loss": 1.2, "val_mse": 0.5}]),
        plots.plot_grid({(1e-3, 2): 0.1, (1e-3, 4): 0.2}, (1e-3,), (2, 4), "val_mse"),
    ]
    assert all(f.axes for f in figures)  # they drew something
    assert plt.get_fignums() == before
