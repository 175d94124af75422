"""`lvtrack.ledger.extend_reservation`: a running run raises its reservation (a search trial
promoted to its next rung) under the budget lock, or is refused without being tagged refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lvtrack.ledger import (
    LOCK_PREFIX,
    METRIC_FLOPS,
    TAG_BUDGET,
    TAG_PLANNED,
    TAG_REFUSED,
    BudgetRefused,
    extend_reservation,
    read_ledger,
    reserve,
)

BUDGET = 10_000


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def exp_id(client: MlflowClient, tmp_path: Path) -> str:
    return client.create_experiment("extend", artifact_location=(tmp_path / "a").as_uri())


def _reserved(client: MlflowClient, exp_id: str, planned: int) -> str:
    run = client.create_run(exp_id)
    reserve(client, run, planned, BUDGET)
    return run.info.run_id


def _charges(client: MlflowClient, exp_id: str) -> dict[str, int]:
    return {e.run_id: e.charge for e in read_ledger(client, exp_id, BUDGET).entries}


def test_a_reservation_that_fits_is_raised_to_the_new_total(
    client: MlflowClient, exp_id: str
) -> None:
    trial = _reserved(client, exp_id, 1_000)
    other = _reserved(client, exp_id, 3_000)
    book = extend_reservation(client, trial, exp_id, 4_000, BUDGET)
    assert {e.run_id: e.charge for e in book.entries} == {trial: 4_000, other: 3_000}
    assert book.reserved == 7_000 and book.remaining == 3_000
    tags = client.get_run(trial).data.tags
    assert tags[TAG_PLANNED] == "4000" and tags[TAG_BUDGET] == str(BUDGET)
    # Exactly up to the budget fits: the other runs' 3_000 plus 7_000.
    book = extend_reservation(client, trial, exp_id, 7_000, BUDGET)
    assert book.remaining == 0 and _charges(client, exp_id)[trial] == 7_000
    # The lock was taken and released.
    assert client.search_registered_models(f"name LIKE '{LOCK_PREFIX}%'") == []


def test_a_reservation_that_does_not_fit_is_refused_and_left_as_it_was(
    client: MlflowClient, exp_id: str
) -> None:
    trial = _reserved(client, exp_id, 2_000)
    other = _reserved(client, exp_id, 3_000)
    finished = _reserved(client, exp_id, 4_000)
    client.log_metric(finished, METRIC_FLOPS, 2_500.0, step=1)
    client.set_terminated(finished, "FINISHED")  # now charged what it spent: 2_500
    # Others hold 3_000 + 2_500: 4_500 is left for the trial, not 4_501.
    with pytest.raises(BudgetRefused, match=f"extending run {trial}"):
        extend_reservation(client, trial, exp_id, 4_501, BUDGET)
    run = client.get_run(trial)
    assert run.info.status == "RUNNING"
    assert run.data.tags[TAG_PLANNED] == "2000" and TAG_REFUSED not in run.data.tags
    assert _charges(client, exp_id) == {trial: 2_000, other: 3_000, finished: 2_500}
    book = extend_reservation(client, trial, exp_id, 4_500, BUDGET)
    assert book.remaining == 0 and _charges(client, exp_id)[trial] == 4_500


def test_a_reservation_is_never_lowered(client: MlflowClient, exp_id: str) -> None:
    trial = _reserved(client, exp_id, 5_000)
    book = extend_reservation(client, trial, exp_id, 1_000, BUDGET)
    assert client.get_run(trial).data.tags[TAG_PLANNED] == "5000"
    assert book.reserved == 5_000


def test_what_a_run_already_spent_beyond_its_new_plan_counts(
    client: MlflowClient, exp_id: str
) -> None:
    trial = _reserved(client, exp_id, 5_000)
    _reserved(client, exp_id, 4_000)
    client.log_metric(trial, METRIC_FLOPS, 8_000.0, step=3)  # overspent its plan
    # 4_000 + 6_000 would fit, but its new charge is max(6_000, 8_000).
    with pytest.raises(BudgetRefused):
        extend_reservation(client, trial, exp_id, 6_000, BUDGET)
    assert client.get_run(trial).data.tags[TAG_PLANNED] == "5000"


def test_only_a_running_unrefused_run_of_the_experiment_can_extend(
    client: MlflowClient, exp_id: str, tmp_path: Path
) -> None:
    done = _reserved(client, exp_id, 1_000)
    client.set_terminated(done, "FINISHED")
    with pytest.raises(ValueError, match="is FINISHED"):
        extend_reservation(client, done, exp_id, 2_000, BUDGET)
    refused = client.create_run(exp_id)
    with pytest.raises(BudgetRefused):
        reserve(client, refused, BUDGET + 1, BUDGET)
    with pytest.raises(ValueError, match="refused"):
        extend_reservation(client, refused.info.run_id, exp_id, 1, BUDGET)
    elsewhere = client.create_experiment("other", artifact_location=(tmp_path / "b").as_uri())
    stranger = _reserved(client, elsewhere, 1_000)
    with pytest.raises(ValueError, match="belongs to experiment"):
        extend_reservation(client, stranger, exp_id, 2_000, BUDGET)
