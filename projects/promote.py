"""`promote` entry point: move the registry alias to the version with the best validation metric.

    python -m projects.promote --name lv-forecaster --metric val_mse_filled_h5 [--alias champion]

Runs inside an MLflow run (tag `phase=promote`) that records the decision: params name, metric,
alias, direction; tags `promoted_version`, `promotion_reason`, `promotion_moved`; metric
`champion_<metric>`. Exits with status 1 and a message when the model has no versions (or none
with the metric). Running it again without new versions changes nothing in the registry.
"""

from __future__ import annotations

import click
import mlflow

from lvtrack.describe import describe_run, promote_description
from lvtrack.registry import REGISTERED_MODEL, RegistryError, promote
from lvtrack.selection import SELECTION_METRIC
from lvtrack.tracking import setup_tracking


@click.command()
@click.option("--name", default=REGISTERED_MODEL, show_default=True, help="Registered model.")
@click.option(
    "--metric",
    default=SELECTION_METRIC,
    show_default=True,
    help="Validation forecasting metric, read from version tags (else the source run).",
)
@click.option("--alias", default="champion", show_default=True, help="Alias to move.")
@click.option(
    "--direction",
    type=click.Choice(["lower", "higher"]),
    default="lower",
    show_default=True,
    help="Whether lower or higher values of the metric are better.",
)
@click.option(
    "--allow-loss", is_flag=True, help="Allow promoting on a loss (a poor proxy for accuracy)."
)
def main(name: str, metric: str, alias: str, direction: str, allow_loss: bool) -> None:
    """Point @ALIAS at the version of NAME with the best METRIC and log why."""
    setup_tracking()
    with mlflow.start_run(run_name="promote"):
        mlflow.set_tag("phase", "promote")
        mlflow.log_params({"name": name, "metric": metric, "alias": alias, "direction": direction})
        before = _holder(name, alias)
        try:
            mv, reason = promote(
                name,
                metric=metric,
                alias=alias,
                higher_is_better=direction == "higher",
                allow_loss=allow_loss,
            )
        except (RegistryError, ValueError) as err:
            mlflow.set_tag("promotion_error", str(err))
            raise click.ClickException(str(err)) from None
        value = float(mv.tags[f"promotion.{alias}.value"])
        mlflow.set_tags(
            {
                "promoted_version": mv.version,
                "promotion_reason": reason,
                "promotion_moved": str(before != str(mv.version)).lower(),
                "previous_version": before or "none",
            }
        )
        mlflow.log_metric(f"champion_{metric}", value)
        describe_run(promote_description(mv.version, alias, metric, value, before))
    click.echo(reason)


def _holder(name: str, alias: str) -> str | None:
    """The version that holds `alias` now, or None."""
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


if __name__ == "__main__":
    main()
