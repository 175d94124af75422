"""`initial` entry point: the coursework's first LoRA run with the preset's defaults."""

from __future__ import annotations

import json

import click

from lvtrack.options import run_options, steps_option
from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest
from lvtrack.training_run import train_run


@click.command()
@run_options
@steps_option("initial_steps")
def main(
    preset: str,
    base_model: str | None,
    data_file: str,
    seed: int,
    steps: int | None,
    eval_series: int | None,
) -> None:
    """Train with the coursework defaults (rank, lr, batch, context of the preset)."""
    p = get_preset(preset, base_model=base_model, initial_steps=steps, eval_series=eval_series)
    req = TrainRequest(p, "initial", "initial", p.initial_steps, seed=seed, data_file=data_file)
    click.echo(json.dumps(train_run(req)))


if __name__ == "__main__":
    main()
