"""NLL/D: LLMTime's negative log-likelihood per dimension of the true continuation, by one
teacher-forced forward pass (no generation).

For each series the prompt is the forecasting prompt (`lvmodel.forecast.build_prompts`: the
history's latest steps that fit ``context_length``, ending in the time separator), followed by the
true next ``horizon`` steps written as the model would write them (``codec.encode_prompt``: each
step ``x,y;``). The model's log-probabilities of those continuation tokens, separators included,
sum to ``log P``. The written values are bins of width ``10**-decimals`` in scaled units and
``alpha * 10**-decimals`` in original units; spreading each bin's mass uniformly gives a density,
so per dimension (Gruver et al. 2023, ``llmtime``: ``BPD - prec * log(base)``, less the scaler's
mean log-derivative ``log(1 / alpha)``)::

    NLL/D = -log P / D - decimals * ln(10) + ln(alpha),     D = horizon * n_vars

in nats, for original units. Lower is better; it is a proper score of the model's whole
predictive distribution, and costs one forward pass over prompt and continuation, counted with
:func:`lvflops.forward_flops` (logits and their log-softmax at the continuation's positions only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lvdata import LLMTimeCodec
from lvflops import forward_flops
from lvmodel.device import model_device
from lvmodel.forecast import build_prompts, left_pad
from lvmodel.grammar import pad_id as tokenizer_pad_id
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import lora_flops_kwargs, model_shape

__all__ = ["NLL", "nll_per_dim"]


@dataclass(frozen=True)
class NLL:
    """``value``: NLL/D over all series (nats, original units); ``per_series``: each series'
    (the mean of which is ``value``); ``flops``: what the forward passes cost."""

    value: float
    per_series: np.ndarray
    flops: int


def nll_per_dim(
    model: Any,
    tokenizer: Any,
    codec: LLMTimeCodec,
    series: Any,
    history_steps: int,
    horizon: int,
    context_length: int | None = None,
    lora: LoraSettings | None = None,
    batch_size: int = 16,
) -> NLL:
    """NLL/D of the true next ``horizon`` steps after the first ``history_steps`` of each of
    ``series`` (B, T, n_vars), in original units (see the module docstring)."""
    values = np.asarray(series, dtype=np.float64)
    if values.ndim != 3 or values.shape[1] < history_steps + horizon:
        raise ValueError(
            f"series of shape {values.shape} cannot give {history_steps} history steps and "
            f"{horizon} steps ahead"
        )
    histories = values[:, :history_steps]
    truth = values[:, history_steps : history_steps + horizon]
    prompts, _ = build_prompts(histories, codec, tokenizer, context_length)
    targets = [
        tokenizer(codec.encode_prompt(t), add_special_tokens=False)["input_ids"] for t in truth
    ]
    dims = horizon * values.shape[2]
    shape, device = model_shape(model), model_device(model)
    pad = tokenizer_pad_id(tokenizer)
    log_p = np.zeros(len(values))
    flops = 0
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        for lo in range(0, len(values), batch_size):
            span = slice(lo, lo + batch_size)
            rows = [p + t for p, t in zip(prompts[span], targets[span], strict=True)]
            cont = [len(t) for t in targets[span]]
            ids, mask = left_pad(rows, pad)  # every row's continuation ends at the right
            width, keep = ids.shape[1], max(cont) + 1
            with torch.no_grad():
                out = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    logits_to_keep=keep,
                    use_cache=False,
                )
            # The logits at position j predict token j + 1: the last `keep` positions predict the
            # last `keep - 1` tokens, the continuation of every row included.
            logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1).cpu()
            tokens = ids[:, width - keep + 1 :]
            picked = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
            for i, n in enumerate(cont):
                log_p[lo + i] = float(picked[i, keep - 1 - n :].sum())
            flops += forward_flops(
                shape, width, len(rows), logits_len=keep, loss=True, **lora_flops_kwargs(lora)
            ).total
    finally:
        model.train(was_training)
    per_series = -log_p / dims - codec.decimals * math.log(10.0) + math.log(codec.alpha)
    return NLL(float(per_series.mean()), per_series, int(flops))
