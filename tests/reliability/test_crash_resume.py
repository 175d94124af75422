"""Crash safety of training runs: a run that dies is never left RUNNING unless its process was
killed outright (kill -9), its FLOPs still count, and `--resume-run-id` finishes it exactly as an
uninterrupted run would have, counting the redone steps once more (they were spent) and nothing
before the checkpoint twice.

Every run here is the `micro` preset on the random tiny base: 8 steps, a checkpoint every 3. The
processes that get killed run `projects.train`'s command line with one change, a stall after a
chosen step has been logged, so that the kill lands at a known place.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner, Result
from mlflow.entities import Run
from mlflow.projects._project_spec import load_project
from mlflow.tracking import MlflowClient

from lvtrack import runs, training_run
from lvtrack.budget_db import Holder
from lvtrack.ledger import TAG_PLANNED, TAG_REFUSED, open_ledger, read_ledger
from projects import budget as budget_entry
from projects import train as train_entry
from tests.reliability._scripts import RUN_ID, STALLED_TRAIN
from tests.stores import using_store

pytestmark = pytest.mark.slow  # a few training processes, about a minute in all

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY = 8, 3  # checkpoints at steps 3 and 6 (and the end)
EXPERIMENT = "lv-forecast"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One tracking store for the module (its runs share the budget ledger), with checkpoints and
    artifacts in a temporary folder; yields the environment for subprocesses.

    Every process computes on one thread, so that in-process and subprocess runs agree bit for bit.
    """
    root = tmp_path_factory.mktemp("crash")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "LV_CHECKPOINT_DIR": str(root / "checkpoints"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
    }
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp, using_store(mp, uri):
        for key, value in env.items():
            mp.setenv(key, value)
        torch.set_num_threads(1)
        # Create the store (schema migration) and the experiment once, before any subprocess.
        MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=str(root / "artifacts"))
        yield {
            **os.environ,
            **env,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            # `mlflow run` runs `python -m ...` from PATH: this interpreter's.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        }
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_args(micro_args: list[str]) -> list[str]:
    return [*micro_args, "--steps", str(STEPS), "--checkpoint-every", str(EVERY)]


def _train(args: list[str]) -> Result:
    return CliRunner().invoke(train_entry.main, args)


def _run(run_id: str) -> Run:
    return MlflowClient().get_run(run_id)


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric in logging order."""
    hist = MlflowClient().get_metric_history(run_id, key)
    return [(m.step, m.value) for m in sorted(hist, key=lambda m: (m.timestamp, m.step))]


def _by_step(run_id: str, key: str) -> dict[int, float]:
    """The first value logged at each step (the end of training, at the last step)."""
    out: dict[int, float] = {}
    for step, value in _history(run_id, key):
        out.setdefault(step, value)
    return out


def _run_id(output: str) -> str:
    found = RUN_ID.findall(output)
    assert found, output
    return found[-1]


@pytest.fixture(scope="module")
def full(store: dict[str, str], base_args: list[str]) -> Run:
    """The uninterrupted run every resumed run must reproduce."""
    result = _train([*base_args, "--run-name", "full"])
    assert result.exit_code == 0, result.output
    run = _run(_run_id(result.output))
    assert run.info.status == "FINISHED" and run.data.metrics["flops_rework"] == 0
    return run


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    """Processes a test started; any still alive when it ends (a failed test) are killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_stalled(
    store: dict[str, str], args: list[str], stall: int, log: Path, started: list
) -> tuple[subprocess.Popen, str]:
    """Start a training process that stalls after step `stall`; wait until it got there."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", STALLED_TRAIN, str(stall), *args],
            env=store,
            cwd=log.parent,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    started.append(proc)
    deadline = time.monotonic() + 180
    run_id = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        if not run_id and (found := RUN_ID.findall(log.read_text())):
            run_id = found[0]
        if run_id and stall in _by_step(run_id, "train_loss"):
            return proc, run_id
        time.sleep(0.2)
    pytest.fail(f"the training process did not reach step {stall}: {log.read_text()}")


def _as_mlflow_run(params: dict[str, str], monkeypatch) -> tuple[list[str], str]:
    """What `mlflow run . -e train --env-manager local -P ...` does before its command runs: a run
    named to the command by MLFLOW_RUN_ID; returns the command's arguments as MLproject renders
    them, and the run's id (saves the ~20 s of two more processes here)."""
    entry = load_project(str(REPO)).get_entry_point("train")
    command = shlex.split(entry.compute_command(params, storage_dir=None))
    assert command[:3] == ["python", "-m", "projects.train"]
    found = MlflowClient().get_experiment_by_name(EXPERIMENT)
    assert found is not None
    exp = found.experiment_id
    run = MlflowClient().create_run(exp, tags={"mlflow.project.entryPoint": "train"})
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp)
    return command[3:], run.info.run_id


def test_kill_9_then_resume_under_mlflow_run_reproduces_the_uninterrupted_run(
    store, base_args, full, tmp_path, monkeypatch, processes
):
    # Killed outright after step 5: the newest checkpoint is step 3, steps 4 and 5 are redone.
    args = [*base_args, "--run-name", "killed"]
    proc, run_id = _start_stalled(store, args, 5, tmp_path / "killed.log", processes)
    assert (Path(store["LV_CHECKPOINT_DIR"]) / run_id / "step-000003").is_dir()
    busy = _train(["--resume-run-id", run_id])
    assert busy.exit_code == 1 and f"still running (pid {proc.pid} on this host)" in busy.output
    proc.kill()
    proc.wait(timeout=30)
    dead = _run(run_id)
    assert dead.info.status == "RUNNING"  # nothing could close it
    full_flops = _by_step(full.info.run_id, "flops_total")
    assert dead.data.metrics["flops_total"] == full_flops[5] > full_flops[3] > 0

    # Every other parameter at its MLproject default: the run's own settings are used.
    args, mlflow_run_id = _as_mlflow_run({"resume_run_id": run_id}, monkeypatch)
    resumed = _train(args)
    assert resumed.exit_code == 0, resumed.output
    assert f"training run {run_id} (attempt 2)" in resumed.output

    run, ref = _run(run_id), full.data.metrics
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    # The same results as the uninterrupted run, exactly (CPU, fp32).
    val = {k: v for k, v in ref.items() if k.startswith("val_")}
    assert len(val) > 10 and {k: m[k] for k in val} == val
    assert m["train_loss"] == ref["train_loss"]
    assert (m["flops_train"], m["flops_eval"]) == (ref["flops_train"], ref["flops_eval"])
    # Spent: the uninterrupted run's FLOPs plus the two redone steps, counted once each.
    assert m["flops_rework"] == full_flops[5] - full_flops[3] > 0
    assert m["flops_total"] == ref["flops_total"] + m["flops_rework"]
    assert m["flops_total"] == m["flops_train"] + m["flops_eval"] + m["flops_rework"]
    # Every step is in the history; the redone ones twice, with the same losses.
    losses = _history(run_id, "train_loss")
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]
    assert dict(losses) == _by_step(full.info.run_id, "train_loss")
    attempts = _history(run_id, "attempt")
    assert attempts == [(s, 1.0) for s in range(1, 6)] + [(s, 2.0) for s in range(4, 9)]
    # The resumed run is nested under the new `mlflow run` parent, which names it.
    tags = run.data.tags
    assert tags["lv.attempt"] == "2" and '"resumed_from_step": 3' in tags["lv.attempt.2"]
    assert tags["mlflow.parentRunId"] == mlflow_run_id
    parent = _run(mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lv.work_run"] == run_id == parent.data.tags["lv.resumes"]
    wrong = _train(["--resume-run-id", mlflow_run_id])  # the parent's id instead: say which
    assert wrong.exit_code == 1 and f"parent of training run {run_id}" in wrong.output
    # The ledger charges what it spent; its reservation covered it.
    ledger = read_ledger(MlflowClient(), run.info.experiment_id, int(5e13))
    (entry,) = [e for e in ledger.entries if e.run_id == run_id]
    assert entry.charge == int(m["flops_total"]) <= int(tags[TAG_PLANNED])


def test_killed_twice_resumed_twice_counts_each_rework_once(
    store, base_args, full, tmp_path, processes
):
    """Killed after step 5 (checkpoint 3), resumed and killed again after step 7 (checkpoint 6),
    resumed again: the uninterrupted run's results, and both stretches of redone steps counted."""
    first, run_id = _start_stalled(
        store, [*base_args, "--run-name", "twice"], 5, tmp_path / "1.log", processes
    )
    first.kill()
    first.wait(timeout=30)
    second, again = _start_stalled(
        store, ["--resume-run-id", run_id], 7, tmp_path / "2.log", processes
    )
    assert again == run_id
    second.kill()
    second.wait(timeout=30)
    assert _run(run_id).info.status == "RUNNING"
    resumed = _train(["--resume-run-id", run_id])
    assert resumed.exit_code == 0, resumed.output
    assert f"training run {run_id} (attempt 3)" in resumed.output

    m, ref = _run(run_id).data.metrics, full.data.metrics
    val = {k: v for k, v in ref.items() if k.startswith("val_")}
    assert {k: m[k] for k in val} == val and m["train_loss"] == ref["train_loss"]
    f = _by_step(full.info.run_id, "flops_total")
    assert m["flops_rework"] == (f[5] - f[3]) + (f[7] - f[6]) > 0
    assert m["flops_total"] == ref["flops_total"] + m["flops_rework"]
    losses = _history(run_id, "train_loss")
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 4, 5, 6, 7, 7, 8]
    assert _history(run_id, "attempt") == (
        [(s, 1.0) for s in range(1, 6)]
        + [(s, 2.0) for s in range(4, 8)]
        + [(s, 3.0) for s in (7, 8)]
    )
    tags = _run(run_id).data.tags
    assert '"resumed_from_step": 3' in tags["lv.attempt.2"]
    assert '"resumed_from_step": 6' in tags["lv.attempt.3"]


def _budget(args: list[str]) -> Result:
    return CliRunner().invoke(budget_entry.main, ["--preset", "micro", *args])


def test_a_dead_run_left_running_is_released_then_still_resumes(
    store, base_args, full, tmp_path, processes
):
    """kill -9 leaves a run RUNNING, holding its whole plan. `budget` says so and names the two
    ways out; `budget --release` closes it FAILED holding what it spent; it still resumes."""
    proc, run_id = _start_stalled(
        store, [*base_args, "--run-name", "released"], 5, tmp_path / "r.log", processes
    )
    alive = _budget(["--release", run_id])
    assert alive.exit_code == 1 and f"still running (pid {proc.pid} on this host)" in alive.output
    proc.kill()
    proc.wait(timeout=30)
    exp_id = _run(run_id).info.experiment_id
    before = {e.run_id: e for e in read_ledger(MlflowClient(), exp_id, int(5e13)).entries}
    planned = int(_run(run_id).data.tags[TAG_PLANNED])
    spent = _by_step(full.info.run_id, "flops_total")[5]
    assert before[run_id].running and before[run_id].charge == planned > spent

    table = _budget([])
    assert table.exit_code == 0, table.output
    assert f"({run_id}) holds {planned:.3e} FLOPs" in table.output
    assert "process on this host is gone" in table.output
    assert f"--resume-run-id {run_id}" in table.output
    assert f"--release {run_id}" in table.output

    released = _budget(["--release", run_id])
    assert released.exit_code == 0, released.output
    assert f"released run {run_id}" in released.output
    run = _run(run_id)
    assert run.info.status == "FAILED" and "lv.released" in run.data.tags
    after = {e.run_id: e for e in read_ledger(MlflowClient(), exp_id, int(5e13)).entries}
    assert not after[run_id].running and after[run_id].charge == spent
    assert f"({run_id}) holds" not in released.output  # the table printed after it
    again = _budget(["--release", run_id])
    assert again.exit_code == 1 and "is FAILED" in again.output and "Traceback" not in again.output

    resumed = _train(["--resume-run-id", run_id])
    assert resumed.exit_code == 0, resumed.output
    m = _run(run_id).data.metrics
    assert m["train_loss"] == full.data.metrics["train_loss"]
    assert m["flops_total"] == full.data.metrics["flops_total"] + m["flops_rework"]


def test_release_refuses_other_hosts_runs_without_force_and_unbudgeted_runs(store):
    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    other = client.create_run(
        exp.experiment_id, tags={TAG_PLANNED: "1000", "lv.host": "gpu-7", "lv.pid": "1"}
    )
    ledger = open_ledger(exp.experiment_id, int(5e13))
    gpu7 = Holder("gpu-7", 1, None)  # a run admitted on another machine
    ledger.reserve(exp.experiment_id, other.info.run_id, "other", "train", 1000, 5e13, gpu7)
    client.log_metric(other.info.run_id, "flops_total", 400.0, step=3)
    refused = _budget(["--release", other.info.run_id])
    assert refused.exit_code == 1 and "runs on host gpu-7, not here" in refused.output
    assert "--force" in refused.output and _run(other.info.run_id).info.status == "RUNNING"
    forced = _budget(["--release", other.info.run_id, "--force", "true"])
    assert forced.exit_code == 0, forced.output
    assert _run(other.info.run_id).info.status == "FAILED"
    assert _by_step(other.info.run_id, "flops_total") == {3: 400.0}
    plain = client.create_run(exp.experiment_id)
    not_budgeted = _budget(["--release", plain.info.run_id])
    assert not_budgeted.exit_code == 1 and "not in the FLOPs budget ledger" in not_budgeted.output
    assert {e.run_id: e.charge for e in ledger.read(exp.experiment_id).entries}[
        other.info.run_id
    ] == 400  # what it logged, not its plan
    client.set_terminated(plain.info.run_id)
    missing = _budget(["--release", "0" * 32])
    assert missing.exit_code == 1 and "no run" in missing.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_training_ends_the_run_killed_with_its_flops(
    store, base_args, full, monkeypatch, sig
):
    log_rows = runs.FlopsMeter.log_rows

    def signalled(self, rows):
        log_rows(self, rows)
        if any(step == 2 and "train_loss" in metrics for step, _, metrics in rows):
            os.kill(os.getpid(), sig)
            time.sleep(30)  # the signal interrupts this

    monkeypatch.setattr(runs.FlopsMeter, "log_rows", signalled)
    # A shell starts background jobs with SIGINT ignored (`cmd &`, as some CI runners do): give
    # this process Python's own Ctrl-C handler, as in a terminal.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = _train([*base_args, "--run-name", sig.name])
    finally:
        signal.signal(signal.SIGINT, previous_int)
    assert result.exit_code == 1 and "Aborted!" in result.output  # click's Ctrl-C exit
    run = _run(_run_id(result.output))
    assert run.info.status == "KILLED"
    # Spent: two steps' FLOPs, and that value is the run's latest `flops_total`.
    assert run.data.metrics["flops_total"] == _by_step(full.info.run_id, "flops_total")[2] > 0
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_failure_in_final_evaluation_ends_failed_then_resumes(store, base_args, full, monkeypatch):
    """A failure after training (here in the final evaluation) ends the run FAILED with its FLOPs;
    it then resumes from the end-of-training checkpoint, with nothing redone. On the way, a resume
    with other settings, or one the budget no longer holds, is refused and changes nothing."""

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(training_run, "evaluate_llm", broken)
    result = _train([*base_args, "--run-name", "eval-fails"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    run_id = _run_id(result.output)
    failed = _run(run_id)
    train_end = _by_step(full.info.run_id, "flops_total")[STEPS]  # training + in-run validation
    assert failed.info.status == "FAILED" and failed.data.metrics["flops_total"] == train_end
    monkeypatch.undo()

    conflict = _train(["--resume-run-id", run_id, "--lr", "0.5", "--steps", str(STEPS)])
    assert conflict.exit_code == 1 and "--lr 0.5 (the run's: 0.001)" in conflict.output
    assert isinstance(conflict.exception, SystemExit)
    assert "--steps" not in conflict.output  # agrees with the run: fine

    refused = _train(["--resume-run-id", run_id, "--budget", f"{train_end * 1.5:.6e}"])
    assert refused.exit_code == 1 and "refused resuming" in refused.output, refused.output
    assert isinstance(refused.exception, SystemExit)  # a click error, not a crash
    still = _run(run_id)
    assert still.info.status == "FAILED" and TAG_REFUSED not in still.data.tags
    assert still.data.metrics["flops_total"] == train_end

    done = _train(["--resume-run-id", run_id])
    assert done.exit_code == 0, done.output
    m, ref = _run(run_id).data.metrics, full.data.metrics
    assert _run(run_id).info.status == "FINISHED"
    assert m["flops_rework"] == 0 and m["flops_total"] == ref["flops_total"]
    # It continued from the end-of-training checkpoint: no step was trained again.
    assert [s for s, _ in _history(run_id, "train_loss")] == list(range(1, STEPS + 1))
    assert _run(run_id).data.tags["lv.attempt"] == "2"
    assert {k: m[k] for k in ref if k.startswith("val_")} == {
        k: v for k, v in ref.items() if k.startswith("val_")
    }


def test_resume_errors_are_clear(store, base_args, full, monkeypatch):
    def fails(code: int, *args: str) -> str:
        result = _train(list(args))
        assert result.exit_code == code, result.output
        assert isinstance(result.exception, SystemExit)  # a click error, not a crash
        return result.output

    assert "no run 'f00d'" in fails(1, "--resume-run-id", "f00d")
    assert "already FINISHED" in fails(1, "--resume-run-id", full.info.run_id)

    out = fails(1, *base_args, "--run-name", "refused", "--budget", "1e9")
    refused = _run_id_of("refused")
    assert "refused" in out
    assert "refused by the FLOPs budget before it trained" in fails(1, "--resume-run-id", refused)

    # An exception in training, before the first checkpoint: FAILED, FLOPs logged, no checkpoint.
    log_rows = runs.FlopsMeter.log_rows

    def breaks_at_step_2(self, rows):
        log_rows(self, rows)
        if any(step == 2 for step, _, _ in rows):
            raise RuntimeError("step 2 broke")

    monkeypatch.setattr(runs.FlopsMeter, "log_rows", breaks_at_step_2)
    result = _train([*base_args, "--run-name", "early"])
    monkeypatch.undo()
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    early = _run(_run_id(result.output))
    assert early.info.status == "FAILED"
    assert early.data.metrics["flops_total"] == _by_step(full.info.run_id, "flops_total")[2] > 0
    assert "has no checkpoint" in fails(1, "--resume-run-id", early.info.run_id)
    # Every refusal above left the runs as they were.
    assert _run(early.info.run_id).info.status == "FAILED"
    assert _run(full.info.run_id).info.status == "FINISHED"


def _run_id_of(name: str) -> str:
    (run,) = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"attributes.run_name = '{name}'",
        output_format="list",
    )
    return run.info.run_id
