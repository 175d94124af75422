"""`TrainConfig`: the settings of one LoRA training run, what `lvmodel.train.fit` takes.

A module of its own so that planning (`lvmodel.run_plan`), forecasting and the MLflow layer can name the
settings without importing the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Schedule = Literal["constant", "cosine", "wsd"]


@dataclass
class TrainConfig:
    """Training settings (defaults: the coursework's LoRA run, CPU-agnostic).

    Attributes:
        steps: optimizer steps.
        lr: peak learning rate (AdamW).
        batch_size: windows per micro-batch.
        grad_accum: micro-batches per optimizer step.
        context_length: tokens per training window.
        stride: tokens between window starts (rounded up to a step boundary); None = half a window.
        schedule: "constant", "cosine" (to `min_lr_ratio`) or "wsd" (warmup-stable-decay).
        warmup_steps: linear warmup steps.
        decay_fraction: share of the steps spent decaying, for "wsd".
        min_lr_ratio: final lr as a share of `lr` ("cosine", "wsd").
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm; None disables clipping.
        seed: seeds torch (dropout) and the data order.
        eval_every: validation loss every N steps (0: only at the end).
        eval_windows: validation windows used for the loss (a fixed subset, the first ones).
        forecast_every: forecasting metric every M steps (0: only at the end).
        forecast_series: validation series used for the forecasting metric (a fixed subset; 0:
            no forecasting metric).
        forecast_history: history steps given to the model for that metric.
        forecast_horizon: steps forecast for that metric.
        checkpoint_every: save a checkpoint every K steps (0: never; the end is always saved
            when a checkpoint directory is given).
        checkpoint_seconds: save a checkpoint when this much wall time has passed since the last
            one (0: never): the pace for a GPU, where steps are tens of milliseconds.
        log_every: hand the metrics to `on_metrics` every N steps (0: by time only).
        log_seconds: ... and at least every this many seconds of wall time; each logging point
            reads the device once, whatever the number of steps since the last.
        compile: `torch.compile` the decoder for training steps (CUDA only; ignored on the CPU).
        evaluate_at_end: evaluate (validation loss, and the forecasting metric unless
            `forecast_series` is 0) after the last step; off for a segment of a longer run
            (`lvmodel.rungs`).
        flops_cap: stop before the metered FLOPs (training + evaluation) would exceed this.
    """

    steps: int = 1000
    lr: float = 1e-4
    batch_size: int = 4
    grad_accum: int = 1
    context_length: int = 512
    stride: int | None = None
    schedule: Schedule = "cosine"
    warmup_steps: int = 0
    decay_fraction: float = 0.2
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_windows: int = 64
    forecast_every: int = 0
    forecast_series: int = 16
    forecast_history: int = 50
    forecast_horizon: int = 5
    checkpoint_every: int = 0
    checkpoint_seconds: float = 0.0
    log_every: int = 0
    log_seconds: float = 5.0
    compile: bool = False
    evaluate_at_end: bool = True
    flops_cap: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "context_length",
            "forecast_history",
            "forecast_horizon",
            "eval_windows",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.schedule not in ("constant", "cosine", "wsd"):
            raise ValueError(f"schedule must be constant, cosine or wsd, got {self.schedule!r}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")
