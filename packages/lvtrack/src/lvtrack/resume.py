"""Resuming a training run that died (`--resume-run-id`): find it, check it, re-reserve its budget.

A run that dies leaves its MLflow run RUNNING (kill -9, power loss), KILLED (Ctrl-C, SIGTERM) or
FAILED (an exception), its `flops_total` logged up to its last metered step, and checkpoints under
`checkpoints/<run id>/step-*`. Resuming reopens *the same* MLflow run, takes every setting from its
logged parameters, and continues `fit` from the newest checkpoint.

FLOPs: the dead attempt spent S (the largest `flops_total` the run ever logged); the checkpoint it
resumes from holds C <= S (FLOPs counted up to that step). The steps between the checkpoint and the
death are computed again, and they really were spent, so the resumed attempt logs
`flops_total = S + (counted - C)`: nothing before the checkpoint is counted twice, nothing spent is
lost, and `flops_rework = S - C` (all attempts together) says how much went into redoing steps. The
run's counted work (`flops_train + flops_eval`) is that of an uninterrupted run, so at the end
`flops_total = flops_train + flops_eval + flops_rework`.

Budget and one trainer at a time: before it trains again, the run is claimed in the budget
ledger (`lvtrack.budget_db.BudgetDB.claim`), one transaction that checks that no live process
holds it, re-reserves what it may hold at most, S + (its plan - C), against what the other runs
hold, and makes this process its holder. Of two resumes of one run started together, exactly one
claims it (the other stops: ResumeClaimed); if it no longer fits, the resume is refused and the
run keeps what it spent. A run held by a process on another host counts as alive: release it
first (`--force`) once that process is known to be dead.

A dead run that will not be resumed keeps holding its reservation: `release_dead_run`
(`python -m projects.budget --release RUN_ID`) closes it FAILED so that it holds only what it
spent. It can still be resumed afterwards.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lvmodel.checkpoint import latest_checkpoint
from lvtrack.budget_db import OPEN_STATUSES, BudgetDB, BudgetRefused, Holder
from lvtrack.ledger import METRIC_FLOPS, TAG_BUDGET, TAG_PLANNED, TAG_REFUSED, open_ledger

CHECKPOINT_ENV = "LV_CHECKPOINT_DIR"
TAG_ATTEMPT = "lv.attempt"
TAG_CHECKPOINTS = "lv.checkpoint_dir"
TAG_HOST = "lv.host"
TAG_PID = "lv.pid"
TAG_WORK_RUN = "lv.work_run"
TAG_RESUMES = "lv.resumes"
TAG_RELEASED = "lv.released"  # host:pid of the process that released the run
METRIC_REWORK = "flops_rework"


class ResumeError(RuntimeError):
    """The run cannot be resumed (the message says why and what to do instead)."""


class ResumeClaimed(ResumeError):
    """Another process claimed the run's resume: only one process may train a run."""


def checkpoint_root() -> Path:
    """Where training checkpoints go: $LV_CHECKPOINT_DIR, else `checkpoints/` here."""
    return Path(os.environ.get(CHECKPOINT_ENV) or "checkpoints")


def resume_hint(run_id: str, experiment_id: str) -> str:
    """The two commands that resume run `run_id`."""
    return (
        f"python -m projects.train --resume-run-id {run_id}  (or: mlflow run . -e train "
        f"--env-manager local --experiment-id {experiment_id} -P resume_run_id={run_id})"
    )


@dataclass(frozen=True)
class Resume:
    """A dead training run and the checkpoint it continues from.

    Attributes:
        run_id, experiment_id, status: the run as the store has it now.
        params, tags: its logged parameters and tags.
        checkpoint_dir: its checkpoint folder; `checkpoint` the newest complete checkpoint in it.
        checkpoint_step, checkpoint_flops, checkpoint_config: step, FLOPs counted so far (C) and
            the training config saved with that checkpoint.
        spent: the largest `flops_total` the run ever logged (S).
        last_step: the highest step at which it logged `flops_total`.
        attempt: the number of the attempt about to start (2 for the first resume).
        data_digest: the digest of the data set the run logged, if any.
    """

    run_id: str
    experiment_id: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    checkpoint_dir: Path
    checkpoint: Path
    checkpoint_step: int
    checkpoint_flops: int
    checkpoint_config: dict[str, Any]
    spent: float
    last_step: int
    attempt: int
    data_digest: str | None = None

    @property
    def rework(self) -> float:
        """FLOPs spent beyond the checkpoint by the dead attempts (redone by this one)."""
        return max(self.spent - self.checkpoint_flops, 0.0)

    def need(self, planned: int) -> int:
        """What the resumed run may hold of the budget: spent so far + the rest of its plan."""
        return int(self.spent + max(planned - self.checkpoint_flops, 0))


def _get_run(client: MlflowClient, run_id: str, error: type[Exception], hint: str = "") -> Run:
    """The run, or `error` saying that the store has no such run (and `hint`)."""
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise error(
            f"no run {run_id!r} in the tracking store {client.tracking_uri}{hint}"
        ) from None


def _flops_logged(client: MlflowClient, run_id: str) -> tuple[float, int]:
    """The largest `flops_total` the run logged (what it spent) and the highest step it used."""
    history = client.get_metric_history(run_id, METRIC_FLOPS)
    return max((m.value for m in history), default=0.0), max((m.step for m in history), default=0)


def _close_dead(client: MlflowClient, run_id: str, spent: float, step: int) -> None:
    """End a dead run FAILED with what it spent as its latest `flops_total` (it is charged that)."""
    client.log_metric(run_id, METRIC_FLOPS, spent, step=step)
    client.set_terminated(run_id, "FAILED")


class ReleaseError(RuntimeError):
    """The run cannot be released (the message says why)."""


def release_dead_run(
    client: MlflowClient, run_id: str, budget: int, storage: str = "", force: bool = False
) -> int:
    """Close a dead running budgeted run FAILED, so that it holds what it spent, not its plan.

    Returns what it spent. Refused (ReleaseError) for a run that is not in the ledger or not
    running, a run whose process still runs on this host, and, unless `force`, a run whose holder
    ran on another host (this one cannot tell whether it is dead; a live process would go on
    spending against a budget that no longer holds its plan).
    """
    run_id = run_id.strip()
    run = _get_run(client, run_id, ReleaseError)
    ledger = open_ledger(run.info.experiment_id, budget, storage, client)
    logged, step = _flops_logged(client, run_id)
    try:
        spent = ledger.release_dead(run_id, force=force, spent=int(logged))
    except ValueError as err:
        raise ReleaseError(str(err)) from None
    client.set_tag(run_id, TAG_RELEASED, f"{socket.gethostname()}:{os.getpid()}")
    if run.info.status in OPEN_STATUSES:
        _close_dead(client, run_id, spent, step)
    return spent


def find_resumable(client: MlflowClient, run_id: str) -> Resume:
    """The run `run_id` with its newest checkpoint, or ResumeError saying why it cannot resume."""
    run_id = run_id.strip()
    run = _get_run(
        client,
        run_id,
        ResumeError,
        f"; pass the id of the training run printed when it started (tag {TAG_WORK_RUN} on the "
        f"`mlflow run` parent)",
    )
    tags, params, status = run.data.tags, run.data.params, run.info.status
    if run.info.lifecycle_stage == "deleted":
        raise ResumeError(f"run {run_id} is deleted; restore it first (mlflow runs restore)")
    if tags.get(TAG_WORK_RUN):
        raise ResumeError(
            f"run {run_id} is the `mlflow run` parent of training run {tags[TAG_WORK_RUN]}: "
            f"resume that one"
        )
    if tags.get(TAG_REFUSED) == "true":
        raise ResumeError(
            f"run {run_id} was refused by the FLOPs budget before it trained: there is nothing to "
            f"resume; start a new run"
        )
    if TAG_PLANNED not in tags or "steps" not in params or "lr" not in params:
        raise ResumeError(f"run {run_id} is not a budgeted training run; nothing to resume")
    if status == "FINISHED":
        raise ResumeError(f"run {run_id} already FINISHED; nothing to resume")
    directory = Path(tags.get(TAG_CHECKPOINTS) or checkpoint_root() / run_id)
    ckpt = latest_checkpoint(directory)
    if ckpt is None:
        every = params.get("checkpoint_every", "?")
        raise ResumeError(
            f"run {run_id} has no checkpoint in {directory}: it stopped before its first "
            f"checkpoint (every {every} steps); start a new run"
        )
    state = json.loads((ckpt / "state.json").read_text())
    spent, last_step = _flops_logged(client, run_id)
    return Resume(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        status=status,
        params=dict(params),
        tags=dict(tags),
        checkpoint_dir=directory,
        checkpoint=ckpt,
        checkpoint_step=int(state["step"]),
        checkpoint_flops=int(state["train_flops"]) + int(state["eval_flops"]),
        checkpoint_config=dict(state.get("config") or {}),
        spent=spent,
        last_step=last_step,
        attempt=int(tags.get(TAG_ATTEMPT, "1") or 1) + 1,
        data_digest=_data_digest(run),
    )


def _data_digest(run: Run) -> str | None:
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return inputs[0].dataset.digest if inputs else None


def reserve_resumed(
    client: MlflowClient, ledger: BudgetDB, resume: Resume, planned: int, budget: int
) -> int:
    """Claim the run in the ledger and re-reserve what the resumed run may hold (see the module
    docstring), then mark it RUNNING in MLflow. Returns the reservation.

    ResumeClaimed (nothing changed) when a live process holds the run; BudgetRefused when it no
    longer fits: the run keeps its spending, and a run left RUNNING is closed FAILED so that it
    stops holding its old reservation.
    """
    need = resume.need(planned)
    try:
        claimed = ledger.claim(resume.run_id, Holder.here(), need, int(budget))
    except BudgetRefused:
        if client.get_run(resume.run_id).info.status in OPEN_STATUSES:
            _close_dead(client, resume.run_id, resume.spent, resume.last_step)
        raise
    except ValueError as err:
        raise ResumeError(str(err)) from None
    if not claimed:
        entries = ledger.read(resume.experiment_id).entries
        holder = next((Holder.of(e) for e in entries if e.run_id == resume.run_id), None)
        pid, host = (holder.pid, holder.host) if holder else (None, None)
        where = "this host" if host == socket.gethostname() else f"host {host or '?'}"
        raise ResumeClaimed(
            f"run {resume.run_id} is still running (pid {pid or '?'} on {where}): only one "
            f"process may train a run, this one stops. If that process is gone, resume again: "
            f"{resume_hint(resume.run_id, resume.experiment_id)}"
        )
    client.set_tag(resume.run_id, TAG_PLANNED, str(need))
    client.set_tag(resume.run_id, TAG_BUDGET, str(int(budget)))
    client.update_run(resume.run_id, status="RUNNING")
    return need


def attempt_record(resume: Resume, planned: int, parent: str | None) -> dict[str, Any]:
    """What the tag `lv.attempt.<N>` records about an attempt that resumes the run."""
    return {
        "resumed_from_step": resume.checkpoint_step,
        "checkpoint": resume.checkpoint.name,
        "previous_status": resume.status,
        "previous_parent": resume.tags.get("mlflow.parentRunId", ""),
        "parent": parent or "",
        "spent_before": resume.spent,
        "checkpoint_flops": resume.checkpoint_flops,
        "rework": resume.rework,
        "reserved": resume.need(planned),
    }
