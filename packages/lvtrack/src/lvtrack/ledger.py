"""The FLOPs budget ledger as the runs use it: open it, admit a run, and the runs' own record.

The ledger itself is SQL tables (`lvtrack.budget_db`): every admission is one transaction of the
database that holds the Optuna study, with no lock of our own. This module opens it for the
current tracking store (`open_ledger`: one storage setting, `LV_STORAGE` or the search's
`--storage`, else SQLite beside a SQLite tracking DB) and fills it, once, from the MLflow runs of
an experiment logged before it existed.

MLflow keeps its own record of each budgeted run, for the UI and for that import: the tag
`lv.flops_planned` (its reservation), `lv.budget`, `lv.refused` for a refused run, and the metric
`flops_total` (what it spent, logged as it goes). `read_ledger` reads that record back; the
`budget` entry point compares it with the ledger and reports any disagreement.
"""

from __future__ import annotations

import os

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lvtrack.budget_db import (
    BudgetDB,
    BudgetRefused,
    Entry,
    Ledger,
    ledger_url,
)

TAG_PLANNED = "lv.flops_planned"
TAG_BUDGET = "lv.budget"
TAG_REFUSED = "lv.refused"
TAG_PHASE = "phase"
METRIC_FLOPS = "flops_total"
STORAGE_ENV = "LV_STORAGE"  # the study's and the ledger's storage, for every entry point

__all__ = ["BudgetRefused", "Entry", "Ledger", "open_ledger", "read_ledger", "storage_url"]


def storage_url(storage: str = "") -> str:
    """Where the ledger and the Optuna study live: `storage`, else $LV_STORAGE, else beside the
    tracking DB (`lvtrack.budget_db.default_storage`)."""
    return ledger_url(mlflow.get_tracking_uri(), storage or os.environ.get(STORAGE_ENV, ""))


def open_ledger(
    experiment_id: str, budget: int, storage: str = "", client: MlflowClient | None = None
) -> BudgetDB:
    """The experiment's ledger: at `storage`, else $LV_STORAGE, else beside the tracking DB.

    An experiment logged before the ledger existed gets its rows from its MLflow runs on first
    use, once, in one transaction. LedgerUnavailable (a clear error naming the storage) when the
    database cannot be reached: nothing is charged.
    """
    db = BudgetDB(storage_url(storage))
    if not db.imported(experiment_id):
        logged = read_ledger(client or MlflowClient(), experiment_id, budget)
        db.import_runs(experiment_id, int(budget), logged.entries)
    return db


def _entry(run: Run) -> Entry:
    tags = run.data.tags
    return Entry(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        phase=tags.get(TAG_PHASE) or "untagged",
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        planned=int(float(tags.get(TAG_PLANNED, "0"))),
        spent=int(run.data.metrics.get(METRIC_FLOPS, 0.0)),
        refused=tags.get(TAG_REFUSED) == "true",
        tags=dict(tags),
    )


def read_ledger(client: MlflowClient, experiment_id: str, budget: int) -> Ledger:
    """MLflow's record: every budgeted run of the experiment (those with a planned-FLOPs tag)."""
    entries: list[Entry] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_PLANNED}` != ''",
            max_results=1000,
            page_token=token,
        )
        entries += [_entry(r) for r in page]
        token = page.token
        if not token:
            break
    entries.sort(key=lambda e: (e.start_time, e.run_id))
    return Ledger(budget=budget, entries=entries)


def disagreements(ledger: Ledger, logged: Ledger) -> list[str]:
    """Where the ledger and the runs' own record differ: a line per run."""
    mine = {e.run_id: e for e in ledger.entries}
    lines = []
    for e in logged.entries:
        kept = mine.get(e.run_id)
        if kept is None:
            lines.append(f"run {e.name} ({e.run_id}) logs a reservation the ledger lacks")
        elif not e.running and not kept.running and kept.spent != e.spent and not kept.refused:
            lines.append(
                f"run {e.name} ({e.run_id}): the ledger charges {kept.spent:.4e} FLOPs, its "
                f"flops_total says {e.spent:.4e}"
            )
    return lines
