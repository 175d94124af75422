"""`data` entry point: load (and validate) the Lotka-Volterra file, or generate it, and log it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import mlflow
import numpy as np

import lvdata
from projects.plots import plot_series_grid
from projects.presets import PRESETS
from projects.tracking import log_dataset, setup_tracking

# The fewest series for which the 80/10/10 split leaves no part empty (7 give 6/0/1).
MIN_SERIES = 8


def protocol_steps() -> int:
    """Time steps every preset's forecasting protocol needs: history plus horizon."""
    return max(p.history_steps + p.horizon for p in PRESETS.values())


def check_usable(traj: lvdata.Trajectories, source: str) -> None:
    """Refuse data the experiment cannot use: too few series for the split, too few steps."""
    sizes = [len(part) for part in lvdata.split(traj.n_series)]
    if min(sizes) == 0:
        raise click.ClickException(
            f"{source}: {traj.n_series} series give an empty part in the train/validation/test "
            f"split (80/10/10: {sizes[0]}/{sizes[1]}/{sizes[2]}); at least {MIN_SERIES} series "
            "are needed. Use a bigger file, or generate one (`lvdata simulate --out FILE`)."
        )
    need = protocol_steps()
    if traj.n_steps < need:
        raise click.ClickException(
            f"{source}: series have {traj.n_steps} time steps; the forecasting protocol needs at "
            f"least {need} (history plus horizon). Use a file with longer series, or generate one "
            "(`lvdata simulate --out FILE`)."
        )


def ensure_data(
    data_file: Path, n_systems: int = 1000, seed: int = 0
) -> tuple[lvdata.Trajectories, str]:
    """Load and validate `data_file`, or simulate and save it when missing; (data, source).

    Raises `click.ClickException` (a clean exit 1 with the message, no traceback) when the file
    cannot be used: unreadable, malformed, invalid values, too few series or steps.
    """
    data_file = Path(data_file)
    try:
        if data_file.exists():
            traj, source = lvdata.load_trajectories(data_file), "file"
        else:
            folder = data_file.parent
            if folder.exists() and not folder.is_dir():
                raise click.ClickException(
                    f"{data_file}: cannot create the data file, {folder} is a file, not a folder. "
                    "Pass a --data-file path inside a folder."
                )
            click.echo(
                f"{data_file} not found: generating {n_systems} series (seed {seed})", err=True
            )
            traj = lvdata.simulate(n_systems=n_systems, seed=seed)
            folder.mkdir(parents=True, exist_ok=True)
            traj.save(data_file)
            source = "generated"
    except lvdata.DataError as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"{data_file}: cannot write the data file ({err})") from None
    check_usable(traj, str(data_file))
    return traj, source


@click.command()
@click.option(
    "--data-file",
    default="data/lotka_volterra_data.h5",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Data file to use; generated here when it does not exist.",
)
@click.option(
    "--n-systems",
    default=1000,
    show_default=True,
    type=click.IntRange(min=MIN_SERIES),
    help="Series to generate when the file does not exist.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the generator and of the train/val/test split.",
)
@click.option(
    "--decimals",
    default=2,
    show_default=True,
    type=click.IntRange(0, 6),
    help="LLMTime decimals of the codec fitted on the training split.",
)
def main(data_file: Path, n_systems: int, seed: int, decimals: int) -> None:
    """Make sure the data file exists and is valid, then log it, its split and its codec."""
    traj, source = ensure_data(data_file, n_systems, seed)

    parts = lvdata.split(traj.n_series, seed=seed)
    codec = lvdata.LLMTimeCodec.fit(traj.values[parts.train], decimals=decimals)
    setup_tracking()
    with mlflow.start_run(run_name="data"):
        mlflow.set_tag("phase", "data")
        mlflow.log_params(
            {
                "data_file": str(data_file),
                "source": source,
                "seed": seed,
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
        mlflow.log_metric(
            "train_share_below_10", float(np.mean(traj.values[parts.train] / codec.alpha < 10.0))
        )
        mlflow.log_dict(
            {k: getattr(parts, k).tolist() for k in ("train", "val", "test")}, "split.json"
        )
        mlflow.log_dict(codec.to_dict(), "codec.json")
        mlflow.log_figure(
            plot_series_grid(traj.time, traj.values[parts.val[:6]], title="validation series"),
            "series.png",
        )
    click.echo(
        json.dumps(
            {
                "data_file": str(data_file),
                "digest": digest,
                "alpha": codec.alpha,
                "series": traj.n_series,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
