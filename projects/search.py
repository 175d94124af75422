"""`search` entry point: budget-aware search on Optuna (successive halving at FLOPs rungs).

Start it on as many machines as you like with the same `--study` and storage (`--storage` or
$LV_STORAGE, the ledger's too) and tracking store: they share one study and one budget
(docs/team.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import click
import mlflow

from lvtrack.describe import describe_run, search_description
from lvtrack.ledger import storage_url
from lvtrack.options import budget_option, run_options, search_options
from lvtrack.presets import get_preset
from lvtrack.runs import parent_run
from lvtrack.search import Search, open_study
from lvtrack.search_settings import search_settings
from lvtrack.tracking import setup_tracking


@click.command()
@run_options
@search_options
@click.option("--study", default="", help="Optuna study name (default: per experiment and preset).")
@click.option(
    "--storage", default="",
    help="The study's and the budget ledger's RDB storage URL (default: $LV_STORAGE, else beside "
    "a SQLite or PostgreSQL tracking DB).",
)  # fmt: skip
@budget_option
@click.option(
    "--heartbeat", default=30, show_default=True, type=click.IntRange(min=1),
    help="Seconds between heartbeats; a dead worker's trial is retried after three missed.",
)  # fmt: skip
def main(
    preset: str, base_model: str | None, data_file: str, seed: int, eval_series: int | None,
    search_space: str | None, sampler: str, search_trials: int | None, rungs: int, eta: int,
    search_share: float | None, rung_score: str, decay_fraction: float, study: str,
    storage: str, budget: float | None, heartbeat: int,
) -> None:  # fmt: skip
    """Search lr, rank and context (the preset's space by default) with successive halving at
    FLOPs rungs; every trial is a child run of the search's parent run, charged to the ledger."""
    p = get_preset(
        preset, base_model=base_model, budget=budget, eval_series=eval_series,
        search_space=search_space, search_trials=search_trials, search_share=search_share,
    )  # fmt: skip
    settings = search_settings(
        p, rungs=rungs, eta=eta, decay_fraction=decay_fraction, sampler=sampler, seed=seed,
        heartbeat_s=heartbeat, rung_score=rung_score,
    )  # fmt: skip
    exp_id = setup_tracking()
    settings = replace(
        settings,
        study=study or f"lv-{exp_id}-{p.name}-{sampler}",
        storage=storage_url(storage),
    )
    opened = open_study(settings, p)  # refuses a storage that does not answer, another space
    worker = Search(settings, p, data_file, exp_id)
    resolved = {
        **{k: v for k, v in asdict(settings).items() if k != "space"},
        "space": settings.space.fingerprint(),
        "preset": p.name,
        "rung_flops": worker.r0,
    }
    with parent_run("search", "search", resolved, p.name) as run:
        mlflow.set_tags({"optuna.study": settings.study, "lv.search_worker": "true"})
        parent = worker.attach(opened, run.info.run_id)
        click.echo(
            f"search: study {settings.study} in {settings.storage}; parent run {parent}; "
            f"rungs of {worker.r0:.3e} x {eta}^k training FLOPs",
            err=True,
        )
        worker.run(opened)
        summary = worker.log_study(opened)
        describe_run(search_description(summary, p.budget), parent)
        mlflow.log_dict(summary, "search.json")
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main()
