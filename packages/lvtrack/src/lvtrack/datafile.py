"""The experiment's data: the file (loaded and validated, or generated), its split and its codec.

One function, :func:`prepare_data`, makes the split and the codec; the `data` entry point logs
exactly what it returns, so what `data` shows is what every training run uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

import lvdata
from lvtrack.presets import PRESETS

# The fewest series for which the 80/10/10 split leaves no part empty (7 give 6/0/1).
MIN_SERIES = 8
# The generator's defaults when the file is missing (the `data` entry point can choose others).
DEFAULT_SYSTEMS = 1000
DEFAULT_GENERATOR_SEED = 0
# The split and the codec are the experiment's, not a run's: the same for every run.
SPLIT_SEED = 0
DECIMALS = 2


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
    data_file: Path | str,
    n_systems: int = DEFAULT_SYSTEMS,
    seed: int = DEFAULT_GENERATOR_SEED,
) -> tuple[lvdata.Trajectories, str]:
    """Load and validate `data_file`, or simulate `n_systems` series with generator `seed` and
    save them there when it is missing; returns (data, "file" or "generated").

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


@dataclass
class Prepared:
    """Data, split and codec of the experiment (the same for every run)."""

    traj: lvdata.Trajectories
    parts: lvdata.Split
    codec: lvdata.LLMTimeCodec
    data_path: Path
    source: str = "file"

    def series(self, split: str) -> np.ndarray:
        return self.traj.values[getattr(self.parts, split)]

    def scored(self, split: str, eval_series: int | None) -> np.ndarray:
        """The series of `split` a run scores: the first `eval_series` (all when None)."""
        s = self.series(split)
        return s if eval_series is None else s[:eval_series]


def prepare_data(
    data_file: Path | str,
    n_systems: int = DEFAULT_SYSTEMS,
    seed: int = DEFAULT_GENERATOR_SEED,
) -> Prepared:
    """The data file (generated with `n_systems`/`seed` if missing), the trajectory-level split
    (seed :data:`SPLIT_SEED`) and the codec fitted on its training part (:data:`DECIMALS`)."""
    path = Path(data_file)
    traj, source = ensure_data(path, n_systems=n_systems, seed=seed)
    parts = lvdata.split(traj.n_series, seed=SPLIT_SEED)
    codec = lvdata.LLMTimeCodec.fit(traj.values[parts.train], decimals=DECIMALS)
    return Prepared(traj=traj, parts=parts, codec=codec, data_path=path, source=source)
