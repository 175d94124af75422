"""The experiment's FLOPs ledger as a table (the `budget` entry point prints and logs it)."""

from __future__ import annotations

import re

from mlflow.tracking import MlflowClient

from lvtrack.budget_db import Holder, Ledger
from lvtrack.ledger import disagreements, open_ledger, read_ledger
from lvtrack.resume import resume_hint

PHASE_ORDER = ("baseline", "initial", "train", "sweep", "context", "final")


def budget_table(exp_id: str, budget: float) -> tuple[str, dict[str, float]]:
    """A markdown table like the seed's "Training Phases": phase, runs, FLOPs, share, planned;
    notes on running runs and on where the ledger and the runs' `flops_total` disagree; and the
    metrics the `budget` entry point logs."""
    client = MlflowClient()
    ledger = open_ledger(exp_id, int(budget), client=client).read(exp_id, int(budget))
    phases = ledger.by_phase()
    order = [p for p in PHASE_ORDER if p in phases] + sorted(set(phases) - set(PHASE_ORDER))
    # What the runs reserved: their plans (`lvtrack.experiment_plan`, the numbers `plan` prints).
    planned: dict[str, int] = {}
    for e in ledger.entries:
        if not e.refused:
            planned[e.phase] = planned.get(e.phase, 0) + e.planned
    lines = [
        "| phase | runs | FLOPs | share of budget | planned |",
        "|---|---:|---:|---:|---:|",
    ]
    metrics: dict[str, float] = {}
    for phase in order:
        runs, flops = phases[phase]
        lines.append(
            f"| {phase} | {runs} | {flops:.3e} | {flops / budget:.2%} | {planned[phase]:.3e} |"
        )
        # A phase tag is free text: keep the metric name within what MLflow accepts.
        metrics["flops_" + re.sub(r"[^\w.\-/ :]", "_", phase)] = float(flops)
    total = sum(flops for _, flops in phases.values())
    lines.append(
        f"| **total** | {sum(r for r, _ in phases.values())} | {total:.3e} | {total / budget:.2%} "
        f"| {sum(planned.values()):.3e} |"
    )
    lines.append(
        f"\nBudget {budget:.3e} FLOPs; running runs' reservations included: "
        f"{ledger.reserved:.3e}; remaining {ledger.remaining:.3e}."
    )
    lines += running_notes(ledger, exp_id)
    differ = disagreements(ledger, read_ledger(client, exp_id, int(budget)))
    if differ:
        lines += ["", "The ledger and the runs' flops_total disagree:", *(f"- {d}" for d in differ)]
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
        if Holder.of(e).alive() is False:
            notes.append(
                f"- {held} but its process on this host is gone: resume it with "
                f"{resume_hint(e.run_id, exp_id)}, or give back what it did not "
                f"spend with: python -m projects.budget --release {e.run_id}"
            )
        else:
            notes.append(f"- {held}; running on {e.tags.get('lv.host') or '?'}")
    return ["", "Running:", *notes] if notes else []
