"""Two resumes of one dead run started together: exactly one trains it, the other stops with a
clear error naming the run and the process that has it (`lvtrack.resume.reserve_resumed`).

The run is the `micro` preset on the random tiny base (8 steps, a checkpoint every 3), killed
outright after step 5 so that it stays RUNNING, as in test_crash_resume.py. Both resuming
processes wait, once they have looked the run up (`find_resumable`), until the other has too: so
both saw the same dead run, and only the claim, one transaction of the budget ledger, can tell
them apart. `LV_TEST_NO_CLAIM=1` makes every claim succeed in them: the test then fails (both
train).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lvtrack.budget_db import Holder
from lvtrack.ledger import TAG_PLANNED, open_ledger, read_ledger
from tests.reliability._scripts import RUN_ID, STALLED_TRAIN
from tests.stores import Store, using_store

pytestmark = pytest.mark.slow  # three training processes

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY, STALL = 8, 3, 5
WAIT_S = 600
# `python -m projects.train ARGS` that, having found the run to resume, waits until `ready`
# processes have (a barrier in files).
BARRIER_RESUME = """
import os, sys, time
from pathlib import Path
import lvtrack.training_run as experiment
from lvtrack.budget_db import BudgetDB
if os.environ.get("LV_TEST_NO_CLAIM") == "1":  # every claim wins: no exclusion
    BudgetDB.claim = lambda self, run_id, holder=None, planned=None: True
sync, ready = Path(sys.argv.pop(1)), int(sys.argv.pop(1))
find = experiment.find_resumable
def found(*args, **kwargs):
    resume = find(*args, **kwargs)
    (sync / f"found-{os.getpid()}").touch()
    deadline = time.monotonic() + 300
    while len(list(sync.glob("found-*"))) < ready:
        assert time.monotonic() < deadline, "the other resume never looked the run up"
        time.sleep(0.02)
    return resume
experiment.find_resumable = found
from projects.train import main
main(prog_name="projects.train")
"""


@pytest.fixture
def env(store: Store, tmp_path: Path, subprocess_env) -> dict[str, str]:
    """On each store (SQLite, or a server on PostgreSQL with the ledger there too)."""
    name = f"race-{store.kind}-{tmp_path.name}"
    where = str(tmp_path / "artifacts") if store.kind == "sqlite" else None
    MlflowClient(store.uri).create_experiment(name, artifact_location=where)
    return subprocess_env(
        MLFLOW_TRACKING_URI=store.uri,
        MLFLOW_EXPERIMENT_NAME=name,
        LV_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _killed_run(
    env: dict[str, str], args: list[str], tmp_path: Path, started: list
) -> tuple[str, MlflowClient]:
    """Start a training run, kill -9 it once step STALL is logged; returns its id."""
    log = tmp_path / "killed.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", STALLED_TRAIN, str(STALL), *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    started.append(proc)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    deadline, run_id = time.monotonic() + WAIT_S, ""
    while True:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        if not run_id and (found := RUN_ID.findall(log.read_text())):
            run_id = found[0]
        if run_id:
            steps = {m.step for m in client.get_metric_history(run_id, "train_loss")}
            if STALL in steps:
                break
        time.sleep(0.2)
    proc.kill()
    proc.wait(timeout=60)
    return run_id, client


def test_two_resumes_of_one_run_at_once_train_it_once(
    env: dict[str, str], micro_args: list[str], tmp_path: Path, processes: list
) -> None:
    args = [*micro_args, "--steps", str(STEPS), "--checkpoint-every", str(EVERY)]
    run_id, client = _killed_run(env, [*args, "--run-name", "dead"], tmp_path, processes)
    assert client.get_run(run_id).info.status == "RUNNING"  # nothing could close it

    sync = tmp_path / "sync"
    sync.mkdir()
    cmd = [sys.executable, "-c", BARRIER_RESUME, str(sync), "2", "--resume-run-id", run_id]
    logs = [tmp_path / f"resume-{i}.log" for i in range(2)]
    for log in logs:
        with log.open("wb") as out:
            processes.append(
                subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
            )
    resumers = processes[1:]
    for proc in resumers:
        proc.wait(timeout=WAIT_S)
    outputs = [log.read_text(errors="replace") for log in logs]
    codes = [p.returncode for p in resumers]
    assert sorted(codes) == [0, 1], dict(zip(codes, [o[-3000:] for o in outputs], strict=True))
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    lost = outputs[loser]
    assert "Traceback" not in lost, lost[-3000:]
    # A click error that names the run and the process that has it.
    assert f"Error: run {run_id} is still running (pid {resumers[winner].pid} on this host)" in (
        lost
    ), lost[-3000:]
    assert "only one process may train a run" in lost
    assert f"training run {run_id} (attempt 2)" in outputs[winner]
    assert "training run" not in lost  # it never reopened the run

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["lv.attempt"] == "2" and "lv.attempt.3" not in run.data.tags
    with pytest.MonkeyPatch.context() as mp, using_store(mp, env["MLFLOW_TRACKING_URI"]):
        (held,) = open_ledger(run.info.experiment_id, 10**18).read(run.info.experiment_id).entries
    assert Holder.of(held).pid == resumers[winner].pid and held.status == "FINISHED"
    # Trained once more from the step-3 checkpoint, by one process: no step was logged thrice.
    losses = sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.timestamp)
    assert [m.step for m in losses] == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]
    attempts = client.get_metric_history(run_id, "attempt")
    assert sorted({m.value for m in attempts}) == [1.0, 2.0]
    (entry,) = read_ledger(client, run.info.experiment_id, 10**18).entries
    assert entry.charge == int(run.data.metrics["flops_total"]) <= int(run.data.tags[TAG_PLANNED])
