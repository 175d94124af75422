"""The FLOPs budget ledger of an experiment, kept in MLflow itself (no side files).

Every budgeted run carries the tag `lv.flops_planned` (its reservation, set before it trains) and
logs the metric `flops_total` as it goes (what it actually spent, so a killed run's spending still
counts). The ledger of an experiment is then:

- finished runs (FINISHED, FAILED, KILLED): their last `flops_total`;
- running runs: max(planned, spent so far) -- the reservation;
- refused runs (tag `lv.refused`): nothing.

The lock. Admission is serialized across processes and machines sharing one tracking store by a
lock that the store itself provides: creating a registered model whose name is taken fails
atomically (a unique key in SQLite and PostgreSQL alike, also behind `mlflow server`), so
`_lv_budget_lock_<experiment id>` is a mutex, with the tags `owner` (host:pid:time, unique to one
taking) and `since`. While a process holds it, a heartbeat thread refreshes `since` every
`STALE_LOCK_S / 4`: a holder that is slow but alive is never judged stale.

Breaking. A lock whose `since` is older than `STALE_LOCK_S` (its holder died, or its whole
process stalled: stopped, a paused VM, cut off from the store) is broken, in one atomic step:
renamed to `<lock>.stale.<digest of its owner>`, which only one waiter can do, so that several
waiters breaking the same dead lock at once never rename the fresh lock one of them took
meanwhile (the parked name is taken). A lock whose tags cannot be read is never judged stale: the
store reads a model and its tags in two queries, and a lock released between them shows no tags.
The `since` tag is the taker's clock read by the waiter's: machines must agree on the time to well
within `STALE_LOCK_S`. A parked lock stays a while as a tombstone: a late waiter that judged the
same dead lock stale a moment ago fails to rename the fresh lock, its target being taken. The
release of a lock deletes the parked ones broken more than `2 * STALE_LOCK_S` ago (tag
`broken_at`, else the store's last update of the model), never the lock itself.

Fencing. Breaking a lock cannot stop its holder, which may wake up and go on writing. So every
admission (`fenced`: `reserve`, `extend_reservation`, resuming a run) reads the ledger, writes its
reservation, and then re-reads the lock: if its `owner` is no longer this taking, it undoes what it
wrote and starts again from a fresh lock and a fresh read. A refusal is checked the same way
before it is recorded. The name holds one owner at a time and a broken lock never returns to its
owner, so each taking owns the lock over one unbroken interval; two admissions that both passed
the check read and wrote inside their own, disjoint, intervals, so the later one read the ledger
after the earlier one's reservation was written. What remains: a fenced-out holder's reservation
is visible for a moment before its undo, and another run may be refused because of it (refused,
never admitted beyond the budget). `budget_lock` alone (releasing a dead run) is not fenced.
The clients of a shared store talk HTTP to `mlflow server`, so a lock native to its database
(PostgreSQL advisory locks) is out of their reach: the registry is the one shared primitive.

Release. The store has no compare-and-delete: the holder stops its heartbeat, reads the lock and
deletes it if `owner` is still its own. Between that read and the delete a waiter could break and
retake it only if the holder stalled for more than about 3/4 of `STALE_LOCK_S` right there; the
next holder's lock would then be deleted under it, and its own fencing check sends it round again
unless it has already admitted.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

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
STALE_LOCK_S = 60.0  # read when used: a test may lower it
OPEN_STATUSES = ("RUNNING", "SCHEDULED")  # a run in these holds its reservation
STALE_SUFFIX = ".stale."  # a broken lock is renamed `<lock>.stale.<digest of its owner>`
FENCE_TRIES = 5  # admissions in a row whose lock was broken under them before giving up

T = TypeVar("T")
Undo = Callable[[], object]


class BudgetRefused(RuntimeError):
    """A run's planned FLOPs do not fit the remaining budget."""


class LockLost(RuntimeError):
    """The budget lock was broken under this process at every try (see the module docstring)."""


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


class BudgetLock:
    """A taking of the budget lock, as its holder sees it: `still_ours()` is the fencing check.

    While held, a daemon thread refreshes the lock's `since` tag every `STALE_LOCK_S / 4`; it
    stops when the lock is released or once it finds the lock taken from this holder.
    """

    def __init__(self, client: MlflowClient, name: str, owner: str):
        self.client, self.name, self.owner = client, name, owner
        self.lost = False  # set for good once the lock is seen gone or another's
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def still_ours(self) -> bool:
        """Re-read the lock: is it still this taking's? (It never becomes ours again once lost.)"""
        if not self.lost:
            held = _held(self.client, self.name)
            if held is None or held.tags.get("owner") != self.owner:
                self.lost = True
        return not self.lost

    def _heartbeat(self) -> None:
        while not self._stop.wait(STALE_LOCK_S / 4):
            try:
                if not self.still_ours():
                    return  # broken: never refresh a lock that is not ours
                self.client.set_registered_model_tag(self.name, "since", f"{time.time():.3f}")
            except Exception:  # a store hiccup: the next beat tries again
                continue

    def start_heartbeat(self) -> None:
        self._beat = threading.Thread(target=self._heartbeat, name=f"{self.name} heartbeat")
        self._beat.daemon = True
        self._beat.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=STALE_LOCK_S)


@contextmanager
def budget_lock(
    client: MlflowClient, experiment_id: str, timeout: float = 120.0
) -> Iterator[BudgetLock]:
    """Hold the experiment's budget mutex (see the module docstring).

    Holding it does not fence what is written under it: an admission checks `still_ours()` after
    its writes (`fenced` does). A holder that is alive is never broken, so a waiter behind a slow
    one may time out (TimeoutError after `timeout` seconds).
    """
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
            _break_if_stale(client, name, owner)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not take the budget lock {name} in {timeout:.0f} s"
                ) from None
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    lock = BudgetLock(client, name, owner)
    lock.start_heartbeat()
    try:
        yield lock
    finally:
        lock.stop_heartbeat()
        _release(client, name, owner)
        _sweep_parked(client, name)


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
            f"the budget lock {name} was broken while held (its holder stalled for over "
            f"{STALE_LOCK_S:.0f} s); what was written under it was checked and undone",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    try:
        client.delete_registered_model(name)
    except MlflowException as err:
        if err.error_code != _GONE:
            raise


def _break_if_stale(client: MlflowClient, name: str, breaker: str) -> None:
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
    # cannot take the same target). The parked model stays a while (`_sweep_parked`): deleting it
    # at once would free the target for a waiter that judged the dead lock stale a moment ago
    # and would now park a fresh lock.
    parked = f"{name}{STALE_SUFFIX}{hashlib.sha256(owner.encode()).hexdigest()[:16]}"
    try:
        client.rename_registered_model(name, parked)
    except MlflowException:
        return
    with suppress(MlflowException):
        client.set_registered_model_tag(parked, "broken_at", f"{time.time():.3f}")
        client.set_registered_model_tag(parked, "broken_by", breaker)


def _broken_at(model: RegisteredModel) -> float | None:
    """When a parked lock was broken: its `broken_at` tag, else the store's last update of it."""
    with suppress(KeyError, TypeError, ValueError):
        return float(model.tags["broken_at"])
    stamp = model.last_updated_timestamp or model.creation_timestamp
    return stamp / 1000.0 if stamp else None


def _sweep_parked(client: MlflowClient, name: str) -> None:
    """Delete the locks parked from `name` that were broken over 2 x STALE_LOCK_S ago (best
    effort: a failure here changes nothing that admission relies on). Only names that start with
    `<name>.stale.` are looked at, so a live lock (`name` itself) is never touched."""
    prefix = f"{name}{STALE_SUFFIX}"
    try:
        # LIKE also matches `_` as any character: the prefix is checked again below.
        parked = client.search_registered_models(f"name LIKE '{prefix}%'", max_results=100)
    except MlflowException:
        return
    now = time.time()
    for model in parked:
        broken = _broken_at(model)
        old = broken is not None and now - broken > 2 * STALE_LOCK_S
        if old and model.name.startswith(prefix):
            with suppress(MlflowException):
                client.delete_registered_model(model.name)


def fenced(
    client: MlflowClient,
    experiment_id: str,
    attempt: Callable[[BudgetLock], tuple[T, Undo]],
    refuse: Callable[[], object] | None = None,
) -> T:
    """One admission under the budget lock, fenced (see the module docstring).

    `attempt(lock)` reads the ledger, decides and writes; it returns its result and a function
    that undoes its writes, or raises BudgetRefused without writing. Once it returns, the lock is
    re-read: still ours, the result is returned; broken meanwhile, the writes are undone and the
    attempt runs again under a fresh lock. A refusal is handled the same way: confirmed under a
    lock still ours, `refuse()` records it (under the lock) and BudgetRefused propagates.
    Other exceptions propagate at once. LockLost after FENCE_TRIES broken tries.
    """
    for _ in range(FENCE_TRIES):
        with budget_lock(client, experiment_id) as lock:
            try:
                result, undo = attempt(lock)
            except BudgetRefused:
                if not lock.still_ours():
                    continue  # judged on a ledger read while another process held the lock
                if refuse is not None:
                    refuse()
                raise
            if lock.still_ours():
                return result
            undo()
    raise LockLost(
        f"the budget lock of experiment {experiment_id} was broken under this process "
        f"{FENCE_TRIES} times in a row (held over {STALE_LOCK_S:.0f} s each time): the tracking "
        f"store, or this machine, is too slow; nothing was reserved"
    )


def _nothing() -> None:
    return None


def reserve(client: MlflowClient, run: Run, planned: int, budget: int) -> Ledger:
    """Reserve `planned` FLOPs for `run`, or mark it refused and raise BudgetRefused."""
    run_id, experiment_id = run.info.run_id, run.info.experiment_id

    def attempt(lock: BudgetLock) -> tuple[None, Undo]:
        ledger = read_ledger(client, experiment_id, budget)
        used = ledger.spent + ledger.reserved
        if used + planned > budget:
            raise BudgetRefused(
                f"FLOPs budget refused this run before training: planned {planned:.3e}, "
                f"spent {ledger.spent:.3e}, reserved by running runs {ledger.reserved:.3e}, "
                f"remaining {budget - used:.3e} of {budget:.3e}. Lower steps, batch or context "
                f"length, or raise the budget."
            )
        client.set_tag(run_id, TAG_PLANNED, str(int(planned)))
        return None, lambda: client.delete_tag(run_id, TAG_PLANNED)

    fenced(client, experiment_id, attempt, lambda: client.set_tag(run_id, TAG_REFUSED, "true"))
    client.set_tag(run_id, TAG_BUDGET, str(int(budget)))
    client.log_metric(run_id, METRIC_FLOPS, 0.0, step=0)
    return read_ledger(client, experiment_id, budget)


def extend_reservation(
    client: MlflowClient, run_id: str, experiment_id: str, planned: int, budget: int
) -> Ledger:
    """Raise the reservation of RUNNING run `run_id` to `planned` FLOPs in all, under the lock.

    `planned` is the run's whole reservation from now on, not an increment; a reservation is never
    lowered (a `planned` at or below the current one changes nothing). Raises BudgetRefused when
    the other runs' charges plus the run's new charge (`planned`, or what it already spent if
    more) exceed `budget`: the run then keeps its reservation and is not tagged refused (the
    caller decides what follows). ValueError for a run of another experiment, a run that is not
    RUNNING, or a refused one. Returns the ledger afterwards.
    """
    planned = int(planned)

    def attempt(lock: BudgetLock) -> tuple[bool, Undo]:
        run = client.get_run(run_id)
        if run.info.experiment_id != experiment_id:
            raise ValueError(f"run {run_id} belongs to experiment {run.info.experiment_id}")
        if run.info.status not in OPEN_STATUSES:
            raise ValueError(f"run {run_id} is {run.info.status}: its reservation is closed")
        tags = run.data.tags
        if tags.get(TAG_REFUSED) == "true":
            raise ValueError(f"run {run_id} was refused by the FLOPs budget: it reserves nothing")
        old = tags.get(TAG_PLANNED)
        current = int(float(old or 0))
        if planned <= current:
            return False, _nothing
        ledger = read_ledger(client, experiment_id, budget)
        others = sum(e.charge for e in ledger.entries if e.run_id != run_id)
        spent = int(run.data.metrics.get(METRIC_FLOPS, 0.0))
        charge = max(planned, spent)
        if others + charge > budget:
            raise BudgetRefused(
                f"FLOPs budget refused extending run {run_id}'s reservation from {current:.3e} "
                f"to {planned:.3e}: the other runs hold {others:.3e}, so {budget - others:.3e} "
                f"of {budget:.3e} is left for it"
            )
        client.set_tag(run_id, TAG_PLANNED, str(planned))

        def undo() -> None:
            if old is None:
                client.delete_tag(run_id, TAG_PLANNED)
            else:
                client.set_tag(run_id, TAG_PLANNED, old)

        return True, undo

    if fenced(client, experiment_id, attempt):
        client.set_tag(run_id, TAG_BUDGET, str(int(budget)))
    return read_ledger(client, experiment_id, budget)
