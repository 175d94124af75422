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
from lvmodel.metrics import protocol_split, score


@dataclass
class Evaluation:
    """Scores of one forecaster on one set of series."""

    metrics: dict[str, float]
    histories: np.ndarray
    truth: np.ndarray
    predictions: np.ndarray
    flops: int = 0
    result: Forecast | None = None


def evaluate_llm(
    model: Any,
    tokenizer: Any,
    codec: lvdata.LLMTimeCodec,
    series: np.ndarray,
    history_steps: int,
    horizon: int,
    context_length: int | None,
    lora: LoraSettings | None = None,
    batch_size: int = 16,
    num_samples: int = 1,
    progress: bool = False,
) -> Evaluation:
    """Forecast every series with the LLM and score it (FLOPs from the KV-cache count; the most
    it can spend is :func:`lvmodel.plan.forecast_bound`)."""
    histories, truth = protocol_split(series, history_steps, horizon)
    result = forecast(
        model,
        tokenizer,
        codec,
        histories,
        horizon,
        context_length=context_length,
        num_samples=num_samples,
        batch_size=batch_size,
        lora=lora,
        progress=progress,
    )
    return Evaluation(
        metrics=score(result.values, histories, truth),
        histories=histories,
        truth=truth,
        predictions=result.values,
        flops=result.flops,
        result=result,
    )
