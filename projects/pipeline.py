"""`pipeline` entry point: the coursework sequence, each step an MLflow project run.

data -> reference -> baseline -> initial -> sweep -> context -> final -> promote -> budget.
A step that already finished in this experiment (same phase and preset) is reused, not rerun, as
in MLflow's multistep-workflow example; so a pipeline that died half-way resumes where it stopped.
"""

from __future__ import annotations

import json

import click
import mlflow
from mlflow.exceptions import ExecutionException
from mlflow.tracking import MlflowClient

from projects.ledger import TAG_PHASE
from projects.options import (
    base_option,
    check_train_values,
    data_option,
    eval_series_option,
    parse_list,
    preset_option,
)
from projects.selection import experiment_id
from projects.tracking import setup_tracking

STEPS = (
    "data",
    "reference",
    "baseline",
    "initial",
    "sweep",
    "context",
    "final",
    "promote",
    "budget",
)
PHASE_OF = {
    "data": "data",
    "reference": "reference",
    "baseline": "baseline",
    "initial": "initial",
    "sweep": "sweep",
    "context": "context",
    "final": "final",
}


def already_ran(phase: str, preset: str) -> str | None:
    """Run id of a FINISHED run of this step (and preset, where it has one), or None."""
    preset_filter = "" if phase == "data" else f" and tags.preset = '{preset}'"
    runs = MlflowClient().search_runs(
        [experiment_id()],
        filter_string=f"tags.`{TAG_PHASE}` = '{phase}' and attributes.status = 'FINISHED'"
        + preset_filter,
        max_results=200,
    )
    # The step's own run, not a child of it (sweep children share the phase tag).
    ids = {r.info.run_id for r in runs}
    top = [r for r in runs if r.data.tags.get("mlflow.parentRunId") not in ids]
    return top[0].info.run_id if top else None


def step_params(
    step: str,
    preset: str,
    base_model: str,
    data_file: str,
    cuts: dict[str, str] | None = None,
) -> dict[str, str]:
    """The MLproject parameters of one step. `cuts` (`steps`, `lrs`, `ranks`, `eval_series`; only
    those given) go to the steps that take them, for a quick pass of a large model."""
    cuts = cuts or {}

    def cut(*names: str) -> dict[str, str]:
        return {n: cuts[n] for n in names if n in cuts}

    common = {"preset": preset}
    data = {"data_file": data_file}
    base = {"base_model": base_model} if base_model else {}
    return {
        "data": data,
        "reference": {**common, **data},
        "baseline": {**common, **data, **base, **cut("eval_series")},
        "initial": {**common, **data, **base, **cut("steps", "eval_series")},
        "sweep": {**common, **data, **base, **cut("steps", "lrs", "ranks", "eval_series")},
        "context": {**common, **data, **base, **cut("steps", "eval_series")},
        "final": {**common, **data, **base, **cut("steps", "eval_series")},
        "promote": {},
        "budget": common,
    }[step]


@click.command()
@preset_option
@base_option
@data_option
@click.option(
    "--steps", default=-1, type=int, help="Steps of every training phase (-1: the preset's)."
)
@click.option("--lrs", default="", help="The sweep's learning rates (default: the preset's).")
@click.option("--ranks", default="", help="The sweep's LoRA ranks (default: the preset's).")
@eval_series_option
def main(
    preset: str,
    base_model: str,
    data_file: str,
    steps: int,
    lrs: str,
    ranks: str,
    eval_series: int,
) -> None:
    """Run (or reuse) every step of the experiment in order."""
    check_train_values(steps=steps, eval_series=eval_series)
    parse_list(lrs, float, "--lrs")
    parse_list(ranks, int, "--ranks")
    given = {"steps": steps, "lrs": lrs, "ranks": ranks, "eval_series": eval_series}
    cuts = {k: str(v) for k, v in given.items() if v not in (-1, "")}
    setup_tracking()
    done: dict[str, str] = {}
    with mlflow.start_run(run_name="pipeline"):
        mlflow.set_tags({"phase": "pipeline", "preset": preset, "mlflow.runName": "pipeline"})
        for step in STEPS:
            phase = PHASE_OF.get(step)
            previous = already_ran(phase, preset) if phase else None
            if previous:
                click.echo(
                    f"pipeline: {step} already finished in run {previous}; reusing it", err=True
                )
                done[step] = previous
                continue
            click.echo(f"pipeline: running {step}", err=True)
            try:
                submitted = mlflow.projects.run(
                    ".",
                    entry_point=step,
                    parameters=step_params(step, preset, base_model, data_file, cuts),
                    env_manager="local",
                    experiment_id=experiment_id(),
                    synchronous=True,
                )
            except ExecutionException as err:
                mlflow.log_dict(done, "steps.json")
                raise click.ClickException(
                    f"pipeline step '{step}' failed ({err}); its output is above. Fix it and "
                    "rerun the pipeline: finished steps are reused."
                ) from None
            done[step] = submitted.run_id
        mlflow.log_dict(done, "steps.json")
    click.echo(json.dumps(done))


if __name__ == "__main__":
    main()
