"""`fit`: LoRA training with analytic FLOPs metering, evaluation, checkpoints and exact resume.

One readable loop in plain stages (nanoGPT style): draw a batch, check the FLOPs cap, step, report,
evaluate, checkpoint. Results leave through `on_metrics(rows)`; nothing here knows MLflow.

Paced for a GPU step of about 30 ms: a step makes no device-to-host read. The loss and the
gradient norm stay on the device until a logging point (every `log_every` steps or `log_seconds`
of wall time, and before every evaluation, checkpoint and the end), where one read brings every
step's values back and `on_metrics` receives all their rows at once (every step is recorded).
Token counts come from the host's copy of the batch; a batch without padding runs without an
attention mask (right padding needs none); training runs the decoder without a KV cache and the head fused with the loss
(`lvmodel.loss`: the whole logits never exist). Checkpoints go by wall time
(`checkpoint_seconds`) and/or steps, at the end, and after every in-run forecast (the costly
evaluation a resume would otherwise repeat); the metric history is appended to the checkpoint
root's `history.jsonl`, never rewritten whole.

FLOPs are counted with lvflops for the shape actually run: each micro-batch is trimmed to its longest
unpadded window, and the remaining padding is counted (it is computed). Training steps cost
3 x (forward + cross-entropy loss) (coursework rule, `train_step_flops`), a validation-loss pass
1 x (forward + loss) (`eval_flops`), forecasts their generation cost with the KV cache. Training
stops *before* a step or an evaluation would cross `flops_cap` (an in-run forecast is checked
against its bound, `lvmodel.run_plan.forecast_bound`). What a whole run can spend, before it starts,
is `lvmodel.run_plan.plan_run`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_wsd_schedule,
)

import lvdata
from lvflops import eval_flops, train_step_flops
from lvmodel.checkpoint import load_checkpoint, save_checkpoint
from lvmodel.config import TrainConfig
from lvmodel.evaluate import evaluate_llm
from lvmodel.lora import LoraSettings
from lvmodel.loss import IGNORE_INDEX, causal_lm_loss, decoder_of
from lvmodel.run_plan import forecast_bound, model_shape

Row = tuple[int, dict[str, float]]  # (step, that step's metrics)
MetricsCallback = Callable[[list[Row]], None]
HISTORY_FILE = "history.jsonl"


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
        self._orders: dict[int, np.ndarray] = {}

    def _order(self) -> np.ndarray:
        if self.epoch not in self._orders:  # one permutation per epoch, not per batch
            self._orders = {
                self.epoch: np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            }
        return self._orders[self.epoch]

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


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A host batch on `device`. On CUDA through pinned memory and non-blocking: a copy from
    pageable memory may synchronize with the stream (CUDA's API synchronization notes)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def batch_loss(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    decoder: Any = None,
) -> tuple[torch.Tensor, int]:
    """(summed next-token loss on the device, number of labels it sums over, counted on the host)
    of a host batch.

    A right-padded batch (every window is) runs without an attention mask: causal attention
    already keeps every real token from the padding after it, positions are the same, and the
    padding's own outputs carry label -100. So the loss is the masked one, and transformers'
    check of the mask for padding (a device read every step) never runs.
    """
    n_labels = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    mask = batch["attention_mask"]
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())
    moved = to_device({k: v for k, v in batch.items() if k != "attention_mask"}, device)
    mask_on_device = None if right_padded else to_device({"m": mask}, device)["m"]
    with autocast_for(device):
        loss = causal_lm_loss(
            model, moved["input_ids"], moved["labels"], mask_on_device, decoder=decoder
        )
    return loss, n_labels


def autocast_for(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; fp32 (no autocast) on CPU, so CPU runs are exactly reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass(frozen=True)
class FitData:
    """The windows one `fit` trains on (`train`) and takes its validation loss over (`val`, the
    first `eval_windows` of the validation split's), tokenized at one context and stride.

    Built by `fit_data`; a caller that fits several times at one context (a search trial's
    rungs and decay branches, trials of one context) builds it once: tokenizing the training
    split takes seconds (3 s of a tiny `fit` call's 4.7 s of set-up), a GPU step 30 ms.
    """

    train: lvdata.Windows
    val: lvdata.Windows
    context_length: int
    stride: int | None
    eval_windows: int

    def check(self, config: TrainConfig) -> None:
        """Refuse windows built for another context, stride or validation subset."""
        want = (config.context_length, config.stride, config.eval_windows)
        if (self.context_length, self.stride, self.eval_windows) != want:
            raise ValueError(
                f"windows built for (context, stride, eval_windows) = ({self.context_length}, "
                f"{self.stride}, {self.eval_windows}), the config asks for {want}"
            )


def fit_data(
    tokenizer: Any,
    codec: lvdata.LLMTimeCodec,
    train_series: np.ndarray,
    val_series: np.ndarray,
    config: TrainConfig,
) -> FitData:
    """The training and validation-loss windows of a `fit` with `config` (see `FitData`)."""
    ctx, stride = config.context_length, config.stride
    train = lvdata.make_windows([codec.encode(s) for s in train_series], tokenizer, ctx, stride)
    val = lvdata.make_windows([codec.encode(s) for s in val_series], tokenizer, ctx, stride)
    first = {f.name: getattr(val, f.name)[: config.eval_windows] for f in fields(val)}
    return FitData(train, lvdata.Windows(**first), ctx, stride, config.eval_windows)


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
    data: FitData | None = None,
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
        data: the windows of `train_series` and `val_series` at the config's context, when a
            caller that fits several times at one context built them once (`fit_data`).
    """
    data = data or fit_data(tokenizer, codec, train_series, val_series, config)
    run = _Fit(model, tokenizer, codec, data, val_series, config, lora, on_metrics)
    run.start(resume_from)
    return run.loop(checkpoint_dir, progress)


class _Fit:
    """The stages of :func:`fit`: set up (data, optimizer, schedule), start or resume, loop
    (batch -> cap check -> step -> evaluate -> log -> checkpoint), finish."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        codec: lvdata.LLMTimeCodec,
        data: FitData,
        val_series: np.ndarray,
        config: TrainConfig,
        lora: LoraSettings,
        on_metrics: MetricsCallback | None,
    ) -> None:
        self.model, self.tokenizer, self.codec = model, tokenizer, codec
        self.val_series, self.config, self.lora = val_series, config, lora
        self.device = next(model.parameters()).device
        self.shape = model_shape(model)
        self.fkw = lora.flops_kwargs()
        data.check(config)
        self.val_w = data.val
        self.batches = Batches(data.train, config.batch_size, config.seed)
        self.params = [p for p in model.parameters() if p.requires_grad]
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(  # fused on CUDA: one kernel, step counts on the device
            self.params, lr=config.lr, weight_decay=config.weight_decay, fused=cuda or None
        )
        self.scheduler = make_scheduler(self.optimizer, config)
        self.decoder: Any = None
        if config.compile and cuda:
            self.decoder = torch.compile(decoder_of(model))
        self.emit = on_metrics or (lambda rows: None)
        self.step_costs: dict[tuple[int, int], int] = {}
        self.pending: list[dict[str, Any]] = []  # steps since the last logging point
        self.clock = {"log": time.perf_counter(), "checkpoint": time.perf_counter(), "eval": 0.0}
        self.history_written: int | None = None  # rows already in the root's history.jsonl
        self.state: dict[str, Any] = {
            "step": 0,
            "epoch": 0,
            "cursor": 0,
            "train_flops": 0,
            "eval_flops": 0,
            "history": [],
            "stopped": "running",
        }

    def start(self, resume_from: str | Path | None) -> None:
        """Seed a new run, or restore a checkpoint's model, optimizer, schedule and position."""
        if resume_from is not None:
            self.state = load_checkpoint(resume_from, self.model, self.optimizer, self.scheduler)
            self.state["history"] = read_history(self.state)
            self.batches.epoch, self.batches.cursor = self.state["epoch"], self.state["cursor"]
        else:
            torch.manual_seed(self.config.seed)

    # -- the loop ---------------------------------------------------------------------------

    def loop(self, checkpoint_dir: str | Path | None, progress: bool) -> FitResult:
        config, state = self.config, self.state
        bar = tqdm(
            total=config.steps,
            initial=state["step"],
            disable=not progress,
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        last_ckpt = None
        self.model.train()
        try:
            while state["step"] < config.steps:
                micro = [self.batches.next() for _ in range(config.grad_accum)]
                step_cost = sum(self.step_cost(b) for b in micro)
                if not self.within_cap(step_cost):
                    state["stopped"] = "flops_cap"
                    break
                row = self.step(micro, step_cost)
                bar.update(1)
                is_last = state["step"] == config.steps
                final = is_last and config.evaluate_at_end
                evaluated: dict[str, float] = {}
                if final or self.due(config.eval_every) or self.due(config.forecast_every):
                    evaluated = self.evaluate(final=final)
                    row.update(evaluated)
                    self.model.train()
                row["flops_cumulative"] = float(state["train_flops"] + state["eval_flops"])
                self.pending.append(row)
                forecasted = any(k != "val_loss" for k in evaluated)  # costly to repeat
                save = not is_last and (forecasted or self.checkpoint_due())
                if is_last or save or evaluated or self.log_due():
                    self.log(bar)
                if save:
                    last_ckpt = self.checkpoint(checkpoint_dir) or last_ckpt
        finally:  # whatever ends the loop (Ctrl-C included), the steps run so far are reported
            self.log(bar)
            bar.close()
        return self.finish(last_ckpt, checkpoint_dir)

    def step(self, micro: list[dict[str, torch.Tensor]], step_cost: int) -> dict[str, Any]:
        """One optimizer step over the micro-batches; its metrics, still on the device."""
        config = self.config
        loss_sum: torch.Tensor | float = 0.0
        tokens = 0
        for b in micro:
            loss, n_labels = batch_loss(self.model, b, self.device, self.decoder)
            loss = loss / (max(n_labels, 1) * config.grad_accum)
            loss.backward()
            loss_sum = loss_sum + loss.detach()
            tokens += int(b["attention_mask"].sum())  # the host's copy: no device read
        row: dict[str, Any] = {"train_loss": loss_sum, "lr": self.scheduler.get_last_lr()[0]}
        if config.max_grad_norm is not None:
            row["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["step"] += 1
        self.state["train_flops"] += step_cost
        row["step"], row["tokens"] = self.state["step"], tokens
        return row

    def log(self, bar: Any) -> None:
        """A logging point: one device read for every pending step, then their rows, in order."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        on_device = [
            (i, k) for i, r in enumerate(pending) for k, v in r.items() if torch.is_tensor(v)
        ]
        if on_device:
            values = torch.stack([pending[i][k].float() for i, k in on_device]).tolist()
            for (i, k), v in zip(on_device, values, strict=True):
                pending[i][k] = v
        now = time.perf_counter()
        seconds = now - self.clock["log"] - self.clock["eval"]
        self.clock.update(log=now, eval=0.0)
        tokens = sum(r.pop("tokens") for r in pending)
        pending[-1]["tokens_per_s"] = tokens / max(seconds, 1e-9)  # over the steps since the last
        rows = [(int(r.pop("step")), r) for r in pending]
        self.state["history"].extend({"step": s, **m} for s, m in rows)
        bar.set_postfix(loss=f"{rows[-1][1]['train_loss']:.4f}", refresh=False)
        self.emit(rows)

    def finish(self, last_ckpt: str | None, checkpoint_dir: str | Path | None) -> FitResult:
        state = self.state
        if state["stopped"] == "running":
            state["stopped"] = "completed"
        elif (
            self.config.evaluate_at_end
            and state["history"]
            and "val_loss" not in state["history"][-1]
        ):
            # stopped by the cap: evaluate, if affordable
            metrics = self.evaluate(final=True)
            metrics["flops_cumulative"] = float(state["train_flops"] + state["eval_flops"])
            state["history"].append({"step": state["step"], **metrics})
            self.emit([(state["step"], metrics)])
        last_ckpt = self.checkpoint(checkpoint_dir) or last_ckpt
        return FitResult(
            steps=state["step"],
            train_flops=state["train_flops"],
            eval_flops=state["eval_flops"],
            stopped=state["stopped"],
            history=state["history"],
            final=summarize(state["history"]),
            checkpoint=last_ckpt,
        )

    # -- helpers of the loop ----------------------------------------------------------------

    def step_cost(self, batch: dict[str, torch.Tensor]) -> int:
        """FLOPs of one micro-batch of this shape (lvflops, cached per shape)."""
        key = (batch["input_ids"].shape[0], batch["input_ids"].shape[1])
        if key not in self.step_costs:
            self.step_costs[key] = train_step_flops(self.shape, key[1], key[0], **self.fkw).total
        return self.step_costs[key]

    def within_cap(self, extra: int) -> bool:
        cap = self.config.flops_cap
        return cap is None or self.state["train_flops"] + self.state["eval_flops"] + extra <= cap

    def due(self, every: int) -> bool:
        return every > 0 and self.state["step"] % every == 0

    def log_due(self) -> bool:
        config = self.config
        late = time.perf_counter() - self.clock["log"] >= config.log_seconds > 0
        return self.due(config.log_every) or late

    def checkpoint_due(self) -> bool:
        seconds = self.config.checkpoint_seconds
        late = time.perf_counter() - self.clock["checkpoint"] >= seconds > 0
        return self.due(self.config.checkpoint_every) or late

    def evaluate(self, final: bool) -> dict[str, float]:
        """Validation loss and/or the forecasting metric, whichever is due (both at the end)."""
        config, out = self.config, {}
        t0 = time.perf_counter()
        if final or self.due(config.eval_every):
            cost = sum(
                eval_flops(
                    self.shape, b["input_ids"].shape[1], len(b["input_ids"]), **self.fkw
                ).total
                for b in _val_batches(self.val_w, config.batch_size)
            )
            if self.within_cap(cost):
                out["val_loss"] = validation_loss(
                    self.model, self.val_w, config.batch_size, self.device
                )
                self.state["eval_flops"] += cost
        if config.forecast_series > 0 and (final or self.due(config.forecast_every)):
            out.update(self.forecast_metrics())
        self.clock["eval"] += time.perf_counter() - t0
        return out

    def forecast_metrics(self) -> dict[str, float]:
        """The task metric on a fixed validation subset (seed 003: val loss alone misleads)."""
        config = self.config
        subset = self.val_series[: config.forecast_series]
        bound = forecast_bound(
            self.shape,
            len(subset),
            config.context_length,
            config.forecast_horizon,
            self.codec.decimals,
            self.lora,
        )
        if not self.within_cap(bound):
            return {}
        ev = evaluate_llm(
            self.model,
            self.tokenizer,
            self.codec,
            subset,
            config.forecast_history,
            config.forecast_horizon,
            config.context_length,
            self.lora,
        )
        self.state["eval_flops"] += ev.flops
        return {f"val_{key}": float(v) for key, v in ev.metrics.items() if not math.isnan(v)}

    def checkpoint(self, checkpoint_dir: str | Path | None) -> str | None:
        """Save a checkpoint (after logging: its state holds every step up to it)."""
        if checkpoint_dir is None:
            return None
        root = Path(checkpoint_dir)
        history = self.state["history"]
        self.history_written = append_history(root, history, self.history_written)
        state = {k: v for k, v in self.state.items() if k != "history"}
        state.update(
            epoch=self.batches.epoch,
            cursor=self.batches.cursor,
            config=asdict(self.config),
            history_rows=len(history),
        )
        saved = save_checkpoint(root, self.model, self.optimizer, self.scheduler, state, self.lora)
        self.clock["checkpoint"] = time.perf_counter()
        return str(saved)


def append_history(root: Path, history: list[dict[str, float]], written: int | None) -> int:
    """Append the rows of `history` not yet in `root/history.jsonl`; the first call of a fit
    writes the file afresh (a resumed run's file may hold rows of the attempt that died)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / HISTORY_FILE, "a" if written is not None else "w") as f:
        for row in history[written or 0 :]:
            f.write(json.dumps(row) + "\n")
    return len(history)


def read_history(state: dict[str, Any]) -> list[dict[str, float]]:
    """The metric history a checkpoint's state stands for: the first `history_rows` rows of its
    root's history.jsonl (older checkpoints kept the history in state.json)."""
    if "history_rows" not in state:
        return list(state.get("history", []))
    path = Path(state["checkpoint"]).parent / HISTORY_FILE
    n = int(state["history_rows"])
    with open(path) as f:
        rows = [json.loads(line) for _, line in zip(range(n), f, strict=False)]
    if len(rows) != n:
        raise ValueError(f"{path} holds {len(rows)} rows, the checkpoint expects {n}")
    return rows


def _val_batches(windows: lvdata.Windows, batch_size: int) -> list[dict[str, torch.Tensor]]:
    n = len(windows.input_ids)
    return [trim_batch(windows, slice(i, i + batch_size)) for i in range(0, n, batch_size)]


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, windows: lvdata.Windows, batch_size: int, device: torch.device
) -> float:
    """Mean next-token loss over every unpadded label of `windows` (token-weighted)."""
    model.eval()
    total: torch.Tensor | float = 0.0
    count = 0
    for b in _val_batches(windows, batch_size):
        loss, n_labels = batch_loss(model, b, device)
        total, count = total + loss, count + n_labels
    return float(total) / max(count, 1)


def summarize(history: Sequence[dict[str, float]]) -> dict[str, float]:
    """The last value of every metric in a history."""
    return {k: v for row in history for k, v in row.items() if k != "step"}
