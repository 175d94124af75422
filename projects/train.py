"""`train` entry point: one budgeted LoRA run with any settings (preset values by default)."""

from __future__ import annotations

import json

import click

from projects.experiment import TrainRequest, train_run
from projects.options import base_option, data_option, preset_option, seed_option
from projects.presets import get_preset


@click.command()
@preset_option
@base_option
@data_option
@seed_option
@click.option("--lr", default=-1.0, type=float, help="Peak learning rate (-1: preset).")
@click.option("--rank", default=-1, type=int, help="LoRA rank (-1: preset).")
@click.option("--context-length", default=-1, type=int, help="Tokens per window (-1: preset).")
@click.option("--steps", default=-1, type=int, help="Optimizer steps (-1: preset's initial).")
@click.option("--batch-size", default=-1, type=int, help="Windows per step (-1: preset).")
@click.option(
    "--schedule",
    default="",
    type=click.Choice(["", "constant", "cosine", "wsd"]),
    help="LR schedule (empty: preset).",
)
@click.option("--warmup-steps", default=-1, type=int, help="Warmup steps (-1: preset).")
@click.option("--budget", default=-1.0, type=float, help="Experiment budget in FLOPs (-1: preset).")
@click.option("--run-name", default="train", show_default=True)
@click.option(
    "--evaluate-test",
    default=False,
    show_default=True,
    type=bool,
    help="Also score the test split (report it once, for the final model).",
)
def main(
    preset: str,
    base_model: str,
    data_file: str,
    seed: int,
    lr: float,
    rank: int,
    context_length: int,
    steps: int,
    batch_size: int,
    schedule: str,
    warmup_steps: int,
    budget: float,
    run_name: str,
    evaluate_test: bool,
) -> None:
    """Train one LoRA run under the experiment's FLOPs budget and log it to MLflow."""
    for name, value in (
        ("lr", lr),
        ("rank", rank),
        ("context-length", context_length),
        ("steps", steps),
        ("batch-size", batch_size),
        ("budget", budget),
    ):
        if value != -1 and value <= 0:
            raise click.BadParameter(
                f"must be positive (or -1 for the preset), got {value}", param_hint=f"--{name}"
            )
    p = get_preset(
        preset,
        lr=lr,
        rank=rank,
        context_length=context_length,
        batch_size=batch_size,
        initial_steps=steps,
        schedule=schedule,
        warmup_steps=warmup_steps,
        budget=budget,
    )
    req = TrainRequest.from_preset(
        p,
        "train",
        run_name,
        p.initial_steps,
        seed=seed,
        data_file=data_file,
        evaluate_test=evaluate_test,
        base_model=base_model,
    )
    click.echo(json.dumps(train_run(req)))


if __name__ == "__main__":
    main()
