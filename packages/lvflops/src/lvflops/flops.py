"""The :class:`Flops` result: exact integer FLOPs by component, with the matmul share apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: Components in the order of the forward pass (``lora`` last: it sits in several layers); every
#: :class:`Flops` from this package has them all. ``loss`` is the cross-entropy, 0 unless counted.
COMPONENTS: tuple[str, ...] = (
    "rmsnorm",
    "q_proj",
    "k_proj",
    "v_proj",
    "qkv_bias",
    "rope",
    "attn_scores",
    "attn_scale",
    "attn_mask",
    "softmax",
    "attn_values",
    "o_proj",
    "residual",
    "mlp_gate",
    "mlp_up",
    "swiglu",
    "mlp_down",
    "final_norm",
    "lm_head",
    "lm_head_bias",
    "loss",
    "lora",
)


@dataclass(frozen=True)
class Flops:
    """FLOPs of some computation.

    ``by_component`` maps a component name to its FLOPs (ints); ``matmul`` is the part of the total
    spent in matrix products (sum of m*p*(2n-1)), which cuts across components (LoRA holds both).
    Supports ``a + b`` and ``k * a`` / ``a * k`` for an integer ``k``.
    """

    by_component: Mapping[str, int] = field(default_factory=dict)
    matmul: int = 0

    def __post_init__(self) -> None:
        comps = dict(self.by_component)
        for name, value in comps.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"FLOPs of {name!r} must be an int, got {value!r}")
        if not isinstance(self.matmul, int) or isinstance(self.matmul, bool):
            raise TypeError(f"matmul FLOPs must be an int, got {self.matmul!r}")
        object.__setattr__(self, "by_component", MappingProxyType(comps))

    @property
    def total(self) -> int:
        """All FLOPs: the sum over components."""
        return sum(self.by_component.values())

    def __add__(self, other: object) -> Flops:
        if not isinstance(other, Flops):
            return NotImplemented
        comps = dict(self.by_component)
        for name, value in other.by_component.items():
            comps[name] = comps.get(name, 0) + value
        return Flops(comps, self.matmul + other.matmul)

    def __mul__(self, k: object) -> Flops:
        if not isinstance(k, int) or isinstance(k, bool):
            return NotImplemented
        if k < 0:
            raise ValueError(f"FLOPs can only be scaled by a non-negative integer, got {k}")
        return Flops({n: v * k for n, v in self.by_component.items()}, self.matmul * k)

    __rmul__ = __mul__

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"total", "matmul", "by_component"}``."""
        return {"total": self.total, "matmul": self.matmul, "by_component": dict(self.by_component)}

    @classmethod
    def zero(cls) -> Flops:
        """No FLOPs, with every standard component present."""
        return cls(dict.fromkeys(COMPONENTS, 0), 0)
