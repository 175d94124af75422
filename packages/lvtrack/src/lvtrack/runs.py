"""The life of an MLflow run that spends FLOPs: open (reserving its plan against the budget) or
reopen (a resumed run), meter its spending as it goes, and close it FINISHED, FAILED or KILLED with
what it spent logged, whatever ends it (an exception, Ctrl-C, SIGTERM, SIGHUP). Also the parent
runs of sweeps and of `mlflow run`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import click
import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from lvtrack.budget_db import BudgetDB, BudgetRefused
from lvtrack.describe import describe_run
from lvtrack.ledger import (
    METRIC_FLOPS,
    TAG_BUDGET,
    TAG_PHASE,
    TAG_PLANNED,
    TAG_REFUSED,
    open_ledger,
)
from lvtrack.presets import Preset
from lvtrack.resume import (
    TAG_ATTEMPT,
    TAG_HOST,
    TAG_PID,
    TAG_WORK_RUN,
    Resume,
    ResumeError,
    attempt_record,
    reserve_resumed,
)
from lvtrack.tracking import setup_tracking

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


@contextmanager
def _signals_set(
    kinds: tuple[int, ...], handler: Any, keep_ignored: bool = False
) -> Iterator[None]:
    """Install `handler` for the signals `kinds` for a block, then restore the previous ones.

    Only in the main thread (where Python delivers signals; elsewhere it is a no-op). With
    `keep_ignored`, a signal ignored on entry stays ignored (SIGHUP under nohup).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in kinds}
    for s in kinds:
        if not (keep_ignored and previous[s] == signal.SIG_IGN):
            signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def killed_as_failure() -> AbstractContextManager[None]:
    """SIGTERM (`kill`, a scheduler) and SIGHUP (a closed terminal) end the run like Ctrl-C:
    KILLED, FLOPs logged."""
    return _signals_set(STOP_SIGNALS, _raise_interrupt, keep_ignored=True)


def signals_deferred() -> AbstractContextManager[None]:
    """Ignore Ctrl-C and the stop signals while a dying run is closed (a second Ctrl-C must not
    leave it RUNNING)."""
    return _signals_set((signal.SIGINT, *STOP_SIGNALS), signal.SIG_IGN)


class FlopsMeter:
    """Logs `flops_total` as a run goes, so a killed run's spending still counts, and records it
    in the budget ledger at the same cadence.

    `counted` is what the run's own work has cost so far (the FLOPs of an uninterrupted run up to
    here); `offset` is what earlier attempts spent beyond the checkpoint a resumed run continues
    from (rework). `flops_total` = offset + counted.
    """

    def __init__(
        self,
        offset: float = 0.0,
        counted: float = 0.0,
        step: int = 0,
        attempt: int = 1,
        ledger: BudgetDB | None = None,
        run_id: str = "",
    ):
        self.offset = float(offset)
        self.counted = float(counted)
        self.step = step  # the highest step logged: the closing value goes there, so it is latest
        self.attempt = attempt
        self.ledger, self.run_id = ledger, run_id

    @property
    def spent(self) -> float:
        return self.offset + self.counted

    def log(self, counted: float, step: int, metrics: dict[str, float] | None = None) -> None:
        self.log_rows([(step, counted, metrics or {})])

    def log_rows(self, rows: list[tuple[int, float, dict[str, float]]]) -> None:
        """Every (step, counted, metrics) row in one batch, `flops_total` beside each step's
        metrics, written by MLflow's asynchronous logging: the training loop goes on at once.
        Measured on SQLite: a synchronous batch costs about 4 ms per step's row (160 rows: 660
        ms; a GPU makes 160 steps in 5 s), queueing it 0.05 ms. `close` waits for the queue."""
        run = mlflow.active_run()
        if run is None or not rows:
            return
        now = int(time.time() * 1000)
        batch = []
        for step, counted, metrics in rows:
            self.counted = float(counted)
            self.step = max(self.step, step)
            values = {**metrics, METRIC_FLOPS: self.spent}
            batch += [Metric(k, float(v), now, step) for k, v in values.items()]
        MlflowClient().log_batch(run.info.run_id, metrics=batch, synchronous=False)
        if self.ledger is not None:  # one short transaction per logging interval
            self.ledger.record_spent(self.run_id, int(self.spent))

    def log_fit_rows(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """`lvmodel.train.fit`'s `on_metrics`: its rows (each step's metrics, with the run's
        cumulative FLOPs), tagged with this attempt."""
        attempt = {"attempt": self.attempt}
        self.log_rows([(s, m["flops_cumulative"], {**m, **attempt}) for s, m in rows])

    def close(self) -> None:
        """Log what was spent at the highest step seen (a dying run's last word), after every
        queued row."""
        mlflow.flush_async_logging()
        mlflow.log_metric(METRIC_FLOPS, self.spent, step=self.step)

    def finish(self, status: str) -> None:
        """Close the run's row in the ledger: it is charged what it spent."""
        if self.ledger is not None:
            self.ledger.finish(self.run_id, status.lower(), int(self.spent))


@contextmanager
def budgeted_run(
    run_name: str,
    phase: str,
    preset: Preset,
    planned: int,
    log_start: Callable[[], None],
    nested: bool = False,
    tags: dict[str, str] | None = None,
    resume: Resume | None = None,
    storage: str = "",
) -> Iterator[tuple[mlflow.ActiveRun, FlopsMeter]]:
    """A run that reserves `planned` FLOPs first (or is refused: FAILED, exit 1, nothing run).

    The reservation is a row of the budget ledger at `storage` (`lvtrack.ledger.open_ledger`);
    the run's spending reaches it as the run logs, and its closing state when it ends.

    `log_start` logs what a new run records before its reservation (parameters, data set); a
    failure there ends the run FAILED like any other.

    Ctrl-C, SIGTERM or SIGHUP end it KILLED and any other failure FAILED, with the FLOPs metered
    so far logged: no run is left RUNNING. With `resume`, the dead run is reopened instead and
    re-reserves what it may still spend (`lvtrack.resume.reserve_resumed`).
    """
    with killed_as_failure():
        if resume is None:
            run, meter = _start(run_name, phase, preset, planned, log_start, nested, tags, storage)
        else:
            run, meter = _reopen(resume, preset, planned, nested, storage)
        with _ended_on_failure(run, meter):
            yield run, meter
        _close(run, meter, "FINISHED")


@contextmanager
def _ended_on_failure(run: mlflow.ActiveRun, meter: FlopsMeter) -> Iterator[None]:
    """Ctrl-C or a stop signal ends `run` KILLED, any other exception FAILED; then re-raises."""
    try:
        yield
    except KeyboardInterrupt:
        _close(run, meter, "KILLED")
        raise
    except BaseException:
        _close(run, meter, "FAILED")
        raise


def _attempt_tags(attempt: int) -> dict[str, str]:
    return {TAG_ATTEMPT: str(attempt), TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}


def _start(
    run_name: str,
    phase: str,
    preset: Preset,
    planned: int,
    log_start: Callable[[], None],
    nested: bool,
    tags: dict[str, str] | None,
    storage: str,
) -> tuple[mlflow.ActiveRun, FlopsMeter]:
    run = mlflow.start_run(run_name=run_name, nested=nested, log_system_metrics=True)
    meter = FlopsMeter()
    with _ended_on_failure(run, meter):
        mlflow.set_tags(
            {
                TAG_PHASE: phase,
                "preset": preset.name,
                "mlflow.runName": run_name,
                **_attempt_tags(1),
                **(tags or {}),
            }
        )
        log_start()
        run_id, experiment_id, budget = run.info.run_id, run.info.experiment_id, int(preset.budget)
        ledger = open_ledger(experiment_id, budget, storage)
        try:
            ledger.reserve(experiment_id, run_id, run_name, phase, planned, budget)
        except BudgetRefused as err:
            mlflow.set_tag(TAG_REFUSED, "true")
            raise click.ClickException(str(err)) from None
        meter.ledger, meter.run_id = ledger, run_id
        mlflow.set_tags({TAG_PLANNED: str(int(planned)), TAG_BUDGET: str(budget)})
        mlflow.log_metric(METRIC_FLOPS, 0.0, step=0)
    return run, meter


def _reopen(
    resume: Resume, preset: Preset, planned: int, nested: bool, storage: str
) -> tuple[mlflow.ActiveRun, FlopsMeter]:
    """Claim and re-reserve, then reopen the dead run, nested under the `mlflow run` parent."""
    client = MlflowClient()
    ledger = open_ledger(resume.experiment_id, int(preset.budget), storage, client)
    try:
        reserve_resumed(client, ledger, resume, planned, int(preset.budget))
    except (BudgetRefused, ResumeError) as err:  # refused, or claimed by another process
        raise click.ClickException(str(err)) from None
    parent = mlflow.active_run()
    parent_id = parent.info.run_id if parent is not None and nested else None
    tags = {
        **_attempt_tags(resume.attempt),
        f"{TAG_ATTEMPT}.{resume.attempt}": json.dumps(attempt_record(resume, planned, parent_id)),
        **({MLFLOW_PARENT_RUN_ID: parent_id} if parent_id else {}),
    }
    try:
        run = mlflow.start_run(
            run_id=resume.run_id, nested=parent is not None, log_system_metrics=True, tags=tags
        )
    except BaseException:
        with signals_deferred(), suppress(Exception):
            client.set_terminated(resume.run_id, "FAILED")
        raise
    meter = FlopsMeter(
        offset=resume.rework,
        counted=resume.checkpoint_flops,
        step=resume.last_step,
        attempt=resume.attempt,
        ledger=ledger,
        run_id=resume.run_id,
    )
    return run, meter


def _close(run: mlflow.ActiveRun, meter: FlopsMeter, status: str) -> None:
    """End `run` with `status` in the ledger and in MLflow, logging the FLOPs spent first when it
    dies."""
    with signals_deferred():
        if status != "FINISHED":
            with suppress(Exception):
                meter.close()
        try:
            meter.finish(status)
        finally:
            _end(run, status)


def _end(run: mlflow.ActiveRun, status: str) -> None:
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run.info.run_id:
        mlflow.end_run(status)
    else:
        MlflowClient().set_terminated(run.info.run_id, status)


def parent_run(name: str, phase: str, params: dict[str, Any], preset: str) -> mlflow.ActiveRun:
    """A parent run for a sweep (children are nested; the parent itself spends nothing).

    Under `mlflow run` this is the run it created, which already holds the entry point's raw
    parameters (empty strings for those left out): the resolved values go in as `resolved_*`.
    """
    setup_tracking()
    run = mlflow.start_run(run_name=name)
    mlflow.set_tags(
        {TAG_PHASE: phase, "preset": preset, "mlflow.runName": name, "lv.parent": "true"}
    )
    mlflow.log_params({f"resolved_{k}": v for k, v in params.items()})
    return run


@contextmanager
def entry_parent(
    phase: str, preset: str, name: str, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun | None]:
    """Under `mlflow run`, make its run the parent of the work run; yields it (else None).

    `mlflow run` logs the entry point's raw parameters (empty strings meaning "the
    preset's value"), and MLflow forbids changing a logged parameter; so the budgeted run that
    logs the resolved values is a child of it. A resumed work run is moved under the new parent
    (its attempt tag records the old one, which stays FAILED). Once the work run has finished,
    the parent takes its description (the work run is named by the tag `lv.work_run`).
    """
    if "MLFLOW_RUN_ID" in os.environ and mlflow.active_run() is None:
        # Named apart from the work run (`final (mlflow run)` above `final`) in the runs list.
        with parent_run(f"{name} (mlflow run)", phase, {}, preset) as run:
            if tags:
                mlflow.set_tags(tags)
            yield run
            _describe_from_work_run(run.info.run_id)
    else:
        yield None


def _describe_from_work_run(parent_id: str) -> None:
    """The parent's description: its work run's, and which run that is."""
    client = MlflowClient()
    work = client.get_run(parent_id).data.tags.get(TAG_WORK_RUN)
    if not work:
        return
    note = client.get_run(work).data.tags.get(MLFLOW_RUN_NOTE)
    if note:
        describe_run(f"{note} · work run {work}", parent_id)
