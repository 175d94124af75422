"""lvtrack.tracking: dataset inputs survive the concurrent-insert race of MLflow's SQL store."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from lvtrack import tracking

DUPLICATE = (
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"'
)


def _flaky_log_input(monkeypatch, errors):
    """Make mlflow.log_input raise each of `errors` once, then behave normally; returns call log."""
    real = mlflow.log_input
    calls = []

    def log_input(*args, **kwargs):
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", log_input)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    return calls


def test_dataset_lost_to_a_concurrent_insert_is_linked_on_retry(
    tracking_uri, tmp_path, monkeypatch
):
    values = np.ones((3, 4, 2), dtype=np.float32)
    calls = _flaky_log_input(monkeypatch, [MlflowException(DUPLICATE)] * 2)
    with mlflow.start_run() as run:
        digest = tracking.log_dataset(values, tmp_path / "lv.h5", name="lv", context="training")
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 3
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("lv", digest)]


def test_other_errors_are_not_retried(tracking_uri, tmp_path, monkeypatch):
    calls = _flaky_log_input(monkeypatch, [MlflowException("RESOURCE_DOES_NOT_EXIST: no run")])
    with mlflow.start_run(), pytest.raises(MlflowException, match="no run"):
        tracking.log_dataset(np.ones((1, 2, 2)), tmp_path / "x.h5", name="lv", context="training")
    assert len(calls) == 1


def test_a_race_that_never_clears_still_raises(tracking_uri, tmp_path, monkeypatch):
    calls = _flaky_log_input(monkeypatch, [MlflowException(DUPLICATE)] * 10)
    with mlflow.start_run(), pytest.raises(MlflowException, match="dataset_pk"):
        tracking.log_dataset(np.ones((1, 2, 2)), tmp_path / "x.h5", name="lv", context="training")
    assert len(calls) == 4
