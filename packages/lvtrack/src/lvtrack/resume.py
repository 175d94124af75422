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

Budget: before it trains again, the run re-reserves under the ledger's lock what it may hold at
most, S + (its plan - C), against what the other runs hold; if that no longer fits, the resume is
refused and the run keeps what it spent (it is not marked `lv.refused`, which would zero its
charge).

One trainer at a time: the re-reservation also claims the resume (tag `lv.resume_claim`,
host:pid:time of the claimer), in the same fenced admission (`lvtrack.ledger.fenced`). Under the
lock the claimer re-reads the run, and the resume is refused (ResumeClaimed, nothing changed) when
the claim is no longer the one `find_resumable` saw (another process claimed the run meanwhile,
on any host) or when it belongs to a live process of this project on this host. So of two
resumes of one run started together, exactly one trains. A RUNNING run whose last attempt ran on
another host and that nobody claims meanwhile is resumed with a note, as before: this host cannot
tell whether that attempt is dead.

A dead run that will not be resumed keeps holding its reservation (RUNNING counts as its plan):
`release_dead_run` (`python -m projects.budget --release RUN_ID`) closes it FAILED so that it holds
only what it spent. It can still be resumed afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lvmodel.checkpoint import latest_checkpoint
from lvtrack.ledger import (
    METRIC_FLOPS,
    OPEN_STATUSES,
    TAG_BUDGET,
    TAG_PLANNED,
    TAG_REFUSED,
    BudgetLock,
    BudgetRefused,
    budget_lock,
    fenced,
    read_ledger,
)

CHECKPOINT_ENV = "LV_CHECKPOINT_DIR"
TAG_ATTEMPT = "lv.attempt"
TAG_CHECKPOINTS = "lv.checkpoint_dir"
TAG_HOST = "lv.host"
TAG_PID = "lv.pid"
TAG_WORK_RUN = "lv.work_run"
TAG_RESUMES = "lv.resumes"
TAG_RELEASED = "lv.released"
TAG_CLAIM = "lv.resume_claim"  # host:pid:time of the process that last claimed the run's resume
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
    notes: list[str] = field(default_factory=list)

    @property
    def rework(self) -> float:
        """FLOPs spent beyond the checkpoint by the dead attempts (redone by this one)."""
        return max(self.spent - self.checkpoint_flops, 0.0)

    def need(self, planned: int) -> int:
        """What the resumed run may hold of the budget: spent so far + the rest of its plan."""
        return int(self.spent + max(planned - self.checkpoint_flops, 0))


def _pid_here(tags: dict[str, str]) -> int | None:
    """The pid of the run's last attempt if it ran on this host (and is not this process)."""
    pid = tags.get(TAG_PID, "")
    if tags.get(TAG_HOST) != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    return int(pid)


def _runs_project(pid: int) -> bool:
    """Process `pid` exists and runs this project (or `mlflow run`): a reused pid does not count."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "projects." in cmdline or "mlflow" in cmdline


def _alive_here(tags: dict[str, str]) -> int | None:
    """The pid of the run's last attempt if it ran on this host and still runs, else None."""
    pid = _pid_here(tags)
    return pid if pid is not None and _runs_project(pid) else None


def _claim_here(claim: str) -> int | None:
    """The pid of a resume claim's process if it runs this project on this host (not this one)."""
    parts = claim.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    pid = int(parts[1])
    return pid if pid != os.getpid() and _runs_project(pid) else None


def _claimer(claim: str) -> str:
    """A resume claim in words: 'pid P on host H, N s ago'."""
    parts = claim.rsplit(":", 2)
    if len(parts) != 3:
        return repr(claim)
    try:
        ago = f", {time.time() - float(parts[2]):.0f} s ago"
    except ValueError:
        ago = ""
    return f"pid {parts[1]} on host {parts[0]}{ago}"


def gone_here(tags: dict[str, str]) -> bool:
    """The run's last attempt ran on this host and its process no longer runs."""
    pid = _pid_here(tags)
    return pid is not None and not _runs_project(pid)


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


def release_dead_run(client: MlflowClient, run_id: str, force: bool = False) -> float:
    """Close a dead RUNNING budgeted run FAILED, so that it holds what it spent, not its plan.

    Returns what it spent (its largest `flops_total`). Refused (ReleaseError) for a run that is
    not budgeted or not RUNNING, a run whose process still runs on this host, and, unless `force`,
    a run whose last attempt ran on another host (this one cannot tell whether it is dead; a live
    process would go on spending against a budget that no longer holds its plan).
    """
    run_id = run_id.strip()
    run = _get_run(client, run_id, ReleaseError)
    tags, status = run.data.tags, run.info.status
    if TAG_PLANNED not in tags:
        raise ReleaseError(f"run {run_id} is not a budgeted run: it holds no reservation")
    if status not in OPEN_STATUSES:
        raise ReleaseError(
            f"run {run_id} is {status}: it holds only what it spent; nothing to release"
        )
    if pid := _alive_here(tags) or _claim_here(tags.get(TAG_CLAIM, "")):
        raise ReleaseError(f"run {run_id} is still running (pid {pid} on this host); stop it first")
    host = tags.get(TAG_HOST, "?")
    if host != socket.gethostname() and not force:
        raise ReleaseError(
            f"run {run_id}'s last attempt ran on host {host!r}, not here: make sure its process "
            f"is dead there, then release it with --force"
        )
    spent, step = _flops_logged(client, run_id)
    with budget_lock(client, run.info.experiment_id):
        now = client.get_run(run_id)
        if now.info.status not in OPEN_STATUSES:
            raise ReleaseError(f"run {run_id} was closed meanwhile; nothing to release")
        if (claim := now.data.tags.get(TAG_CLAIM, "")) != tags.get(TAG_CLAIM, ""):
            raise ReleaseError(
                f"run {run_id} was claimed meanwhile by a resume ({_claimer(claim)}): it trains "
                f"again; not released"
            )
        client.set_tag(run_id, TAG_RELEASED, f"{socket.gethostname()}:{os.getpid()}")
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
    if status == "RUNNING" and (pid := _alive_here(tags)):
        raise ResumeError(f"run {run_id} is still running (pid {pid} on this host)")
    if pid := _claim_here(tags.get(TAG_CLAIM, "")):
        raise ResumeClaimed(
            f"run {run_id} is being resumed by another process (pid {pid} on this host): only "
            f"one process may train a run"
        )
    notes = []
    if status == "RUNNING" and tags.get(TAG_HOST, "") != socket.gethostname():
        notes.append(
            f"run {run_id} is RUNNING and its last attempt ran on {tags.get(TAG_HOST, '?')}: "
            f"make sure it is dead, or two processes train it"
        )
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
        notes=notes,
    )


def _data_digest(run: Run) -> str | None:
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return inputs[0].dataset.digest if inputs else None


def _check_claim(resume: Resume, run: Run) -> None:
    """ResumeClaimed if another process claimed the run since `find_resumable` looked at it, or
    holds its claim and runs on this host; ResumeError if it finished meanwhile."""
    claim, seen = run.data.tags.get(TAG_CLAIM, ""), resume.tags.get(TAG_CLAIM, "")
    if claim != seen:
        raise ResumeClaimed(
            f"run {resume.run_id} was claimed by another resume ({_claimer(claim)}) after this "
            f"process looked at it: only one process may train a run, this one stops. If that "
            f"process is gone, resume again: {resume_hint(resume.run_id, resume.experiment_id)}"
        )
    if pid := _claim_here(claim):
        raise ResumeClaimed(
            f"run {resume.run_id} is being resumed by another process (pid {pid} on this host, "
            f"claim {claim}): only one process may train a run, this one stops"
        )
    if run.info.status == "FINISHED":
        raise ResumeError(f"run {resume.run_id} FINISHED meanwhile; nothing to resume")


def reserve_resumed(client: MlflowClient, resume: Resume, planned: int, budget: int) -> int:
    """Under the budget lock, fenced: claim the run's resume, re-reserve what the resumed run may
    hold and mark it RUNNING (see the module docstring).

    Returns the reservation. Raises ResumeClaimed (changing nothing) when another process claimed
    the run; BudgetRefused when it no longer fits: the run keeps its status and its spending,
    except that a RUNNING run (dead, or this would not be reached) is closed FAILED so that it
    stops holding its old reservation.
    """
    need = resume.need(planned)
    claim = f"{socket.gethostname()}:{os.getpid()}:{time.time():.6f}"
    status = [resume.status]  # the run's status as read under the lock

    def attempt(lock: BudgetLock) -> tuple[int, Callable[[], object]]:
        run = client.get_run(resume.run_id)
        _check_claim(resume, run)
        status[0] = run.info.status
        ledger = read_ledger(client, resume.experiment_id, budget)
        others = sum(e.charge for e in ledger.entries if e.run_id != resume.run_id)
        if others + need > budget:
            raise BudgetRefused(
                f"FLOPs budget refused resuming run {resume.run_id}: it has spent "
                f"{resume.spent:.3e} and may still spend {need - resume.spent:.3e} (the rest of "
                f"its plan), other runs hold {others:.3e}, remaining "
                f"{budget - others - resume.spent:.3e} of {budget:.3e}. Raise the budget "
                f"(--budget) to resume it."
            )
        tags = run.data.tags
        before = {key: tags.get(key) for key in (TAG_CLAIM, TAG_PLANNED)}
        client.set_tag(resume.run_id, TAG_CLAIM, claim)
        client.set_tag(resume.run_id, TAG_PLANNED, str(need))
        client.update_run(resume.run_id, status="RUNNING")

        def undo() -> None:
            client.update_run(resume.run_id, status=run.info.status)
            for key, value in before.items():
                if value is None:
                    client.delete_tag(resume.run_id, key)
                else:
                    client.set_tag(resume.run_id, key, value)

        return need, undo

    def refuse() -> None:
        if status[0] in OPEN_STATUSES:
            _close_dead(client, resume.run_id, resume.spent, resume.last_step)

    reserved = fenced(client, resume.experiment_id, attempt, refuse)
    client.set_tag(resume.run_id, TAG_BUDGET, str(int(budget)))
    return reserved


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
