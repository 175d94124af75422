"""`initial` entry point: the coursework's first LoRA run with the preset's defaults."""

from __future__ import annotations

import json

import click

from projects.experiment import TrainRequest, train_run
from projects.options import (
    base_option,
    check_train_values,
    data_option,
    eval_series_option,
    preset_option,
    seed_option,
)
from projects.presets import get_preset


@click.command()
@preset_option
@base_option
@data_option
@seed_option
@click.option("--steps", default=-1, type=int, help="Steps (-1: the preset's initial_steps).")
@eval_series_option
def main(
    preset: str, base_model: str, data_file: str, seed: int, steps: int, eval_series: int
) -> None:
    """Train with the coursework defaults (rank, lr, batch, context of the preset)."""
    check_train_values(steps=steps, eval_series=eval_series)
    p = get_preset(preset, initial_steps=steps, eval_series=eval_series)
    req = TrainRequest.from_preset(
        p,
        "initial",
        "initial",
        p.initial_steps,
        seed=seed,
        data_file=data_file,
        base_model=base_model,
    )
    click.echo(json.dumps(train_run(req)))


if __name__ == "__main__":
    main()
