"""The one exception lvdata raises for bad data."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Data that lvdata cannot use: a missing or malformed file, invalid values, a failed solve.

    The message names the source (usually a file path), says what is wrong and what to do about it.
    """
