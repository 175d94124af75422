"""The forecasting protocol: the first K steps of each series in, the next H steps out, scored.

One function, used by training (the in-run task metric), by the entry points (validation and test
scores, zero-shot baselines) and by the reference forecasters' runs, so every number in the MLflow
UI comes from the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import lvdata
from lvmodel.forecast import Forecast, forecast
from lvmodel.lora import LoraSettings
from lvmodel.metrics import last_values, protocol_split, score
from lvmodel.probabilistic import QUANTILES


@dataclass
class Evaluation:
    """Scores of one forecaster on one set of series.

    `samples` (B, S, H, n_vars) and `quantiles` (B, H, n_vars, len(QUANTILES)) are set for a
    sampled forecast (`num_samples > 1`; invalid samples filled by persistence in the
    quantiles); `predictions` is then the samples' median.
    """

    metrics: dict[str, float]
    histories: np.ndarray
    truth: np.ndarray
    predictions: np.ndarray
    flops: int = 0
    result: Forecast | None = None
    samples: np.ndarray | None = None
    quantiles: np.ndarray | None = None


def evaluate_llm(
    model: Any,
    tokenizer: Any,
    codec: lvdata.LLMTimeCodec,
    series: np.ndarray,
    history_steps: int,
    horizon: int,
    context_length: int | None,
    lora: LoraSettings | None = None,
    batch_size: int | None = None,
    num_samples: int = 1,
    progress: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> Evaluation:
    """Forecast every series with the LLM and score it (FLOPs from the KV-cache count, every
    sample's generation included; the most it can spend is :func:`lvmodel.run_plan.forecast_bound`).

    `num_samples > 1` samples at `temperature`/`top_p`: the point forecast is the median, and the
    metrics add CRPS and the 80% interval's coverage (:mod:`lvmodel.probabilistic`).
    `batch_size` (series per batch) None: as many as the generation memory allows (see
    :func:`lvmodel.forecast.forecast`)."""
    histories, truth = protocol_split(series, history_steps, horizon)
    result = forecast(
        model,
        tokenizer,
        codec,
        histories,
        horizon,
        context_length=context_length,
        num_samples=num_samples,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        lora=lora,
        progress=progress,
    )
    sampled = result.samples is not None
    return Evaluation(
        metrics=score(result.values, histories, truth, result.samples),
        histories=histories,
        truth=truth,
        predictions=result.values,
        flops=result.flops,
        result=result,
        samples=result.samples,
        quantiles=result.quantiles(QUANTILES, last_values(histories)) if sampled else None,
    )
