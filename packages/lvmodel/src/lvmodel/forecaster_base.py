"""What the reference forecasters share: argument checks and the base class with the no-op fit."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TINY", "ForecasterBase", "as_histories", "check_horizon"]

TINY = 1e-8
"""Floor of values before taking logs (the data are positive, down to ~4e-5)."""


def as_histories(histories: Any) -> np.ndarray:
    h = np.asarray(histories, dtype=np.float64)
    if h.ndim != 3 or h.shape[1] < 1:
        raise ValueError(f"histories must be (B, K, n_vars) with K >= 1, got {h.shape}")
    return h


def check_horizon(horizon: int) -> int:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return int(horizon)


class ForecasterBase:
    """Base of the reference forecasters: a no-op ``fit`` and a ``repr`` of the settings."""

    name = "base"

    def fit(self, train_values: Any, time: Any) -> Any:
        return self

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({kw})"
