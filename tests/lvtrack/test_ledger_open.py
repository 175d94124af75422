"""`lvtrack.ledger.open_ledger`: where the ledger lives for a tracking store, the import of an
experiment logged before the ledger (its MLflow runs, once), and the `budget` entry point's
report of where the ledger and the runs' own `flops_total` disagree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from lvtrack.budget_db import BudgetDB, LedgerUnavailable
from lvtrack.ledger import METRIC_FLOPS, TAG_PHASE, TAG_PLANNED, TAG_REFUSED, open_ledger
from projects import budget as budget_entry
from tests.stores import using_store

BUDGET = 10_000


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("LV_STORAGE", raising=False)
    with using_store(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}") as uri:
        yield uri


def _old_run(client: MlflowClient, exp_id: str, status: str, planned: int, spent: int) -> str:
    """A run as the code before the SQL ledger logged it: tags and `flops_total` only."""
    run = client.create_run(exp_id, run_name=f"{status.lower()}-{planned}")
    run_id = run.info.run_id
    client.set_tag(run_id, TAG_PHASE, "sweep")
    client.set_tag(run_id, TAG_PLANNED, str(planned))
    client.log_metric(run_id, METRIC_FLOPS, spent, step=3)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def test_an_old_experiment_is_imported_once_from_its_runs(uri: str, tmp_path: Path) -> None:
    client = MlflowClient(uri)
    exp_id = client.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    done = _old_run(client, exp_id, "FINISHED", 3_000, 2_500)
    killed = _old_run(client, exp_id, "KILLED", 2_000, 700)
    running = _old_run(client, exp_id, "RUNNING", 1_500, 200)
    refused = _old_run(client, exp_id, "FAILED", 9_000, 0)
    client.set_tag(refused, TAG_REFUSED, "true")
    client.create_run(exp_id, run_name="not budgeted")  # no planned tag: not in the ledger

    db = open_ledger(exp_id, BUDGET)
    assert db.url == f"sqlite:///{tmp_path / 'optuna.db'}"  # beside the tracking DB
    ledger = db.read(exp_id)
    assert {e.run_id: e.charge for e in ledger.entries} == {
        done: 2_500,
        killed: 700,
        running: 1_500,
        refused: 0,
    }
    # 10_000 - 2_500 - 700 - 1_500 (the running run holds its plan) = 5_300
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (3_200, 1_500, 5_300)

    # Once: a run logged later by old code is not picked up by a second opening.
    _old_run(client, exp_id, "FINISHED", 4_000, 4_000)
    assert len(open_ledger(exp_id, BUDGET).read(exp_id).entries) == 4


def test_lv_storage_names_the_ledger_for_every_entry_point(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(uri)
    exp_id = client.create_experiment("team", artifact_location=(tmp_path / "a").as_uri())
    elsewhere = f"sqlite:///{tmp_path / 'shared-ledger.db'}"
    monkeypatch.setenv("LV_STORAGE", elsewhere)
    assert open_ledger(exp_id, BUDGET).url == elsewhere
    assert open_ledger(exp_id, BUDGET, storage=f"sqlite:///{tmp_path / 'x.db'}").url.endswith(
        "x.db"
    )  # the search's --storage wins over the environment
    monkeypatch.setenv("LV_STORAGE", f"sqlite:///{tmp_path / 'no such folder' / 'l.db'}")
    with pytest.raises(LedgerUnavailable, match="no such folder"):
        open_ledger(exp_id, BUDGET)


def test_first_value_is_decided_once(tmp_path: Path) -> None:
    db = BudgetDB(f"sqlite:///{tmp_path / 'l.db'}")
    assert db.first_value("study:s", "parent", "run-a") == "run-a"
    assert db.first_value("study:s", "parent", "run-b") == "run-a"
    assert db.first_value("study:t", "parent", "run-b") == "run-b"


def test_budget_reports_where_ledger_and_runs_disagree(uri: str, tmp_path: Path) -> None:
    client = MlflowClient(uri)
    exp_id = client.create_experiment("lv-forecast", artifact_location=(tmp_path / "a").as_uri())
    run_id = _old_run(client, exp_id, "FINISHED", 3_000, 2_500)
    open_ledger(exp_id, BUDGET)  # imported: both say 2_500
    client.log_metric(run_id, METRIC_FLOPS, 2_900, step=4)  # logged after the ledger closed it
    out = CliRunner().invoke(
        budget_entry.main,
        ["--preset", "micro", "--budget", str(BUDGET)],
        env={"MLFLOW_EXPERIMENT_NAME": "lv-forecast"},
    )
    assert out.exit_code == 0, out.output
    assert "disagree" in out.output
    assert f"({run_id}): the ledger charges 2.5000e+03 FLOPs, its flops_total says 2.9000e+03" in (
        out.output
    )
    assert "| sweep | 1 | 2.500e+03 |" in out.output  # the table is the ledger's
