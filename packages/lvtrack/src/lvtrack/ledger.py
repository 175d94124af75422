"""The FLOPs budget ledger of an experiment, kept in MLflow itself (no side files).

Every budgeted run carries the tag `lv.flops_planned` (its reservation, set before it trains) and
logs the metric `flops_total` as it goes (what it actually spent, so a killed run's spending still
counts). The ledger of an experiment is then:

- finished runs (FINISHED, FAILED, KILLED): their last `flops_total`;
- running runs: max(planned, spent so far) -- the reservation;
- refused runs (tag `lv.refused`): nothing.

Admission is serialized across processes and machines sharing one tracking store by a lock
that the store itself provides: creating a registered model whose name is taken fails atomically
(a unique key in SQLite and PostgreSQL alike, also behind `mlflow server`), so
`_lv_budget_lock_<experiment id>` is a mutex. Under it a run reads the ledger, checks that its
plan fits, and writes its reservation; the lock is then dropped (by its owner only).

A lock older than `STALE_LOCK_S` by its `since` tag (its holder died inside a sub-second critical
section) is broken, in one atomic step: renamed to a name derived from its owner, which only one
waiter can do, so that several waiters breaking the same dead lock at once never delete the fresh
lock one of them took meanwhile. A lock whose tags cannot be read is never judged stale: the store
reads a model and its tags in two queries, and a lock released between them shows no tags.
Broken locks stay in the registry as `<lock>.stale.<digest>` (one per holder that died).
The `since` tag is the taker's clock read by the waiter's: machines must agree on the time to well
within `STALE_LOCK_S`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from mlflow.entities import Run
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

TAG_PLANNED = "lv.flops_planned"
TAG_BUDGET = "lv.budget"
TAG_REFUSED = "lv.refused"
TAG_PHASE = "phase"
METRIC_FLOPS = "flops_total"
LOCK_PREFIX = "_lv_budget_lock_"
STALE_LOCK_S = 60.0
OPEN_STATUSES = ("RUNNING", "SCHEDULED")  # a run in these holds its reservation
STALE_SUFFIX = ".stale."  # a broken lock is renamed `<lock>.stale.<digest of its owner>`


class BudgetRefused(RuntimeError):
    """A run's planned FLOPs do not fit the remaining budget."""


@dataclass(frozen=True)
class Entry:
    """One budgeted run as the ledger sees it."""

    run_id: str
    name: str
    phase: str
    status: str
    start_time: int
    planned: int
    spent: int
    refused: bool
    tags: dict[str, str] = field(default_factory=dict, compare=False)  # the run's, as read

    @property
    def running(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def charge(self) -> int:
        """What this run holds of the budget now."""
        if self.refused:
            return 0
        return max(self.planned, self.spent) if self.running else self.spent


@dataclass
class Ledger:
    budget: int
    entries: list[Entry] = field(default_factory=list)

    @property
    def spent(self) -> int:
        return sum(e.charge for e in self.entries if not e.running)

    @property
    def reserved(self) -> int:
        return sum(e.charge for e in self.entries if e.running)

    @property
    def remaining(self) -> int:
        return self.budget - self.spent - self.reserved

    def by_phase(self) -> dict[str, tuple[int, int]]:
        """phase -> (runs, FLOPs charged), refused runs left out."""
        out: dict[str, tuple[int, int]] = {}
        for e in self.entries:
            if e.refused:
                continue
            runs, flops = out.get(e.phase, (0, 0))
            out[e.phase] = (runs + 1, flops + e.charge)
        return out


def _entry(run: Run) -> Entry:
    tags = run.data.tags
    return Entry(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        phase=tags.get(TAG_PHASE) or "untagged",
        status=run.info.status,
        start_time=int(run.info.start_time or 0),
        planned=int(float(tags.get(TAG_PLANNED, "0"))),
        spent=int(run.data.metrics.get(METRIC_FLOPS, 0.0)),
        refused=tags.get(TAG_REFUSED) == "true",
        tags=dict(tags),
    )


def read_ledger(client: MlflowClient, experiment_id: str, budget: int) -> Ledger:
    """Every budgeted run of the experiment (those with a planned-FLOPs tag)."""
    entries: list[Entry] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_PLANNED}` != ''",
            max_results=1000,
            page_token=token,
        )
        entries += [_entry(r) for r in page]
        token = page.token
        if not token:
            break
    entries.sort(key=lambda e: (e.start_time, e.run_id))
    return Ledger(budget=budget, entries=entries)


@contextmanager
def budget_lock(client: MlflowClient, experiment_id: str, timeout: float = 120.0) -> Iterator[None]:
    """Hold the experiment's budget mutex (see the module docstring)."""
    name = f"{LOCK_PREFIX}{experiment_id}"
    owner = f"{socket.gethostname()}:{os.getpid()}:{time.time():.6f}"
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            client.create_registered_model(
                name,
                tags={"owner": owner, "since": f"{time.time():.3f}"},
                description="lv-forecast budget lock (transient)",
            )
            break
        except MlflowException as err:
            # Taken (or released while the store reported the clash): anything else is a real
            # error of the store, not contention.
            if err.error_code not in (_TAKEN, _GONE):
                raise
            _break_if_stale(client, name)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not take the budget lock {name} in {timeout:.0f} s"
                ) from None
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    try:
        yield
    finally:
        _release(client, name, owner)


_TAKEN = "RESOURCE_ALREADY_EXISTS"
_GONE = "RESOURCE_DOES_NOT_EXIST"


def _held(client: MlflowClient, name: str) -> RegisteredModel | None:
    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code == _GONE:
            return None
        raise


def _release(client: MlflowClient, name: str, owner: str) -> None:
    """Drop the lock if it is still ours (it is not if a waiter broke it as stale)."""
    held = _held(client, name)
    if held is None or held.tags.get("owner") != owner:
        warnings.warn(
            f"the budget lock {name} was broken while held (held over {STALE_LOCK_S:.0f} s)",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    try:
        client.delete_registered_model(name)
    except MlflowException as err:
        if err.error_code != _GONE:
            raise


def _break_if_stale(client: MlflowClient, name: str) -> None:
    held = _held(client, name)
    if held is None:
        return  # released meanwhile
    owner, since = held.tags.get("owner"), held.tags.get("since")
    if not owner or not since:
        return  # tags unreadable: being taken or released right now, not stale
    try:
        age = time.time() - float(since)
    except ValueError:
        return
    if age <= STALE_LOCK_S:
        return
    # Renaming is atomic and its target is unique to this dead owner: of several waiters
    # breaking this lock, one succeeds and the others fail (the name is gone, or a fresh lock
    # cannot take the same target). The parked model is kept: deleting it would free the target
    # for a waiter that judged the dead lock stale a moment ago and would now park a fresh lock.
    parked = f"{name}{STALE_SUFFIX}{hashlib.sha256(owner.encode()).hexdigest()[:16]}"
    with suppress(MlflowException):
        client.rename_registered_model(name, parked)


def reserve(client: MlflowClient, run: Run, planned: int, budget: int) -> Ledger:
    """Reserve `planned` FLOPs for `run`, or mark it refused and raise BudgetRefused."""
    with budget_lock(client, run.info.experiment_id):
        ledger = read_ledger(client, run.info.experiment_id, budget)
        used = ledger.spent + ledger.reserved
        if used + planned > budget:
            client.set_tag(run.info.run_id, TAG_REFUSED, "true")
            raise BudgetRefused(
                f"FLOPs budget refused this run before training: planned {planned:.3e}, "
                f"spent {ledger.spent:.3e}, reserved by running runs {ledger.reserved:.3e}, "
                f"remaining {budget - used:.3e} of {budget:.3e}. Lower steps, batch or context "
                f"length, or raise the budget."
            )
        client.set_tag(run.info.run_id, TAG_PLANNED, str(int(planned)))
        client.set_tag(run.info.run_id, TAG_BUDGET, str(int(budget)))
        client.log_metric(run.info.run_id, METRIC_FLOPS, 0.0, step=0)
    return read_ledger(client, run.info.experiment_id, budget)
