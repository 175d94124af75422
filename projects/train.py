"""`train` entry point: one budgeted LoRA run with any settings (preset values by default).

`--resume-run-id ID` continues the training run ID that died (killed, interrupted or failed) from
its newest checkpoint, in the same MLflow run, with the settings it was started with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from mlflow.tracking import MlflowClient

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
from projects.resume import ResumeError, find_resumable
from projects.tracking import setup_tracking


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
@eval_series_option
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
    help="Checkpoint every N steps, for resuming (-1: preset; 0: only at the end).",
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
    lr: float,
    rank: int,
    context_length: int,
    steps: int,
    batch_size: int,
    schedule: str,
    warmup_steps: int,
    budget: float,
    run_name: str,
    eval_series: int,
    evaluate_test: bool,
    checkpoint_every: int,
    resume_run_id: str,
) -> None:
    """Train one LoRA run under the experiment's FLOPs budget and log it to MLflow."""
    check_train_values(
        lr=lr,
        rank=rank,
        context_length=context_length,
        steps=steps,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
        budget=budget,
        checkpoint_every=checkpoint_every,
        eval_series=eval_series,
    )
    if resume_run_id.strip():
        # Every setting but the two that a resume takes on its own terms.
        params = click.get_current_context().params
        given = {k: v for k, v in params.items() if k not in ("budget", "resume_run_id")}
        resume_main(resume_run_id, budget, given)
        return
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
        checkpoint_every=checkpoint_every,
        eval_series=eval_series,
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


def resume_main(run_id: str, budget: float, given: dict[str, Any]) -> None:
    """Resume `run_id` with its logged settings; settings given here must agree with them."""
    setup_tracking()
    try:
        resume = find_resumable(MlflowClient(), run_id)
    except ResumeError as err:
        raise click.ClickException(str(err)) from None
    for note in resume.notes:
        click.echo(f"note: {note}", err=True)
    req = TrainRequest.from_params(resume.params, budget=budget)
    if conflicts := settings_conflicts(req, given):
        raise click.ClickException(
            f"run {resume.run_id} resumes with the settings it was started with; these differ: "
            f"{'; '.join(conflicts)}. Leave them out (--budget may change)."
        )
    click.echo(json.dumps(train_run(req, resume=resume)))


def settings_conflicts(req: TrainRequest, given: dict[str, Any]) -> list[str]:
    """Settings given on the command line (anything but the option's default) that differ from
    the resumed run's. Defaults count as "not given": `mlflow run` passes every parameter."""
    defaults = {p.name: p.default for p in main.params if p.name}
    # The run's value of each setting: the request's field of the same name, but the preset's
    # name and the base model it resolves to.
    logged = {name: getattr(req, name) for name in given if name != "eval_series"}
    logged.update(preset=req.preset.name, base_model=req.base, eval_series=req.preset.eval_series)
    out = []
    for name, value in given.items():
        if value == defaults.get(name) or value == logged[name]:
            continue
        if (
            name in ("base_model", "data_file")
            and Path(value).resolve() == Path(str(logged[name])).resolve()
        ):
            continue
        out.append(f"--{name.replace('_', '-')} {value} (the run's: {logged[name]})")
    return out


if __name__ == "__main__":
    main()
