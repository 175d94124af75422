"""`train` entry point: one budgeted LoRA run with any settings (preset values by default).

`--resume-run-id ID` continues the training run ID that died (killed, interrupted or failed) from
its newest checkpoint, in the same MLflow run, with the settings it was started with.
"""

from __future__ import annotations

import json

import click

from lvtrack.options import check_train_values, run_options, steps_option
from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest
from lvtrack.training_run import resume_run, train_run

SCHEDULES = click.Choice(["", "constant", "cosine", "wsd"])


@click.command()
@run_options
@click.option("--lr", default=-1.0, type=float, help="Peak learning rate (-1: preset).")
@click.option("--rank", default=-1, type=int, help="LoRA rank (-1: preset).")
@click.option("--context-length", default=-1, type=int, help="Tokens per window (-1: preset).")
@steps_option("the preset's initial_steps")
@click.option("--batch-size", default=-1, type=int, help="Windows per step (-1: preset).")
@click.option("--schedule", default="", type=SCHEDULES, help="LR schedule (empty: preset).")
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
@click.option(
    "--checkpoint-every",
    default=-1,
    type=int,
    help="Checkpoint every N steps, for resuming (-1: the preset's pace, by wall time; 0: not "
    "by steps).",
)
@click.option(
    "--resume-run-id",
    default="",
    help="Continue this training run (killed, interrupted or failed) from its newest "
    "checkpoint, with its own settings; other settings may be left out (--budget may differ).",
)
def main(
    preset: str,
    base_model: str,
    data_file: str,
    seed: int,
    eval_series: int,
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
    checkpoint_every: int,
    resume_run_id: str,
) -> None:
    """Train one LoRA run under the experiment's FLOPs budget and log it to MLflow."""
    settings = dict(
        lr=lr,
        rank=rank,
        context_length=context_length,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
        budget=budget,
        checkpoint_every=checkpoint_every,
        eval_series=eval_series,
    )
    check_train_values(steps=steps, **settings)
    if resume_run_id.strip():
        # Every setting but the two that a resume takes on its own terms.
        params = click.get_current_context().params
        given = {k: v for k, v in params.items() if k not in ("budget", "resume_run_id")}
        defaults = {p.name: p.default for p in main.params if p.name}
        click.echo(json.dumps(resume_run(resume_run_id, budget, given, defaults)))
        return
    p = get_preset(preset, initial_steps=steps, schedule=schedule, **settings)
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
