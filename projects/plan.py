"""`plan` entry point: each phase's planned FLOPs and share of the budget, before anything runs.

The plans are the ones the runs reserve in the ledger (`lvtrack.planning`), for the preset (and
cuts) given; nothing is logged or charged.
"""

from __future__ import annotations

import click

import lvdata
from lvflops import QWEN2_5_0_5B
from lvmodel.base import DEFAULT_BASE, BaseModelError, base_shape
from lvtrack.datafile import DECIMALS, DEFAULT_SYSTEMS, SPLIT_SEED
from lvtrack.options import (
    base_option,
    check_train_values,
    eval_series_option,
    preset_option,
    search_options,
)
from lvtrack.planning import experiment_plan, plan_table
from lvtrack.presets import get_preset
from lvtrack.search import search_settings


@click.command()
@preset_option
@base_option
@click.option(
    "--n-series",
    default=DEFAULT_SYSTEMS,
    show_default=True,
    type=click.IntRange(min=8),
    help="Series in the data file (the split's validation and test parts are scored).",
)
@click.option("--budget", default=-1.0, type=float, help="Budget in FLOPs (-1: the preset's).")
@eval_series_option
@click.option(
    "--method", default="grid", show_default=True, type=click.Choice(["grid", "search"]),
    help="The pipeline's way of choosing settings (see `pipeline --method`).",
)  # fmt: skip
@search_options
def main(
    preset: str, base_model: str, n_series: int, budget: float, eval_series: int, method: str,
    **search: object,
) -> None:  # fmt: skip
    """Print the experiment's FLOPs plan by phase for the preset (and search settings)."""
    check_train_values(budget=budget, eval_series=eval_series)
    p = get_preset(preset, budget=budget, eval_series=eval_series)
    space, trials, share = search.pop("space"), search.pop("trials"), search.pop("share")
    p, settings = search_settings(p, str(space), int(str(trials)), float(str(share)), **search)
    base = base_model or p.base_model
    try:
        shape = base_shape(base)
    except BaseModelError as err:
        if base != DEFAULT_BASE:
            raise click.ClickException(str(err)) from None
        # A plan needs only the shape, which lvflops knows for the coursework's model.
        click.echo(
            f"note: {base}'s config is not readable here; using lvflops.QWEN2_5_0_5B", err=True
        )
        shape = QWEN2_5_0_5B
    parts = lvdata.split(n_series, seed=SPLIT_SEED)
    n_val, n_test = (min(len(s), p.eval_series or len(s)) for s in (parts.val, parts.test))
    phases = experiment_plan(
        p, shape, DECIMALS, n_val, n_test, settings if method == "search" else None
    )
    click.echo(f"plan of preset {p.name} on {base} ({n_val} val / {n_test} test series scored)")
    click.echo(plan_table(phases, p.budget))


if __name__ == "__main__":
    main()
