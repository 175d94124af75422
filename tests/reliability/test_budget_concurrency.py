"""The FLOPs budget under concurrency: runs started together against one tracking store.

Eight `python -m projects.train` processes start at once against one store, with a budget that
holds exactly three runs' plans. The ledger (SQL tables, one transaction per admission, see
packages/lvtrack/src/lvtrack/budget_db.py) must let exactly three train and refuse the other five
cleanly. Two stores: a SQLite file with the ledger beside it, and an `mlflow server` on
PostgreSQL reached over REST with the ledger in PostgreSQL (the set-up a team shares,
docs/team.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from lvtrack.ledger import METRIC_FLOPS, TAG_PLANNED, TAG_REFUSED, open_ledger, read_ledger
from projects import train as train_entry
from tests.stores import Store, using_store

REPO = Path(__file__).resolve().parents[2]
N_PROCS = 8
ADMITTED = 3
STEPS = 2
RACE_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_args(micro_args: list[str]) -> list[str]:
    return [*micro_args, "--steps", str(STEPS)]


@dataclass(frozen=True)
class Calibration:
    planned: int  # one run's planned FLOPs (its reservation)
    spent: int  # what one such run actually spends


@pytest.fixture(scope="module")
def calibration(
    base_args: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Calibration]:
    """One run of the same command, in process, in a store of its own: its plan and its cost."""
    root = tmp_path_factory.mktemp("calibration")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp, using_store(mp, uri):
        mp.chdir(root)  # checkpoints/ and mlruns/ of the run go there
        mp.setenv("MLFLOW_EXPERIMENT_NAME", "calibration")
        result = CliRunner().invoke(train_entry.main, [*base_args, "--run-name", "calibration"])
        assert result.exit_code == 0, result.output
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("calibration")
        assert experiment is not None
        (run,) = client.search_runs([experiment.experiment_id])
    yield Calibration(
        planned=int(run.data.tags[TAG_PLANNED]), spent=int(run.data.metrics[METRIC_FLOPS])
    )


@dataclass(frozen=True)
class Outcome:
    name: str
    returncode: int
    output: str


def _race(cmds: dict[str, list[str]], env: dict[str, str], cwd: Path) -> dict[str, Outcome]:
    """Start every command back to back, wait for all; output (stdout and stderr) per name."""
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    try:
        for name, cmd in cmds.items():
            log = cwd / f"{name}.log"
            with open(log, "wb") as out:
                procs[name] = (
                    subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd),
                    log,
                )
        deadline = time.monotonic() + RACE_TIMEOUT_S
        for proc, _ in procs.values():
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {
        name: Outcome(name, proc.returncode, log.read_text(errors="replace"))
        for name, (proc, log) in procs.items()
    }


def test_eight_runs_at_once_only_three_fit(
    store: Store,
    base_args: list[str],
    calibration: Calibration,
    subprocess_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    planned, spent = calibration.planned, calibration.spent
    budget = int(3.5 * planned)
    # Exactly three is deterministic, not a matter of timing: while runs hold reservations a
    # fourth plan does not fit (4 x planned > budget), and once the three have finished their
    # spending still leaves less than one plan (3 x spent + planned > budget).
    assert ADMITTED * planned <= budget < ADMITTED * spent + planned
    assert (ADMITTED + 1) * planned > budget

    client = MlflowClient(store.uri)
    experiment = f"race-{store.kind}-{tmp_path.name}"
    # Created once here: several processes creating it (or a new SQLite schema) at once collide.
    exp_id = client.create_experiment(experiment, artifact_location=_artifacts(store, tmp_path))
    env = subprocess_env(
        MLFLOW_TRACKING_URI=store.uri, MLFLOW_EXPERIMENT_NAME=experiment, PYTHONPATH=str(REPO)
    )
    cmd = [sys.executable, "-m", "projects.train", *base_args, "--budget", str(budget)]
    names = [f"race-{i}" for i in range(N_PROCS)]
    t0 = time.monotonic()
    outcomes = _race({n: [*cmd, "--run-name", n] for n in names}, env, tmp_path)
    print(f"{store.kind}: {N_PROCS} processes in {time.monotonic() - t0:.1f} s")

    for o in outcomes.values():
        assert o.returncode in (0, 1), f"{o.name} exited {o.returncode}:\n{o.output[-3000:]}"
        assert "Traceback" not in o.output, f"{o.name}:\n{o.output[-3000:]}"
    trained = sorted(n for n, o in outcomes.items() if o.returncode == 0)
    refused = sorted(n for n, o in outcomes.items() if o.returncode == 1)
    assert len(trained) == ADMITTED, {n: o.output[-600:] for n, o in outcomes.items()}
    for name in refused:
        assert "refused" in outcomes[name].output, outcomes[name].output[-3000:]

    runs = {r.info.run_name: r for r in client.search_runs([exp_id], max_results=100)}
    assert set(runs) == set(names)  # one run per process, none lost or doubled
    for name in trained:
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert TAG_REFUSED not in run.data.tags
        assert int(run.data.tags[TAG_PLANNED]) == planned
        losses = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(m.step for m in losses) == list(range(1, STEPS + 1))
        assert 0 < run.data.metrics[METRIC_FLOPS] <= planned
    for name in refused:
        run = runs[name]
        assert run.info.status == "FAILED"
        assert run.data.tags[TAG_REFUSED] == "true"
        assert TAG_PLANNED not in run.data.tags  # never reserved anything
        assert "train_loss" not in run.data.metrics
        assert client.get_metric_history(run.info.run_id, "train_loss") == []

    logged = read_ledger(client, exp_id, budget)  # MLflow's record of the runs
    assert sorted(e.name for e in logged.entries) == trained
    assert logged.reserved == 0  # nothing left RUNNING
    assert logged.spent == sum(int(runs[n].data.metrics[METRIC_FLOPS]) for n in trained)
    assert logged.spent <= budget and logged.remaining < planned
    with pytest.MonkeyPatch.context() as mp, using_store(mp, store.uri):  # the ledger agrees
        ledger = open_ledger(exp_id, budget).read(exp_id)
    assert {e.name: e.charge for e in ledger.entries if not e.refused} == {
        e.name: e.spent for e in logged.entries
    }
    assert sorted(e.name for e in ledger.entries if e.refused) == refused
    assert ledger.budget == budget and ledger.reserved == 0
    # No lock of any kind in the model registry (train registers nothing).
    assert client.search_registered_models() == []


DATASET_WORKER = """
import os, sys, time
from pathlib import Path
import mlflow
import numpy as np
from lvtrack.tracking import log_dataset

exp_id, sync, procs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
values = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
with mlflow.start_run(experiment_id=exp_id) as run:
    (sync / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 300
    while len(list(sync.glob("ready-*"))) < procs and time.monotonic() < deadline:
        time.sleep(0.01)
    log_dataset(values, sync / "lv.h5", name="lotka_volterra", context="training")
print("done", run.info.run_id)
"""


def test_runs_logging_the_same_dataset_at_once_all_link_it(
    store: Store, subprocess_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """MLflow's SQL store inserts a dataset it did not find: runs logging the same data at the same
    moment collide on its unique key (seen on PostgreSQL in CI). Every run must still end up
    linked to the one dataset row, with no traceback."""
    client = MlflowClient(store.uri)
    exp_id = client.create_experiment(
        f"dataset-{store.kind}-{tmp_path.name}", artifact_location=_artifacts(store, tmp_path)
    )
    (tmp_path / "sync").mkdir()
    env = subprocess_env(MLFLOW_TRACKING_URI=store.uri, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", DATASET_WORKER, exp_id, str(tmp_path / "sync"), str(N_PROCS)]
    outcomes = _race({f"dataset-{i}": cmd for i in range(N_PROCS)}, env, tmp_path)
    for o in outcomes.values():
        assert o.returncode == 0 and "Traceback" not in o.output, o.output[-3000:]
    runs = client.search_runs([exp_id], max_results=100)
    assert len(runs) == N_PROCS
    digests = {(d.dataset.name, d.dataset.digest) for r in runs for d in r.inputs.dataset_inputs}
    assert len(digests) == 1
    assert all(len(r.inputs.dataset_inputs) == 1 for r in runs)


def _artifacts(store: Store, tmp_path: Path) -> str | None:
    """SQLite: artifacts in the test's folder; the server: its proxied default."""
    return (tmp_path / "mlruns").as_uri() if store.kind == "sqlite" else None
