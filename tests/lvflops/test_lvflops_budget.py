"""Budget bookkeeping."""

import pytest

from lvflops import Budget, BudgetExceededError, Flops


def test_defaults_and_float_total():
    b = Budget()
    assert b.total == 10**17 and isinstance(b.total, int)
    assert Budget(1e17).total == 10**17
    assert b.spent == 0 and b.remaining == 10**17 and b.share == 0.0


def test_spend_and_refuse():
    b = Budget(1000)
    b.spend(300, "train")
    b.spend(Flops({"lm_head": 200}, 200), label="eval")
    assert b.spent == 500 and b.remaining == 500 and b.share == 0.5
    assert b.by_label() == {"train": 300, "eval": 200}
    assert b.can_afford(500) and not b.can_afford(501)
    with pytest.raises(BudgetExceededError):
        b.spend(501, "too much")
    assert b.spent == 500  # a refused charge is not recorded
    b.spend(500)
    assert b.remaining == 0


def test_max_steps_and_share_of():
    b = Budget(1000)
    assert b.max_steps(300) == 3
    b.spend(100)
    assert b.max_steps(300) == 3 and b.max_steps(301) == 2
    assert b.max_steps(Flops({"x": 1000}, 0)) == 0
    assert b.share_of(250) == 0.25
    with pytest.raises(ValueError):
        b.max_steps(0)


def test_budgets_are_independent():
    a, b = Budget(10), Budget(10)
    a.spend(5)
    assert b.spent == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, float("inf")])
def test_bad_totals(bad):
    with pytest.raises(ValueError):
        Budget(bad)


def test_bad_charges():
    b = Budget(10)
    with pytest.raises(ValueError):
        b.spend(-1)
    with pytest.raises(TypeError):
        b.spend("3")  # type: ignore[arg-type]
