"""FLOPs plans: the most a forecast or a training run can spend, before it runs.

The one home of every plan: the MLflow layer reserves :func:`plan_run`'s total in its budget
ledger, `fit` checks its in-run forecasts against :func:`forecast_bound` before running them, and
the `plan` entry point adds plans up by phase. Everything is counted with lvflops under the
coursework rules; a plan is an upper bound of what :func:`lvmodel.forecast.forecast` and
:func:`lvmodel.train.fit` then meter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lvflops import (
    ModelShape,
    eval_flops,
    forward_flops,
    generate_flops,
    static_cache_len,
    train_step_flops,
)
from lvmodel.config import TrainConfig
from lvmodel.grammar import DEFAULT_MAX_INT_DIGITS, max_new_tokens_for
from lvmodel.lora import LoraSettings

__all__ = [
    "RunPlan",
    "affordable_steps",
    "forecast_bound",
    "lora_flops_kwargs",
    "model_shape",
    "nll_bound",
    "plan_run",
]


def model_shape(model: Any) -> ModelShape:
    """:class:`lvflops.ModelShape` of a HF causal LM (of the base model for a PeftModel)."""
    base = getattr(model, "get_base_model", lambda: model)()
    return ModelShape.from_hf_config(base.config.to_dict())


def lora_flops_kwargs(lora: LoraSettings | None) -> dict[str, Any]:
    """lvflops' LoRA keywords for `lora` (none for a model without LoRA)."""
    return lora.flops_kwargs() if lora is not None else {}


def forecast_bound(
    shape: ModelShape,
    n_series: int,
    context_length: int,
    horizon: int,
    decimals: int = 2,
    lora: LoraSettings | None = None,
    num_samples: int = 1,
    max_int_digits: int = DEFAULT_MAX_INT_DIGITS,
    n_vars: int = 2,
) -> int:
    """The most FLOPs :func:`~lvmodel.forecast.forecast` can spend on `n_series` series, on any
    device.

    Every prompt padded to `context_length` (the context limit) and prefilled once, every one of
    its `num_samples` rows decoding the grammar's longest continuation
    (:func:`~lvmodel.grammar.max_new_tokens_for`), attention over a static cache of
    `context_length + new - 1` slots at every pass (what the decoder computes on every device).
    The prefill is linear in the series and each decode step in the rows, so the split into
    batches does not change the bound.
    """
    new = max_new_tokens_for(horizon, decimals, max_int_digits, n_vars)
    return generate_flops(
        shape,
        context_length,
        new,
        batch=n_series,
        num_samples=num_samples,
        kv_cache=True,
        cache_len=static_cache_len(context_length, new),
        logits_len=1,
        **lora_flops_kwargs(lora),
    ).total


@dataclass(frozen=True)
class RunPlan:
    """The most a training run can spend, by part (FLOPs).

    Attributes:
        train: every optimizer step at full windows (3 x (forward + loss)).
        val_loss: the in-run validation-loss passes (each due step, plus the end).
        val_forecast: the in-run forecasting metric (each due step, plus the end).
        final_eval: the final evaluation of each split (split -> its forecasts' bound).
    """

    train: int
    val_loss: int
    val_forecast: int
    final_eval: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every part together: what a budget ledger reserves for the run."""
        return self.train + self.val_loss + self.val_forecast + sum(self.final_eval.values())

    def as_dict(self) -> dict[str, Any]:
        """The parts and the total, as plain values (for logging and JSON)."""
        return {
            "train": self.train,
            "val_loss": self.val_loss,
            "val_forecast": self.val_forecast,
            "final_eval": dict(self.final_eval),
            "total": self.total,
        }


def nll_bound(
    shape: ModelShape, n_series: int, context_length: int, horizon: int, *, decimals: int = 2,
    lora: LoraSettings | None = None, max_int_digits: int = DEFAULT_MAX_INT_DIGITS, n_vars: int = 2,
) -> int:  # fmt: skip
    """The most FLOPs :func:`~lvmodel.nll.nll_per_dim` can spend on `n_series` series: one
    forward pass over a prompt of at most `context_length` tokens and the longest continuation
    the grammar allows, logits and their log-softmax at the continuation's positions and the one
    before (what it computes; linear in the series, so batching does not change it)."""
    new = max_new_tokens_for(horizon, decimals, max_int_digits, n_vars)
    return forward_flops(
        shape,
        context_length + new,
        n_series,
        logits_len=new + 1,
        loss=True,
        **lora_flops_kwargs(lora),
    ).total


def evaluation_count(steps: int, every: int, at_end: bool = True) -> int:
    """How many times an evaluation due every `every` steps runs: each due step plus the end
    (unless the run does not evaluate at its end)."""
    due = steps // every if every > 0 else 0
    if at_end and not (every > 0 and steps % every == 0):
        due += 1  # the end, unless it was a due step already
    return due


def plan_run(
    shape: ModelShape,
    config: TrainConfig,
    lora: LoraSettings | None,
    decimals: int,
    final_series: Mapping[str, int],
    horizon: int,
    final_samples: int = 1,
) -> RunPlan:
    """The plan of one training run: `fit` with `config`, then a forecast of `final_series[split]`
    series of each split at the run's context length (`final_samples` samples per series).

    Training steps at full windows (`batch_size * grad_accum` x `context_length`); the validation
    loss over `eval_windows` full windows at each due step and at the end (once when the end is
    due anyway; not at all with `evaluate_at_end` off, where only due steps count); the
    forecasting metric over `forecast_series` series likewise (none when that is 0).
    """
    kw = lora_flops_kwargs(lora)
    ctx = config.context_length
    batch = config.batch_size * config.grad_accum
    train = config.steps * train_step_flops(shape, ctx, batch, **kw).total
    val_loss = evaluation_count(config.steps, config.eval_every, config.evaluate_at_end) * (
        eval_flops(shape, ctx, config.eval_windows, **kw).total
    )
    val_forecast = 0
    if config.forecast_series > 0:
        val_forecast = evaluation_count(
            config.steps, config.forecast_every, config.evaluate_at_end
        ) * forecast_bound(
            shape, config.forecast_series, ctx, config.forecast_horizon, decimals, lora
        )
    final = {
        split: forecast_bound(shape, n, ctx, horizon, decimals, lora, num_samples=final_samples)
        for split, n in final_series.items()
    }
    return RunPlan(train=train, val_loss=val_loss, val_forecast=val_forecast, final_eval=final)


def affordable_steps(flops: float, plan_of: Callable[[int], RunPlan], most: int = 10**8) -> int:
    """The most optimizer steps whose whole plan (`plan_of(steps).total`: training, in-run and final
    evaluations) fits in `flops`; 0 when not even one step does.

    A plan's total grows with its steps, so a bisection over [1, `most`] finds it in about 27
    plans (each pure arithmetic): what `final` trains when the budget, not a step count, sets its
    length.
    """
    if plan_of(1).total > flops:
        return 0
    low, high = 1, most  # plan_of(low) fits; find the largest that does
    if plan_of(high).total <= flops:
        return high
    while high - low > 1:
        mid = (low + high) // 2
        if plan_of(mid).total <= flops:
            low = mid
        else:
            high = mid
    return low
