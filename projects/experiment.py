"""What every training entry point does, in plain stages: data -> base -> plan -> reserve -> fit ->
evaluate -> log. The click commands in this folder only parse parameters and call `train_run`.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

import lvdata
from lvflops import train_step_flops
from lvmodel.base import BaseModelError, describe_base, load_base
from lvmodel.evaluate import Evaluation, evaluate_llm, evaluation_flops_bound
from lvmodel.forecast import model_shape
from lvmodel.lora import LoraSettings, apply_lora, parameter_counts, save_adapter
from lvmodel.train import FitResult, TrainConfig, fit, planned_fit_flops
from projects.data import ensure_data
from projects.ledger import METRIC_FLOPS, TAG_PHASE, BudgetRefused, reserve
from projects.plots import plot_curves, plot_forecasts
from projects.presets import Preset
from projects.registry import REGISTERED_MODEL, log_forecaster
from projects.tracking import log_dataset, setup_tracking

CHECKPOINT_ROOT = Path("checkpoints")


@dataclass
class TrainRequest:
    """One training run: the preset plus what the entry point overrides."""

    preset: Preset
    phase: str
    run_name: str
    lr: float
    rank: int
    context_length: int
    steps: int
    batch_size: int
    seed: int = 0
    schedule: str = "cosine"
    warmup_steps: int = 0
    data_file: str = "data/lotka_volterra_data.h5"
    evaluate_test: bool = False
    register: bool = False
    base_model: str = ""

    @classmethod
    def from_preset(
        cls, preset: Preset, phase: str, run_name: str, steps: int, **overrides: Any
    ) -> TrainRequest:
        """A request with the preset's lr, rank, context, batch and schedule unless overridden."""
        fields: dict[str, Any] = {
            "lr": preset.lr,
            "rank": preset.rank,
            "context_length": preset.context_length,
            "batch_size": preset.batch_size,
            "schedule": preset.schedule,
            "warmup_steps": preset.warmup_steps,
        }
        return cls(
            preset=preset, phase=phase, run_name=run_name, steps=steps, **{**fields, **overrides}
        )

    @property
    def base(self) -> str:
        return self.base_model or self.preset.base_model

    def train_config(self) -> TrainConfig:
        p = self.preset
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            context_length=self.context_length,
            schedule=self.schedule,  # type: ignore[arg-type]
            warmup_steps=min(self.warmup_steps, self.steps - 1),
            seed=self.seed,
            eval_every=p.eval_every,
            forecast_every=p.forecast_every,
            forecast_series=p.forecast_series,
            forecast_history=p.history_steps,
            forecast_horizon=p.horizon,
        )


@dataclass
class Prepared:
    """Data, split and codec of the experiment (the same for every run)."""

    traj: lvdata.Trajectories
    parts: lvdata.Split
    codec: lvdata.LLMTimeCodec
    data_path: Path

    def series(self, split: str) -> np.ndarray:
        return self.traj.values[getattr(self.parts, split)]


def prepare_data(data_file: str, seed: int = 0) -> Prepared:
    """The data file (generated if missing), the trajectory-level split and the codec."""
    path = Path(data_file)
    traj, _ = ensure_data(path, n_systems=1000, seed=seed)
    parts = lvdata.split(traj.n_series, seed=0)
    codec = lvdata.LLMTimeCodec.fit(traj.values[parts.train])
    return Prepared(traj=traj, parts=parts, codec=codec, data_path=path)


def eval_series(prep: Prepared, split: str, preset: Preset) -> np.ndarray:
    s = prep.series(split)
    return s[: preset.eval_series] if preset.eval_series else s


def log_common(prep: Prepared, params: dict[str, Any]) -> None:
    """Parameters, the codec and the data set of a run."""
    codec = {f"codec_{k}": v for k, v in prep.codec.to_dict().items()}
    mlflow.log_params({**params, **codec})
    log_dataset(prep.traj.values, prep.data_path, name="lotka_volterra", context="training")


def log_evaluation(ev: Evaluation, split: str, horizon: int, time: np.ndarray) -> dict[str, float]:
    """Headline metrics `{split}_mse_h{H}`, per-step and per-variable ones, and a forecast plot."""
    named = {}
    for key, value in ev.metrics.items():
        if key in ("mse", "mae", "mse_filled", "mae_filled"):
            named[
                f"{split}_{key.replace('_filled', '')}_filled_h{horizon}"
                if "filled" in key
                else f"{split}_{key}_h{horizon}"
            ] = value
        else:
            named[f"{split}_{key}"] = value
    clean = {k: float(v) for k, v in named.items() if np.isfinite(v)}
    mlflow.log_metrics(clean)
    k = ev.histories.shape[1]
    fig = plot_forecasts(
        time[: k + horizon],
        ev.histories[:6],
        ev.truth[:6],
        ev.predictions[:6],
        title=f"{split}: history, truth and forecast",
    )
    mlflow.log_figure(fig, f"plots/forecast_{split}.png")
    return clean


@contextmanager
def killed_as_failure() -> Iterator[None]:
    """SIGTERM (e.g. `kill`, a scheduler) ends the run like Ctrl-C: KILLED, FLOPs logged."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_run(
    req: TrainRequest, nested: bool = False, settings_source: str = ""
) -> dict[str, float]:
    """Run one budgeted LoRA training run end to end; returns its final metrics."""
    preset = req.preset
    setup_tracking()
    prep = prepare_data(req.data_file)
    try:
        model, tok = load_base(req.base)
    except BaseModelError as err:
        raise click.ClickException(str(err)) from None
    lora = LoraSettings(rank=req.rank, targets=preset.lora_targets)
    model = apply_lora(model, lora)
    trainable, total = parameter_counts(model)
    config = req.train_config()
    val = eval_series(prep, "val", preset)
    test = eval_series(prep, "test", preset)
    n_val_windows = config.eval_windows
    planned = planned_fit_flops(
        model_shape(model), config, lora, n_val_windows, prep.codec.decimals
    )
    planned += evaluation_flops_bound(
        model, prep.codec, len(val), preset.horizon, req.context_length, lora
    )
    if req.evaluate_test:
        planned += evaluation_flops_bound(
            model, prep.codec, len(test), preset.horizon, req.context_length, lora
        )
    params = {k: v for k, v in asdict(req).items() if k not in ("preset",)}
    params.update(
        preset=preset.name,
        base_model=req.base,
        budget=preset.budget,
        history_steps=preset.history_steps,
        horizon=preset.horizon,
        lora_alpha=lora.lora_alpha,
        lora_targets=",".join(lora.targets),
        lm_head_bias=lora.lm_head_bias,
        trainable_params=trainable,
        total_params=total,
        **{f"base_{k}": v for k, v in describe_base(model.get_base_model()).items()},
    )
    tags = {
        "base_model": req.base,
        **({"settings_from": settings_source} if settings_source else {}),
    }
    with (
        entry_parent(req.phase, preset.name, req.run_name) as under_entry,
        budgeted_run(
            req.run_name, req.phase, preset, planned, params, prep, nested or under_entry, tags
        ) as (run, meter),
    ):

        def on_metrics(step: int, metrics: dict[str, float]) -> None:
            meter.log(metrics["flops_cumulative"], step, metrics)

        result = fit(
            model,
            tok,
            prep.codec,
            prep.series("train"),
            val,
            config,
            lora,
            on_metrics=on_metrics,
            checkpoint_dir=CHECKPOINT_ROOT / run.info.run_id,
            progress=sys.stderr.isatty(),
        )
        return finish_run(req, prep, model, tok, lora, result, val, test)


class FlopsMeter:
    """Logs `flops_total` as a run goes, so a killed run's spending still counts."""

    def __init__(self) -> None:
        self.spent = 0.0

    def log(self, spent: float, step: int, metrics: dict[str, float] | None = None) -> None:
        self.spent = float(spent)
        mlflow.log_metrics({**(metrics or {}), METRIC_FLOPS: self.spent}, step=step)


@contextmanager
def budgeted_run(
    run_name: str,
    phase: str,
    preset: Preset,
    planned: int,
    params: dict[str, Any],
    prep: Prepared,
    nested: bool = False,
    tags: dict[str, str] | None = None,
) -> Iterator[tuple[mlflow.ActiveRun, FlopsMeter]]:
    """A run that reserves `planned` FLOPs first (or is refused: FAILED, exit 1, nothing run).

    Ctrl-C or SIGTERM ends it KILLED and any other failure FAILED, with the FLOPs metered so far
    logged: no run is left RUNNING.
    """
    with mlflow.start_run(run_name=run_name, nested=nested, log_system_metrics=True) as run:
        mlflow.set_tags(
            {TAG_PHASE: phase, "preset": preset.name, "mlflow.runName": run_name, **(tags or {})}
        )
        log_common(prep, params)
        try:
            reserve(MlflowClient(), run, planned, int(preset.budget))
        except BudgetRefused as err:
            mlflow.end_run("FAILED")
            raise click.ClickException(str(err)) from None
        meter = FlopsMeter()
        try:
            with killed_as_failure():
                yield run, meter
        except KeyboardInterrupt:
            mlflow.log_metric(METRIC_FLOPS, meter.spent)
            mlflow.end_run("KILLED")
            raise


def finish_run(
    req: TrainRequest,
    prep: Prepared,
    model: Any,
    tok: Any,
    lora: LoraSettings,
    result: FitResult,
    val: np.ndarray,
    test: np.ndarray,
) -> dict[str, float]:
    """Evaluate on validation (and test), log metrics, plots, the FLOPs breakdown and adapter."""
    preset = req.preset
    final: dict[str, float] = {}
    evals = [("val", val)] + ([("test", test)] if req.evaluate_test else [])
    eval_flops = 0
    for split, series in evals:
        ev = evaluate_llm(
            model,
            tok,
            prep.codec,
            series,
            preset.history_steps,
            preset.horizon,
            req.context_length,
            lora,
            batch_size=32,
        )
        eval_flops += ev.flops
        final.update(log_evaluation(ev, split, preset.horizon, prep.traj.time))
    total = result.total_flops + eval_flops
    final.update(
        {
            METRIC_FLOPS: float(total),
            "flops_train": float(result.train_flops),
            "flops_eval": float(result.eval_flops + eval_flops),
            "budget_share": total / preset.budget,
            "steps_run": float(result.steps),
        }
    )
    mlflow.log_metrics(final, step=result.steps)
    mlflow.set_tag("stopped", result.stopped)
    if result.history:
        mlflow.log_figure(plot_curves(result.history), "plots/curves.png")
    step_cost = train_step_flops(
        model_shape(model),
        req.context_length,
        req.batch_size,
        lora_rank=lora.rank,
        lora_targets=lora.targets,
        lm_head_bias=lora.lm_head_bias,
    )
    mlflow.log_dict(
        {
            "train_step_at_full_context": step_cost.as_dict(),
            "train": result.train_flops,
            "eval_in_training": result.eval_flops,
            "eval_final": eval_flops,
            "total": total,
            "budget": preset.budget,
        },
        "flops.json",
    )
    with tempfile.TemporaryDirectory() as tmp:
        adapter = save_adapter(model, Path(tmp) / "adapter", lora)
        mlflow.log_artifacts(str(adapter), "adapter")
        mlflow.log_dict(prep.codec.to_dict(), "codec.json")
        if req.register:
            info = log_forecaster(
                adapter_dir=adapter,
                codec=prep.codec,
                base_spec=req.base,
                settings={"context_length": req.context_length, "horizon": preset.horizon},
                registered_model_name=REGISTERED_MODEL,
                tags={"phase": req.phase, "preset": preset.name, **final},
                validate=Path(req.base).is_dir() or req.base == "tiny",
            )
            mlflow.set_tag("registered_version", str(info.registered_model_version))
    return final


def parent_run(name: str, phase: str, params: dict[str, Any], preset: str) -> mlflow.ActiveRun:
    """A parent run for a sweep (children are nested; the parent itself spends nothing).

    Under `mlflow run` this is the run it created, which already holds the entry point's raw
    parameters (`-1`, empty strings): the resolved values go in as `resolved_*`.
    """
    setup_tracking()
    run = mlflow.start_run(run_name=name)
    mlflow.set_tags(
        {TAG_PHASE: phase, "preset": preset, "mlflow.runName": name, "lv.parent": "true"}
    )
    mlflow.log_params({f"resolved_{k}": v for k, v in params.items()})
    return run


@contextmanager
def entry_parent(phase: str, preset: str, name: str) -> Iterator[bool]:
    """Under `mlflow run`, make its run the parent of the work run; yields whether it did.

    `mlflow run` logs the entry point's raw parameters (`-1` and empty strings meaning "the
    preset's value"), and MLflow forbids changing a logged parameter; so the budgeted run that
    logs the resolved values is a child of it.
    """
    if "MLFLOW_RUN_ID" in os.environ and mlflow.active_run() is None:
        with parent_run(name, phase, {}, preset):
            yield True
    else:
        yield False
