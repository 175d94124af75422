"""Warmup-stable-decay training in rungs, for successive halving that ranks settings like long runs.

A trial trains one stable phase (linear warmup, then a constant learning rate) that grows from
rung to rung: `rung(steps)` continues it from the previous rung's stable checkpoint up to
`steps`, checkpoints it, and then scores the rung on a short decay branched from that checkpoint
(the learning rate falling linearly to `min_lr_ratio` over `decay_fraction` of the stable steps,
then the validation loss and the forecasting metric on the fixed validation subset, or with
`score="nll"` LLMTime's NLL/D of the true continuation of that subset, `lvmodel.nll`: one forward
pass instead of generation). The decayed
weights are only for scoring: a promoted trial continues the stable phase from the stable
checkpoint, not from the branch, so a trial that reaches rung k has trained exactly the stable
phase a single run of that length would have, plus the short branches it was scored on.

Why a decay branch: a run scored mid-way at a high constant (or cosine) learning rate is ranked
by where its schedule happens to be, not by where it would end; short runs then favour low
learning rates. A WSD branch measures what the run would reach if it ended here, which is what
successive halving should compare (Hägele et al. 2024, "Scaling Laws and Compute-Optimal
Training Beyond Fixed Training Durations"; the loss-curve laws of seed 001).

Everything is `lvmodel.train.fit` with checkpoints; nothing here knows MLflow or Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import lvdata
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.nll import nll_per_dim
from lvmodel.train import FitData, FitResult, MetricsCallback, fit, fit_data

__all__ = ["NLL_METRIC", "SCORES", "RungResult", "WsdRungs", "decay_steps_for"]

#: How a rung can be scored: the forecasting metric (`val_mse_filled`, sampled forecasts) or
#: NLL/D (:data:`NLL_METRIC`, one teacher-forced forward pass; docs/search.md compares them).
SCORES = ("forecast", "nll")
NLL_METRIC = "val_nll_per_dim"


def decay_steps_for(stable_steps: int, fraction: float) -> int:
    """The decay branch's length after `stable_steps` stable steps (at least one step)."""
    return max(1, round(fraction * stable_steps))


@dataclass(frozen=True)
class RungResult:
    """One rung of a trial.

    Attributes:
        rung: its index (0 first).
        stable_steps: the stable phase's length at this rung (optimizer steps).
        decay_steps: the decay branch's length.
        metrics: the decayed model's final metrics (`val_loss`, `val_mse_filled`, ...).
        flops: what this rung added: the stable phase's new steps, the branch and its evaluation.
        total_flops: what the trial has spent in all after this rung.
        stable_checkpoint: where the stable phase continues from.
        branch: the decay branch's fit (its history and checkpoint).
    """

    rung: int
    stable_steps: int
    decay_steps: int
    metrics: dict[str, float]
    flops: int
    total_flops: int
    stable_checkpoint: str
    branch: FitResult = field(repr=False)


class WsdRungs:
    """A trial's stable phase and the decay branches it is scored on (see the module docstring).

    `config` holds the trial's settings (lr, batch, context, warmup, seed, the forecasting
    metric's subset); its `steps`, `schedule` and evaluation cadence are set per segment here.
    Checkpoints go to `checkpoint_dir/stable` and `checkpoint_dir/decay-<rung>`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        codec: lvdata.LLMTimeCodec,
        train_series: np.ndarray,
        val_series: np.ndarray,
        config: TrainConfig,
        lora: LoraSettings,
        checkpoint_dir: str | Path,
        decay_fraction: float = 0.2,
        min_lr_ratio: float = 0.0,
        on_metrics: MetricsCallback | None = None,
        progress: bool = False,
        data: FitData | None = None,
        score: str = "forecast",
    ) -> None:
        if not 0 < decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        self.score = score
        self.model, self.tokenizer, self.codec = model, tokenizer, codec
        self.train_series, self.val_series = train_series, val_series
        self.config, self.lora = config, lora
        self.root = Path(checkpoint_dir)
        self.decay_fraction, self.min_lr_ratio = decay_fraction, min_lr_ratio
        self.on_metrics, self.progress = on_metrics, progress
        # Tokenized once for every segment (and shared by trials of one context when given).
        self.data = data or fit_data(tokenizer, codec, train_series, val_series, config)
        self.rungs: list[RungResult] = []
        self.stable: str | None = None  # the stable phase's newest checkpoint
        self.stable_flops = 0  # what the stable phase has cost so far
        self.branch_flops = 0  # what the decay branches and their evaluations have cost

    @property
    def total_flops(self) -> int:
        return self.stable_flops + self.branch_flops

    def _fit(self, config: TrainConfig, directory: Path, **kw: Any) -> FitResult:
        return fit(
            self.model,
            self.tokenizer,
            self.codec,
            self.train_series,
            self.val_series,
            config,
            self.lora,
            checkpoint_dir=directory,
            resume_from=self.stable,
            progress=self.progress,
            data=self.data,
            **kw,
        )

    def rung(self, stable_steps: int) -> RungResult:
        """Continue the stable phase to `stable_steps`, then score a decay branched from there."""
        done = self.rungs[-1].stable_steps if self.rungs else 0
        if stable_steps <= max(done, self.config.warmup_steps):
            raise ValueError(
                f"rung {len(self.rungs)} needs more than {max(done, self.config.warmup_steps)} "
                f"stable steps (the previous rung's, or the warmup), got {stable_steps}"
            )
        stable = replace(
            self.config,
            steps=stable_steps,
            schedule="constant",
            eval_every=0,
            forecast_series=0,
            evaluate_at_end=False,
            checkpoint_every=0,
        )
        before = self.total_flops
        grown = self._fit(stable, self.root / "stable", on_metrics=self.on_metrics)
        self.stable, self.stable_flops = grown.checkpoint, grown.total_flops
        decay = decay_steps_for(stable_steps, self.decay_fraction)
        steps = stable_steps + decay
        branch_config = replace(
            self.config,
            steps=steps,
            schedule="wsd",
            decay_fraction=decay / steps,  # `fit` rounds it back to exactly `decay` steps
            min_lr_ratio=self.min_lr_ratio,
            eval_every=0,
            # the forecasting metric at the end only, or none when NLL/D scores the rung
            forecast_every=0,
            forecast_series=self.config.forecast_series if self.score == "forecast" else 0,
            evaluate_at_end=True,
            checkpoint_every=0,
        )
        branch = self._fit(branch_config, self.root / f"decay-{len(self.rungs)}")
        self.branch_flops += branch.total_flops - grown.total_flops
        if self.score == "nll":
            c = self.config
            nll = nll_per_dim(
                self.model, self.tokenizer, self.codec, self.val_series[: c.forecast_series],
                c.forecast_history, c.forecast_horizon, c.context_length, self.lora,
            )  # fmt: skip
            branch.final[NLL_METRIC] = nll.value
            self.branch_flops += nll.flops
        result = RungResult(
            rung=len(self.rungs),
            stable_steps=stable_steps,
            decay_steps=decay,
            metrics=dict(branch.final),
            flops=self.total_flops - before,
            total_flops=self.total_flops,
            stable_checkpoint=str(self.stable),
            branch=branch,
        )
        self.rungs.append(result)
        return result
