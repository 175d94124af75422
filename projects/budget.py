"""`budget` entry point: the experiment's FLOPs ledger as a table, printed and logged."""

from __future__ import annotations

import re

import click
import mlflow
from mlflow.tracking import MlflowClient

from projects.ledger import Ledger, read_ledger
from projects.options import preset_option
from projects.presets import get_preset
from projects.resume import TAG_HOST, ReleaseError, gone_here, release_dead_run, resume_hint
from projects.selection import experiment_id
from projects.tracking import setup_tracking

PHASE_ORDER = ("baseline", "initial", "train", "sweep", "context", "final")


def budget_table(budget: float) -> tuple[str, dict[str, float]]:
    """A markdown table like the seed's "Training Phases": phase, runs, FLOPs, share."""
    exp_id = experiment_id()
    ledger = read_ledger(MlflowClient(), exp_id, int(budget))
    phases = ledger.by_phase()
    order = [p for p in PHASE_ORDER if p in phases] + sorted(set(phases) - set(PHASE_ORDER))
    lines = ["| phase | runs | FLOPs | share of budget |", "|---|---:|---:|---:|"]
    metrics: dict[str, float] = {}
    for phase in order:
        runs, flops = phases[phase]
        lines.append(f"| {phase} | {runs} | {flops:.3e} | {flops / budget:.2%} |")
        # A phase tag is free text: keep the metric name within what MLflow accepts.
        metrics["flops_" + re.sub(r"[^\w.\-/ :]", "_", phase)] = float(flops)
    total = sum(flops for _, flops in phases.values())
    lines.append(
        f"| **total** | {sum(r for r, _ in phases.values())} | {total:.3e} | {total / budget:.2%} |"
    )
    lines.append(
        f"\nBudget {budget:.3e} FLOPs; running runs' reservations included: "
        f"{ledger.reserved:.3e}; remaining {ledger.remaining:.3e}."
    )
    lines += running_notes(ledger, exp_id)
    metrics.update(
        flops_spent=float(total),
        budget_share=total / budget,
        flops_remaining=float(ledger.remaining),
    )
    return "\n".join(lines), metrics


def running_notes(ledger: Ledger, exp_id: str) -> list[str]:
    """A line per running run saying what it holds; for one whose process is gone, what to do."""
    notes = []
    for e in ledger.entries:
        if not e.running or e.refused:
            continue
        held = f"run {e.name} ({e.run_id}) holds {e.charge:.3e} FLOPs (spent {e.spent:.3e})"
        if gone_here(e.tags):
            notes.append(
                f"- {held} but its process on this host is gone: resume it with "
                f"{resume_hint(e.run_id, exp_id)}, or give back what it did not "
                f"spend with: python -m projects.budget --release {e.run_id}"
            )
        else:
            notes.append(f"- {held}; running on {e.tags.get(TAG_HOST, '?')}")
    return ["", "Running:", *notes] if notes else []


@click.command()
@preset_option
@click.option("--budget", default=-1.0, type=float, help="Budget in FLOPs (-1: the preset's).")
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
def main(preset: str, budget: float, release: str, force: bool) -> None:
    """Print the FLOPs spent per phase and log the table as a run artifact."""
    p = get_preset(preset, budget=budget)
    setup_tracking()
    if release.strip():
        try:
            spent = release_dead_run(MlflowClient(), release, force=force)
        except ReleaseError as err:
            raise click.ClickException(str(err)) from None
        click.echo(
            f"released run {release.strip()}: closed FAILED, holds what it spent ({spent:.3e})"
        )
    table, metrics = budget_table(p.budget)
    with mlflow.start_run(run_name="budget"):
        mlflow.set_tags({"phase": "report", "mlflow.runName": "budget", "preset": p.name})
        mlflow.log_param("budget_flops", p.budget)
        mlflow.log_metrics(metrics)
        mlflow.log_text(table + "\n", "budget.md")
    click.echo(table)


if __name__ == "__main__":
    main()
