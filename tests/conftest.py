"""Fixtures shared by every test folder: the coursework data file and a temporary MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lvdata

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def coursework_path() -> Path:
    """The coursework file: $LV_DATA_FILE, else ../shared/data/ beside the repository."""
    env = os.environ.get("LV_DATA_FILE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared/data/lotka_volterra_data.h5"


@pytest.fixture(scope="session")
def coursework_file() -> Path:
    path = coursework_path()
    if not path.is_file():
        pytest.skip(f"coursework data file not found at {path} (set LV_DATA_FILE)")
    return path


@pytest.fixture(scope="session")
def coursework(coursework_file: Path) -> lvdata.Trajectories:
    return lvdata.load_trajectories(coursework_file)


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite MLflow tracking store for one test, set as $MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    return uri
