"""The FLOPs budget ledger in SQL tables (lvtrack.budget_db), on SQLite.

Figures by hand, refusal, claims, release, import, unreachable stores; then processes at once on
one SQLite file: 8 reservations with budget for exactly 3, two concurrent claims, a holder killed
(SIGKILL) or stopped (SIGSTOP) inside its transaction. The child processes are synchronised by
pipes (a `go` line on stdin, result lines on stdout) and by waitpid on their stop, never by
sleeping. tests/reliability/test_budget_db_postgres.py runs the same races on PostgreSQL.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lvtrack.budget_db import BudgetDB, Holder, LedgerUnavailable, ledger_url
from lvtrack.ledger import BudgetRefused, Entry
from tests.serving import free_port

TIMEOUT_S = 180.0  # for any one step of a child; generous for a loaded machine

# `python -c CHILD URL OP EXPERIMENT RUN PLANNED BUDGET PAUSE`: prints `ready`, waits for a line on
# stdin, does OP (reserve or claim), prints its outcome, and exits at the end of stdin.
CHILD = r"""
import os, signal, sys
from lvtrack.budget_db import BudgetDB, LedgerUnavailable
from lvtrack.ledger import BudgetRefused
url, op, exp, run, planned, budget, pause = sys.argv[1:8]
def stop_self():
    print("inside", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
print("ready", flush=True)
sys.stdin.readline()
try:
    db = BudgetDB(url)
    if op == "reserve":
        hook = stop_self if pause == "stop" else None
        db.reserve(exp, run, run, "train", int(planned), int(budget), pause=hook)
        out = "admitted"
    else:
        out = "won" if db.claim(run) else "lost"
except BudgetRefused:
    out = "refused"
except LedgerUnavailable as err:
    out = "unavailable " + err.message
print(out, flush=True)
sys.stdin.read()
"""


class Child:
    """A child process running CHILD; its stdout and stderr lines are read into queues."""

    def __init__(self, *args: object, **env: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **env},
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    @staticmethod
    def _pump(stream: object, q: queue.Queue[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line.rstrip("\n"))
        q.put("<eof>")

    def line(self, q: queue.Queue[str] | None = None) -> str:
        """The next line of stdout (or of `q`); fails the test after TIMEOUT_S."""
        try:
            got = (q or self.out).get(timeout=TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"child {self.proc.pid} said nothing in {TIMEOUT_S:.0f} s")
        if q is self.err:
            self.stderr.append(got)
        return got

    def expect(self, wanted: str) -> None:
        got = self.line()
        if got != wanted:
            if got == "<eof>":
                self.proc.wait(timeout=TIMEOUT_S)
                got += "\n" + "\n".join(self.rest(self.err))
            pytest.fail(f"child {self.proc.pid}: expected {wanted!r}, got {got!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait_stopped(self) -> None:
        """Block until the child has stopped itself (SIGSTOP), through waitpid."""
        _, status = os.waitpid(self.proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"child {self.proc.pid} ended instead: {status}"

    def close(self) -> None:
        """Let it exit (end of stdin) and reap it; a stopped one is killed."""
        if self.proc.poll() is None:
            if _stopped(self.proc.pid):
                self.proc.kill()
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait(timeout=TIMEOUT_S)

    def rest(self, q: queue.Queue[str]) -> list[str]:
        """The lines left in `q` up to the end of its stream (call once the child has ended)."""
        lines = []
        while (line := self.line(q)) != "<eof>":
            lines.append(line)
        return lines


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def run_at_once(children: list[Child]) -> list[str]:
    """Start every child's operation together (all ready first); their outcomes, in order."""
    try:
        for child in children:
            child.expect("ready")
        for child in children:
            child.go()
        return [child.line() for child in children]
    finally:
        for child in children:
            child.close()


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def url(tmp_path: Path) -> str:
    return ledger_url(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_ledger_lives_in_the_study_storage(tmp_path: Path) -> None:
    """One storage setting for both: the search opens its study where the ledger lives."""
    assert ledger_url(f"sqlite:///{tmp_path / 'mlflow.db'}") == f"sqlite:///{tmp_path}/optuna.db"
    assert ledger_url("postgresql://u@db/mlflow") == "postgresql://u@db/mlflow_optuna"
    assert ledger_url("http://server:5000", "postgresql://u@db/s") == "postgresql://u@db/s"
    with pytest.raises(LedgerUnavailable, match="give --storage"):
        ledger_url("http://server:5000")


def test_budget_arithmetic_by_hand(url: str) -> None:
    db = BudgetDB(url)
    assert db.reserve("1", "a", "A", "train", 300, 1000).remaining == 700
    ledger = db.reserve("1", "b", "B", "sweep", 500, 1000)
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (0, 800, 200)
    with pytest.raises(BudgetRefused, match=r"planned 3\.000e\+02.*remaining 2\.000e\+02 of 1\.0"):
        db.reserve("1", "c", "C", "train", 300, 1000)
    db.record_spent("a", 100)  # below its reservation: it still holds 300
    db.record_spent("a", 50)  # spending only grows
    assert [(e.spent, e.charge) for e in db.read("1").entries] == [(100, 300), (0, 500), (0, 0)]
    db.record_spent("a", 400)  # beyond its reservation: it holds what it spent
    assert db.read("1").remaining == 100
    assert db.extend("b", 450) is False  # never lowered
    with pytest.raises(BudgetRefused, match=r"other runs hold 4\.000e\+02"):
        db.extend("b", 650)  # 400 + 650 > 1000
    assert db.read("1").reserved == 900  # left as it was
    assert db.extend("b", 600) is True  # 400 + 600 = 1000 fits exactly
    assert db.read("1").remaining == 0
    with pytest.raises(BudgetRefused):
        db.reserve("1", "d", "D", "train", 1, 1000)
    db.finish("a", "finished", 350)  # charged the larger of 350 and the 400 recorded
    db.finish("b", "killed", 120)
    ledger = BudgetDB(url).read("1")
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (520, 0, 480)
    assert [e.status for e in ledger.entries] == ["FINISHED", "KILLED", "FAILED", "FAILED"]
    assert [e.refused for e in ledger.entries] == [False, False, True, True]
    assert ledger.by_phase() == {"train": (1, 400), "sweep": (1, 120)}
    db.record_spent("a", 10_000)  # a closed run's figure does not move any more
    assert db.reserve("1", "e", "E", "train", 480, 1000).remaining == 0
    assert db.read("1", budget=2000).remaining == 1000  # a given budget overrides the stored one


def test_budget_of_the_coursework_size(url: str) -> None:
    db = BudgetDB(url)
    db.reserve("7", "a", "A", "final", 95 * 10**15, 10**17)
    ledger = db.read("7")
    assert (ledger.budget, ledger.reserved, ledger.remaining) == (10**17, 95 * 10**15, 5 * 10**15)


def test_refusal_leaves_state_consistent(url: str) -> None:
    db = BudgetDB(url)
    db.reserve("1", "a", "A", "train", 700, 1000)
    before = db.read("1")
    with pytest.raises(BudgetRefused):
        db.reserve("1", "r", "R", "train", 301, 1000)
    after = db.read("1")
    assert (after.spent, after.reserved, after.remaining) == (
        before.spent,
        before.reserved,
        before.remaining,
    )
    (refused,) = [e for e in after.entries if e.run_id == "r"]
    assert refused.refused and refused.charge == 0 and refused.planned == 301
    with pytest.raises(ValueError, match="in the ledger already"):
        db.reserve("1", "r", "R", "train", 1, 1000)
    with pytest.raises(ValueError, match="refused"):
        db.extend("r", 10)
    with pytest.raises(ValueError, match="refused before it trained"):
        db.claim("r")
    db.finish("r", "failed", 0)
    assert [e.refused for e in db.read("1").entries if e.run_id == "r"] == [True]
    with pytest.raises(ValueError, match="not in the FLOPs budget ledger"):
        db.record_spent("nope", 1)


def test_claim_rules(url: str) -> None:
    db = BudgetDB(url)
    here = Holder.here()
    dead = Holder(here.host, dead_pid(), "dead")
    db.reserve("1", "a", "A", "train", 400, 1000, holder=dead)
    db.record_spent("a", 150)
    other = Holder(here.host, os.getpid(), "another token")  # alive: this very process
    assert db.claim("a", here) is True  # over a dead holder
    assert db.claim("a", other) is False  # over a live one
    assert db.claim("a", here) is True  # its own holder again
    db.finish("a", "failed", 150)
    assert db.claim("a", other, planned=600) is True  # over a closed run
    assert (db.read("1").entries[0].charge, db.read("1").remaining) == (600, 400)
    elsewhere = Holder("another-host", 1, "x")
    db.reserve("1", "b", "B", "train", 100, 1000, holder=elsewhere)
    assert db.claim("b", here) is False  # cannot tell whether it is dead: alive
    # A resume that no longer fits: refused, and the dead run holds only what it spent.
    db.reserve("1", "c", "C", "train", 200, 1000, holder=dead)
    db.record_spent("c", 50)
    with pytest.raises(BudgetRefused, match="refused resuming run c"):
        db.claim("c", here, planned=400)  # 600 + 100 + 400 > 1000
    (c,) = [e for e in db.read("1").entries if e.run_id == "c"]
    assert (c.status, c.charge) == ("FAILED", 50)


def test_release_dead(url: str) -> None:
    db = BudgetDB(url)
    here = Holder.here()
    db.reserve("1", "dead", "D", "train", 500, 1000, holder=Holder(here.host, dead_pid(), "t"))
    db.record_spent("dead", 120)
    db.reserve("1", "live", "L", "train", 100, 1000, holder=here)
    db.reserve("1", "far", "F", "train", 100, 1000, holder=Holder("another-host", 1, "t"))
    assert db.read("1").remaining == 300
    assert db.release_dead("dead") == 120
    assert db.read("1").remaining == 680  # its unspent 380 given back
    with pytest.raises(ValueError, match="holds only what it spent"):
        db.release_dead("dead")
    with pytest.raises(ValueError, match="still running"):
        db.release_dead("live")
    with pytest.raises(ValueError, match="--force"):
        db.release_dead("far")
    assert db.release_dead("far", force=True) == 0
    assert db.read("1").remaining == 780


def test_import_runs_once(url: str) -> None:
    def entry(run_id: str, status: str, planned: int, spent: int, refused: bool = False) -> Entry:
        tags = {"lv.host": "h", "lv.pid": "12"}
        return Entry(run_id, run_id.upper(), "train", status, 1000, planned, spent, refused, tags)

    old = [
        entry("f", "FINISHED", 300, 280),
        entry("k", "KILLED", 300, 90),
        entry("r", "RUNNING", 200, 50),
        entry("x", "FAILED", 900, 0, refused=True),
    ]
    db = BudgetDB(url)
    db.reserve("1", "new", "N", "train", 100, 1000)  # a run reserved meanwhile is kept as it is
    assert db.import_runs("1", 1000, [*old, entry("new", "FINISHED", 5, 5)]) is True
    ledger = db.read("1")
    assert {e.run_id: e.charge for e in ledger.entries} == {
        "f": 280,
        "k": 90,
        "r": 200,
        "x": 0,
        "new": 100,
    }
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (370, 300, 330)
    assert [e.tags["lv.host"] for e in ledger.entries if e.run_id == "r"] == ["h"]
    assert db.import_runs("1", 1000, [entry("late", "FINISHED", 600, 600)]) is False
    assert len(db.read("1").entries) == 5


def test_unreachable_ledger_is_a_clear_error(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'no such folder' / 'optuna.db'}"
    with pytest.raises(LedgerUnavailable) as err:
        BudgetDB(missing)
    text = err.value.message
    assert missing in text and "opening it" in text and "folder exists" in text
    port = free_port()
    pg = f"postgresql://user:secret@127.0.0.1:{port}/ledger"
    with pytest.raises(LedgerUnavailable) as err:
        BudgetDB(pg)
    text = err.value.message
    assert f"127.0.0.1:{port}/ledger" in text and "secret" not in text
    assert "OperationalError" in text and "server runs" in text


def test_eight_at_once_with_budget_for_three(url: str) -> None:
    """A brand-new file: the 8 processes also race to create the tables."""
    planned, budget = 3 * 10**16, 10**17  # 3 fit (9e16), a 4th does not
    children = [Child(url, "reserve", "1", f"run{i}", planned, budget, "") for i in range(8)]
    outcomes = run_at_once(children)
    assert sorted(outcomes) == ["admitted"] * 3 + ["refused"] * 5, outcomes
    ledger = BudgetDB(url).read("1")
    assert len(ledger.entries) == 8 and ledger.reserved == 3 * planned
    admitted = {f"run{i}" for i, out in enumerate(outcomes) if out == "admitted"}
    assert {e.run_id for e in ledger.entries if not e.refused} == admitted


def test_two_concurrent_claims_exactly_one_wins(url: str) -> None:
    db = BudgetDB(url)
    dead = Holder(Holder.here().host, dead_pid(), "dead")
    db.reserve("1", "a", "A", "train", 100, 1000, holder=dead)
    children = [Child(url, "claim", "1", "a", 0, 0, "") for _ in range(2)]
    try:
        for child in children:
            child.expect("ready")
        for child in children:
            child.go()
        outcomes = [child.line() for child in children]
        assert sorted(outcomes) == ["lost", "won"], outcomes
        winner = children[outcomes.index("won")].proc.pid
        assert db.read("1").entries[0].tags["lv.pid"] == str(winner)
    finally:
        for child in children:
            child.close()


def test_holder_killed_inside_its_transaction_blocks_nobody(url: str) -> None:
    BudgetDB(url).import_runs("1", 100, [])  # the tables and the budget row exist
    holder = Child(url, "reserve", "1", "stalled", 100, 100, "stop")
    try:
        holder.expect("ready")
        holder.go()
        holder.expect("inside")
        holder.wait_stopped()  # inside BEGIN IMMEDIATE, its row written, not committed
        holder.proc.kill()
        holder.proc.wait(timeout=TIMEOUT_S)
    finally:
        holder.close()
    start = time.monotonic()
    ledger = BudgetDB(url).reserve("1", "next", "N", "train", 100, 100)
    assert time.monotonic() - start < 30
    assert [e.run_id for e in ledger.entries] == ["next"]  # the killed admission never happened


@pytest.mark.parametrize("then", ["continued", "killed", "gave up"])
def test_holder_stopped_inside_its_transaction_makes_others_wait(url: str, then: str) -> None:
    """SQLite on one machine: the others wait, saying why once, and go on once the stopped
    holder is continued (its admission stands: the other is refused) or killed (it never was);
    past LV_LEDGER_WAIT_S a waiter gives up with a clear error. Reads do not wait."""
    BudgetDB(url).import_runs("1", 100, [])
    holder = Child(url, "reserve", "1", "stalled", 100, 100, "stop")
    limit = {"LV_LEDGER_WAIT_S": "3"} if then == "gave up" else {}
    waiter = Child(url, "reserve", "1", "waiter", 100, 100, "", LV_LEDGER_NOTICE_S="1", **limit)
    try:
        holder.expect("ready")
        holder.go()
        holder.expect("inside")
        holder.wait_stopped()
        assert BudgetDB(url).read("1").entries == []  # the stalled row is not committed
        waiter.expect("ready")
        waiter.go()
        message = waiter.line(waiter.err)
        assert "waiting for the FLOPs budget ledger" in message
        assert url.removeprefix("sqlite:///") in message and "SIGSTOP" in message
        if then == "gave up":
            outcome = waiter.line()
            assert outcome.startswith("unavailable ") and "database is locked" in outcome
            assert "reserving run waiter" in outcome and url in outcome
        else:
            assert waiter.proc.poll() is None and waiter.out.empty()  # still waiting
        if then == "continued":
            os.kill(holder.proc.pid, signal.SIGCONT)
            assert holder.line() == "admitted"
            assert waiter.line() == "refused"
        else:
            holder.proc.kill()
            holder.proc.wait(timeout=TIMEOUT_S)
            if then == "killed":
                assert waiter.line() == "admitted"
        waiter.close()
        assert not [line for line in waiter.rest(waiter.err) if "waiting" in line]  # said once
    finally:
        holder.close()
        waiter.close()
    ledger = BudgetDB(url).read("1")
    running = {"continued": ["stalled"], "killed": ["waiter"], "gave up": []}[then]
    assert [e.run_id for e in ledger.entries if e.running] == running
    assert ledger.reserved == 100 * len(running)
