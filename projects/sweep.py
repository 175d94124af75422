"""`sweep` entry point: lr x rank grid, one parent run with a child run per cell."""

from __future__ import annotations

import json

import click
import mlflow

from lvtrack.describe import describe_run, parent_description
from lvtrack.options import LRS, RANKS, preset_value, run_options, steps_option
from lvtrack.plots import plot_grid
from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest
from lvtrack.runs import parent_run
from lvtrack.selection import SELECTION_METRIC
from lvtrack.training_run import train_run


@click.command()
@run_options
@preset_value("sweep_lrs", LRS, "--lrs", "Comma-separated learning rates")
@preset_value("sweep_ranks", RANKS, "--ranks", "Comma-separated LoRA ranks")
@steps_option("sweep_steps")
def main(
    preset: str,
    base_model: str | None,
    data_file: str,
    seed: int,
    lrs: tuple[float, ...] | None,
    ranks: tuple[int, ...] | None,
    steps: int | None,
    eval_series: int | None,
) -> None:
    """Train every (lr, rank) of the grid for a short run; children of one parent run."""
    p = get_preset(
        preset,
        base_model=base_model,
        sweep_steps=steps,
        eval_series=eval_series,
        sweep_lrs=lrs,
        sweep_ranks=ranks,
    )
    grid_lrs, grid_ranks = p.sweep_lrs, p.sweep_ranks
    scores: dict[tuple[float, int], float] = {}
    with parent_run(
        "sweep",
        "sweep",
        {
            "preset": p.name,
            "lrs": ",".join(map(str, grid_lrs)),
            "ranks": ",".join(map(str, grid_ranks)),
            "steps": p.sweep_steps,
        },
        p.name,
    ):
        for lr in grid_lrs:
            for rank in grid_ranks:
                req = TrainRequest.from_preset(
                    p,
                    "sweep",
                    f"sweep lr={lr:g} r={rank}",
                    p.sweep_steps,
                    lr=lr,
                    rank=rank,
                    seed=seed,
                    data_file=data_file,
                )
                scores[(lr, rank)] = train_run(req, nested=True).get(SELECTION_METRIC, float("nan"))
        (best_lr, best_rank), best = min(scores.items(), key=lambda kv: kv[1])
        mlflow.log_params({"best_lr": best_lr, "best_rank": best_rank})
        mlflow.log_metric(f"best_{SELECTION_METRIC}", best)
        children = [({"lr": lr, "rank": r}, v) for (lr, r), v in scores.items()]
        describe_run(parent_description("sweep", len(scores), "runs", children))
        mlflow.log_figure(
            plot_grid(scores, grid_lrs, grid_ranks, SELECTION_METRIC), "plots/sweep_grid.png"
        )
    click.echo(json.dumps({"best_lr": best_lr, "best_rank": best_rank, SELECTION_METRIC: best}))


if __name__ == "__main__":
    main()
