"""`initial` entry point: the coursework's first LoRA run with the preset's defaults."""

from __future__ import annotations

import json

import click

from lvtrack.options import check_train_values, run_options, steps_option
from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest
from lvtrack.training_run import train_run


@click.command()
@run_options
@steps_option("the preset's initial_steps")
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
