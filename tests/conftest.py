"""Fixtures shared by every test folder: the coursework data file and a temporary MLflow store."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


def pytest_configure(config: pytest.Config) -> None:
    """Fix the CPU's threading and denormal modes before any torch work of the test process, as
    `load_base` does first in every process of the project, so that a test's figures and speed do
    not depend on whether an earlier test loaded a base (`lvmodel.device.fix_cpu_arithmetic`)."""
    from lvmodel.device import fix_cpu_arithmetic

    fix_cpu_arithmetic()


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
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite MLflow tracking store for one test, set as $MLFLOW_TRACKING_URI."""
    from tests.stores import using_store  # imports mlflow: only for tests that use a store

    monkeypatch.setenv("LV_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))  # not the repo's
    with using_store(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}") as uri:
        yield uri


@pytest.fixture(scope="session")
def random_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local model folder (random weights, tiny Qwen2 shape, tiny tokenizer): a fast base_model."""
    from lvmodel.tiny import random_tiny

    path = tmp_path_factory.mktemp("random-tiny")
    model, tok = random_tiny(seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def small_data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data file of 60 series (split 48/6/6), shared by the entry-point tests."""
    path = tmp_path_factory.mktemp("data") / "lv.h5"
    lvdata.simulate(60, seed=5).save(path)
    return path


@pytest.fixture(scope="session")
def micro_args(random_tiny_dir: Path, small_data_file: Path) -> list[str]:
    """Entry-point arguments for runs of seconds: the micro preset, the random tiny base and the
    small data file (add --steps and the rest; copy before changing it)."""
    return [
        "--preset",
        "micro",
        "--base-model",
        str(random_tiny_dir),
        "--data-file",
        str(small_data_file),
    ]
