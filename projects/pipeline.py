"""`pipeline` entry point: the coursework sequence, each step an MLflow project run.

data -> reference -> baseline -> initial -> search -> final -> report -> budget, or with
`--method grid` the coursework's sweep and context in place of the search. `final` promotes the
champion itself.
A step that already finished in this experiment is reused (`lvtrack.pipeline_steps`), so a pipeline that
died half-way resumes where it stopped.
"""

from __future__ import annotations

import json

import click
import mlflow
from mlflow.exceptions import ExecutionException

from lvtrack.describe import describe_run, pipeline_description
from lvtrack.options import (
    LRS,
    RANKS,
    base_option,
    data_option,
    eval_series_option,
    preset_option,
    preset_value,
    steps_option,
)
from lvtrack.pipeline_steps import PHASES, STEPS, already_ran, step_params
from lvtrack.tracking import setup_tracking, ui_hint


@click.command()
@preset_option
@base_option
@data_option
@steps_option("steps of each training phase")
@preset_value("sweep_lrs", LRS, "--lrs", "The sweep's learning rates")
@preset_value("sweep_ranks", RANKS, "--ranks", "The sweep's LoRA ranks")
@eval_series_option
@click.option(
    "--method",
    default="search",
    show_default=True,
    type=click.Choice(sorted(STEPS)),
    help="How settings are chosen: the budget-aware search, or the coursework's grid (sweep, "
    "then context); docs/search.md compares them.",
)
def main(
    preset: str,
    base_model: str | None,
    data_file: str,
    steps: int | None,
    lrs: tuple[float, ...] | None,
    ranks: tuple[int, ...] | None,
    eval_series: int | None,
    method: str,
) -> None:
    """Run (or reuse) every step of the experiment in order."""
    given = {"steps": steps, "lrs": lrs, "ranks": ranks, "eval_series": eval_series}
    cuts = {
        k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
        for k, v in given.items()
        if v is not None
    }
    experiment_id = setup_tracking()
    done: dict[str, str] = {}
    reused: list[str] = []
    with mlflow.start_run(run_name="pipeline"):
        mlflow.set_tags(
            {"phase": "pipeline", "preset": preset, "mlflow.runName": "pipeline", "method": method}
        )
        for step in STEPS[method]:
            previous = already_ran(experiment_id, step, preset) if step in PHASES else None
            if previous:
                click.echo(
                    f"pipeline: {step} already finished in run {previous}; reusing it", err=True
                )
                done[step] = previous
                reused.append(step)
                continue
            click.echo(f"pipeline: running {step}", err=True)
            try:
                submitted = mlflow.projects.run(
                    ".",
                    entry_point=step,
                    parameters=step_params(step, preset, base_model, data_file, cuts),
                    env_manager="local",
                    experiment_id=experiment_id,
                    synchronous=True,
                )
            except ExecutionException as err:
                mlflow.log_dict(done, "steps.json")
                raise click.ClickException(
                    f"pipeline step '{step}' failed ({err}); its output is above. Fix it and "
                    "rerun the pipeline: finished steps are reused."
                ) from None
            done[step] = submitted.run_id
        describe_run(pipeline_description(method, list(done), reused))
        mlflow.log_dict(done, "steps.json")
    click.echo(json.dumps(done))
    click.echo(f"pipeline: {ui_hint(experiment_id)}", err=True)


if __name__ == "__main__":
    main()
