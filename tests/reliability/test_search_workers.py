"""Many workers on one search: four `python -m projects.search` processes at once against one
study and one tracking store (a SQLite file, and an `mlflow server` on PostgreSQL with the study
in a database of its own on the same server), and a worker killed with SIGKILL mid-trial whose
trial another worker retries, its FLOPs counted once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from lvtrack.budget_db import BudgetDB, Ledger, driver_url
from lvtrack.ledger import METRIC_FLOPS, TAG_PLANNED, read_ledger
from lvtrack.search import ATTR_PARENT, ATTR_RUN, TAG_TRIAL, TAG_TRIAL_STATE

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4
BUDGET = 2e12
TIMEOUT_S = 1200

pytestmark = pytest.mark.slow


def _stores(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(tracking URI, Optuna storage URL) of one kind."""
    if kind == "postgres":
        server = request.getfixturevalue("mlflow_server")
        pg = request.getfixturevalue("postgres")
        return server.url, f"postgresql://{pg.user}@{pg.host}:{pg.port}/optuna_{tmp_path.name}"
    return f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"


def _agree(storage: str, exp_id: str, logged: Ledger) -> None:
    """The budget ledger (SQL, in the study's storage) charges every run what MLflow's record
    says it spent, and holds nothing for runs that ended."""
    ledger = BudgetDB(storage).read(exp_id)
    assert {e.run_id: e.charge for e in ledger.entries} == {
        e.run_id: e.charge for e in logged.entries
    }
    assert ledger.reserved == 0 and ledger.budget == int(BUDGET)


def _command(micro_args: list[str], storage: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "projects.search",
        *micro_args,
        "--budget",
        f"{BUDGET:g}",
        "--share",
        "0.25",
        "--rungs",
        "2",
        "--study",
        "shared",
        "--storage",
        storage,
        *extra,
    ]


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_four_workers_share_one_study_and_one_budget(
    kind: str,
    request: pytest.FixtureRequest,
    micro_args: list[str],
    subprocess_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    uri, storage = _stores(kind, request, tmp_path)
    client = MlflowClient(uri)
    exp_id = client.create_experiment(f"search-{kind}-{tmp_path.name}")
    env = subprocess_env(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_EXPERIMENT_ID=exp_id,
        PYTHONPATH=str(REPO),
        LV_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
    )
    cmd = _command(micro_args, storage, "--trials", "6")
    procs = [_start(cmd, env, tmp_path / f"w{i}.log", tmp_path) for i in range(WORKERS)]
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    logs = [(tmp_path / f"w{i}.log").read_text(errors="replace") for i in range(WORKERS)]
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]

    study = optuna.load_study(study_name="shared", storage=driver_url(storage))
    parent = study.user_attrs[ATTR_PARENT]
    runs = client.search_runs([exp_id], max_results=500)
    workers = [r for r in runs if r.data.tags.get("lv.search_worker") == "true"]
    assert len(workers) == WORKERS
    assert {r.data.tags.get("mlflow.parentRunId") for r in workers if r.info.run_id != parent} == {
        parent
    }
    trial_runs = [r for r in runs if TAG_TRIAL in r.data.tags]
    started = [t for t in study.trials if ATTR_RUN in t.user_attrs]
    # Distinct trials: one run each, none lost or doubled, all children of the one parent.
    assert sorted(t.user_attrs[ATTR_RUN] for t in started) == sorted(
        r.info.run_id for r in trial_runs
    )
    assert len({t.number for t in started}) == len(started) >= WORKERS
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent}
    assert len({r.data.tags["lv.pid"] for r in trial_runs}) > 1  # several workers ran trials
    for run in trial_runs:
        assert run.info.status == "FINISHED"
        assert run.data.metrics[METRIC_FLOPS] > 0
        state = run.data.tags[TAG_TRIAL_STATE]
        top = int(run.data.params["rung_steps"].split(",")[-1])
        scored = client.get_metric_history(run.info.run_id, "rung_val_mse_filled_h5")
        if state.startswith("pruned"):
            assert max(m.step for m in scored) < top  # stopped at its rung
        else:
            assert state == "completed" and max(m.step for m in scored) == top
    ledger = read_ledger(client, exp_id, int(BUDGET))
    assert ledger.reserved == 0
    assert ledger.spent <= BUDGET
    assert ledger.spent == sum(int(r.data.metrics[METRIC_FLOPS]) for r in trial_runs)
    _agree(storage, exp_id, ledger)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_killed_worker_s_trial_is_retried_and_counted_once(
    kind: str,
    request: pytest.FixtureRequest,
    micro_args: list[str],
    subprocess_env: Callable[..., dict[str, str]],
    tmp_path: Path,
) -> None:
    uri, storage = _stores(kind, request, tmp_path)
    client = MlflowClient(uri)
    exp_id = client.create_experiment(f"search-kill-{kind}-{tmp_path.name}")
    env = subprocess_env(
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_EXPERIMENT_ID=exp_id,
        PYTHONPATH=str(REPO),
        LV_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
    )
    cmd = _command(micro_args, storage, "--trials", "2", "--heartbeat", "2")
    victim = _start(cmd, env, tmp_path / "victim.log", tmp_path)
    # Wait (polling the store) until the victim's first trial has trained and logged FLOPs.
    deadline = time.monotonic() + TIMEOUT_S
    dead_run = None
    while dead_run is None and time.monotonic() < deadline and victim.poll() is None:
        for run in client.search_runs([exp_id], filter_string=f"tags.`{TAG_PLANNED}` != ''"):
            if run.data.metrics.get(METRIC_FLOPS, 0) > 0 and run.data.metrics.get("train_loss"):
                dead_run = run
        time.sleep(0.5)
    assert dead_run is not None, (tmp_path / "victim.log").read_text()[-3000:]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert client.get_run(dead_run.info.run_id).info.status == "RUNNING"  # left behind

    rescuer = _start(cmd, env, tmp_path / "rescuer.log", tmp_path)
    assert rescuer.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "rescuer.log").read_text()[-3000:]
    log = (tmp_path / "rescuer.log").read_text()
    assert "retries trial 0 (its worker died)" in log, log[-3000:]

    study = optuna.load_study(study_name="shared", storage=driver_url(storage))
    states = {t.number: t.state for t in study.trials}
    assert states[0] == optuna.trial.TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].params == study.trials[0].params
    dead = client.get_run(dead_run.info.run_id)
    assert dead.info.status == "FAILED"  # closed by the rescuer with what it logged
    ledger = read_ledger(client, exp_id, int(BUDGET))
    assert ledger.reserved == 0
    charged = {e.run_id: e.charge for e in ledger.entries}
    assert charged[dead.info.run_id] == int(dead.data.metrics[METRIC_FLOPS])  # once, as spent
    trial_runs = client.search_runs([exp_id], filter_string=f"tags.`{TAG_TRIAL}` != ''")
    assert ledger.spent == sum(int(r.data.metrics[METRIC_FLOPS]) for r in trial_runs)
    assert ledger.spent <= BUDGET
    _agree(storage, exp_id, ledger)
