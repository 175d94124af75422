"""Trajectory-level train/validation/test split, deterministic by seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Split", "split"]


class Split(NamedTuple):
    """Sorted int64 index arrays of the series in each part; disjoint, together ``range(n)``."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Split ``n`` series into train/val/test at trajectory level.

    The series are shuffled with ``numpy.random.default_rng(seed).permutation(n)``; part sizes are
    ``round(n * cumsum(fractions))`` differences (n = 1000 with the defaults gives 800/100/100),
    so they always add up to ``n``. Each part is returned sorted.

    Raises:
        ValueError: ``n`` negative, or ``fractions`` not three finite non-negative numbers summing
            to 1 (within 1e-9).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    fr = [float(f) for f in fractions]
    if len(fr) != 3:
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise ValueError(f"fractions must be finite and non-negative, got {fractions!r}")
    if abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr):g})")
    n = int(n)
    bounds = [min(n, round(n * fr[0])), min(n, round(n * (fr[0] + fr[1])))]
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    train, val, test = np.split(perm, bounds)
    return Split(np.sort(train), np.sort(val), np.sort(test))
