"""`budget` entry point: the experiment's FLOPs ledger as a table, printed and logged."""

from __future__ import annotations

import click
import mlflow
from mlflow.tracking import MlflowClient

from projects.ledger import read_ledger
from projects.options import preset_option
from projects.presets import get_preset
from projects.selection import experiment_id
from projects.tracking import setup_tracking

PHASE_ORDER = ("baseline", "initial", "train", "sweep", "context", "final")


def budget_table(budget: float) -> tuple[str, dict[str, float]]:
    """A markdown table like the seed's "Training Phases": phase, runs, FLOPs, share."""
    ledger = read_ledger(MlflowClient(), experiment_id(), int(budget))
    phases = ledger.by_phase()
    order = [p for p in PHASE_ORDER if p in phases] + sorted(set(phases) - set(PHASE_ORDER))
    lines = ["| phase | runs | FLOPs | share of budget |", "|---|---:|---:|---:|"]
    metrics: dict[str, float] = {}
    for phase in order:
        runs, flops = phases[phase]
        lines.append(f"| {phase} | {runs} | {flops:.3e} | {flops / budget:.2%} |")
        metrics[f"flops_{phase}"] = float(flops)
    total = sum(flops for _, flops in phases.values())
    lines.append(
        f"| **total** | {sum(r for r, _ in phases.values())} | {total:.3e} | {total / budget:.2%} |"
    )
    lines.append(
        f"\nBudget {budget:.3e} FLOPs; running runs' reservations included: "
        f"{ledger.reserved:.3e}; remaining {ledger.remaining:.3e}."
    )
    metrics.update(
        flops_spent=float(total),
        budget_share=total / budget,
        flops_remaining=float(ledger.remaining),
    )
    return "\n".join(lines), metrics


@click.command()
@preset_option
@click.option("--budget", default=-1.0, type=float, help="Budget in FLOPs (-1: the preset's).")
def main(preset: str, budget: float) -> None:
    """Print the FLOPs spent per phase and log the table as a run artifact."""
    p = get_preset(preset, budget=budget)
    setup_tracking()
    table, metrics = budget_table(p.budget)
    with mlflow.start_run(run_name="budget"):
        mlflow.set_tags({"phase": "report", "mlflow.runName": "budget", "preset": p.name})
        mlflow.log_param("budget_flops", p.budget)
        mlflow.log_metrics(metrics)
        mlflow.log_text(table + "\n", "budget.md")
    click.echo(table)


if __name__ == "__main__":
    main()
