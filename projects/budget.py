"""`budget` entry point: the experiment's FLOPs ledger as a table, printed and logged."""

from __future__ import annotations

import click
import mlflow
from mlflow.tracking import MlflowClient

from lvtrack.budget_table import budget_table
from lvtrack.describe import budget_description, describe_run
from lvtrack.options import budget_option, preset_option
from lvtrack.presets import get_preset
from lvtrack.resume import ReleaseError, release_dead_run
from lvtrack.tracking import setup_tracking


@click.command()
@preset_option
@budget_option
@click.option(
    "--release",
    "release",
    default="",
    help="Close this dead RUNNING run FAILED first, so that it holds only what it spent (its "
    "reservation is given back; it can still be resumed).",
)
@click.option(
    "--force",
    type=bool,
    default=False,
    help="With --release: release a run whose last attempt ran on another host (check first "
    "that it is dead there).",
)
def main(preset: str, budget: float | None, release: str, force: bool) -> None:
    """Print the FLOPs spent per phase and log the table as a run artifact."""
    p = get_preset(preset, budget=budget)
    exp_id = setup_tracking()
    if release.strip():
        try:
            spent = release_dead_run(MlflowClient(), release, int(p.budget), force=force)
        except ReleaseError as err:
            raise click.ClickException(str(err)) from None
        click.echo(
            f"released run {release.strip()}: closed FAILED, holds what it spent ({spent:.3e})"
        )
    table, metrics = budget_table(exp_id, p.budget)
    with mlflow.start_run(run_name="budget"):
        mlflow.set_tags({"phase": "report", "mlflow.runName": "budget", "preset": p.name})
        mlflow.log_param("budget_flops", p.budget)
        mlflow.log_metrics(metrics)
        describe_run(
            budget_description(metrics["flops_spent"], p.budget, metrics["flops_remaining"])
        )
        mlflow.log_text(table + "\n", "budget.md")
    click.echo(table)


if __name__ == "__main__":
    main()
