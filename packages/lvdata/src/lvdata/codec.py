"""The LLMTime text encoding of predator-prey series (coursework variant).

A series of shape (T, 2) in original units becomes text: each value is divided by one scale
``alpha`` (the same for the whole data set, fitted on the training split only), clipped at 0 from
below, and written with a fixed number of decimals; ``","`` separates the variables of one time
step, ``";"`` separates time steps, no spaces, no trailing separator::

    0.25,1.50;0.27,1.47;0.31,1.42

Decoding reverses it and never zero-fills: a missing or malformed value decodes to NaN.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LLMTimeCodec", "count_invalid_steps", "round_up_sig"]


def round_up_sig(x: float, sig: int = 3) -> float:
    """``x`` > 0 rounded *up* to ``sig`` significant digits (0.59578 -> 0.596)."""
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"expected a positive finite number, got {x}")
    exp = math.floor(math.log10(x)) - sig + 1
    q = 10.0**exp
    up = math.ceil(x / q - 1e-9) * q
    return float(f"{up:.{sig}g}")


@dataclass(frozen=True)
class LLMTimeCodec:
    """Encode (T, n_vars) series as LLMTime text and decode text back to numbers.

    Attributes:
        alpha: scale; the text holds ``value / alpha``. Fit it with :meth:`fit` on training data.
        decimals: digits after the decimal point (fixed; 0 writes integers without a point).
        time_sep: separator between time steps.
        var_sep: separator between the variables of one step.
        n_vars: variables per time step (2: prey, predator).
    """

    alpha: float
    decimals: int = 2
    time_sep: str = ";"
    var_sep: str = ","
    n_vars: int = 2

    def __post_init__(self) -> None:
        try:
            alpha = float(self.alpha)
        except (TypeError, ValueError):
            raise ValueError(f"alpha must be a number, got {self.alpha!r}") from None
        if isinstance(self.alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be positive and finite, got {self.alpha!r}")
        object.__setattr__(self, "alpha", alpha)
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int):
            raise ValueError(f"decimals must be an int, got {self.decimals!r}")
        if not 0 <= self.decimals <= 12:
            raise ValueError(f"decimals must be in 0..12, got {self.decimals}")
        if isinstance(self.n_vars, bool) or not isinstance(self.n_vars, int) or self.n_vars < 1:
            raise ValueError(f"n_vars must be a positive int, got {self.n_vars!r}")
        for name in ("time_sep", "var_sep"):
            sep = getattr(self, name)
            if not isinstance(sep, str) or len(sep) != 1 or sep.isdigit() or sep in ".-+eE \n":
                raise ValueError(
                    f"{name} must be one character that is not a digit, '.', sign, 'e' or "
                    f"whitespace, got {sep!r}"
                )
        if self.time_sep == self.var_sep:
            raise ValueError("time_sep and var_sep must differ")

    @classmethod
    def fit(
        cls,
        train_values: Any,
        decimals: int = 2,
        percentile: float = 99.0,
        target: float = 10.0,
        **kwargs: Any,
    ) -> LLMTimeCodec:
        """Choose alpha from training values only.

        Rule: ``alpha = round_up_sig(percentile_p(train values) / target, 3)``, the ``p``-th
        percentile of all training values pooled (both variables, all steps), rounded *up* to
        three significant digits. Since rounding only raises alpha, at least ``p`` % of training
        values scale below ``target``: with the defaults, >= 99 % of training values are written
        as ``d.dd`` below 10 (one digit before the point; 10 tokens per time step with Qwen), and
        the rest (the prey peaks) take one more digit. On the coursework train split this gives
        alpha = 0.596.

        Extra keyword arguments (``time_sep``, ``var_sep``, ``n_vars``) go to the constructor.
        """
        v = np.asarray(train_values, dtype=np.float64).ravel()
        if v.size == 0:
            raise ValueError("cannot fit alpha on an empty training set")
        if not np.all(np.isfinite(v)):
            raise ValueError("training values must be finite to fit alpha")
        if not (0.0 < percentile <= 100.0) or not (math.isfinite(target) and target > 0):
            raise ValueError(
                f"need 0 < percentile <= 100 and target > 0, got {percentile}, {target}"
            )
        q = float(np.percentile(v, percentile))
        if q <= 0:
            raise ValueError(
                f"the {percentile}th percentile of the training values is {q}; need > 0"
            )
        return cls(alpha=round_up_sig(q / target, 3), decimals=decimals, **kwargs)

    @property
    def resolution(self) -> float:
        """Step of the written values in original units: ``alpha * 10**-decimals``."""
        return self.alpha * 10.0**-self.decimals

    # -- encoding -----------------------------------------------------------------------------

    def _scaled(self, series: Any) -> np.ndarray:
        x = np.asarray(series, dtype=np.float64)
        if x.ndim == 1 and self.n_vars == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.n_vars:
            raise ValueError(f"expected a series of shape (T, {self.n_vars}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot encode non-finite values (NaN or inf)")
        s = x / self.alpha
        return np.where(s > 0, s, 0.0)

    def encode(self, series: Any) -> str:
        """Text of a (T, n_vars) series in original units, e.g. ``"0.25,1.50;0.27,1.47"``.

        Values are divided by alpha, clipped at 0 from below and written in fixed-point notation
        (never scientific) with ``decimals`` digits; no spaces, no trailing separator.
        """
        fmt = f"{{:.{self.decimals}f}}"
        rows = self._scaled(series).tolist()
        return self.time_sep.join(self.var_sep.join(fmt.format(v) for v in row) for row in rows)

    def encode_prompt(self, history: Any) -> str:
        """``encode(history) + time_sep``: the text a model continues with the next step."""
        return self.encode(history) + self.time_sep

    # -- decoding -----------------------------------------------------------------------------

    def _number(self, strict: bool) -> re.Pattern[str]:
        if self.decimals == 0:
            return re.compile(r"[0-9]+" if strict else r"[0-9]+(?:\.[0-9]+)?")
        if strict:
            return re.compile(rf"[0-9]+\.[0-9]{{{self.decimals}}}")
        return re.compile(r"[0-9]+(?:\.[0-9]+)?")

    def decode(self, text: str, steps: int | None = None, strict: bool = True) -> np.ndarray:
        """Values of ``text`` in original units, float64 of shape (steps, n_vars).

        Rules:

        - ``text`` is split at ``time_sep``; each chunk is one step. With ``steps=None`` every
          chunk is a step, except one empty chunk after a final ``time_sep``; with ``steps`` given,
          extra steps are dropped and missing ones are NaN rows.
        - a chunk is split at ``var_sep``; surrounding whitespace of each field is ignored.
          A field that is not a number (empty, truncated like ``"1."``, ``"1.2.3"``, letters, a
          sign) is NaN; with ``strict`` (default) a number must also have exactly ``decimals``
          digits after the point, as :meth:`encode` writes (so a final ``"1.5"`` cut from
          ``"1.57"`` is caught). Missing trailing fields are NaN; a chunk with more than
          ``n_vars`` fields is all NaN (which one is spurious is unknown).

        Nothing is zero-filled: count invalid steps with :func:`count_invalid_steps`.
        """
        if steps is not None and (isinstance(steps, bool) or steps < 0):
            raise ValueError(f"steps must be a non-negative int or None, got {steps!r}")
        chunks = text.split(self.time_sep) if text else []
        if steps is None and chunks and chunks[-1] == "":
            chunks = chunks[:-1]
        if steps is not None:
            chunks = chunks[:steps]
        n = len(chunks) if steps is None else steps
        out = np.full((n, self.n_vars), np.nan, dtype=np.float64)
        number = self._number(strict)
        for i, chunk in enumerate(chunks):
            fields = chunk.split(self.var_sep)
            if len(fields) > self.n_vars:
                continue
            for j, field in enumerate(fields):
                f = field.strip()
                if number.fullmatch(f):
                    out[i, j] = float(f) * self.alpha
        return out

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings (for logging as run parameters)."""
        return {
            "alpha": float(self.alpha),
            "decimals": int(self.decimals),
            "time_sep": self.time_sep,
            "var_sep": self.var_sep,
            "n_vars": int(self.n_vars),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LLMTimeCodec:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        known = {"alpha", "decimals", "time_sep", "var_sep", "n_vars"}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown codec settings: {sorted(extra)}")
        if "alpha" not in d:
            raise ValueError("codec settings need 'alpha'")
        kw = dict(d)
        for k in ("decimals", "n_vars"):
            if k in kw:
                kw[k] = int(kw[k])
        return cls(**kw)


def count_invalid_steps(decoded: np.ndarray) -> int:
    """Number of steps (rows) of a decoded array with at least one NaN."""
    arr = np.asarray(decoded)
    if arr.ndim == 1:
        return int(np.isnan(arr).sum())
    return int(np.isnan(arr).any(axis=tuple(range(1, arr.ndim))).sum())
