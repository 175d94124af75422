"""`train` entry point: one budgeted LoRA run with any settings (preset values by default).

`--resume-run-id ID` continues the training run ID that died (killed, interrupted or failed) from
its newest checkpoint, in the same MLflow run, with the settings it was started with.
"""

from __future__ import annotations

import json

import click

from lvtrack.options import (
    CONTEXT,
    COUNT,
    NONNEGATIVE,
    POSITIVE,
    TEXT,
    OrPreset,
    budget_option,
    preset_value,
    run_options,
    steps_option,
)
from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest
from lvtrack.training_run import resume_run, train_run

SCHEDULES = OrPreset(click.Choice(["constant", "cosine", "wsd"]))


@click.command()
@run_options
@preset_value("lr", POSITIVE, "--lr", "Peak learning rate")
@preset_value("rank", COUNT, "--rank", "LoRA rank")
@preset_value("context_length", CONTEXT, "--context-length", "Tokens per window")
@steps_option("initial_steps")
@preset_value("batch_size", COUNT, "--batch-size", "Windows per step")
@preset_value("schedule", SCHEDULES, "--schedule", "LR schedule")
@preset_value("warmup_steps", NONNEGATIVE, "--warmup-steps", "Warmup steps")
@budget_option
@click.option("--run-name", default="train", show_default=True)
@click.option(
    "--evaluate-test",
    default=False,
    show_default=True,
    type=OrPreset(click.BOOL),
    help="Also score the test split (report it once, for the final model).",
)
@preset_value(
    "checkpoint_every (0: by wall time only)",
    NONNEGATIVE,
    "--checkpoint-every",
    "Checkpoint every N steps, for resuming (0: not by steps)",
)
@click.option(
    "--resume-run-id",
    default=None,
    type=TEXT,
    help="Continue this training run (killed, interrupted or failed) from its newest "
    "checkpoint, with its own settings; other settings may be left out (--budget may differ).",
)
def main(
    preset: str,
    base_model: str | None,
    data_file: str,
    seed: int,
    eval_series: int | None,
    steps: int | None,
    budget: float | None,
    run_name: str,
    evaluate_test: bool | None,
    resume_run_id: str | None,
    **settings: object,
) -> None:
    """Train one LoRA run under the experiment's FLOPs budget and log it to MLflow."""
    if resume_run_id:
        # Every setting but the two that a resume takes on its own terms.
        params = click.get_current_context().params
        given = {k: v for k, v in params.items() if k not in ("budget", "resume_run_id")}
        defaults = {p.name: p.default for p in main.params if p.name}
        click.echo(json.dumps(resume_run(resume_run_id, budget, given, defaults)))
        return
    p = get_preset(
        preset,
        base_model=base_model,
        initial_steps=steps,
        budget=budget,
        eval_series=eval_series,
        **settings,
    )
    req = TrainRequest(
        p,
        "train",
        run_name,
        p.initial_steps,
        seed=seed,
        data_file=data_file,
        evaluate_test=bool(evaluate_test),
    )
    click.echo(json.dumps(train_run(req)))


if __name__ == "__main__":
    main()
