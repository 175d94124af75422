"""The LLMTime grammar over token ids, as a logits processor, and the lengths it allows.

Constrained decoding keeps every continuation well-formed: a number is 1 to `max_int_digits`
digits, then "." and exactly `decimals` digits; "," between the variables of a step, ";" after the
last; a row is done after `horizon` steps (the processor then allows only the pad token). Token
ids come from the tokenizer, so the same grammar serves the tiny character tokenizer and Qwen's
byte-level BPE (where these characters are single tokens). A continuation of `horizon` steps has
between :func:`min_new_tokens_for` and :func:`max_new_tokens_for` tokens: the decoder needs no
per-token stopping check before the first and none at all after the second.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor

DEFAULT_MAX_INT_DIGITS = 2
"""Integer digits a generated number may have (values are scaled to about 0-10)."""


def pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = getattr(tokenizer, "eos_token_id", None)
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token id")
    return int(pad)


# ----------------------------------------------------------------------------------

_DIGIT, _ZERO, _POINT, _VAR, _TIME, _OTHER = range(6)
_N_CLASSES = 6


def _single_token_id(tokenizer: Any, char: str) -> int:
    ids = tokenizer(char, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{char!r} is not a single token for this tokenizer: {ids}")
    return int(ids[0])


class LLMTimeGrammar:
    """Finite-state grammar of LLMTime continuations over token ids.

    A continuation is a sequence of time steps, each ``n_vars`` numbers; a number is 1 to
    ``max_int_digits`` digits, then ``"."`` and exactly ``decimals`` digits (no ``"."`` when
    ``decimals == 0``); ``var_sep`` follows every number of a step but the last, ``time_sep`` the
    last. No signs, no exponent, no spaces. States: for variable ``v``, ``INT_k`` (k integer
    digits written, k = 0..max_int_digits) and ``FRAC_j`` (j fraction digits written after the
    point, j = 0..decimals); plus ``DONE`` (only the pad token allowed), entered by the
    processor once a row has written ``horizon`` time separators.

    Tables (torch tensors): :attr:`transition` ``(n_states, 5)`` next state by token class
    (digit, point, var_sep, time_sep, other; "other" keeps the state), :attr:`allowed_classes`
    ``(n_states, 5)`` bool.
    """

    def __init__(
        self,
        tokenizer: Any,
        decimals: int = 2,
        n_vars: int = 2,
        max_int_digits: int = DEFAULT_MAX_INT_DIGITS,
        var_sep: str = ",",
        time_sep: str = ";",
        pad_token_id: int | None = None,
    ) -> None:
        if max_int_digits < 1:
            raise ValueError(f"max_int_digits must be >= 1, got {max_int_digits}")
        if decimals < 0 or n_vars < 1:
            raise ValueError(f"need decimals >= 0 and n_vars >= 1, got {decimals}, {n_vars}")
        self.decimals, self.n_vars, self.max_int_digits = decimals, n_vars, max_int_digits
        self.digit_ids = [_single_token_id(tokenizer, str(d)) for d in range(10)]
        self.point_id = _single_token_id(tokenizer, ".")
        self.var_sep_id = _single_token_id(tokenizer, var_sep)
        self.time_sep_id = _single_token_id(tokenizer, time_sep)
        self.pad_token_id = int(pad_id(tokenizer) if pad_token_id is None else pad_token_id)

        m, d = max_int_digits, decimals
        per_var = m + 1 + d + 1
        self.n_states = n_vars * per_var + 1
        self.done = self.n_states - 1
        trans = torch.arange(self.n_states).unsqueeze(1).repeat(1, _N_CLASSES)  # default: stay
        allowed = torch.zeros(self.n_states, _N_CLASSES, dtype=torch.bool)
        for v in range(n_vars):
            base = v * per_var
            sep = _VAR if v < n_vars - 1 else _TIME
            after_sep = base + per_var if v < n_vars - 1 else 0
            end_states = [base + m + 1 + d] if d > 0 else []
            for k in range(m + 1):  # INT_k
                s = base + k
                if k < m:
                    allowed[s, [_DIGIT, _ZERO]] = True
                    trans[s, _DIGIT] = trans[s, _ZERO] = s + 1
                if k == 0:  # a leading 0 ends the integer part
                    trans[s, _ZERO] = base + m
                if k >= 1:
                    if d > 0:
                        allowed[s, _POINT] = True
                        trans[s, _POINT] = base + m + 1
                    else:
                        end_states.append(s)
            for j in range(d):  # FRAC_j, j < decimals
                s = base + m + 1 + j
                allowed[s, [_DIGIT, _ZERO]] = True
                trans[s, _DIGIT] = trans[s, _ZERO] = s + 1
            for s in end_states:
                allowed[s, sep] = True
                trans[s, sep] = after_sep
        self.transition = trans
        self.allowed_classes = allowed

    def class_lookup(self, vocab_size: int) -> torch.Tensor:
        """(vocab_size,) token class of every id."""
        cls = torch.full((vocab_size,), _OTHER, dtype=torch.long)
        cls[self.digit_ids] = _DIGIT
        cls[self.digit_ids[0]] = _ZERO
        cls[self.point_id] = _POINT
        cls[self.var_sep_id] = _VAR
        cls[self.time_sep_id] = _TIME
        return cls

    def allowed_tokens(self, vocab_size: int) -> torch.Tensor:
        """(n_states, vocab_size) bool: the token ids allowed in each state."""
        ids_by_class = {
            _DIGIT: self.digit_ids[1:],
            _ZERO: [self.digit_ids[0]],
            _POINT: [self.point_id],
            _VAR: [self.var_sep_id],
            _TIME: [self.time_sep_id],
        }
        mask = torch.zeros(self.n_states, vocab_size, dtype=torch.bool)
        for c, ids in ids_by_class.items():
            rows = self.allowed_classes[:, c]
            for i in ids:
                mask[rows, i] = True
        mask[self.done, self.pad_token_id] = True
        return mask


class LLMTimeLogitsProcessor(LogitsProcessor):
    """Masks every token the grammar does not allow next, per row, vectorized.

    Keeps a per-row state tensor; each call first advances it with the token generated last (the
    first call sees only the prompt: state "start of the first number"), then sets the scores of
    disallowed tokens to -inf. A row that has written ``horizon`` time separators is ``DONE`` and
    may only emit the pad token. Make a new processor (or call :meth:`reset`) per ``generate``.
    """

    def __init__(self, grammar: LLMTimeGrammar, horizon: int) -> None:
        self.grammar, self.horizon = grammar, horizon
        self.reset()

    def reset(self) -> None:
        self.state: torch.Tensor | None = None
        self.steps: torch.Tensor | None = None
        self._seen = 0
        self._tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _get_tables(
        self, vocab: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._tables is None or self._tables[1].shape[1] != vocab:
            g = self.grammar
            self._tables = (
                g.class_lookup(vocab).to(device),
                g.allowed_tokens(vocab).to(device),
                g.transition.to(device),
            )
        return self._tables

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.FloatTensor:
        cls_of, allowed, trans = self._get_tables(scores.shape[-1], scores.device)
        rows, length = input_ids.shape
        if self.state is None or self.steps is None or self.state.shape[0] != rows:
            self.state = torch.zeros(rows, dtype=torch.long, device=scores.device)
            self.steps = torch.zeros(rows, dtype=torch.long, device=scores.device)
        elif length > self._seen:
            cls = cls_of[input_ids[:, -1].to(scores.device)]
            self.steps = self.steps + (cls == _TIME).long()
            nxt = trans[self.state, cls]
            self.state = torch.where(
                self.steps >= self.horizon, torch.full_like(nxt, self.grammar.done), nxt
            )
        self._seen = length
        return scores.masked_fill(~allowed[self.state], float("-inf"))  # type: ignore[return-value]


def max_new_tokens_for(
    horizon: int, decimals: int = 2, max_int_digits: int = 2, n_vars: int = 2
) -> int:
    """Safety bound on new tokens: ``horizon`` steps of the longest numbers the grammar allows.

    ``horizon * n_vars * (max_int_digits + 1 + decimals + 1)`` (no point when decimals == 0);
    for the defaults ``horizon * (2 * (2 + 1 + 2) + 2)`` = 12 per step.
    """
    number = max_int_digits + (1 + decimals if decimals > 0 else 0)
    return horizon * n_vars * (number + 1)


def min_new_tokens_for(horizon: int, decimals: int = 2, n_vars: int = 2) -> int:
    """The fewest new tokens a complete continuation has: ``horizon`` steps of one-digit numbers.

    ``horizon * n_vars * (1 + 1 + decimals + 1)`` (no point when decimals == 0); for the
    defaults ``horizon * 2 * len("0.00,")`` = 10 per step.
    """
    number = 1 + (1 + decimals if decimals > 0 else 0)
    return horizon * n_vars * (number + 1)
