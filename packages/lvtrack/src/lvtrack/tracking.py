"""The one place that knows MLflow conventions shared by every entry point."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import click
import mlflow
import numpy as np
from mlflow.data.numpy_dataset import from_numpy
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "lv-forecast"
# MLflow's own experiment, where `mlflow run` puts its run when given no experiment name.
MLFLOW_DEFAULT_EXPERIMENT_ID = "0"
# The experiment tag that says what an experiment is for, and its value for model training
# (MLflow's UI kind selector writes and reads it; `finetuning` is the other training value). The
# UI of MLflow 3.17.2 replaced the selector by its sidebar switch and no longer reads the tag
# (docs/ui.md); it still records what the experiment holds, for other versions and tools.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# The query that opens MLflow 3.17.2's UI on "Model training" instead of "GenAI", with the runs
# flat (sorted by a metric the UI does not nest child runs under their parents; the project's runs
# are children of their `mlflow run` runs) and the best validation score (what selects settings
# and the champion) first.
UI_TRAINING_VIEW = (
    "workflowType=machine_learning&orderByKey=metrics.%60val_mse_filled_h5%60&orderByAsc=true"
)

_noted_default = False
# (tracking URI, experiment asked for, $MLFLOW_EXPERIMENT_NAME, $MLFLOW_EXPERIMENT_ID after the
# set-up) -> the experiment id set up for them
_set_up: dict[tuple[str | None, ...], str] = {}


def _setup_key(experiment: str | None) -> tuple[str | None, ...]:
    env = os.environ
    uri = env.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    return (uri, experiment, env.get("MLFLOW_EXPERIMENT_NAME"), env.get("MLFLOW_EXPERIMENT_ID"))


def setup_tracking(experiment: str | None = None) -> str:
    """Use $MLFLOW_TRACKING_URI when set (`mlflow run` sets it), else SQLite beside the project;
    returns the id of the experiment runs go to, marked as a model-training experiment.

    MLflow 3.17 refuses the plain ./mlruns file store by default, hence SQLite. The experiment is
    the one `mlflow run` chose (MLFLOW_EXPERIMENT_ID, or its run's: the one named by
    `--experiment-name` or $MLFLOW_EXPERIMENT_NAME, else MLflow's `Default`), else
    `experiment`, else $MLFLOW_EXPERIMENT_NAME, else `lv-forecast`. When it is `Default` because
    nobody named one, this says once how to name one: `mlflow run` created its run there before
    this code ran, and a run cannot move. `mlflow.set_experiment` exports MLFLOW_EXPERIMENT_ID
    (for subprocesses), so in one process the first choice stays. (MLflow has no public getter of
    the active experiment: callers keep the id this returns.) Set up once per process: a later
    call with the same URI and experiment returns the same id without asking the store again.
    """
    global _noted_default
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    key = _setup_key(experiment)
    if key in _set_up and mlflow.get_tracking_uri() == uri:
        return _set_up[key]
    mlflow.set_tracking_uri(uri)
    experiment_id = _chosen_experiment(experiment)
    mark_training_experiment(experiment_id)
    _set_up[_setup_key(experiment)] = experiment_id  # set_experiment exported the id
    unnamed = not os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if experiment_id == MLFLOW_DEFAULT_EXPERIMENT_ID and unnamed and not _noted_default:
        _noted_default = True
        click.echo(
            "note: these runs go to MLflow's `Default` experiment because `mlflow run` was given "
            "no experiment name; keep the project's runs and FLOPs ledger in their own "
            f"experiment with `mlflow run . --experiment-name {DEFAULT_EXPERIMENT} ...` (or "
            f"MLFLOW_EXPERIMENT_NAME={DEFAULT_EXPERIMENT}).",
            err=True,
        )
    return experiment_id


def _chosen_experiment(experiment: str | None) -> str:
    if chosen := os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return chosen
    if run_id := os.environ.get("MLFLOW_RUN_ID"):
        return str(MlflowClient().get_run(run_id).info.experiment_id)
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    return str(mlflow.set_experiment(name).experiment_id)


def mark_training_experiment(experiment_id: str) -> None:
    """Tag the experiment `mlflow.experimentKind=custom_model_development` unless it already has
    a kind (one someone chose stays).

    Several processes may find the tag missing at once; on SQL stores the later insert can fail
    on the tag's key, which means the tag is there: that failure is ignored.
    """
    client = MlflowClient()
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG):
        return
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    except mlflow.exceptions.MlflowException as exc:
        if not _is_duplicate_key(exc):
            raise


def ui_url(experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The address of the experiment's runs in `mlflow ui` (MLflow 3.17.2): the "Model training"
    view (a fresh browser opens an experiment on the GenAI overview), every run in one flat list,
    best `val_mse_filled_h5` first (docs/ui.md)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{UI_TRAINING_VIEW}"


def ui_hint(experiment_id: str) -> str:
    """What to type to look at the experiment's runs, and the address that opens them as
    training runs (a fresh browser opens an experiment on MLflow 3.17.2's GenAI overview, and
    the root address is Home: docs/ui.md). Against a tracking server it is that server's
    address; against a database, `mlflow ui` on it at its default address."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"look at the runs: open {ui_url(experiment_id, uri)}"
    return (
        f"look at the runs: mlflow ui --backend-store-uri {uri}, then open "
        f"{ui_url(experiment_id)} (the training runs, best val_mse_filled_h5 first)"
    )


def set_run_tags(run_id: str | None, tags: Mapping[str, str]) -> None:
    """Set `tags` on a run (the active run when `run_id` is None) in one batch.

    Use it for a run that several processes write: MLflow 3.17's single-tag path (`set_tag`, a
    SQL merge) looks the key up and inserts it when missing, so two processes setting a new key on
    one run at once can both miss it and the later insert fails on the tags' unique key (seen with
    four search workers writing the shared parent's best trial). The batch path (`log_batch`)
    retries on that conflict and then updates the row.
    """
    batch = [RunTag(key, str(value)) for key, value in tags.items()]
    if run_id is None:
        run_id = _active_run_id()
    MlflowClient().log_batch(run_id, tags=batch)


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("set_run_tags: no run_id given and no active run")
    return run.info.run_id


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
