"""Fixed-length training windows of tokenized LLMTime texts, aligned to time steps.

Tokenization is per time step: the text of a series is cut into step chunks (``"0.25,1.50;"``,
the last step without ``";"``), each chunk is tokenized on its own with
``tokenizer(chunk, add_special_tokens=False)["input_ids"]`` (cached by chunk string) and the
pieces are concatenated, so the token position of every step boundary is exact. For Qwen2
tokenizers, where every digit and punctuation mark is one token, this equals tokenizing the whole
text at once.

The tokenizer is duck-typed (anything callable like a Hugging Face tokenizer, with a
``pad_token_id`` attribute when ``pad_token_id`` is not given); lvdata does not import
transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IGNORE_INDEX", "Windows", "make_windows", "tokenize_steps"]

IGNORE_INDEX = -100
"""Label of padding positions (ignored by PyTorch's cross-entropy loss)."""


@dataclass
class Windows:
    """Training windows; every array is int64 with one row per window.

    Attributes:
        input_ids: (n_windows, context_length) token ids, right-padded with the pad id.
        attention_mask: (n_windows, context_length) 1 on tokens, 0 on padding.
        labels: (n_windows, context_length) equal to ``input_ids`` on tokens and -100 on padding
            (not shifted: the model shifts them internally).
        series: (n_windows,) index of the text (series) each window comes from.
        start_step: (n_windows,) index of the time step each window starts with.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    series: np.ndarray
    start_step: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def _step_chunks(text: str, time_sep: str) -> list[str]:
    parts = text.split(time_sep)
    chunks = [p + time_sep for p in parts[:-1]]
    if parts[-1]:
        chunks.append(parts[-1])
    return chunks


def tokenize_steps(
    text: str, tokenizer: Any, time_sep: str = ";", cache: dict[str, list[int]] | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` and the token offset where each time step starts.

    Returns ``(ids, starts)`` with ``starts[k]`` the position of the first token of step k
    (``starts[0] == 0``). Each step chunk is tokenized separately (see the module docstring).
    """
    if cache is None:
        cache = {}
    ids: list[int] = []
    starts: list[int] = []
    for chunk in _step_chunks(text, time_sep):
        toks = cache.get(chunk)
        if toks is None:
            toks = [int(t) for t in tokenizer(chunk, add_special_tokens=False)["input_ids"]]
            cache[chunk] = toks
        starts.append(len(ids))
        ids.extend(toks)
    return ids, starts


def _window_starts(starts: list[int], length: int, context: int, stride: int) -> list[int]:
    """Indices (into ``starts``) of the steps that begin windows of one series."""
    if length <= context:
        return [0]
    bounds = np.asarray(starts)
    # the last window: the first step boundary from which the series end is within reach
    tail = int(np.searchsorted(bounds, length - context, side="left"))
    out = [0]
    k = 0
    while int(bounds[k]) + context < length:
        nxt = int(np.searchsorted(bounds, int(bounds[k]) + stride, side="left"))
        k = min(nxt, tail)
        out.append(k)
    return out


def make_windows(
    texts: Sequence[str],
    tokenizer: Any,
    context_length: int,
    stride: int | None = None,
    pad_token_id: int | None = None,
    time_sep: str = ";",
) -> Windows:
    """Cut tokenized series into windows of ``context_length`` tokens.

    Semantics, per series (windows never cross series; order: series, then position):

    - every window starts on a time-step boundary;
    - the first window starts at token 0; each next one at the first step boundary at or after
      ``previous_start + stride`` tokens (``stride`` defaults to ``context_length // 2``);
    - the tail is covered: the last window starts at the first step boundary at or after
      ``n_tokens - context_length``, so it ends at the series end with as much context as fits
      (it may therefore start less than ``stride`` after the previous one); it is padded on
      the right when it is shorter than ``context_length``;
    - a series of at most ``context_length`` tokens gives one window, padded on the right.

    Padding uses ``pad_token_id`` (default ``tokenizer.pad_token_id``) with attention mask 0 and
    label -100; elsewhere labels equal ``input_ids``.

    Raises:
        ValueError: bad ``context_length``/``stride``, no pad id, an empty text, or a single time
            step longer than ``context_length`` tokens.
    """
    if isinstance(context_length, bool) or context_length < 1:
        raise ValueError(f"context_length must be a positive int, got {context_length!r}")
    if stride is None:
        stride = max(1, context_length // 2)
    if not 1 <= stride <= context_length:
        raise ValueError(f"stride must be in 1..context_length ({context_length}), got {stride}")
    if pad_token_id is None:
        pad_token_id = getattr(tokenizer, "pad_token_id", None)
    if pad_token_id is None:
        raise ValueError(
            "no pad token id: pass pad_token_id= or use a tokenizer with pad_token_id set "
            "(Qwen2: <|endoftext|> = 151643)"
        )
    cache: dict[str, list[int]] = {}
    rows: list[np.ndarray] = []
    lengths: list[int] = []
    series: list[int] = []
    start_step: list[int] = []
    for s, text in enumerate(texts):
        ids, starts = tokenize_steps(text, tokenizer, time_sep, cache)
        if not ids:
            raise ValueError(f"text {s} is empty (no tokens)")
        step_len = np.diff([*starts, len(ids)])
        if int(step_len.max()) > context_length:
            k = int(step_len.argmax())
            raise ValueError(
                f"text {s}: time step {k} takes {int(step_len[k])} tokens, more than "
                f"context_length={context_length}"
            )
        arr = np.asarray(ids, dtype=np.int64)
        for k in _window_starts(starts, len(ids), context_length, stride):
            piece = arr[starts[k] : starts[k] + context_length]
            rows.append(piece)
            lengths.append(len(piece))
            series.append(s)
            start_step.append(k)
    n = len(rows)
    input_ids = np.full((n, context_length), int(pad_token_id), dtype=np.int64)
    attention = np.zeros((n, context_length), dtype=np.int64)
    for i, (row, m) in enumerate(zip(rows, lengths, strict=True)):
        input_ids[i, :m] = row
        attention[i, :m] = 1
    labels = np.where(attention == 1, input_ids, IGNORE_INDEX).astype(np.int64)
    return Windows(
        input_ids=input_ids,
        attention_mask=attention,
        labels=labels,
        series=np.asarray(series, dtype=np.int64),
        start_step=np.asarray(start_step, dtype=np.int64),
    )
