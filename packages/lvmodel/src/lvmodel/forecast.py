"""Batched, grammar-constrained LLMTime forecasting with an analytic FLOPs count.

:func:`forecast` turns histories (original units) into prompts with the codec, cuts each to the
most recent whole time steps that fit ``context_length`` tokens, decodes in left-padded batches
with a KV cache (:class:`lvmodel.decode.Decoder`: each prompt prefilled once and shared by its
samples, no host synchronisation per token), and decodes the continuations back to numbers.
Decoding is constrained to the LLMTime grammar (:mod:`lvmodel.grammar`) so that the output is
always well-formed, and every row is done exactly after ``horizon`` time steps.
:func:`naive_generate_forecast` is the unconstrained, one-series-at-a-time baseline kept for
speed comparisons (plain ``generate``).

Batches hold as many series as their generation memory allows
(:func:`lvmodel.batch_memory.series_per_batch` against
:func:`lvmodel.batch_memory.memory_budget`) unless ``batch_size`` is given.

FLOPs are counted with :func:`lvflops.generate_flops` for what was actually computed: per batch,
the prefill over its ``B`` prompts padded to the longest, then one 1-token step per generated
token but the last over ``B x num_samples`` rows, to the length the decoder ran (rows that
finished keep being computed as padding until every row is done), with only the last
position's logits (``logits_len=1``), every pass attending over all slots of the batch's static
cache (``cache_len = padded prompt + max_new - 1``). LoRA adapters and an LM-head bias cost FLOPs
too, but the model is not inspected for them: pass ``lora`` (the
:class:`~lvmodel.lora.LoraSettings`) to count them. The most a forecast can spend, before it
runs, is :func:`lvmodel.run_plan.forecast_bound`.

Prompts are tokenized like the training windows (:func:`lvdata.tokenize_steps`: one chunk per time
step, concatenated), without special tokens.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lvdata import LLMTimeCodec, tokenize_steps
from lvflops import ModelShape, generate_flops
from lvmodel.batch_memory import memory_budget, series_per_batch
from lvmodel.decode import Decoder
from lvmodel.device import model_device
from lvmodel.grammar import (
    DEFAULT_MAX_INT_DIGITS,
    LLMTimeGrammar,
    max_new_tokens_for,
    min_new_tokens_for,
)
from lvmodel.grammar import (
    pad_id as tokenizer_pad_id,
)
from lvmodel.lora import LoraSettings
from lvmodel.probabilistic import QUANTILES, filled_samples, sample_quantiles
from lvmodel.run_plan import lora_flops_kwargs, model_shape

__all__ = [
    "Forecast",
    "as_histories",
    "build_prompts",
    "forecast",
    "naive_generate_forecast",
    "truncate_history",
]


@dataclass
class Forecast:
    """Result of :func:`forecast` (``np.asarray(result)`` gives :attr:`values`).

    Attributes:
        values: (B, horizon, n_vars) float64 forecasts in original units; NaN where the model's
            output for that value was invalid (with ``num_samples > 1``: where every sample was).
        flops: analytic FLOPs of the generation that ran (see the module docstring).
        prompt_tokens: prompt tokens without padding, summed over all generated sequences
            (series x samples).
        generated_tokens: useful generated tokens (up to and including each row's last ``;``),
            summed over all generated sequences; padding after a row finished is not counted.
        texts: generated text per series, per sample (``texts[b][s]``).
        invalid: number of NaN values in :attr:`values`.
        history_steps: time steps of each history that were kept in the prompt.
        samples: (B, num_samples, horizon, n_vars) per-sample values when ``num_samples > 1``.
        seconds: wall-clock seconds spent in generation and decoding.
    """

    values: np.ndarray
    flops: int
    prompt_tokens: int
    generated_tokens: int
    texts: list[list[str]]
    invalid: int
    history_steps: list[int] = field(default_factory=list)
    samples: np.ndarray | None = None
    seconds: float = 0.0

    def quantiles(self, levels: Sequence[float] = QUANTILES, fallback: Any = None) -> np.ndarray:
        """(B, horizon, n_vars, len(levels)) quantiles over the samples (NaN where every sample
        of a value was invalid); invalid samples are replaced by ``fallback`` (B, n_vars) first
        when it is given (see :mod:`lvmodel.probabilistic`).

        Raises:
            ValueError: for a greedy forecast (``num_samples == 1``: there is nothing to take
                quantiles of).
        """
        if self.samples is None:
            raise ValueError("quantiles need a sampled forecast: call forecast(num_samples > 1)")
        return sample_quantiles(filled_samples(self.samples, fallback), levels)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None:
            return self.values.copy() if copy else self.values
        return self.values.astype(dtype, copy=bool(copy) or self.values.dtype != dtype)

    @property
    def invalid_rate(self) -> float:
        """Share of NaN values in :attr:`values`."""
        return float(self.invalid / self.values.size) if self.values.size else 0.0


# -- prompts ---------------------------------------------------------------------------------------


def as_histories(histories: Any) -> list[np.ndarray]:
    """(B, T, n_vars) array or a list of (T_i, n_vars) arrays -> list of float64 2-D arrays."""
    if isinstance(histories, np.ndarray) or torch.is_tensor(histories):
        arr = np.asarray(histories, dtype=np.float64)
        if arr.ndim != 3:
            raise ValueError(f"histories must be (B, T, n_vars) or a list, got shape {arr.shape}")
        out = list(arr)
    else:
        out = [np.asarray(h, dtype=np.float64) for h in histories]
    for i, h in enumerate(out):
        if h.ndim != 2 or h.shape[0] < 1:
            raise ValueError(f"history {i} must be (T >= 1, n_vars), got shape {h.shape}")
    return out


def truncate_history(
    history: np.ndarray,
    codec: LLMTimeCodec,
    tokenizer: Any,
    context_length: int | None,
    cache: dict[str, list[int]] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """The most recent whole time steps of ``history`` whose prompt fits ``context_length`` tokens.

    The prompt is ``codec.encode_prompt(history)`` (ending in ``time_sep``), tokenized per time
    step with :func:`lvdata.tokenize_steps`; it is cut at step boundaries only, keeping the
    latest steps. Returns ``(kept_history, prompt_ids)``. ``context_length=None``: no cut.

    Raises:
        ValueError: if even the last time step alone is longer than ``context_length``.
    """
    if cache is None:
        cache = {}
    ids, starts = tokenize_steps(codec.encode_prompt(history), tokenizer, codec.time_sep, cache)
    if len(starts) != len(history):
        raise ValueError(f"prompt has {len(starts)} steps but the history {len(history)}")
    if context_length is None or len(ids) <= context_length:
        return history, ids
    first = int(np.searchsorted(np.asarray(starts), len(ids) - context_length, side="left"))
    if first >= len(starts):
        raise ValueError(
            f"context_length={context_length} is shorter than one time step "
            f"({len(ids) - starts[-1]} tokens)"
        )
    return history[first:], ids[starts[first] :]


def build_prompts(
    histories: Any, codec: LLMTimeCodec, tokenizer: Any, context_length: int | None = None
) -> tuple[list[list[int]], list[int]]:
    """Prompt token ids of every history (cut by :func:`truncate_history`) and steps kept."""
    cache: dict[str, list[int]] = {}
    prompts, kept = [], []
    for h in as_histories(histories):
        cut, ids = truncate_history(h, codec, tokenizer, context_length, cache)
        prompts.append(ids)
        kept.append(len(cut))
    return prompts, kept


def left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, W) of ``prompts`` padded on the left to the longest, and the attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids, mask


# -- model helpers ---------------------------------------------------------------------------------


def _flops_kwargs(model: Any, lora: LoraSettings | None) -> dict[str, Any]:
    """lvflops' keywords for a forecast's generation: the LoRA wrap's, and the last position's
    logits only (the decoder asks the model for those)."""
    if lora is None and getattr(model, "peft_config", None):
        warnings.warn(
            "forecasting with a PEFT model but lora=None: LoRA FLOPs are not counted",
            stacklevel=3,
        )
    return {**lora_flops_kwargs(lora), "logits_len": 1}


def _row_lengths(gen: torch.Tensor, time_sep_id: int, horizon: int, pad_id: int) -> torch.Tensor:
    """Useful length of each generated row: through its ``horizon``-th time separator."""
    seps = (gen == time_sep_id).long().cumsum(dim=1)
    through = (seps < horizon).sum(dim=1) + 1
    non_pad = (gen != pad_id).sum(dim=1)  # rows that never finished (cannot happen constrained)
    return torch.where(seps[:, -1] >= horizon, through, non_pad) if gen.shape[1] else non_pad


class _ModelMode:
    """Eval mode inside the block, the previous train/eval mode restored after."""

    def __init__(self, model: Any) -> None:
        self.model, self.was_training = model, bool(getattr(model, "training", False))

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


# -- forecasting -----------------------------------------------------------------------------------


def forecast(
    model: Any,
    tokenizer: Any,
    codec: LLMTimeCodec,
    histories: Any,
    horizon: int,
    context_length: int | None = None,
    num_samples: int = 1,
    temperature: float = 1.0,
    batch_size: int | None = None,
    seed: int = 0,
    top_p: float = 1.0,
    lora: LoraSettings | None = None,
    progress: bool = False,
    max_int_digits: int = DEFAULT_MAX_INT_DIGITS,
) -> Forecast:
    """Forecast ``horizon`` steps after each history with grammar-constrained decoding.

    Args:
        model: a HF causal LM (or a PeftModel around one); put in eval mode for the call.
        tokenizer: its tokenizer (digits, ".", separators must be single tokens); the pad id is
            ``tokenizer.pad_token_id`` (else the eos id). Padding is done here, on the left.
        codec: the LLMTime codec (``encode_prompt``, ``decode``, ``decimals``, separators).
        histories: (B, T, n_vars) array in original units, or a list of (T_i, n_vars) arrays.
        horizon: time steps to forecast; every row is done exactly after ``horizon`` separators.
        context_length: prompt token limit (the trailing separator included); histories are cut
            to the most recent whole steps that fit. None: no cut.
        num_samples: 1 = greedy; more = sampling at ``temperature`` with that many sequences per
            series (each prompt prefilled once); the forecast is the per-value median over
            samples ignoring invalid ones, and :meth:`Forecast.quantiles` gives intervals.
        temperature: sampling temperature (used only when ``num_samples > 1``); applied after
            the grammar's mask, so only well-formed tokens are ever drawn.
        batch_size: series per batch (rows = ``batch_size * num_samples``); None: as many as
            the generation memory allows (:mod:`lvmodel.batch_memory`: 2 GiB on the CPU, half
            the free memory on CUDA). Series are batched in order of prompt length, so that a
            batch carries little padding.
        seed: sampling seed; batch ``i`` runs under ``torch.manual_seed(seed + i)`` in a forked
            RNG, so the same call gives the same result (on one device, at one batch size) and
            the global RNG is untouched.
        lora: the LoRA wrap (and LM-head bias) the FLOPs count should include. The model is not
            inspected: pass the settings of a PeftModel (a warning is given when a PeftModel is
            forecast with ``lora=None``).
        top_p: nucleus sampling: draw from the smallest set of (grammar-allowed) tokens whose
            probability reaches ``top_p`` (1.0: the whole distribution; sampling only).
        progress: show a tqdm bar over batches.
        max_int_digits: integer digits a generated number may have (grammar).

    Returns:
        :class:`Forecast`; FLOPs per batch are ``generate_flops(shape, padded_prompt_len,
        tokens_decoded, batch=series_in_batch, num_samples=num_samples, kv_cache=True,
        logits_len=1, cache_len=padded_prompt_len + max_new - 1)``.
    """
    if horizon < 1 or num_samples < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError(
            f"need horizon, num_samples, batch_size >= 1: {horizon}, {num_samples}, {batch_size}"
        )
    if num_samples > 1 and not (temperature > 0 and 0 < top_p <= 1):
        raise ValueError(f"need temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
    start = time.perf_counter()
    prompts, kept = build_prompts(histories, codec, tokenizer, context_length)
    n_vars = int(getattr(codec, "n_vars", 2))
    grammar = LLMTimeGrammar(
        tokenizer, codec.decimals, n_vars, max_int_digits, codec.var_sep, codec.time_sep
    )
    most, least = (
        max_new_tokens_for(horizon, codec.decimals, max_int_digits, n_vars),
        min_new_tokens_for(horizon, codec.decimals, n_vars),
    )
    decoder = Decoder(model, grammar, horizon, most, least, num_samples, temperature, top_p)
    shape = model_shape(model)
    if batch_size is None:
        batch_size = _memory_batch_size(model, shape, prompts, decoder.max_new, num_samples)
    tally = _Tally(len(prompts), num_samples, horizon, n_vars)
    fkw = _flops_kwargs(model, lora)
    # Batches of similar prompt lengths waste less compute on padding (kept order: stable sort).
    order = sorted(range(len(prompts)), key=lambda j: len(prompts[j]))
    batches: Any = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="forecast", unit="batch")
    device = decoder.device
    with _ModelMode(model), torch.inference_mode():
        for i, lo in enumerate(batches):
            members = order[lo : lo + batch_size]
            ids, mask = left_pad([prompts[j] for j in members], grammar.pad_token_id)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + i)
                out = decoder(ids, mask)
            lengths = _row_lengths(out, grammar.time_sep_id, horizon, grammar.pad_token_id)
            prompt_len, cache_len = ids.shape[1], decoder.cache_len(ids.shape[1])
            flops = generate_flops(
                shape, prompt_len, out.shape[1], batch=ids.shape[0], num_samples=num_samples,
                kv_cache=True, cache_len=cache_len, **fkw,
            ).total  # fmt: skip
            rows = [out[r, : int(lengths[r])].tolist() for r in range(out.shape[0])]
            tally.add(members, rows, tokenizer, codec, flops, int(mask.sum()) * num_samples)
    return tally.result(kept, time.perf_counter() - start)


def _memory_batch_size(
    model: Any, shape: ModelShape, prompts: Sequence[list[int]], max_new: int, num_samples: int
) -> int:
    """Series per batch from the generation memory of the longest prompt (see
    :mod:`lvmodel.batch_memory`)."""
    try:
        dtype_bytes = next(model.parameters()).element_size()
    except (StopIteration, AttributeError):
        dtype_bytes = 4
    longest = max((len(p) for p in prompts), default=1)
    budget = memory_budget(model_device(model))
    return series_per_batch(shape, longest, max_new, num_samples, budget, dtype_bytes)


class _Tally:
    """What a forecast accumulates over its generate calls (decoded values, texts, FLOPs,
    tokens), and the :class:`Forecast` it makes: the post-processing of both forecasters."""

    def __init__(self, n: int, num_samples: int, horizon: int, n_vars: int) -> None:
        self.num_samples, self.horizon = num_samples, horizon
        self.samples = np.full((n, num_samples, horizon, n_vars), np.nan)
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.flops = self.prompt_tokens = self.generated_tokens = 0

    def add(
        self,
        members: Sequence[int],
        rows: list[list[int]],
        tokenizer: Any,
        codec: LLMTimeCodec,
        flops: int,
        prompt_tokens: int,
    ) -> None:
        """Decode the useful tokens of each generated row; rows come `num_samples` per member."""
        decoded = tokenizer.batch_decode(rows, skip_special_tokens=True)
        k = self.num_samples
        for b, j in enumerate(members):
            self.texts[j] = decoded[b * k : (b + 1) * k]
            for s, text in enumerate(self.texts[j]):
                self.samples[j, s] = codec.decode(text, steps=self.horizon)
        self.flops += flops
        self.prompt_tokens += prompt_tokens
        self.generated_tokens += sum(len(r) for r in rows)

    def result(self, kept: list[int], seconds: float) -> Forecast:
        sampling = self.num_samples > 1
        if sampling:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
                values = np.nanmedian(self.samples, axis=1)
        else:
            values = self.samples[:, 0].copy()
        return Forecast(
            values=values,
            flops=int(self.flops),
            prompt_tokens=self.prompt_tokens,
            generated_tokens=self.generated_tokens,
            texts=self.texts,
            invalid=int(np.isnan(values).sum()),
            history_steps=kept,
            samples=self.samples if sampling else None,
            seconds=seconds,
        )


def naive_generate_forecast(
    model: Any,
    tokenizer: Any,
    codec: LLMTimeCodec,
    histories: Any,
    horizon: int,
    max_new_tokens: int,
    context_length: int | None = None,
    lora: LoraSettings | None = None,
    progress: bool = False,
) -> Forecast:
    """Baseline for speed comparisons: one series at a time, unconstrained greedy decoding.

    Plain ``model.generate(max_new_tokens=max_new_tokens)`` (KV cache on; it stops early only
    if the model emits its eos token), no grammar, no per-row stopping; the text is decoded
    with ``codec.decode(text, steps=horizon)`` (surplus steps dropped, malformed values NaN).
    Prompts and FLOPs are counted as in :func:`forecast`.
    """
    start = time.perf_counter()
    prompts, kept = build_prompts(histories, codec, tokenizer, context_length)
    pad_id, device = tokenizer_pad_id(tokenizer), model_device(model)
    shape = model_shape(model)
    fkw = _flops_kwargs(model, lora)
    tally = _Tally(len(prompts), 1, horizon, int(getattr(codec, "n_vars", 2)))
    items: Any = enumerate(prompts)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(prompts), desc="naive forecast", unit="series")
    with _ModelMode(model), torch.inference_mode():
        for b, prompt in items:
            ids = torch.tensor([prompt], dtype=torch.long, device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                repetition_penalty=1.0,
                pad_token_id=pad_id,
                use_cache=True,
            )
            gen = out[0, ids.shape[1] :].tolist()
            flops = 0
            if gen:
                flops = generate_flops(shape, len(prompt), len(gen), kv_cache=True, **fkw).total
            tally.add([b], [gen], tokenizer, codec, flops, len(prompt))
    return tally.result(kept, time.perf_counter() - start)
