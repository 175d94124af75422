"""`plan` entry point: each phase's planned FLOPs and share of the budget, before anything runs.

The plans are the ones the runs reserve in the ledger (`lvtrack.experiment_plan`), for the preset (and
cuts) given; nothing is logged or charged. With rates (`--rates FILE`, or `--measure-rates` to
measure them here), each step of `pipeline` also gets its predicted wall time
(`lvtrack.wall_plan`, docs/gpu.md "Wall-time plan").
"""

from __future__ import annotations

from pathlib import Path

import click

import lvdata
from lvflops import QWEN2_5_0_5B
from lvmodel.base import DEFAULT_BASE, BaseModelError, base_shape
from lvtrack.datafile import DECIMALS, DEFAULT_SYSTEMS, SPLIT_SEED
from lvtrack.experiment_plan import experiment_plan, plan_table, with_walls
from lvtrack.options import (
    base_option,
    budget_option,
    eval_series_option,
    preset_option,
    search_options,
)
from lvtrack.pipeline_steps import STEPS
from lvtrack.presets import DEFAULT_DATA, get_preset
from lvtrack.rates_probe import rates_for
from lvtrack.search_settings import search_settings
from lvtrack.wall_plan import pipeline_walls, wall_summary


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
@budget_option
@eval_series_option
@click.option(
    "--method", default="grid", show_default=True, type=click.Choice(["grid", "search"]),
    help="The pipeline's way of choosing settings (see `pipeline --method`).",
)  # fmt: skip
@search_options
@click.option(
    "--rates", "rates_file", default="", help="A rates JSON (from --measure-rates, or "
    "benchmarks/gpu_check.py --rates): add each pipeline step's predicted wall time.",
)  # fmt: skip
@click.option(
    "--measure-rates", is_flag=True, help="Measure the rates on this machine with the preset's "
    "base (minutes for tiny on a CPU), cache them, and add the predicted wall times.",
)  # fmt: skip
def main(
    preset: str, base_model: str | None, n_series: int, budget: float | None,
    eval_series: int | None, method: str, rates_file: str, measure_rates: bool,
    search_space: str | None, search_trials: int | None, search_share: float | None,
    **search: object,
) -> None:  # fmt: skip
    """Print the experiment's FLOPs plan by phase for the preset (and search settings), and
    with rates each pipeline step's predicted wall time."""
    p = get_preset(
        preset, base_model=base_model, budget=budget, eval_series=eval_series,
        search_space=search_space, search_trials=search_trials, search_share=search_share,
    )  # fmt: skip
    settings = search_settings(p, **search)
    base = p.base_model
    entry_points = {s: f"projects.{s}" for s in (*STEPS["search"], "sweep", "context")}
    project = Path.cwd() if Path("MLproject").is_file() else None
    rates = rates_for(
        rates_file, measure_rates, p, base, n_series, DEFAULT_DATA,
        {**entry_points, "pipeline": "projects.pipeline"}, project,
    )  # fmt: skip
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
    n_val, n_test = (len(s[: p.eval_series]) for s in (parts.val, parts.test))
    chosen = settings if method == "search" else None
    phases = experiment_plan(p, shape, DECIMALS, n_val, n_test, chosen)
    click.echo(f"plan of preset {p.name} on {base} ({n_val} val / {n_test} test series scored)")
    if rates is None:
        click.echo(plan_table(phases, p.budget))
        click.echo(
            "(each step's predicted wall time: add --measure-rates, or --rates FILE)", err=True
        )
        return
    final = next(ph for ph in phases if ph.phase == "final")
    walls = pipeline_walls(p, shape, DECIMALS, n_val, n_test, rates, final.steps, chosen)
    click.echo(plan_table(with_walls(phases, walls), p.budget, walls))
    click.echo(wall_summary(walls, p, rates))


if __name__ == "__main__":
    main()
