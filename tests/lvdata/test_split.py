"""Trajectory-level splits."""

from __future__ import annotations

import numpy as np
import pytest

from lvdata import split


def test_sizes_disjoint_covering_sorted() -> None:
    s = split(1000)
    assert (len(s.train), len(s.val), len(s.test)) == (800, 100, 100)
    both = np.concatenate([s.train, s.val, s.test])
    assert len(np.unique(both)) == 1000
    np.testing.assert_array_equal(np.sort(both), np.arange(1000))
    for part in s:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)


def test_deterministic_by_seed() -> None:
    a, b, c = split(1000, seed=0), split(1000, seed=0), split(1000, seed=1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.test, c.test)


@pytest.mark.parametrize("n", [0, 1, 7, 10, 33])
def test_small_n_covers(n: int) -> None:
    s = split(n, (0.5, 0.25, 0.25))
    assert sum(len(p) for p in s) == n


@pytest.mark.parametrize(
    "fractions, match",
    [
        ((0.8, 0.1), "three"),
        ((0.8, 0.3, 0.1), "sum to 1"),
        ((1.2, -0.1, -0.1), "non-negative"),
        ((float("nan"), 0.5, 0.5), "finite"),
    ],
)
def test_bad_fractions(fractions: tuple[float, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split(10, fractions)


def test_bad_n() -> None:
    with pytest.raises(ValueError):
        split(-1)
