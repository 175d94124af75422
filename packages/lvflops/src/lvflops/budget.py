"""Budget bookkeeping: a :class:`Budget` of FLOPs (1e17 by default) and what has been spent."""

from __future__ import annotations

from dataclasses import dataclass, field

from lvflops.flops import Flops

#: The coursework budget for all reported experiments together.
DEFAULT_BUDGET = 10**17


class BudgetExceededError(RuntimeError):
    """Raised by :meth:`Budget.spend` when a charge does not fit the remaining budget."""


def _as_int(flops: Flops | int | float, what: str = "flops") -> int:
    value = flops.total if isinstance(flops, Flops) else flops
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a Flops, int or float, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{what} must be a whole number of FLOPs, got {value!r}")
        value = int(value)
    if value < 0:
        raise ValueError(f"{what} must be non-negative, got {value}")
    return value


@dataclass(frozen=True)
class Charge:
    """One entry of the ledger: FLOPs spent and an optional label."""

    flops: int
    label: str | None = None


@dataclass
class Budget:
    """A FLOPs budget with a ledger of charges. Exact ints; no global state.

    ``total`` may be given as a float such as ``1e17`` (it must be a whole number).
    :meth:`spend` refuses (raises :class:`BudgetExceededError`) a charge larger than what remains.
    """

    total: int | float = DEFAULT_BUDGET
    charges: list[Charge] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.total = _as_int(self.total, "total")
        if self.total == 0:
            raise ValueError("total budget must be positive")
        self.charges = list(self.charges)

    @property
    def spent(self) -> int:
        """FLOPs charged so far."""
        return sum(c.flops for c in self.charges)

    @property
    def remaining(self) -> int:
        """FLOPs left."""
        return int(self.total) - self.spent

    @property
    def share(self) -> float:
        """Fraction of the budget spent."""
        return self.spent / self.total

    def share_of(self, flops: Flops | int | float) -> float:
        """Fraction of the whole budget that ``flops`` would take."""
        return _as_int(flops) / self.total

    def can_afford(self, flops: Flops | int | float) -> bool:
        """Whether ``flops`` fits in what remains."""
        return _as_int(flops) <= self.remaining

    def max_steps(self, step_cost: Flops | int | float) -> int:
        """Most whole steps of ``step_cost`` FLOPs that the remaining budget pays for."""
        cost = _as_int(step_cost, "step_cost")
        if cost == 0:
            raise ValueError("step_cost must be positive")
        return self.remaining // cost

    def spend(self, flops: Flops | int | float, label: str | None = None) -> Charge:
        """Charge ``flops`` to the budget; refuse it with :class:`BudgetExceededError` if it
        exceeds what remains (nothing is charged then)."""
        value = _as_int(flops)
        if value > self.remaining:
            raise BudgetExceededError(
                f"charge {value:.4g} FLOPs{f' ({label})' if label else ''} exceeds the "
                f"remaining {self.remaining:.4g} of {self.total:.4g}"
            )
        charge = Charge(value, label)
        self.charges.append(charge)
        return charge

    def by_label(self) -> dict[str | None, int]:
        """FLOPs spent per label."""
        out: dict[str | None, int] = {}
        for c in self.charges:
            out[c.label] = out.get(c.label, 0) + c.flops
        return out
