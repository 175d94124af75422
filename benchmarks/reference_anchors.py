"""Reference forecasters against DESIGN's accuracy anchors on the coursework split.

Loads the data file, splits it with ``lvdata.split(n, seed=SEED)`` (800/100/100 for the coursework
file), fits every forecaster of ``lvmodel.reference.REFERENCE_FORECASTERS`` on the training split
and prints, for each history length K and the horizon H, MSE and MAE in original units on the
validation and test splits (``lvmodel.metrics.forecast_metrics``: history = the first K steps,
truth = the next H), beside DESIGN's test-split MSE anchors and the seconds each test forecast
took. With ``--select`` it also picks the VAR order and the kNN settings on the validation split
(lowest validation MSE averaged over the K values) and shows their test scores: the defaults of
``lvmodel.reference`` came from this.

Usage: python benchmarks/reference_anchors.py [--data FILE] [-k 50 -k 76] [--horizon 5]
       [--only rm_ode] [--select] [--no-progress] [--json OUT]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

import lvdata
from lvmodel.reference import REFERENCE_FORECASTERS, evaluate, make_reference, select_on_validation

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/lotka_volterra_data.h5"

# DESIGN section 3, "Accuracy anchors": test-split MSE (original units) at H = 5, by K.
ANCHORS: dict[str, dict[int, float]] = {
    "persistence": {50: 0.349, 76: 0.222},
    "var": {50: 0.0080, 76: 0.0094},
    "knn": {50: 0.0123, 76: 0.0035},
    "rm_ode": {50: 1.2e-5, 76: 1.7e-5},
}
EXTRA = {"var(order=3)": ("var", {"order": 3})}  # the order that reproduces DESIGN's VAR anchor
KNN_GRID = {"window": (10, 20, 30, 40), "n_neighbors": (5, 10, 20), "level_weight": (0.3, 1.0, 3.0)}
VAR_GRID = {"order": (1, 2, 3, 4, 5, 6)}


def _bar_progress(desc: str) -> Any:
    bar = tqdm(desc=desc, leave=False, unit="it")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return progress


def _row(
    label: str,
    name: str,
    kw: dict[str, Any],
    data: dict[str, np.ndarray],
    time_grid: np.ndarray,
    k: int,
    horizon: int,
    show_progress: bool,
) -> dict[str, Any]:
    row: dict[str, Any] = {"forecaster": label, "K": k, "H": horizon, "kwargs": kw}
    for part in ("val", "test"):
        extra = {}
        if name == "rm_ode" and show_progress:
            extra["progress"] = _bar_progress(f"{label} K={k} {part}")
        model = make_reference(name, **kw, **extra).fit(data["train"], time_grid)
        t0 = time.perf_counter()
        m = evaluate(model, data[part], k, horizon)
        row[f"{part}_seconds"] = time.perf_counter() - t0
        row[f"{part}_mse"], row[f"{part}_mae"] = m["mse"], m["mae"]
    anchor = ANCHORS.get(name, {}).get(k) if horizon == 5 else None
    row["anchor_test_mse"] = anchor
    return row


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'forecaster':<14}{'K':>4}{'val MSE':>11}{'val MAE':>10}{'test MSE':>11}"
        f"{'test MAE':>10}{'anchor':>9}{'x anchor':>9}{'test s':>8}"
    )
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        ratio = r["test_mse"] / r["anchor_test_mse"] if r["anchor_test_mse"] else None
        click.echo(
            f"{r['forecaster']:<14}{r['K']:>4}{_fmt(r['val_mse']):>11}{_fmt(r['val_mae']):>10}"
            f"{_fmt(r['test_mse']):>11}{_fmt(r['test_mae']):>10}{_fmt(r['anchor_test_mse']):>9}"
            f"{_fmt(ratio):>9}{r['test_seconds']:>8.1f}"
        )


@click.command()
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
    help="Coursework HDF5 file.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of lvdata.split.")
@click.option("--contexts", "-k", multiple=True, type=int, default=(50, 76), show_default=True)
@click.option("--horizon", default=5, show_default=True)
@click.option("--only", multiple=True, help="Forecasters to run (default: all).")
@click.option("--select", is_flag=True, help="Also pick VAR order and kNN settings on val.")
@click.option("--progress/--no-progress", default=True, help="tqdm bars for rm_ode.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path))
def main(
    data_file: Path,
    seed: int,
    contexts: tuple[int, ...],
    horizon: int,
    only: tuple[str, ...],
    select: bool,
    progress: bool,
    json_out: Path | None,
) -> None:
    """Print MSE/MAE of the reference forecasters beside DESIGN's anchors."""
    traj = lvdata.load_trajectories(data_file)
    parts = lvdata.split(traj.values.shape[0], seed=seed)
    data = {p: traj.values[getattr(parts, p)] for p in ("train", "val", "test")}
    click.echo(
        f"{data_file}: train/val/test {len(parts.train)}/{len(parts.val)}/{len(parts.test)} "
        f"(split seed {seed}), H={horizon}, original units; anchor = DESIGN test MSE"
    )
    names = list(only) or list(REFERENCE_FORECASTERS)
    jobs: list[tuple[str, str, dict[str, Any]]] = [(n, n, {}) for n in names]
    jobs += [(label, n, kw) for label, (n, kw) in EXTRA.items() if n in names]
    rows = [
        _row(label, name, kw, data, traj.time, k, horizon, progress)
        for k in contexts
        for label, name, kw in jobs
    ]
    _print_table(rows)

    chosen = []
    if select:
        click.echo(
            f"\nselected on the validation split (lowest val MSE averaged over K={contexts}):"
        )
        for name, grid in (("var", VAR_GRID), ("knn", KNN_GRID)):
            if name not in names:
                continue
            best, table = select_on_validation(
                name, grid, data["train"], traj.time, data["val"], contexts, horizon
            )
            for k in contexts:
                r = _row(f"{name}*", name, best, data, traj.time, k, horizon, False)
                chosen.append({**r, "grid": [[kw, s] for kw, s in table]})
                click.echo(
                    f"  K={k} {name}: {best}  val MSE {_fmt(r['val_mse'])}  "
                    f"test MSE {_fmt(r['test_mse'])}  (anchor {_fmt(r['anchor_test_mse'])})"
                )
    if json_out is not None:
        json_out.write_text(json.dumps({"rows": rows, "selected": chosen}, indent=2))
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
