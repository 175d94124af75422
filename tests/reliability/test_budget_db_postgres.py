"""The FLOPs budget ledger in SQL tables (lvtrack.budget_db) on PostgreSQL, as a team shares it.

A throwaway server runs (the `postgres` fixture of conftest.py, skipped where PostgreSQL cannot be
installed) and each test gets a database of its own, created by the ledger itself. The races of
tests/lvtrack/test_budget_db.py (same child processes, same pipes): 8 reservations at once with
budget for exactly 3, two concurrent claims, a holder killed inside its transaction; and a holder
stopped (SIGSTOP) inside its admission: the server ends its session after LV_LEDGER_IDLE_S, the
others go on, and once continued the stopped process is refused (its transaction is gone).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from lvtrack.budget_db import BudgetDB
from tests.lvtrack.test_budget_db import (  # the same races, here against the `url` below
    Child,
    test_eight_at_once_with_budget_for_three,
    test_holder_killed_inside_its_transaction_blocks_nobody,
    test_two_concurrent_claims_exactly_one_wins,
)

if TYPE_CHECKING:
    from tests.reliability.conftest import Postgres

pytestmark = pytest.mark.slow

IDLE_S = 2  # the stopped holder's LV_LEDGER_IDLE_S: the server cuts it off after this


@pytest.fixture
def url(postgres: Postgres) -> str:
    """A database of its own (not created yet: the ledger creates it, the 8 processes of
    `test_eight_at_once_with_budget_for_three` racing to do so)."""
    return f"postgresql://{postgres.user}@{postgres.host}:{postgres.port}/ledger_{uuid.uuid4().hex}"


def test_holder_stopped_inside_its_admission_is_cut_off_by_the_server(url: str) -> None:
    BudgetDB(url).import_runs("1", 100, [])  # budget for one run of 100
    holder = Child(url, "reserve", "1", "stalled", 100, 100, "stop", LV_LEDGER_IDLE_S=str(IDLE_S))
    try:
        holder.expect("ready")
        holder.go()
        holder.expect("inside")
        holder.wait_stopped()
        start = time.monotonic()
        ledger = BudgetDB(url).reserve("1", "waiter", "W", "train", 100, 100)  # waits, then goes on
        waited = time.monotonic() - start
        assert waited < 60, f"the others waited {waited:.0f} s for a holder cut off after {IDLE_S}"
        assert [e.run_id for e in ledger.entries] == ["waiter"]
        assert holder.proc.poll() is None  # still stopped: the server, not the holder, let go
        os.kill(holder.proc.pid, signal.SIGCONT)
        outcome = holder.line()
        assert outcome.startswith("unavailable ") and "reserving run stalled" in outcome, outcome
        assert "nothing of it was written" in outcome and "LV_LEDGER_IDLE_S" in outcome
    finally:
        holder.close()
    ledger = BudgetDB(url).read("1")
    assert [e.run_id for e in ledger.entries] == ["waiter"] and ledger.reserved == 100


__all__ = [  # collected here as well, with this module's `url`
    "test_eight_at_once_with_budget_for_three",
    "test_holder_killed_inside_its_transaction_blocks_nobody",
    "test_two_concurrent_claims_exactly_one_wins",
]
