"""Batched, grammar-constrained LLMTime forecasting with an analytic FLOPs count.

:func:`forecast` turns histories (original units) into prompts with the codec, cuts each to the
most recent whole time steps that fit ``context_length`` tokens, generates in left-padded batches
with the KV cache, and decodes the continuations back to numbers. Decoding is constrained to the
LLMTime grammar (:class:`LLMTimeGrammar`, :class:`LLMTimeLogitsProcessor`) so that the output is
always well-formed, and every row stops exactly after ``horizon`` time steps
(:class:`StepsStoppingCriteria`). :func:`naive_generate_forecast` is the unconstrained,
one-series-at-a-time baseline kept for speed comparisons.

FLOPs are counted with :func:`lvflops.generate_flops` for what was actually computed: per batch,
the padded prompt length, the number of tokens the batch generated (the longest row; finished rows
keep being computed as padding until every row is done), and ``batch x num_samples`` rows, with
the KV cache and only the last position's logits (``logits_len=1``: ``generate`` asks the model
for the last logits only), and attention over the key length the cache really holds (see
:func:`generation_cache`). LoRA adapters and an LM-head bias cost FLOPs too, but the model is not
inspected for them: pass ``lora_rank`` (and ``lora_targets``) and ``lm_head_bias`` to count them.

The KV cache depends on the device (:func:`generation_cache`): on the CPU a static cache sized for
the batch (prompt + new tokens, built here and passed to ``generate``), on CUDA transformers'
dynamic cache. Why: a static cache avoids the per-step concatenation of keys and values, measured
10-15% faster for tiny on 2 CPU cores with the same tokens; but on CUDA ``generate`` compiles the
model's forward with ``torch.compile`` whenever the cache is static
(``GenerationMixin._valid_auto_compile_criteria``, transformers 5.x), once per padded shape, and
every batch and every in-training forecast has its own prompt width: tens of seconds of
compilation for a few hundred milliseconds of generation. A static cache also attends over all
its slots (unused ones masked), so it computes more attention than a dynamic one. The dynamic
cache never compiles; `benchmarks/gpu_check.py` prints the compile count and forecasts/s on a GPU.

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
from transformers import StaticCache, StoppingCriteriaList

from lvdata import LLMTimeCodec, tokenize_steps
from lvflops import DEFAULT_LORA_TARGETS, ModelShape, generate_flops, static_cache_len
from lvmodel.grammar import (
    DEFAULT_MAX_INT_DIGITS,
    LLMTimeGrammar,
    LLMTimeLogitsProcessor,
    StepsStoppingCriteria,
    max_new_tokens_for,
)
from lvmodel.grammar import (
    pad_id as tokenizer_pad_id,
)

__all__ = [
    "Forecast",
    "as_histories",
    "build_prompts",
    "forecast",
    "forecast_flops_bound",
    "generation_cache",
    "model_shape",
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


def _left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids, mask


# -- model helpers ---------------------------------------------------------------------------------


def model_shape(model: Any) -> ModelShape:
    """:class:`lvflops.ModelShape` of a HF causal LM (of the base model for a PeftModel)."""
    base = getattr(model, "get_base_model", lambda: model)()
    return ModelShape.from_hf_config(base.config.to_dict())


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def generation_cache(device: torch.device) -> str:
    """The KV cache `forecast` generates with on `device`: "static" on the CPU, "dynamic" elsewhere.

    The reasons are in the module docstring: static is faster on the CPU; on CUDA a static cache
    makes ``generate`` compile the forward once per padded shape.
    """
    return "static" if torch.device(device).type == "cpu" else "dynamic"


def _static_cache(model: Any, cache_len: int) -> StaticCache:
    base = getattr(model, "get_base_model", lambda: model)()
    return StaticCache(config=base.config, max_cache_len=cache_len)


def _flops_kwargs(
    model: Any, lora_rank: int | None, lora_targets: Sequence[str], lm_head_bias: bool
) -> dict[str, Any]:
    if lora_rank is None and getattr(model, "peft_config", None):
        warnings.warn(
            "forecasting with a PEFT model but lora_rank=None: LoRA FLOPs are not counted",
            stacklevel=3,
        )
    return {
        "lora_rank": lora_rank,
        "lora_targets": tuple(lora_targets),
        "lm_head_bias": lm_head_bias,
        "logits_len": 1,
    }


def forecast_flops_bound(
    shape: ModelShape,
    n_series: int,
    prompt_tokens: int,
    horizon: int,
    decimals: int = 2,
    num_samples: int = 1,
    lora_rank: int | None = None,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    lm_head_bias: bool = False,
    max_int_digits: int = DEFAULT_MAX_INT_DIGITS,
    n_vars: int = 2,
) -> int:
    """The most FLOPs :func:`forecast` can spend, for plans and caps, on any device.

    Every prompt padded to ``prompt_tokens`` (the context limit), every row generating the
    grammar's longest continuation (:func:`~lvmodel.grammar.max_new_tokens_for`), and attention
    over a static cache of ``prompt_tokens + new - 1`` slots at every step (what the CPU path
    computes; the dynamic cache of the CUDA path attends to fewer keys). Generation cost is linear
    in the rows, so the split into batches does not change the bound.
    """
    new = max_new_tokens_for(horizon, decimals, max_int_digits, n_vars)
    return generate_flops(
        shape,
        prompt_tokens,
        new,
        batch=n_series * num_samples,
        kv_cache=True,
        cache_len=static_cache_len(prompt_tokens, new),
        lora_rank=lora_rank,
        lora_targets=tuple(lora_targets),
        lm_head_bias=lm_head_bias,
        logits_len=1,
    ).total


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
    batch_size: int = 16,
    seed: int = 0,
    lora_rank: int | None = None,
    lm_head_bias: bool = False,
    progress: bool = False,
    max_int_digits: int = DEFAULT_MAX_INT_DIGITS,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
) -> Forecast:
    """Forecast ``horizon`` steps after each history with grammar-constrained generation.

    Args:
        model: a HF causal LM (or a PeftModel around one); put in eval mode for the call.
        tokenizer: its tokenizer (digits, ".", separators must be single tokens); the pad id is
            ``tokenizer.pad_token_id`` (else the eos id). Padding is done here, on the left.
        codec: the LLMTime codec (``encode_prompt``, ``decode``, ``decimals``, separators).
        histories: (B, T, n_vars) array in original units, or a list of (T_i, n_vars) arrays.
        horizon: time steps to forecast; every row stops exactly after ``horizon`` separators.
        context_length: prompt token limit (the trailing separator included); histories are cut
            to the most recent whole steps that fit. None: no cut.
        num_samples: 1 = greedy; more = sampling at ``temperature`` with that many sequences per
            series; the forecast is the per-value median over samples ignoring invalid ones.
        temperature: sampling temperature (used only when ``num_samples > 1``).
        batch_size: series per ``generate`` call (rows = ``batch_size * num_samples``); series
            are batched in order of prompt length, so that a batch carries little padding.
        seed: sampling seed; batch ``i`` runs under ``torch.manual_seed(seed + i)`` in a forked
            RNG, so the same call gives the same result (on CPU) and the global RNG is untouched.
        lora_rank, lora_targets, lm_head_bias: what the FLOPs count should include. The model
            is not inspected: pass the LoRA rank of a PeftModel (a warning is given when a
            PeftModel is forecast with ``lora_rank=None``).
        progress: show a tqdm bar over batches.
        max_int_digits: integer digits a generated number may have (grammar).

    Returns:
        :class:`Forecast`; FLOPs per batch are ``generate_flops(shape, padded_prompt_len,
        tokens_generated_by_the_batch, batch=rows, kv_cache=True, logits_len=1, cache_len=...)``
        with ``cache_len`` the static cache's slots on the CPU and None (dynamic) on CUDA.
    """
    if horizon < 1 or num_samples < 1 or batch_size < 1:
        raise ValueError(f"need horizon, num_samples, batch_size >= 1: {horizon}, {num_samples}")
    start = time.perf_counter()
    prompts, kept = build_prompts(histories, codec, tokenizer, context_length)
    n_vars = int(getattr(codec, "n_vars", 2))
    grammar = LLMTimeGrammar(
        tokenizer, codec.decimals, n_vars, max_int_digits, codec.var_sep, codec.time_sep
    )
    pad_id, device = grammar.pad_token_id, _device(model)
    cache_kind = generation_cache(device)
    shape = model_shape(model)
    fkw = _flops_kwargs(model, lora_rank, lora_targets, lm_head_bias)
    max_new = max_new_tokens_for(horizon, codec.decimals, max_int_digits, n_vars)
    sampling = num_samples > 1
    gen_kwargs: dict[str, Any] = {
        "do_sample": sampling,
        "max_new_tokens": max_new,
        "num_return_sequences": num_samples,
        "pad_token_id": pad_id,
        "use_cache": True,
        "repetition_penalty": 1.0,
        "num_beams": 1,
    }
    if sampling:
        gen_kwargs.update(temperature=temperature, top_k=0, top_p=1.0)

    n = len(prompts)
    # Batches of similar prompt lengths waste less compute on padding (kept order: stable sort).
    order = sorted(range(n), key=lambda j: len(prompts[j]))
    samples = np.full((n, num_samples, horizon, n_vars), np.nan)
    texts: list[list[str]] = [[] for _ in range(n)]
    flops = prompt_tokens = generated_tokens = 0
    batches = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="forecast", unit="batch")
    with _ModelMode(model), torch.inference_mode():
        for i, lo in enumerate(batches):
            members = order[lo : lo + batch_size]
            chunk = [prompts[j] for j in members]
            ids, mask = _left_pad(chunk, pad_id)
            processor = LLMTimeLogitsProcessor(grammar, horizon)
            stop = StepsStoppingCriteria(grammar.time_sep_id, horizon, ids.shape[1])
            cache: dict[str, Any] = {}
            cache_len = None
            if cache_kind == "static":  # sized for this batch: attention over exactly these slots
                cache_len = static_cache_len(ids.shape[1], max_new)
                cache["past_key_values"] = _static_cache(model, cache_len)
            with (
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
                warnings.catch_warnings(),
            ):
                # transformers >= 5.2x renames generate's `past_key_values` to `cache` and warns;
                # the old name works in every version lvmodel supports (< 6).
                warnings.filterwarnings("ignore", "`past_key_values` is deprecated", FutureWarning)
                torch.manual_seed(seed + i)
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    logits_processor=[processor],
                    stopping_criteria=StoppingCriteriaList([stop]),
                    **gen_kwargs,
                    **cache,
                )
            gen = out[:, ids.shape[1] :].cpu()
            lengths = _row_lengths(gen, grammar.time_sep_id, horizon, pad_id)
            rows = gen.shape[0]
            if gen.shape[1] > 0:
                flops += generate_flops(
                    shape,
                    ids.shape[1],
                    gen.shape[1],
                    batch=rows,
                    kv_cache=True,
                    cache_len=cache_len,
                    **fkw,
                ).total
            prompt_tokens += int(mask.sum()) * num_samples
            generated_tokens += int(lengths.sum())
            decoded = tokenizer.batch_decode(
                [gen[r, : int(lengths[r])].tolist() for r in range(rows)], skip_special_tokens=True
            )
            for b, j in enumerate(members):
                texts[j] = decoded[b * num_samples : (b + 1) * num_samples]
                for s, text in enumerate(texts[j]):
                    samples[j, s] = codec.decode(text, steps=horizon)
    if sampling:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            values = np.nanmedian(samples, axis=1)
    else:
        values = samples[:, 0].copy()
    return Forecast(
        values=values,
        flops=int(flops),
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        texts=texts,
        invalid=int(np.isnan(values).sum()),
        history_steps=kept,
        samples=samples if sampling else None,
        seconds=time.perf_counter() - start,
    )


def naive_generate_forecast(
    model: Any,
    tokenizer: Any,
    codec: LLMTimeCodec,
    histories: Any,
    horizon: int,
    max_new_tokens: int,
    context_length: int | None = None,
    lora_rank: int | None = None,
    lm_head_bias: bool = False,
    progress: bool = False,
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS,
) -> Forecast:
    """Baseline for speed comparisons: one series at a time, unconstrained greedy decoding.

    Plain ``model.generate(max_new_tokens=max_new_tokens)`` (KV cache on; it stops early only
    if the model emits its eos token), no grammar, no per-row stopping; the text is decoded
    with ``codec.decode(text, steps=horizon)`` (surplus steps dropped, malformed values NaN).
    Prompts and FLOPs are counted as in :func:`forecast`.
    """
    start = time.perf_counter()
    prompts, kept = build_prompts(histories, codec, tokenizer, context_length)
    n_vars = int(getattr(codec, "n_vars", 2))
    pad_id, device = tokenizer_pad_id(tokenizer), _device(model)
    shape = model_shape(model)
    fkw = _flops_kwargs(model, lora_rank, lora_targets, lm_head_bias)
    values = np.full((len(prompts), horizon, n_vars), np.nan)
    texts: list[list[str]] = []
    flops = prompt_tokens = generated_tokens = 0
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
            if gen:
                flops += generate_flops(shape, len(prompt), len(gen), kv_cache=True, **fkw).total
            prompt_tokens += len(prompt)
            generated_tokens += len(gen)
            text = tokenizer.decode(gen, skip_special_tokens=True)
            texts.append([text])
            values[b] = codec.decode(text, steps=horizon)
    return Forecast(
        values=values,
        flops=int(flops),
        prompt_tokens=prompt_tokens,
        generated_tokens=generated_tokens,
        texts=texts,
        invalid=int(np.isnan(values).sum()),
        history_steps=kept,
        seconds=time.perf_counter() - start,
    )
