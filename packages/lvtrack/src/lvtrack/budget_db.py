"""The FLOPs budget ledger in SQL tables: every admission is one transaction of the database.

Where: the storage that holds the Optuna study (`ledger_url`): by default the SQLite file
`optuna.db` beside a SQLite tracking DB, for a team the PostgreSQL database of the study. Tables:
`lv_budget` (per experiment: its budget, and whether its older MLflow runs were imported) and
`lv_budget_run` (per budgeted run: reserved, spent, state, and the holder: host, pid and token of
the process that runs it). A run's charge is `Entry.charge`: a running run holds
max(reserved, spent), a finished, failed or killed run what it spent, a refused run nothing.

Mutual exclusion is the database's own (no thread or table of ours keeps it). Each method of
`BudgetDB` is one short transaction that reads what it decides on and writes its rows:

- SQLite: write transactions begin with BEGIN IMMEDIATE (pysqlite's own transaction handling
  turned off, SQLAlchemy's documented recipe), so one process at a time writes the file. Others
  wait on SQLite's busy timeout and, after LV_LEDGER_NOTICE_S (5 s), print one line to stderr
  saying why; after LV_LEDGER_WAIT_S (3600 s) they give up (LedgerUnavailable). A process that
  dies, SIGKILL included, drops its lock with its file descriptors; one that is stopped (SIGSTOP,
  Ctrl-Z) keeps the others waiting until it is continued or killed.
- PostgreSQL: each transaction locks its experiment's budget row (SELECT ... FOR UPDATE) and sets
  for itself `lock_timeout` (LV_LEDGER_LOCK_S, 60 s) and `idle_in_transaction_session_timeout`
  (LV_LEDGER_IDLE_S, 10 s): a holder that stalls inside a transaction has its session ended by
  the server, which frees the row for the others; once it wakes, its commit fails
  (LedgerUnavailable) and nothing it wrote exists.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

OPEN_STATUSES = ("RUNNING", "SCHEDULED")  # an MLflow run in these holds its reservation
CLOSED = ("finished", "failed", "killed")
STATES = ("running", *CLOSED, "refused")
_STATUS = {"running": "RUNNING", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_TOKEN = secrets.token_hex(8)  # this process's, for the holder of the runs it runs

meta = sa.MetaData()
budgets = sa.Table(
    "lv_budget",
    meta,
    sa.Column("experiment_id", sa.String(64), primary_key=True),
    sa.Column("budget", sa.BigInteger, nullable=False),
    sa.Column("imported", sa.Boolean, nullable=False),
)
runs = sa.Table(
    "lv_budget_run",
    meta,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("experiment_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("reserved", sa.BigInteger, nullable=False),
    sa.Column("spent", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("host", sa.Text),
    sa.Column("pid", sa.Integer),
    sa.Column("token", sa.String(64)),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint(f"state IN {STATES}", name="lv_budget_run_state"),
)
notes = sa.Table(  # values decided once among processes (the search's parent run)
    "lv_note",
    meta,
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class BudgetRefused(RuntimeError):
    """A run's planned FLOPs do not fit the remaining budget."""


@dataclass(frozen=True)
class Entry:
    """One budgeted run as the ledger sees it (`status` in MLflow's words)."""

    run_id: str
    name: str
    phase: str
    status: str
    start_time: int
    planned: int
    spent: int
    refused: bool
    tags: dict[str, str] = field(default_factory=dict, compare=False)  # lv.host, lv.pid, ...

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


class LedgerUnavailable(click.ClickException):
    """The ledger's database cannot be reached, or a transaction on it failed: nothing of that
    transaction was written (it was rolled back, or never began)."""


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def default_storage(tracking_uri: str) -> str:
    """The default storage of the Optuna study and the ledger (one setting for both): SQLite
    `optuna.db` beside a SQLite tracking DB, the database `<name>_optuna` on a PostgreSQL one;
    anything else (an `http://` tracking server) needs `--storage`: its backend is not visible."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite":
        db = Path(parts.path[1:] if parts.path.startswith("/") else parts.path)
        return f"sqlite:///{db.with_name('optuna.db')}"
    if parts.scheme.startswith("postgresql"):
        name = parts.path.lstrip("/") or "postgres"
        return urlunsplit(parts._replace(path=f"/{name}_optuna"))
    raise LedgerUnavailable(
        f"the tracking store {tracking_uri} does not say where the FLOPs budget ledger can live: "
        "give --storage (e.g. postgresql://user@host:5432/optuna, a database every worker reaches)"
    )


def ledger_url(tracking_uri: str, storage: str = "") -> str:
    """Where the ledger lives: the study's storage when given, else its default."""
    return storage or default_storage(tracking_uri)


@dataclass(frozen=True)
class Holder:
    """The process that runs a run: host, pid and a token drawn once per process."""

    host: str | None
    pid: int | None
    token: str | None

    @classmethod
    def here(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), _TOKEN)

    @classmethod
    def of(cls, entry: Entry) -> Holder:
        """The holder an entry names (its tags `lv.host` and `lv.pid`; no token)."""
        pid = entry.tags.get("lv.pid", "")
        return cls(entry.tags.get("lv.host"), int(pid) if pid.isdigit() else None, None)

    def alive(self) -> bool | None:
        """Whether its process still runs: None when it ran on another host (or is unknown)."""
        if self.host != socket.gethostname() or self.pid is None:
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        with suppress(OSError):  # Linux: a killed process not yet reaped (a zombie) is dead
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return True


def _safe(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def _failure(url: str, what: str, err: BaseException) -> LedgerUnavailable:
    orig = getattr(err, "orig", None) or err
    first = (str(orig).strip().splitlines() or [""])[0][:300]
    if isinstance(orig, ImportError):
        hint = "Install the database's driver: pip install 'psycopg[binary]==3.3.9' for PostgreSQL."
    elif url.startswith("sqlite"):
        hint = (
            "Check that the file's folder exists and is writable. A process stopped inside a "
            "ledger transaction (SIGSTOP, Ctrl-Z) holds the file until it is continued or killed."
        )
    else:
        hint = (
            "Check that the server runs and that this machine reaches it (every worker uses the "
            "same LV_STORAGE or --storage). A transaction waits for another at most LV_LEDGER_LOCK_S, and one "
            "stalled past LV_LEDGER_IDLE_S is cut off by the server: if this process was stopped "
            "or paused, run it again."
        )
    return LedgerUnavailable(
        f"the FLOPs budget ledger at {_safe(url)} failed while {what} "
        f"({type(orig).__name__}: {first}); nothing of it was written. {hint}"
    )


def _no_pysqlite_transactions(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's recipe: we emit BEGIN ourselves


def _begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE (a plain BEGIN for reads); one line to stderr if it has to wait."""
    raw: Any = conn.connection.driver_connection
    if conn.get_execution_options().get("lv_read"):
        raw.execute("BEGIN")
        return
    notice, wait = _seconds("LV_LEDGER_NOTICE_S", 5.0), _seconds("LV_LEDGER_WAIT_S", 3600.0)
    raw.execute(f"PRAGMA busy_timeout = {int(notice * 1000)}")
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as err:
        if "locked" not in str(err) and "busy" not in str(err):
            raise
        print(
            f"lvtrack: waiting for the FLOPs budget ledger {conn.engine.url.database}: another "
            f"process holds its write transaction (a process stopped inside it, by SIGSTOP or "
            f"Ctrl-Z, keeps the others waiting until it is continued or killed); waiting up to "
            f"{wait:.0f} s (LV_LEDGER_WAIT_S)",
            file=sys.stderr,
            flush=True,
        )
        raw.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        raw.execute("BEGIN IMMEDIATE")
    raw.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")  # the commit may wait on readers


def ensure_postgres_database(url: str) -> None:
    """Create the database when missing (the server is the tracking one); for the ledger and the
    study's storage alike."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = sa.create_engine(urlunsplit(parts._replace(path="/postgres")), poolclass=sa.NullPool)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            query = sa.text("SELECT 1 FROM pg_database WHERE datname = :n")
            if conn.execute(query, {"n": name}).first() is None:
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                except sa.exc.DBAPIError:  # created by another process meanwhile?
                    if conn.execute(query, {"n": name}).first() is None:
                        raise
    finally:
        admin.dispose()


_ENGINES: dict[tuple[int, str], Engine] = {}
_PG_TIMEOUTS = sa.text(
    "SELECT set_config('lock_timeout', :l, true), "
    "set_config('idle_in_transaction_session_timeout', :i, true)"
)


def _pg_timeouts() -> dict[str, str]:
    lock, idle = _seconds("LV_LEDGER_LOCK_S", 60), _seconds("LV_LEDGER_IDLE_S", 10)
    return {"l": f"{lock * 1000:.0f}", "i": f"{idle * 1000:.0f}"}


def _engine(url: str) -> Engine:
    """One engine per URL per process, its tables created if missing."""
    key = (os.getpid(), url)
    if key in _ENGINES:
        return _ENGINES[key]
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"timeout": 5.0})
        sa.event.listen(engine, "connect", _no_pysqlite_transactions)
        sa.event.listen(engine, "begin", _begin)
    else:
        if url.startswith("postgresql"):
            ensure_postgres_database(url)
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    with engine.connect().execution_options(lv_read=True) as conn:  # no write lock to look
        missing = not all(sa.inspect(conn).has_table(t.name) for t in meta.sorted_tables)
    for attempt in range(3 if missing else 0):  # PostgreSQL: of processes creating them, one wins
        try:
            with engine.begin() as conn:
                meta.create_all(conn)
            break
        except sa.exc.DBAPIError:
            if attempt == 2 or url.startswith("sqlite"):
                engine.dispose()
                raise
    _ENGINES[key] = engine
    return engine


def driver_url(url: str) -> str:
    """`postgresql://` through psycopg 3 (the driver installed beside MLflow)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _now_ms() -> int:
    return int(time.time() * 1000)


class BudgetDB:
    """The ledger of the database at `url` (see the module docstring). Opening it creates its
    tables when missing; a database that cannot be reached is LedgerUnavailable."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = _engine(driver_url(url))
        except (sa.exc.SQLAlchemyError, sqlite3.Error, ImportError) as err:
            raise _failure(url, "opening it", err) from None
        self.postgres = self.engine.dialect.name == "postgresql"

    @contextmanager
    def _tx(self, what: str, read: bool = False) -> Iterator[Connection]:
        """One transaction, committed on leaving; database errors become LedgerUnavailable."""
        try:
            with self.engine.connect() as conn:
                if read:
                    conn.execution_options(lv_read=True)
                with conn.begin():
                    if self.postgres:  # for this transaction only (SET LOCAL)
                        conn.execute(_PG_TIMEOUTS, _pg_timeouts())
                    yield conn
        except (sa.exc.DBAPIError, sqlite3.Error) as err:
            raise _failure(self.url, what, err) from None

    def _lock(self, conn: Connection, experiment_id: str, budget: int | None = None) -> int:
        """Lock the experiment's budget row (created with `budget` when missing, and set to it
        when given); returns the budget."""
        if budget is not None:
            insert = (postgresql if self.postgres else sqlite).insert(budgets)
            row = {"experiment_id": experiment_id, "budget": int(budget), "imported": False}
            conn.execute(insert.values(**row).on_conflict_do_nothing())
        query = sa.select(budgets.c.budget).where(budgets.c.experiment_id == experiment_id)
        found = conn.execute(query.with_for_update()).scalar()
        if found is None:
            raise ValueError(f"experiment {experiment_id} has no budget in the ledger")
        if budget is not None and found != budget:
            where = budgets.c.experiment_id == experiment_id
            conn.execute(budgets.update().where(where).values(budget=int(budget)))
        return int(budget if budget is not None else found)

    def _run(self, conn: Connection, run_id: str, budget: int | None = None) -> tuple[Any, int]:
        """The run's row read under its experiment's lock, and the budget."""
        where = runs.c.run_id == run_id
        experiment_id = conn.execute(sa.select(runs.c.experiment_id).where(where)).scalar()
        if experiment_id is None:
            raise ValueError(f"run {run_id} is not in the FLOPs budget ledger")
        budget = self._lock(conn, experiment_id, budget)
        return conn.execute(sa.select(runs).where(where)).one(), budget

    def _entries(self, conn: Connection, experiment_id: str) -> list[Entry]:
        query = sa.select(runs).where(runs.c.experiment_id == experiment_id)
        rows = conn.execute(query.order_by(runs.c.created_ms, runs.c.run_id))
        return [  # a refused run ends FAILED; the tags are the run's (lvtrack.runs)
            Entry(
                r.run_id,
                r.name,
                r.phase,
                _STATUS.get(r.state, "FAILED"),
                r.created_ms,
                r.reserved,
                r.spent,
                r.state == "refused",
                {"lv.host": r.host or "", "lv.pid": str(r.pid or "")},
            )
            for r in rows
        ]

    def _others(self, conn: Connection, experiment_id: str, run_id: str) -> int:
        return sum(e.charge for e in self._entries(conn, experiment_id) if e.run_id != run_id)

    def _insert(
        self,
        conn: Connection,
        run_id: str,
        experiment_id: str,
        name: str,
        phase: str,
        reserved: int,
        spent: int,
        state: str,
        holder: Holder,
        created_ms: int = 0,
    ) -> None:
        values: dict[str, Any] = dict(run_id=run_id, experiment_id=experiment_id, name=name)
        values |= dict(phase=phase, reserved=reserved, spent=spent, state=state)
        values |= dict(host=holder.host, pid=holder.pid, token=holder.token, updated_ms=_now_ms())
        conn.execute(runs.insert().values(**values, created_ms=created_ms or _now_ms()))

    def _set(self, conn: Connection, run_id: str, **values: Any) -> None:
        conn.execute(runs.update().where(runs.c.run_id == run_id).values(**values))

    def reserve(
        self,
        experiment_id: str,
        run_id: str,
        name: str,
        phase: str,
        planned: int,
        budget: int,
        holder: Holder | None = None,
        pause: Callable[[], object] | None = None,
    ) -> Ledger:
        """Admit a new run holding `planned` FLOPs, or write it refused and raise BudgetRefused.

        Admitted only if what the experiment's runs hold plus `planned` fits `budget` (which
        becomes the experiment's budget), judged on a read made under the transaction that
        writes the run: two admissions never both see room that only one of them fits.
        Returns the ledger afterwards. `pause`, for tests only, runs inside the transaction after
        the run's row is written and before the commit."""
        planned, budget, holder = int(planned), int(budget), holder or Holder.here()
        with self._tx(f"reserving run {run_id}") as conn:
            self._lock(conn, experiment_id, budget)
            ledger = Ledger(budget, self._entries(conn, experiment_id))
            if any(e.run_id == run_id for e in ledger.entries):
                raise ValueError(f"run {run_id} is in the ledger already: claim it to resume it")
            used = ledger.spent + ledger.reserved
            refused = used + planned > budget
            state = "refused" if refused else "running"
            self._insert(conn, run_id, experiment_id, name, phase, planned, 0, state, holder)
            if pause is not None:
                pause()
            ledger = Ledger(budget, self._entries(conn, experiment_id))
        if refused:
            raise BudgetRefused(
                f"FLOPs budget refused this run before training: planned {planned:.3e}, "
                f"spent {ledger.spent:.3e}, reserved by running runs {ledger.reserved:.3e}, "
                f"remaining {budget - used:.3e} of {budget:.3e}. Lower steps, batch or context "
                f"length, or raise the budget."
            )
        return ledger

    def extend(self, run_id: str, planned: int, budget: int | None = None) -> bool:
        """Raise a running run's reservation to `planned` in all (never lowered: False, nothing
        changed). BudgetRefused, leaving it as it was, when the other runs' charges plus
        max(planned, spent) exceed the budget. ValueError for a run that is not running."""
        with self._tx(f"extending run {run_id}") as conn:
            row, budget = self._run(conn, run_id, budget)
            if row.state != "running":
                raise ValueError(f"run {run_id} is {row.state}: its reservation is closed")
            if int(planned) <= row.reserved:
                return False
            others = self._others(conn, row.experiment_id, run_id)
            if others + max(int(planned), row.spent) > budget:
                raise BudgetRefused(
                    f"FLOPs budget refused extending run {run_id}'s reservation from "
                    f"{row.reserved:.3e} to {int(planned):.3e}: the other runs hold "
                    f"{others:.3e}, so {budget - others:.3e} of {budget:.3e} is left for it"
                )
            self._set(conn, run_id, reserved=int(planned), updated_ms=_now_ms())
        return True

    def record_spent(self, run_id: str, spent: int) -> None:
        """What a running run has spent so far (monotone: a lower figure changes nothing)."""
        with self._tx(f"recording what run {run_id} spent") as conn:
            row, _ = self._run(conn, run_id)
            if row.state == "running" and int(spent) > row.spent:
                self._set(conn, run_id, spent=int(spent), updated_ms=_now_ms())

    def finish(self, run_id: str, state: str, spent: int) -> None:
        """Close a run finished, failed or killed; it is charged what it spent (the larger of
        `spent` and what was recorded). A refused run stays refused."""
        if state not in CLOSED:
            raise ValueError(f"a run ends {' / '.join(CLOSED)}, not {state!r}")
        with self._tx(f"closing run {run_id}") as conn:
            row, _ = self._run(conn, run_id)
            if row.state != "refused":
                spent = max(int(spent), row.spent)
                self._set(conn, run_id, state=state, spent=spent, updated_ms=_now_ms())

    def claim(
        self,
        run_id: str,
        holder: Holder | None = None,
        planned: int | None = None,
        budget: int | None = None,
    ) -> bool:
        """Take a run over to resume it: True when `holder` now runs it, False when a live
        process does (only one of concurrent claimers wins; the others read its holder).

        A finished, failed or killed run, a running one whose holder is dead on this host, or one
        held by `holder` already can be claimed; a holder on another host counts as alive
        (`release_dead(force=True)` first). The run reopens running and holds `planned` (what
        it may spend in all, default its reservation) or what it spent if more; BudgetRefused
        when that does not fit beside the other runs under `budget` (which becomes the
        experiment's; default the stored one): the claim is not taken, and a run left running by
        a dead holder is closed failed so that it holds only what it spent."""
        holder, refusal = holder or Holder.here(), ""
        with self._tx(f"claiming run {run_id}") as conn:
            row, budget = self._run(conn, run_id, budget)
            if row.state == "refused":
                raise ValueError(f"run {run_id} was refused before it trained: nothing to resume")
            current = Holder(row.host, row.pid, row.token)
            if row.state == "running" and current != holder and current.alive() is not False:
                return False
            need = row.reserved if planned is None else int(planned)
            others = self._others(conn, row.experiment_id, run_id)
            if others + max(need, row.spent) > budget:
                refusal = (
                    f"FLOPs budget refused resuming run {run_id}: it has spent {row.spent:.3e} "
                    f"and may spend {need:.3e} in all, other runs hold {others:.3e} of "
                    f"{budget:.3e}. Raise the budget (--budget) to resume it."
                )
                if row.state == "running":
                    self._set(conn, run_id, state="failed", updated_ms=_now_ms())
            else:
                who = {"host": holder.host, "pid": holder.pid, "token": holder.token}
                self._set(conn, run_id, state="running", reserved=need, **who, updated_ms=_now_ms())
        if refusal:
            raise BudgetRefused(refusal)
        return True

    def release_dead(self, run_id: str, force: bool = False, spent: int = 0) -> int:
        """Close failed a running run whose holder is dead, so that it holds what it spent (the
        larger of `spent` and what was recorded), not its reservation; returns that. ValueError
        for a run that is not running, whose holder runs on this host, or (unless `force`) whose
        holder ran on another host."""
        with self._tx(f"releasing run {run_id}") as conn:
            row, _ = self._run(conn, run_id)
            if row.state != "running":
                raise ValueError(
                    f"run {run_id} is {row.state.upper()}: it holds only what it spent"
                )
            alive = Holder(row.host, row.pid, row.token).alive()
            if alive:
                raise ValueError(f"run {run_id} is still running (pid {row.pid} on this host)")
            if alive is None and not force:
                raise ValueError(
                    f"run {run_id} runs on host {row.host or '?'}, not here: make sure its "
                    f"process is dead there, then release it with --force"
                )
            spent = max(int(spent), row.spent)
            self._set(conn, run_id, state="failed", spent=spent, updated_ms=_now_ms())
            return spent

    def import_runs(self, experiment_id: str, budget: int, entries: Iterable[Entry]) -> bool:
        """Write the rows of an experiment logged before this ledger (its MLflow runs, as
        `lvtrack.ledger.read_ledger` returns them) in one transaction, once: False, nothing
        written, when it was done before. Runs already in the ledger are kept as they are."""
        with self._tx(f"importing the runs of experiment {experiment_id}") as conn:
            self._lock(conn, experiment_id, budget)
            where = budgets.c.experiment_id == experiment_id
            if conn.execute(sa.select(budgets.c.imported).where(where)).scalar():
                return False
            known = set(
                conn.execute(
                    sa.select(runs.c.run_id).where(runs.c.experiment_id == experiment_id)
                ).scalars()
            )
            for e in entries:
                if e.run_id in known:
                    continue
                state = "refused" if e.refused else "running" if e.running else e.status.lower()
                row = (e.run_id, experiment_id, e.name, e.phase, e.planned, e.spent, state)
                who = Holder.of(e)
                self._insert(conn, *row, who, created_ms=e.start_time)
            conn.execute(budgets.update().where(where).values(imported=True))
        return True

    def first_value(self, scope: str, key: str, value: str) -> str:
        """`value` if this is the first process to give one for (scope, key), else the value the
        first one gave: an insert that keeps an existing row, then a read, in one transaction."""
        with self._tx(f"deciding {key} of {scope}") as conn:
            insert = (postgresql if self.postgres else sqlite).insert(notes)
            conn.execute(insert.values(scope=scope, key=key, value=value).on_conflict_do_nothing())
            where = (notes.c.scope == scope) & (notes.c.key == key)
            return str(conn.execute(sa.select(notes.c.value).where(where)).scalar_one())

    def imported(self, experiment_id: str) -> bool:
        """Whether the experiment's runs logged before this ledger were imported (one read)."""
        where = budgets.c.experiment_id == experiment_id
        with self._tx(f"reading the ledger of experiment {experiment_id}", read=True) as conn:
            return bool(conn.execute(sa.select(budgets.c.imported).where(where)).scalar())

    def read(self, experiment_id: str, budget: int | None = None) -> Ledger:
        """The experiment's ledger, as one consistent read (a given `budget` overrides the
        stored one; 0 when there is neither)."""
        with self._tx(f"reading the ledger of experiment {experiment_id}", read=True) as conn:
            where = budgets.c.experiment_id == experiment_id
            stored = conn.execute(sa.select(budgets.c.budget).where(where)).scalar()
            entries = self._entries(conn, experiment_id)
        return Ledger(int(budget if budget is not None else stored or 0), entries)
