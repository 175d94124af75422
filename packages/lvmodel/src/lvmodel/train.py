"""`fit`: LoRA training with analytic FLOPs metering, evaluation, checkpoints and exact resume.

One readable loop in plain stages (nanoGPT style): draw a batch, check the FLOPs cap, step, report,
evaluate, checkpoint. Results leave through `on_metrics(step, metrics)`; nothing here knows MLflow.

FLOPs are counted with lvflops for the shape actually run: each micro-batch is trimmed to its longest
unpadded window, and the remaining padding is counted (it is computed). Training steps cost
3 x (forward + cross-entropy loss) (coursework rule, `train_step_flops`), a validation-loss pass
1 x (forward + loss) (`eval_flops`), forecasts their generation cost with the KV cache. Training stops *before* a step or an evaluation would cross `flops_cap`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_wsd_schedule,
)

import lvdata
from lvflops import ModelShape, eval_flops, train_step_flops
from lvmodel.checkpoint import load_checkpoint, save_checkpoint
from lvmodel.evaluate import evaluate_llm, evaluation_flops_bound
from lvmodel.forecast import forecast_flops_bound, model_shape
from lvmodel.lora import LoraSettings

Schedule = Literal["constant", "cosine", "wsd"]
MetricsCallback = Callable[[int, dict[str, float]], None]


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
        forecast_every: forecasting metric every M steps (0: only at the end; -1: never).
        forecast_series: validation series used for the forecasting metric (a fixed subset).
        forecast_history: history steps given to the model for that metric.
        forecast_horizon: steps forecast for that metric.
        checkpoint_every: save a checkpoint every K steps (0: never; the end is always saved
            when a checkpoint directory is given).
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
    flops_cap: float | None = None

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "context_length",
            "forecast_series",
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


@dataclass
class FitResult:
    """What `fit` did: steps run, FLOPs spent, the metric history and why it stopped."""

    steps: int
    train_flops: int
    eval_flops: int
    stopped: str
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None

    @property
    def total_flops(self) -> int:
        return self.train_flops + self.eval_flops


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule (transformers' implementations), stepped once per optimizer step."""
    if config.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, config.warmup_steps)
    if config.schedule == "cosine":
        if config.min_lr_ratio:
            return get_wsd_schedule(
                optimizer,
                config.warmup_steps,
                num_decay_steps=config.steps - config.warmup_steps,
                num_training_steps=config.steps,
                decay_type="cosine",
                min_lr_ratio=config.min_lr_ratio,
            )
        return get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    decay = max(1, round(config.decay_fraction * config.steps))
    return get_wsd_schedule(
        optimizer,
        config.warmup_steps,
        num_decay_steps=decay,
        num_training_steps=config.steps,
        decay_type="linear",
        min_lr_ratio=config.min_lr_ratio,
    )


class Batches:
    """Deterministic epoch-shuffled micro-batches; the position (epoch, cursor) is checkpointable."""

    def __init__(self, windows: lvdata.Windows, batch_size: int, seed: int) -> None:
        self.windows, self.batch_size, self.seed = windows, batch_size, seed
        self.n = len(windows.input_ids)
        if self.n < batch_size:
            raise ValueError(f"{self.n} training windows cannot fill a batch of {batch_size}")
        self.epoch, self.cursor = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next(self) -> dict[str, torch.Tensor]:
        if self.cursor + self.batch_size > self.n:  # drop the ragged tail of an epoch
            self.epoch, self.cursor = self.epoch + 1, 0
        idx = self._order()[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return trim_batch(self.windows, idx)


def trim_batch(windows: lvdata.Windows, idx: np.ndarray | slice) -> dict[str, torch.Tensor]:
    """Rows `idx` as tensors, cut to the longest unpadded row (windows are right-padded)."""
    mask = windows.attention_mask[idx]
    length = int(mask.sum(axis=1).max())
    return {
        "input_ids": torch.from_numpy(windows.input_ids[idx][:, :length]),
        "attention_mask": torch.from_numpy(mask[:, :length]),
        "labels": torch.from_numpy(windows.labels[idx][:, :length]),
    }


def autocast_for(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; fp32 (no autocast) on CPU, so CPU runs are exactly reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def fit(
    model: torch.nn.Module,
    tokenizer: Any,
    codec: lvdata.LLMTimeCodec,
    train_series: np.ndarray,
    val_series: np.ndarray,
    config: TrainConfig,
    lora: LoraSettings,
    *,
    on_metrics: MetricsCallback | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    progress: bool = True,
) -> FitResult:
    """Train the trainable parameters of `model` (a PEFT model) on LLMTime windows.

    Args:
        model: the LoRA-wrapped model (see `lvmodel.lora.apply_lora`).
        tokenizer: its tokenizer (any HF tokenizer with a pad token).
        codec: the LLMTime codec fitted on the training split.
        train_series, val_series: (N, T, 2) series in original units.
        config: training settings.
        lora: the adapter settings (for FLOPs and for saving adapters).
        on_metrics: called as `on_metrics(step, metrics)` after each step and evaluation.
        checkpoint_dir: where `step-*` checkpoints go (every `config.checkpoint_every` steps and
            at the end).
        resume_from: a checkpoint (or a directory of them) to continue from; the data position,
            optimizer, schedule, RNG and FLOPs continue exactly where they were.
        progress: show a tqdm progress bar.
    """
    device = next(model.parameters()).device
    shape = model_shape(model)
    fkw: dict[str, Any] = {
        "lora_rank": lora.rank,
        "lora_targets": lora.targets,
        "lm_head_bias": lora.lm_head_bias,
    }
    encode = [codec.encode(s) for s in train_series]
    train_w = lvdata.make_windows(encode, tokenizer, config.context_length, config.stride)
    val_w = lvdata.make_windows(
        [codec.encode(s) for s in val_series], tokenizer, config.context_length, config.stride
    )
    val_w = lvdata.Windows(
        **{f.name: getattr(val_w, f.name)[: config.eval_windows] for f in fields(val_w)}
    )
    batches = Batches(train_w, config.batch_size, config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config)
    emit = on_metrics or (lambda step, metrics: None)

    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "cursor": 0,
        "train_flops": 0,
        "eval_flops": 0,
        "history": [],
        "stopped": "running",
    }
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, scheduler)
        batches.epoch, batches.cursor = state["epoch"], state["cursor"]
    else:
        torch.manual_seed(config.seed)

    def record(metrics: dict[str, float]) -> None:
        metrics["flops_cumulative"] = float(state["train_flops"] + state["eval_flops"])
        state["history"].append({"step": state["step"], **metrics})
        emit(state["step"], metrics)

    def within_cap(extra: int) -> bool:
        return config.flops_cap is None or (
            state["train_flops"] + state["eval_flops"] + extra <= config.flops_cap
        )

    def due(every: int) -> bool:
        return every > 0 and state["step"] % every == 0

    def evaluate(final: bool) -> dict[str, float]:
        """Validation loss and/or the forecasting metric, whichever is due (both at the end)."""
        out: dict[str, float] = {}
        if final or due(config.eval_every):
            cost = sum(
                eval_flops(shape, b["input_ids"].shape[1], len(b["input_ids"]), **fkw).total
                for b in _val_batches(val_w, config.batch_size)
            )
            if within_cap(cost):
                out["val_loss"] = validation_loss(model, val_w, config.batch_size, device)
                state["eval_flops"] += cost
        if config.forecast_every >= 0 and (final or due(config.forecast_every)):
            out.update(
                _forecast_metrics(
                    model, tokenizer, codec, val_series, config, lora, state, within_cap
                )
            )
        return out

    def checkpoint() -> str | None:
        if checkpoint_dir is None:
            return None
        state.update(epoch=batches.epoch, cursor=batches.cursor, config=asdict(config))
        return str(save_checkpoint(checkpoint_dir, model, optimizer, scheduler, state, lora))

    bar = tqdm(
        total=config.steps,
        initial=state["step"],
        disable=not progress,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    last_ckpt = None
    while state["step"] < config.steps:
        micro = [batches.next() for _ in range(config.grad_accum)]
        step_cost = sum(
            train_step_flops(shape, b["input_ids"].shape[1], len(b["input_ids"]), **fkw).total
            for b in micro
        )
        if not within_cap(step_cost):
            state["stopped"] = "flops_cap"
            break
        t0 = time.perf_counter()
        model.train()
        loss_sum, tokens = 0.0, 0
        for b in micro:
            b = {k: v.to(device) for k, v in b.items()}
            with autocast_for(device):
                loss = model(**b).loss / config.grad_accum
            loss.backward()
            loss_sum += float(loss.detach())
            tokens += int(b["attention_mask"].sum())
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        lr = float(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["train_flops"] += step_cost
        dt = time.perf_counter() - t0
        metrics = {"train_loss": loss_sum, "lr": lr, "tokens_per_s": tokens / max(dt, 1e-9)}
        is_last = state["step"] == config.steps
        if is_last or due(config.eval_every) or due(config.forecast_every):
            metrics.update(evaluate(final=is_last))
        record(metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.4f}", refresh=False)
        if due(config.checkpoint_every) and not is_last:
            last_ckpt = checkpoint()
    bar.close()
    if state["stopped"] == "running":
        state["stopped"] = "completed"
    elif state["history"] and "val_loss" not in state["history"][-1]:
        record(evaluate(final=True))  # stopped by the cap: evaluate what we have, if affordable
    last_ckpt = checkpoint() or last_ckpt
    return FitResult(
        steps=state["step"],
        train_flops=state["train_flops"],
        eval_flops=state["eval_flops"],
        stopped=state["stopped"],
        history=state["history"],
        final=summarize(state["history"]),
        checkpoint=last_ckpt,
    )


def planned_fit_flops(
    shape: ModelShape,
    config: TrainConfig,
    lora: LoraSettings,
    n_val_windows: int,
    decimals: int = 2,
) -> int:
    """Upper bound of what `fit` will charge: for budget reservations before a run starts.

    Every step at full windows (`batch_size * grad_accum` x `context_length`, 3 x (forward +
    loss)), the validation loss (forward + loss over `eval_windows` full windows) at each due step
    plus the end, and the forecasting metric at each due step plus the end,
    each forecast at its bound (`forecast_flops_bound`).
    """
    fkw: dict[str, Any] = {
        "lora_rank": lora.rank,
        "lora_targets": lora.targets,
        "lm_head_bias": lora.lm_head_bias,
    }
    batch = config.batch_size * config.grad_accum
    train = config.steps * train_step_flops(shape, config.context_length, batch, **fkw).total

    def evaluations(every: int) -> int:
        return (config.steps // every if every > 0 else 0) + 1  # the end always evaluates

    n_val = min(n_val_windows, config.eval_windows)
    loss = evaluations(config.eval_every) * (
        eval_flops(shape, config.context_length, n_val, **fkw).total if n_val else 0
    )
    fc = 0
    if config.forecast_every >= 0:
        fc = evaluations(config.forecast_every) * forecast_flops_bound(
            shape,
            config.forecast_series,
            config.context_length,
            config.forecast_horizon,
            decimals,
            lora_rank=lora.rank,
            lora_targets=lora.targets,
            lm_head_bias=lora.lm_head_bias,
        )
    return train + loss + fc


def _val_batches(windows: lvdata.Windows, batch_size: int) -> list[dict[str, torch.Tensor]]:
    n = len(windows.input_ids)
    return [trim_batch(windows, slice(i, i + batch_size)) for i in range(0, n, batch_size)]


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, windows: lvdata.Windows, batch_size: int, device: torch.device
) -> float:
    """Mean next-token loss over every unpadded label of `windows` (token-weighted)."""
    model.eval()
    total, count = 0.0, 0
    for b in _val_batches(windows, batch_size):
        b = {k: v.to(device) for k, v in b.items()}
        with autocast_for(device):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        labels = b["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        total += float(losses)
        count += int((labels != -100).sum())
    return total / max(count, 1)


def _forecast_metrics(
    model: torch.nn.Module,
    tokenizer: Any,
    codec: lvdata.LLMTimeCodec,
    val_series: np.ndarray,
    config: TrainConfig,
    lora: LoraSettings,
    state: dict[str, Any],
    within_cap: Callable[[int], bool],
) -> dict[str, float]:
    """The task metric on a fixed validation subset (seed 003: val loss alone misleads)."""
    subset = val_series[: config.forecast_series]
    bound = evaluation_flops_bound(
        model, codec, len(subset), config.forecast_horizon, config.context_length, lora
    )
    if not within_cap(bound):
        return {}
    ev = evaluate_llm(
        model,
        tokenizer,
        codec,
        subset,
        config.forecast_history,
        config.forecast_horizon,
        config.context_length,
        lora,
    )
    state["eval_flops"] += ev.flops
    return {f"val_{key}": float(v) for key, v in ev.metrics.items() if not math.isnan(v)}


def summarize(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """The last value of every metric in a history."""
    return {k: v for row in history for k, v in row.items() if k != "step"}
