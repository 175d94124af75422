"""Pointing MLflow at a test's own tracking store for a while, and back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
import pytest

# Variables `mlflow run` sets for its command: a test must not inherit them from its caller.
INHERITED = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@contextmanager
def using_store(mp: pytest.MonkeyPatch, uri: str) -> Iterator[str]:
    """For a block, $MLFLOW_TRACKING_URI and MLflow's process state point at `uri`, with no run or
    experiment taken over from the environment. Afterwards no run is left active and MLflow's URI
    is its default again; `mp` undoes the environment when it is undone."""
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    for var in INHERITED:
        mp.delenv(var, raising=False)
    # MLflow keeps the URI and the active experiment in process state: reset both.
    mp.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # back to the default


@dataclass(frozen=True)
class Store:
    """A tracking store several processes of a test share: its kind and URI."""

    kind: str
    uri: str
