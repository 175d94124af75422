"""The one place that knows MLflow conventions shared by every entry point."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
from mlflow.data.numpy_dataset import from_numpy
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lv-forecast"


def setup_tracking(experiment: str | None = None) -> str:
    """Use $MLFLOW_TRACKING_URI when set (`mlflow run` sets it), else SQLite beside the project;
    returns the id of the experiment runs go to.

    MLflow 3.17 refuses the plain ./mlruns file store by default, hence SQLite. The experiment is
    the one `mlflow run` chose (MLFLOW_EXPERIMENT_ID, or its run's), else
    $MLFLOW_EXPERIMENT_NAME, else `lv-forecast`. (MLflow has no public getter of the active
    experiment: callers keep the id this returns.)
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    if chosen := os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return chosen
    if run_id := os.environ.get("MLFLOW_RUN_ID"):
        return str(MlflowClient().get_run(run_id).info.experiment_id)
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    return str(mlflow.set_experiment(name).experiment_id)


def array_digest(values: np.ndarray) -> str:
    """A short content digest of an array (shape, dtype and bytes), stable across runs."""
    h = hashlib.sha256()
    h.update(str((values.shape, str(values.dtype))).encode())
    h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:16]


def log_dataset(values: np.ndarray, path: Path, name: str, context: str) -> str:
    """Log the trajectories as an MLflow dataset input with its digest; returns the digest."""
    digest = array_digest(values)
    with warnings.catch_warnings():
        # MLflow 3.17 registers its local-file source class twice and warns that a local path
        # "can be interpreted in multiple ways"; both candidates are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source")
        dataset = from_numpy(values, source=str(path.resolve()), name=name, digest=digest)
    _log_input_retrying(dataset, context)
    return digest


def _log_input_retrying(dataset: mlflow.data.Dataset, context: str, attempts: int = 4) -> None:
    """`mlflow.log_input`, retried when a concurrent run inserted the same dataset first.

    MLflow 3.17's SQL store looks the dataset up and inserts it when missing, in two steps: two runs
    logging the same data at once on PostgreSQL can both miss it, and the later insert fails on the
    `dataset_pk` unique key (seen with 8 concurrent runs on one tracking server). The failed call
    links nothing; on retry the lookup finds the row and the run is linked to it.
    """
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as exc:
            if attempt == attempts - 1 or not _is_duplicate_key(exc):
                raise
            time.sleep(0.2 * (attempt + 1))


def _is_duplicate_key(exc: Exception) -> bool:
    text = str(exc)
    return "UniqueViolation" in text or "duplicate key" in text or "UNIQUE constraint" in text
