"""The `Trajectories` container, its validation, and the HDF5 file format.

File format (the coursework's ``lotka_volterra_data.h5``):

- dataset ``trajectories``: float32, shape (N, T, 2); ``[..., 0]`` prey, ``[..., 1]`` predator;
- dataset ``time``: float64, shape (T,), strictly increasing.

Files written by :meth:`Trajectories.save` hold exactly these two datasets; they may carry HDF5
attributes describing how they were generated (model, seed, ...), which the loader ignores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lvdata.errors import DataError

__all__ = ["Trajectories", "load_trajectories", "validate"]

VALUES_KEY = "trajectories"
TIME_KEY = "time"

AttrValue = str | int | float | bool


def validate(values: Any, time: Any, source: str = "<memory>") -> tuple[np.ndarray, np.ndarray]:
    """Check trajectory values and time stamps; return them as float32 (N, T, 2) and float64 (T,).

    Raises :class:`DataError` naming ``source`` when: values are not numeric, values are not of rank
    3 or their last dimension is not 2, time is not of rank 1 or its length is not T, values contain
    non-finite entries (the message gives how many and the first index), values are negative, or
    time is non-finite or not strictly increasing.
    """
    try:
        v = np.asarray(values)
        t = np.asarray(time)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: cannot read the data as arrays ({exc}).") from None
    for name, arr in (("trajectories", v), ("time", t)):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(
                f"{source}: {name!r} has dtype {arr.dtype}; expected numbers (float32 for "
                "trajectories, float64 for time)."
            )
    if v.ndim != 3 or v.shape[-1] != 2:
        raise DataError(
            f"{source}: 'trajectories' has shape {v.shape}; expected (n_series, n_steps, 2) with "
            "[..., 0] prey and [..., 1] predator. Rewrite the file in that layout."
        )
    if t.ndim != 1:
        raise DataError(f"{source}: 'time' has shape {t.shape}; expected a 1-D array of length T.")
    if t.shape[0] != v.shape[1]:
        raise DataError(
            f"{source}: 'time' has {t.shape[0]} entries but 'trajectories' has {v.shape[1]} steps "
            f"(shape {v.shape}); they must match."
        )
    bad = ~np.isfinite(v)
    n_bad = int(bad.sum())
    if n_bad:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source}: 'trajectories' holds {n_bad} non-finite value(s) (NaN or inf); the "
            f"first is at index {first} (series, step, variable). Remove or repair those series."
        )
    neg = v < 0
    n_neg = int(neg.sum())
    if n_neg:
        first = tuple(int(i) for i in np.argwhere(neg)[0])
        raise DataError(
            f"{source}: 'trajectories' holds {n_neg} negative population(s); the first is "
            f"{float(v[first]):g} at index {first} (series, step, variable). "
            "Populations must be >= 0."
        )
    if not np.all(np.isfinite(t)):
        raise DataError(f"{source}: 'time' holds non-finite values; it must be finite.")
    steps = np.diff(t)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise DataError(
            f"{source}: 'time' is not strictly increasing (time[{i}] = {float(t[i]):g}, "
            f"time[{i + 1}] = {float(t[i + 1]):g}). Sort it or fix the file."
        )
    return v.astype(np.float32, copy=False), t.astype(np.float64, copy=False)


@dataclass(eq=False)
class Trajectories:
    """A set of predator-prey series sharing one time grid.

    Attributes:
        values: float32 (N, T, 2); ``[..., 0]`` prey, ``[..., 1]`` predator. Validated on
            construction (finite, non-negative).
        time: float64 (T,), strictly increasing.
        params: per-system parameter arrays of shape (N,) when simulated (keys such as ``"r"``,
            ``"K"``, ``"x0"``), else None (for instance after loading a file).
        attrs: metadata (generator, seed, ...) written as HDF5 attributes by :meth:`save`;
            the loader ignores them.
    """

    values: np.ndarray
    time: np.ndarray
    params: dict[str, np.ndarray] | None = None
    attrs: dict[str, AttrValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values, self.time = validate(self.values, self.time, source="Trajectories")
        if self.params is not None:
            params = {k: np.asarray(p) for k, p in self.params.items()}
            for k, p in params.items():
                if p.shape != (self.n_series,):
                    raise DataError(
                        f"Trajectories: params[{k!r}] has shape {p.shape}; expected "
                        f"({self.n_series},), one value per series."
                    )
            self.params = params

    @property
    def n_series(self) -> int:
        """Number of series N."""
        return int(self.values.shape[0])

    @property
    def n_steps(self) -> int:
        """Number of time steps T."""
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return self.n_series

    def subset(self, indices: Sequence[int] | np.ndarray) -> Trajectories:
        """The series at ``indices`` (in that order), with their parameters; same time grid."""
        idx = np.asarray(indices, dtype=np.int64)
        params = None if self.params is None else {k: p[idx] for k, p in self.params.items()}
        return Trajectories(self.values[idx], self.time.copy(), params, dict(self.attrs))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the coursework format: ``trajectories`` float32 (N, T, 2), ``time`` float64 (T,).

        ``attrs`` become HDF5 attributes of the file. Per-series parameters are not written (the
        format has no place for them). Overwrites ``path``; returns it as a Path.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(out, "w") as f:
            f.create_dataset(VALUES_KEY, data=self.values.astype(np.float32))
            f.create_dataset(TIME_KEY, data=self.time.astype(np.float64))
            for key, value in self.attrs.items():
                f.attrs[key] = value
        return out


def load_trajectories(path: str | os.PathLike[str]) -> Trajectories:
    """Load and validate a trajectories file in the coursework format (see the module docstring).

    Raises :class:`DataError` naming the file when it is missing, is not HDF5, lacks a dataset,
    or holds values that :func:`validate` rejects. HDF5 attributes are kept in ``attrs`` (decoded
    to plain Python values) but otherwise ignored.
    """
    p = Path(path)
    src = str(p)
    if not p.exists():
        raise DataError(
            f"{src}: no such file. Pass the path of lotka_volterra_data.h5, or generate an "
            "equivalent file with `lvdata simulate --out FILE`."
        )
    if p.is_dir():
        raise DataError(
            f"{src}: is a directory; expected an HDF5 file. Pass the path of the file itself "
            "(such as lotka_volterra_data.h5), or generate one with `lvdata simulate --out FILE`."
        )
    if not h5py.is_hdf5(p):
        raise DataError(
            f"{src}: not an HDF5 file. Expected datasets 'trajectories' (N, T, 2) and 'time' (T,); "
            "convert the data to that layout, or generate a file with `lvdata simulate --out FILE`."
        )
    try:
        with h5py.File(p, "r") as f:
            for key in (VALUES_KEY, TIME_KEY):
                if key not in f:
                    raise DataError(
                        f"{src}: no dataset {key!r} (found: {sorted(f.keys())}). Expected datasets "
                        "'trajectories' float32 (N, T, 2) and 'time' float64 (T,)."
                    )
                if not isinstance(f[key], h5py.Dataset):
                    raise DataError(f"{src}: {key!r} is a group, not a dataset.")
            values = f[VALUES_KEY][()]
            time = f[TIME_KEY][()]
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
    except DataError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{src}: cannot read the HDF5 file ({exc}).") from None
    v, t = validate(values, time, source=src)
    return Trajectories(v, t, None, attrs)


def _plain(value: Any) -> AttrValue:
    """An HDF5 attribute as a plain JSON-able Python value (arrays become JSON text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        item = value.item()
        return item if isinstance(item, str | int | float | bool) else str(item)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _as_attrs(meta: Mapping[str, Any]) -> dict[str, AttrValue]:
    """Metadata as HDF5-attribute-friendly values (non-scalars become JSON text)."""
    out: dict[str, AttrValue] = {}
    for k, v in meta.items():
        out[k] = v if isinstance(v, str | int | float | bool) else json.dumps(v)
    return out
