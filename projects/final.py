"""`final` entry point: train with the best settings found so far, score val and test, register."""

from __future__ import annotations

import json
from dataclasses import replace

import click

from lvmodel.rungs import NLL_METRIC
from lvtrack.options import (
    BUDGET,
    COUNT,
    OrPreset,
    StepsOrBudget,
    budget_option,
    preset_value,
    run_options,
)
from lvtrack.presets import get_preset
from lvtrack.registry import REGISTERED_MODEL, RegistryError, promote
from lvtrack.request import TrainRequest
from lvtrack.selection import SELECTION_METRIC, best_of
from lvtrack.tracking import setup_tracking, ui_hint
from lvtrack.training_run import train_run, train_seeds


@click.command()
@run_options
@preset_value(
    "final_steps; tiny and qwen: budget",
    OrPreset(StepsOrBudget()),
    "--steps",
    "Optimizer steps, or 'budget': as many as what is left of the budget affords",
)
@budget_option
@preset_value(
    "final_seeds",
    COUNT,
    "--seeds",
    "Train with N seeds (seed, seed + 1, ...), each on an equal share of what the budget has "
    "left; the best on validation becomes the champion, the spread is logged",
)
def main(
    preset: str,
    base_model: str | None,
    data_file: str,
    seed: int,
    steps: int | str | None,
    budget: float | None,
    seeds: int | None,
    eval_series: int | None,
) -> None:
    """Settings: the best completed `search` trial (lr, rank, context), else the best finished
    `context` run (lr, rank, context), else the best `sweep` run
    (lr, rank) at the preset's context, else the preset's defaults. Trains for the preset's
    final steps (qwen and tiny: as many as what is left of the budget affords after the run's
    evaluations), scores the validation and the test split, and registers the model as
    `lv-forecaster`; then points the alias `champion` at the registered version with the best
    validation metric (what the `promote` entry point does)."""
    p = get_preset(
        preset, base_model=base_model, budget=budget, eval_series=eval_series, final_seeds=seeds
    )
    if steps is not None:
        p = replace(p, final_steps=None if steps == BUDGET else int(steps))
    exp_id = setup_tracking()
    lr, rank, ctx, source = p.lr, p.rank, p.context_length, "preset defaults"
    searched = best_of(exp_id, "search", p.name) or best_of(
        exp_id, "search", p.name, metric=f"{NLL_METRIC}_h{p.horizon}"
    )  # a completed trial, by its top rung's score: the forecasting metric, else NLL/D
    if best := searched:
        lr, rank, ctx, source = best.lr, best.rank, best.context_length, f"search:{best.run_id}"
    elif best := best_of(exp_id, "context", p.name):
        lr, rank, ctx, source = best.lr, best.rank, best.context_length, f"context:{best.run_id}"
    elif best := best_of(exp_id, "sweep", p.name):
        lr, rank, source = best.lr, best.rank, f"sweep:{best.run_id}"
    req = TrainRequest(
        replace(p, lr=lr, rank=rank, context_length=ctx),
        "final",
        "final",
        p.final_steps,
        seed=seed,
        data_file=data_file,
        evaluate_test=True,
        register=True,
    )
    click.echo(f"final: lr={lr:g} rank={rank} context={ctx} (from {source})", err=True)
    if p.final_seeds > 1:
        final = train_seeds(req, p.final_seeds, settings_source=source)
    else:
        final = train_run(req, settings_source=source)
    click.echo(json.dumps(final))
    # The alias goes to the best version by the validation metric (this one or an earlier one),
    # so that a first `final` leaves a champion to load; `promote` does the same on its own.
    try:
        _, reason = promote(REGISTERED_MODEL, metric=SELECTION_METRIC)
    except RegistryError as err:
        click.echo(f"final: no champion set: {err}", err=True)
    else:
        click.echo(f"final: {reason}", err=True)
    click.echo(f"final: {ui_hint(exp_id)}", err=True)


if __name__ == "__main__":
    main()
