"""The layout the README promises: `projects/` holds one small module per MLproject entry point
and nothing else; no function in the packages or the entry points is long; figures leave no
global state behind."""

from __future__ import annotations

import ast
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


MAX_FUNCTION_LINES = 80


def code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from `def` to the function's last line, less its docstring."""
    lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
    first = node.body[0]
    value = first.value if isinstance(first, ast.Expr) else None
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        lines -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return lines


def test_code_lines_counts_a_function_without_its_docstring():
    tree = ast.parse('def f(x):\n    """Two\n    lines."""\n    y = x\n\n    return y\n')
    assert code_lines(tree.body[0]) == 4  # type: ignore[arg-type]


def test_no_function_is_long():
    sources = [*REPO.glob("packages/*/src/**/*.py"), *REPO.glob("projects/*.py")]
    long = {}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and (n := code_lines(node)) > MAX_FUNCTION_LINES:  # type: ignore[arg-type]
                long[f"{path.relative_to(REPO)}:{node.name}"] = n
    assert len(sources) > 80  # the glob found the tree
    assert not long, f"split these into named steps (at most {MAX_FUNCTION_LINES} lines): {long}"


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
