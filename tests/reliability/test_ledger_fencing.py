"""The ledger's lock under slow holders: a heartbeat keeps a slow but live holder's lock fresh, and
fencing keeps the admission of a holder whose lock was broken anyway (its whole process stalled)
from counting (see packages/lvtrack/src/lvtrack/ledger.py).

The process tests run real `reserve` calls in several processes against one store, with
`STALE_LOCK_S` lowered to 2 s in each. Every worker journals, with one O_APPEND write a line, when
it enters and leaves the lock and whether it was admitted; the tests then check that no two
admissions' critical sections overlap and that the ledger never holds more than the budget.
`LV_TEST_UNFENCED=1` turns the heartbeat and the fencing check off in the workers (the lock as it
was before them): both process tests then fail, which shows that they can. `=heartbeat` turns off
the heartbeat only (the slow holder is broken: its test fails, though fencing still keeps the
admissions apart), `=fencing` the fencing check only (the frozen holder's test fails).
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lvtrack import ledger
from lvtrack.ledger import (
    LOCK_PREFIX,
    STALE_SUFFIX,
    TAG_PLANNED,
    TAG_REFUSED,
    BudgetRefused,
    LockLost,
    budget_lock,
    fenced,
    read_ledger,
)
from tests.stores import Store

REPO = Path(__file__).resolve().parents[2]
STALE_S = 2.0  # the workers' STALE_LOCK_S
PLANNED, BUDGET = 1000, 2500  # room for exactly two reservations
PLAIN = 3  # workers besides the slow one
WAIT_S = 300  # generous: a worker that needs this long is broken, not slow


WORKER = r"""
import os, signal, sys, time, warnings
from contextlib import contextmanager
from pathlib import Path
from mlflow.tracking import MlflowClient
import lvtrack.ledger as ledger

run_id, role, sync = sys.argv[1], sys.argv[2], Path(sys.argv[3])
planned, budget, ready = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
ledger.STALE_LOCK_S = float(os.environ["LV_TEST_STALE_S"])
off = os.environ.get("LV_TEST_UNFENCED", "")  # "1": the lock without heartbeat and fencing
if off in ("1", "heartbeat"):
    ledger.BudgetLock.start_heartbeat = lambda self: None
if off in ("1", "fencing"):
    ledger.BudgetLock.still_ours = lambda self: True
warnings.simplefilter("always")
pid = os.getpid()


def note(event):
    fd = os.open(sync / "journal", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{event} {pid}\n".encode())
    os.close(fd)


def wait_for(done):
    deadline = time.monotonic() + 300
    while not done():
        assert time.monotonic() < deadline, "barrier not reached"
        time.sleep(0.02)


held, stalled = [False], [False]
taking = ledger.budget_lock


@contextmanager
def journaled(*args, **kwargs):
    with taking(*args, **kwargs) as lock:
        held[0] = True
        note("enter")
        try:
            yield lock
        finally:
            note("leave")
            held[0] = False


reading = ledger.read_ledger


def read(*args, **kwargs):
    out = reading(*args, **kwargs)
    if held[0] and role != "plain" and not stalled[0]:
        # The slow holder, once it has read the ledger and before it writes its reservation.
        stalled[0] = True
        (sync / "holding").touch()
        if role == "slow":
            time.sleep(3 * ledger.STALE_LOCK_S)  # alive, only slow: its heartbeat goes on
        else:
            os.kill(pid, signal.SIGSTOP)  # frozen, heartbeat and all, until the test's SIGCONT
    return out


ledger.budget_lock, ledger.read_ledger = journaled, read
client = MlflowClient()
run = client.get_run(run_id)
if role == "plain":
    (sync / f"ready-{pid}").touch()
    wait_for((sync / "holding").exists)  # a barrier: contend while the slow one holds the lock
else:
    wait_for(lambda: len(list(sync.glob("ready-*"))) >= ready)  # the others wait on it
try:
    ledger.reserve(client, run, planned, budget)
    note("admitted")
except ledger.BudgetRefused:
    note("refused")
print("done")
"""


@dataclass(frozen=True)
class Journal:
    spans: list[tuple[int, int, str]]  # (enter line, leave line, pid) of every taking
    outcome: dict[str, str]  # pid -> admitted | refused

    def admissions(self) -> list[tuple[int, int, str]]:
        """The critical section of every admission: the last taking of each admitted pid."""
        last = {pid: (a, b, pid) for a, b, pid in self.spans}  # in order: the last one stays
        return sorted(last[p] for p, o in self.outcome.items() if o == "admitted")


def _journal(path: Path) -> Journal:
    spans: list[tuple[int, int, str]] = []
    opened: dict[str, int] = {}
    outcome: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines()):
        event, pid = line.split()
        if event == "enter":
            assert pid not in opened, line
            opened[pid] = i
        elif event == "leave":
            spans.append((opened.pop(pid), i, pid))
        else:
            outcome[pid] = event
    assert not opened, opened
    return Journal(spans, outcome)


def _overlaps(spans: list[tuple[int, int, str]]) -> list[tuple[str, str]]:
    ordered = sorted(spans)
    return [(a[2], b[2]) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; any still alive when it ends are killed (SIGCONT first)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


@dataclass
class Race:
    """The experiment, its runs (one per worker, created RUNNING) and the workers' command."""

    client: MlflowClient
    exp_id: str
    runs: list[str]
    sync: Path
    env: dict[str, str]
    logs: Path

    def start(
        self, i: int, role: str, started: list[subprocess.Popen[bytes]], ready: int = 0
    ) -> None:
        """Worker `i` in `role`; a slow one first waits until `ready` plain ones are ready."""
        cmd = [sys.executable, "-c", WORKER, self.runs[i], role, str(self.sync)]
        cmd += [str(PLANNED), str(BUDGET), str(ready)]
        with open(self.logs / f"worker-{i}.log", "wb") as out:
            started.append(
                subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
            )

    def output(self, i: int) -> str:
        return (self.logs / f"worker-{i}.log").read_text(errors="replace")

    def check_ledger(self, journal: Journal, pids: list[int]) -> None:
        """The runs reserved are exactly the admitted ones, within the budget; the rest refused."""
        admitted = {p for p, o in journal.outcome.items() if o == "admitted"}
        book = read_ledger(self.client, self.exp_id, BUDGET)
        assert book.reserved <= BUDGET, book
        assert len(admitted) == BUDGET // PLANNED
        for i, run_id in enumerate(self.runs):
            tags = self.client.get_run(run_id).data.tags
            if str(pids[i]) in admitted:
                assert tags[TAG_PLANNED] == str(PLANNED) and TAG_REFUSED not in tags
            else:
                assert TAG_PLANNED not in tags and tags[TAG_REFUSED] == "true"


@pytest.fixture
def race(
    store: Store, subprocess_env: Callable[..., dict[str, str]], tmp_path: Path
) -> Iterator[Race]:
    client = MlflowClient(store.uri)
    artifacts = (tmp_path / "mlruns").as_uri() if store.kind == "sqlite" else None
    exp_id = client.create_experiment(f"fence-{store.kind}-{tmp_path.name}", artifacts)
    runs = [client.create_run(exp_id).info.run_id for _ in range(PLAIN + 1)]
    (tmp_path / "sync").mkdir()
    env = subprocess_env(
        MLFLOW_TRACKING_URI=store.uri, PYTHONPATH=str(REPO), LV_TEST_STALE_S=str(STALE_S)
    )
    yield Race(client, exp_id, runs, tmp_path / "sync", env, tmp_path)


def _finish(procs: list[subprocess.Popen[bytes]], race: Race, first: int = 0) -> None:
    """Wait for workers `first`, `first + 1`, ... (`procs`): each must have exited cleanly."""
    for i, proc in enumerate(procs, start=first):
        proc.wait(timeout=WAIT_S)
        out = race.output(i)
        assert proc.returncode == 0 and "done" in out and "Traceback" not in out, out[-3000:]


@pytest.mark.slow
def test_a_slow_holder_keeps_its_lock_and_no_admissions_overlap(
    race: Race, processes: list[subprocess.Popen[bytes]]
) -> None:
    """One holder sleeps 3 x STALE_LOCK_S between reading the ledger and writing its reservation,
    while three others wait for the lock: its heartbeat keeps the lock fresh, nobody breaks it,
    no two critical sections overlap, and two of the four are admitted (the budget holds two)."""
    race.start(0, "slow", processes, ready=PLAIN)
    for i in range(1, PLAIN + 1):
        race.start(i, "plain", processes)
    _finish(processes, race)
    journal = _journal(race.sync / "journal")
    assert _overlaps(journal.spans) == [], journal
    assert _overlaps(journal.admissions()) == []
    assert len(journal.spans) == PLAIN + 1  # one taking each: none was broken and retried
    assert journal.outcome[str(processes[0].pid)] == "admitted"  # it read first, and it fits
    race.check_ledger(journal, [p.pid for p in processes])
    for i in range(PLAIN + 1):
        assert "broken while held" not in race.output(i)
    lock = f"{LOCK_PREFIX}{race.exp_id}"
    assert [m.name for m in race.client.search_registered_models(f"name LIKE '{lock}%'")] == []


def _stopped(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_a_frozen_holder_whose_lock_is_broken_is_fenced_out(
    race: Race, processes: list[subprocess.Popen[bytes]]
) -> None:
    """A holder whose whole process stops (SIGSTOP: its heartbeat too) after reading the ledger is
    broken as stale; the others are admitted meanwhile. When it wakes up and writes, its fencing
    check finds the lock gone: it undoes its reservation and asks again, and is refused."""
    race.start(0, "frozen", processes)
    frozen = processes[0]
    deadline = time.monotonic() + WAIT_S
    while not _stopped(frozen.pid):  # a barrier: it holds the lock, stopped, reservation unwritten
        assert frozen.poll() is None, race.output(0)
        assert time.monotonic() < deadline, "the frozen worker never got to its stop"
        time.sleep(0.05)
    for i in range(1, PLAIN + 1):
        race.start(i, "plain", processes)
    _finish(processes[1:], race, first=1)
    frozen.send_signal(signal.SIGCONT)
    _finish(processes[:1], race)
    journal = _journal(race.sync / "journal")
    assert _overlaps(journal.admissions()) == [], journal
    assert journal.outcome[str(frozen.pid)] == "refused"  # the two others filled the budget
    race.check_ledger(journal, [p.pid for p in processes])
    assert "broken while held" in race.output(0)
    assert len([s for s in journal.spans if s[2] == str(frozen.pid)]) == 2  # broken, then again


# In one process: the pieces, fast.


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def exp_id(client: MlflowClient, tmp_path: Path) -> str:
    return client.create_experiment("lock", artifact_location=(tmp_path / "a").as_uri())


def _steal(client: MlflowClient, exp_id: str, since: float, owner: str = "") -> None:
    """What a waiter does to a holder it judged stale: park its lock, take a fresh one (as
    `owner`, else a new one each time: a broken lock is parked under its owner's digest)."""
    lock = f"{LOCK_PREFIX}{exp_id}"
    client.rename_registered_model(lock, f"{lock}{STALE_SUFFIX}{time.time_ns()}")
    owner = owner or f"thief:{time.time_ns()}:0"
    client.create_registered_model(lock, tags={"owner": owner, "since": f"{since:.3f}"})


def test_the_heartbeat_refreshes_the_lock_while_held(
    client: MlflowClient, exp_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "STALE_LOCK_S", 0.4)
    lock = f"{LOCK_PREFIX}{exp_id}"
    with budget_lock(client, exp_id) as held:
        first = client.get_registered_model(lock).tags["since"]
        deadline = time.monotonic() + WAIT_S
        while client.get_registered_model(lock).tags["since"] == first:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert held.still_ours()
    assert client.search_registered_models(f"name LIKE '{lock}%'") == []


def test_fenced_undoes_and_retries_an_admission_whose_lock_was_broken(
    client: MlflowClient, exp_id: str
) -> None:
    calls: list[str] = []

    def attempt(lock: ledger.BudgetLock) -> tuple[int, Callable[[], object]]:
        calls.append("attempt")
        if len(calls) == 1:
            _steal(client, exp_id, time.time() - 10 * ledger.STALE_LOCK_S, owner="thief:1:0")
        return len(calls), lambda: calls.append("undo")

    with pytest.warns(RuntimeWarning, match="broken while held"):
        assert fenced(client, exp_id, attempt) == 3
    assert calls == ["attempt", "undo", "attempt"]
    # The thief's lock (stale by its `since`) was broken by the retry, and tagged when.
    parked = client.search_registered_models("tags.owner = 'thief:1:0'")
    assert len(parked) == 1 and parked[0].name.startswith(f"{LOCK_PREFIX}{exp_id}{STALE_SUFFIX}")
    assert float(parked[0].tags["broken_at"]) > time.time() - WAIT_S


def test_fenced_judges_a_refusal_under_a_broken_lock_again(
    client: MlflowClient, exp_id: str
) -> None:
    calls: list[str] = []

    def attempt(lock: ledger.BudgetLock) -> tuple[str, Callable[[], object]]:
        calls.append("attempt")
        if len(calls) == 1:
            _steal(client, exp_id, since=time.time() - 10 * ledger.STALE_LOCK_S)
            raise BudgetRefused("judged while the lock was another's")
        return "admitted", lambda: None

    with pytest.warns(RuntimeWarning, match="broken while held"):
        assert fenced(client, exp_id, attempt, refuse=lambda: calls.append("refuse")) == "admitted"
    assert calls == ["attempt", "attempt"]  # refuse() never ran

    with pytest.raises(BudgetRefused):
        fenced(client, exp_id, _refused, refuse=lambda: calls.append("refuse"))
    assert calls[-1] == "refuse"  # a refusal under a lock still held is recorded


def _refused(lock: ledger.BudgetLock) -> tuple[None, Callable[[], object]]:
    raise BudgetRefused("does not fit")


def test_fenced_gives_up_when_the_lock_is_broken_every_time(
    client: MlflowClient, exp_id: str
) -> None:
    undone: list[int] = []

    def attempt(lock: ledger.BudgetLock) -> tuple[None, Callable[[], object]]:
        _steal(client, exp_id, since=time.time() - 10 * ledger.STALE_LOCK_S)
        return None, lambda: undone.append(1)

    with pytest.warns(RuntimeWarning), pytest.raises(LockLost, match="broken under this process"):
        fenced(client, exp_id, attempt)
    assert len(undone) == ledger.FENCE_TRIES


def test_releasing_the_lock_deletes_old_parked_locks_and_nothing_else(
    client: MlflowClient, exp_id: str
) -> None:
    lock = f"{LOCK_PREFIX}{exp_id}"
    old = time.time() - 3 * ledger.STALE_LOCK_S
    client.create_registered_model(f"{lock}{STALE_SUFFIX}old", tags={"broken_at": f"{old:.3f}"})
    client.create_registered_model(
        f"{lock}{STALE_SUFFIX}new", tags={"broken_at": f"{time.time():.3f}"}
    )
    client.create_registered_model(f"{lock}{STALE_SUFFIX}untagged")  # broken now, by the store
    # LIKE's `_` matches any character: look-alikes of other names are left alone.
    other = f"X{LOCK_PREFIX[1:]}{exp_id}{STALE_SUFFIX}old"
    client.create_registered_model(other, tags={"broken_at": f"{old:.3f}"})
    client.create_registered_model(f"{lock}0{STALE_SUFFIX}old", tags={"broken_at": f"{old:.3f}"})

    with budget_lock(client, exp_id):
        pass
    names = {m.name for m in client.search_registered_models(max_results=100)}
    assert names == {
        f"{lock}{STALE_SUFFIX}new",
        f"{lock}{STALE_SUFFIX}untagged",
        other,
        f"{lock}0{STALE_SUFFIX}old",
    }
    # A live lock, even an old one, is never swept: only a waiter breaking it moves it.
    client.create_registered_model(lock, tags={"owner": "live:1:0", "since": f"{old:.3f}"})
    ledger._sweep_parked(client, lock)
    assert client.get_registered_model(lock).tags["owner"] == "live:1:0"


def test_a_lock_lost_outside_an_admission_is_reported_by_still_ours(
    client: MlflowClient, exp_id: str
) -> None:
    with pytest.warns(RuntimeWarning), budget_lock(client, exp_id) as held:
        assert held.still_ours()
        _steal(client, exp_id, since=time.time(), owner="thief:1:0")
        assert not held.still_ours() and held.lost
    assert client.get_registered_model(f"{LOCK_PREFIX}{exp_id}").tags["owner"] == "thief:1:0"
