"""`data` entry point: load (and validate) the Lotka-Volterra file, or generate it, and log it
with the split and the codec that every training run uses (`lvtrack.datafile.prepare_data`)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import mlflow
import numpy as np

from lvtrack.datafile import DEFAULT_SYSTEMS, MIN_SERIES, SPLIT_SEED, prepare_data
from lvtrack.plots import plot_series_grid
from lvtrack.presets import DEFAULT_DATA
from lvtrack.tracking import log_dataset, setup_tracking


@click.command()
@click.option(
    "--data-file",
    default=DEFAULT_DATA,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Data file to use; generated here when it does not exist.",
)
@click.option(
    "--n-systems",
    default=DEFAULT_SYSTEMS,
    show_default=True,
    type=click.IntRange(min=MIN_SERIES),
    help="Series to generate when the file does not exist.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the generator, when the file does not exist (the split is the experiment's: "
    f"seed {SPLIT_SEED}).",
)
def main(data_file: Path, n_systems: int, seed: int) -> None:
    """Make sure the data file exists and is valid, then log it, its split and its codec."""
    prep = prepare_data(data_file, n_systems, seed)
    traj, parts, codec = prep.traj, prep.parts, prep.codec
    setup_tracking()
    with mlflow.start_run(run_name="data"):
        mlflow.set_tag("phase", "data")
        mlflow.log_params(
            {
                "data_file": str(data_file),
                "source": prep.source,
                "seed": seed,
                "split_seed": SPLIT_SEED,
                "n_series": traj.n_series,
                "n_steps": traj.n_steps,
                "n_train": len(parts.train),
                "n_val": len(parts.val),
                "n_test": len(parts.test),
                **{f"codec_{k}": v for k, v in codec.to_dict().items()},
            }
        )
        digest = log_dataset(traj.values, data_file, name="lotka_volterra", context="data")
        pooled = traj.values.reshape(-1)
        for q in (1, 50, 90, 95, 99):
            mlflow.log_metric(f"p{q}", float(np.percentile(pooled, q)))
        below = float(np.mean(prep.series("train") / codec.alpha < 10.0))
        mlflow.log_metric("train_share_below_10", below)
        split = {k: getattr(parts, k).tolist() for k in ("train", "val", "test")}
        mlflow.log_dict(split, "split.json")
        mlflow.log_dict(codec.to_dict(), "codec.json")
        grid = plot_series_grid(traj.time, prep.series("val")[:6], title="validation series")
        mlflow.log_figure(grid, "series.png")
    summary = {"data_file": str(data_file), "digest": digest, "alpha": codec.alpha}
    click.echo(json.dumps({**summary, "series": traj.n_series}))


if __name__ == "__main__":
    main()
