"""What every training entry point does, in plain stages: data -> base -> plan -> reserve -> fit ->
evaluate -> log. The training entry points (`projects/`) only parse parameters and call `train_run`.

A run that dies can be resumed (`train_run(..., resume=...)`, see `lvtrack.resume`): the same
MLflow run is reopened and `fit` continues from its newest checkpoint.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click
import mlflow
import numpy as np
import torch
from mlflow.tracking import MlflowClient

from lvflops import ModelShape
from lvmodel.base import BaseModelError, base_shape, describe_base, load_base
from lvmodel.evaluate import Evaluation, evaluate_llm
from lvmodel.intervals import intervals, series_terms
from lvmodel.lora import LoraSettings, apply_lora, parameter_counts, save_adapter
from lvmodel.plan import RunPlan
from lvmodel.train import FitResult, fit
from lvtrack.datafile import Prepared, prepare_data
from lvtrack.describe import describe_run, run_description
from lvtrack.ledger import METRIC_FLOPS, open_ledger
from lvtrack.planning import budget_steps, request_plan
from lvtrack.plots import plot_curves, plot_fan, plot_forecasts, plot_step_errors
from lvtrack.registry import REGISTERED_MODEL, RegistryError, log_forecaster
from lvtrack.report import report_reserve
from lvtrack.request import PRESET_PARAMS, TrainRequest, settings_conflicts
from lvtrack.resume import (
    METRIC_REWORK,
    TAG_CHECKPOINTS,
    TAG_RESUMES,
    TAG_WORK_RUN,
    Resume,
    ResumeError,
    checkpoint_root,
    find_resumable,
    resume_hint,
)
from lvtrack.runs import FlopsMeter, budgeted_run, entry_parent
from lvtrack.selection import reference_step_errors
from lvtrack.tracking import array_digest, log_dataset, setup_tracking

TAG_STEPS_FROM = "lv.steps_from"  # "budget": the run's steps were what the budget had left


def log_common(prep: Prepared, params: dict[str, Any]) -> None:
    """Parameters, the codec and the data set of a run."""
    codec = {f"codec_{k}": v for k, v in prep.codec.to_dict().items()}
    mlflow.log_params({**params, **codec})
    log_dataset(prep.traj.values, prep.data_path, name="lotka_volterra", context="training")


#: Metrics over the whole horizon: logged as `{split}_{name}_h{H}` (the others as `{split}_{key}`).
HORIZON_METRICS = (
    "mse", "mae", "mse_filled", "mae_filled", "mase", "crps", "wql", "energy", "coverage80"
)  # fmt: skip


def _headline(split: str, key: str, horizon: int) -> str:
    """`val_mse_h5`, `val_mse_filled_h5`, ...: a whole-horizon metric's logged name."""
    return f"{split}_{key.replace('_filled', '')}{'_filled' if 'filled' in key else ''}_h{horizon}"


def log_evaluation(
    ev: Evaluation,
    split: str,
    horizon: int,
    time: np.ndarray,
    references: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Headline metrics `{split}_mse_h{H}` (and `{split}_crps_h{H}`, `{split}_coverage80_h{H}`
    for a sampled forecast), each with its 95% series-bootstrap interval (`..._lo`, `..._hi`,
    `lvmodel.intervals`), per-step and per-variable ones, the per-series terms of the headline
    metrics (`scores/{split}_series.json`, for paired comparisons), and plots: the forecasts, a fan
    chart of a sampled one (`plots/fan_{split}.png`), and with `references` (name -> MSE at
    steps 1..H of the reference forecasters) the error against the step ahead beside them."""
    named = {
        _headline(split, key, horizon) if key in HORIZON_METRICS else f"{split}_{key}": value
        for key, value in ev.metrics.items()
    }
    terms = series_terms(ev.predictions, ev.histories, ev.truth, ev.samples)
    for key, (lo, hi) in intervals(terms).items():
        name = _headline(split, key, horizon)
        named[f"{name}_lo"], named[f"{name}_hi"] = lo, hi
    clean = {k: float(v) for k, v in named.items() if np.isfinite(v)}
    mlflow.log_metrics(clean)
    # Per-series terms, so that a later comparison can pair this forecast with another's.
    series = {k: {"num": num.tolist(), "den": den.tolist()} for k, (num, den) in terms.items()}
    mlflow.log_dict(series, f"scores/{split}_series.json")
    k = ev.histories.shape[1]
    fig = plot_forecasts(
        time[: k + horizon],
        ev.histories[:6],
        ev.truth[:6],
        ev.predictions[:6],
        title=f"{split}: history, truth and forecast",
    )
    mlflow.log_figure(fig, f"plots/forecast_{split}.png")
    if ev.quantiles is not None and ev.samples is not None:
        fan = plot_fan(
            time[: k + horizon],
            ev.histories[:6],
            ev.truth[:6],
            ev.quantiles[:6],
            ev.predictions[:6],
            title=f"{split}: median and 10-90% interval of {ev.samples.shape[1]} samples",
        )
        mlflow.log_figure(fan, f"plots/fan_{split}.png")
    if references is not None:
        ours = [ev.metrics.get(f"mse_step{h}", float("nan")) for h in range(1, horizon + 1)]
        errors: dict[str, Sequence[float]] = {"LLM (this run)": ours, **references}
        mlflow.log_figure(plot_step_errors(errors, metric="MSE"), f"plots/step_errors_{split}.png")
    return clean


def train_run(
    req: TrainRequest,
    nested: bool = False,
    settings_source: str = "",
    resume: Resume | None = None,
) -> dict[str, float]:
    """Run one budgeted LoRA training run end to end; returns its final metrics.

    With `resume` (see `lvtrack.resume.find_resumable`), reopen that run instead of starting one
    and continue from its newest checkpoint; `req` must be its request (`TrainRequest.from_params`).
    """
    preset = req.preset
    exp_id = setup_tracking()
    if resume:
        follow_experiment(resume)
    prep = prepare_data(req.data_file)
    if resume and resume.data_digest and resume.data_digest != array_digest(prep.traj.values):
        raise click.ClickException(
            f"run {resume.run_id} trained on other data than {req.data_file} now holds (digest "
            f"{resume.data_digest}, now {array_digest(prep.traj.values)}); cannot resume it"
        )
    try:
        shape = base_shape(req.base)  # the config only: weights load once the ledger admits it
    except BaseModelError as err:
        raise click.ClickException(str(err)) from None
    lora = req.lora()
    if resume:
        check_resumable_config(resume, asdict(req.train_config()))
    val = prep.scored("val", preset)
    test = prep.scored("test", preset)
    by_budget = req.steps == 0
    if by_budget:  # as many steps as what is left of the budget affords
        req = steps_from_budget(req, shape, prep.codec.decimals, len(val), len(test), exp_id)
    plan = request_plan(req, shape, prep.codec.decimals, len(val), len(test))
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
        **{k: getattr(preset, k) for k in PRESET_PARAMS},
    )
    tags = {
        "base_model": req.base,
        **({"settings_from": settings_source} if settings_source else {}),
        **({TAG_STEPS_FROM: "budget"} if by_budget else {}),
    }
    parent_tags = {TAG_RESUMES: resume.run_id} if resume else {}
    with (
        entry_parent(req.phase, preset.name, req.run_name, parent_tags) as parent,
        budgeted_run(
            req.run_name,
            req.phase,
            preset,
            plan.total,
            lambda: log_common(prep, params),
            nested or parent is not None,
            tags,
            resume=resume,
        ) as (run, meter),
    ):
        run_id = run.info.run_id
        click.echo(
            f"training run {run_id} (attempt {meter.attempt}); if it dies, resume it with: "
            f"{resume_hint(run_id, run.info.experiment_id)}",
            err=True,
        )
        try:
            base, tok = load_base(req.base)
        except BaseModelError as err:
            raise click.ClickException(str(err)) from None
        torch.manual_seed(req.seed)  # the LoRA init draws from it: the same seed, the same run
        model: Any = apply_lora(base, lora)
        if not resume:
            trainable, total = parameter_counts(model)
            described = describe_base(model.get_base_model())
            mlflow.log_params(
                {
                    "trainable_params": trainable,
                    "total_params": total,
                    **{f"base_{k}": v for k, v in described.items()},
                }
            )
        ckpt_dir = resume.checkpoint_dir if resume else checkpoint_root() / run_id
        mlflow.set_tag(TAG_CHECKPOINTS, str(ckpt_dir.resolve()))
        if parent is not None:
            MlflowClient().set_tag(parent.info.run_id, TAG_WORK_RUN, run_id)
        if resume:
            click.echo(
                f"resuming run {run_id} (attempt {meter.attempt}) from {resume.checkpoint}: "
                f"{resume.rework:.3e} FLOPs spent after that checkpoint are redone and counted",
                err=True,
            )

        def on_metrics(rows: list[tuple[int, dict[str, float]]]) -> None:
            attempt = {"attempt": meter.attempt}
            meter.log_rows([(s, m["flops_cumulative"], {**m, **attempt}) for s, m in rows])

        result = fit(
            model,
            tok,
            prep.codec,
            prep.series("train"),
            val,
            req.train_config(),
            lora,
            on_metrics=on_metrics,
            checkpoint_dir=ckpt_dir,
            resume_from=resume.checkpoint if resume else None,
            progress=sys.stderr.isatty(),
        )
        return finish_run(req, prep, model, tok, lora, result, val, test, plan, meter)


def steps_from_budget(
    req: TrainRequest,
    shape: ModelShape,
    decimals: int,
    n_val: int,
    n_test: int,
    experiment_id: str,
) -> TrainRequest:
    """`req` with the most steps whose plan fits what the experiment's ledger has left.

    Read in a transaction of its own: a run admitted meanwhile makes the reservation fail with
    the ledger's refusal, which names what is left (run it again).
    """
    budget = int(req.preset.budget)
    left = open_ledger(experiment_id, budget).read(experiment_id, budget).remaining
    kept = 0
    if req.phase == "final":  # leave what the report needs for the table's other cells
        kept = report_reserve(
            experiment_id,
            req.preset,
            shape,
            decimals,
            n_test,
            req.lora(),
            req.context_length,
            req.base,
        )
        left -= kept
    steps = budget_steps(req, shape, decimals, n_val, n_test, left)
    if steps == 0:
        one = request_plan(replace(req, steps=1), shape, decimals, n_val, n_test).total
        raise click.ClickException(
            f"the budget has {max(left, 0):.3e} FLOPs left of {req.preset.budget:.3e}: not enough "
            f"for one training step and the run's evaluations ({one:.3e}). Raise the budget or "
            "use another experiment (see `mlflow run . -e budget` for what was spent)."
        )
    click.echo(
        f"{req.phase}: {steps} steps, what the {left:.3e} FLOPs left of the budget afford "
        "(training, in-run and final evaluations)"
        + (f"; {kept:.3e} kept for the report's other cells" if kept else ""),
        err=True,
    )
    return replace(req, steps=steps)


def resume_run(
    run_id: str, budget: float, given: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, float]:
    """Resume training run `run_id` with its logged settings; the settings `given` on the
    command line (those not at their `defaults`) must agree with them. `budget` may differ."""
    setup_tracking()
    try:
        resume = find_resumable(MlflowClient(), run_id)
    except ResumeError as err:
        raise click.ClickException(str(err)) from None
    req = TrainRequest.from_params(resume.params, budget=budget)
    if conflicts := settings_conflicts(req, given, defaults):
        raise click.ClickException(
            f"run {resume.run_id} resumes with the settings it was started with; these differ: "
            f"{'; '.join(conflicts)}. Leave them out (--budget may change)."
        )
    return train_run(req, resume=resume)


def follow_experiment(resume: Resume) -> None:
    """Work in the resumed run's experiment (its ledger); under `mlflow run`, insist on it."""
    chosen = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if chosen is None:
        mlflow.set_experiment(experiment_id=resume.experiment_id)
    elif chosen != resume.experiment_id:
        name = MlflowClient().get_experiment(resume.experiment_id).name
        raise click.ClickException(
            f"run {resume.run_id} belongs to experiment {name!r} (id {resume.experiment_id}), "
            f"not to the one `mlflow run` chose (id {chosen}): add --experiment-id "
            f"{resume.experiment_id}"
        )


def check_resumable_config(resume: Resume, config: dict[str, Any]) -> None:
    """The config rebuilt from the run's parameters must be the one its checkpoint was saved with
    (a preset changed in the code since would otherwise silently train another run)."""
    saved = resume.checkpoint_config
    differ = {k: (saved.get(k), v) for k, v in config.items() if k in saved and saved[k] != v}
    if differ:
        listed = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
        raise click.ClickException(
            f"run {resume.run_id}'s checkpoint was written with other training settings than its "
            f"parameters give now ({listed}); cannot resume it exactly"
        )


def finish_run(
    req: TrainRequest,
    prep: Prepared,
    model: Any,
    tok: Any,
    lora: LoraSettings,
    result: FitResult,
    val: np.ndarray,
    test: np.ndarray,
    plan: RunPlan,
    meter: FlopsMeter | None = None,
) -> dict[str, float]:
    """Evaluate on validation (and test), log metrics, plots, the FLOPs breakdown and adapter.

    `flops_total` is what the run spent: the counted work plus the rework of a resumed run.
    """
    mlflow.flush_async_logging()  # the training rows first: the closing values are the latest
    meter = meter or FlopsMeter(counted=result.total_flops)
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
            num_samples=req.eval_samples,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
        )
        eval_flops += ev.flops
        meter.log(result.total_flops + eval_flops, result.steps)  # a failure later still counts it
        run = mlflow.active_run()
        refs = (
            reference_step_errors(run.info.experiment_id, preset.name, split, preset.horizon)
            if run is not None
            else None
        )
        final.update(log_evaluation(ev, split, preset.horizon, prep.traj.time, refs))
    total = result.total_flops + eval_flops
    final.update(
        {
            METRIC_FLOPS: meter.spent,
            "flops_train": float(result.train_flops),
            "flops_eval": float(result.eval_flops + eval_flops),
            METRIC_REWORK: meter.offset,
            "budget_share": meter.spent / preset.budget,
            "steps_run": float(result.steps),
        }
    )
    mlflow.log_metrics(final, step=result.steps)
    mlflow.set_tag("stopped", result.stopped)
    if result.history:
        mlflow.log_figure(plot_curves(result.history), "plots/curves.png")
    mlflow.log_dict(
        {
            "planned": plan.as_dict(),  # what the ledger reserved for this run, by part
            "train": result.train_flops,
            "eval_in_training": result.eval_flops,
            "eval_final": eval_flops,
            "counted": total,
            "rework": meter.offset,
            "total": meter.spent,
            "budget": preset.budget,
        },
        "flops.json",
    )
    with tempfile.TemporaryDirectory() as tmp:
        adapter = save_adapter(model, Path(tmp) / "adapter", lora)
        mlflow.log_artifacts(str(adapter), "adapter")
        mlflow.log_dict(prep.codec.to_dict(), "codec.json")
        if req.register:
            try:  # registration loads the logged model and forecasts with it: it must work
                info = log_forecaster(
                    name=REGISTERED_MODEL,
                    adapter_dir=adapter,
                    codec=prep.codec,
                    base_spec=req.base,
                    settings={  # served as it was scored: the median of eval_samples samples
                        "context_length": req.context_length,
                        "horizon": preset.horizon,
                        "num_samples": req.eval_samples,
                        "temperature": req.temperature,
                        "top_p": req.top_p,
                    },
                    registered_model_name=REGISTERED_MODEL,
                    tags={"phase": req.phase, "preset": preset.name},
                )
            except RegistryError as err:
                raise click.ClickException(
                    "the run trained and was scored (its metrics and adapter are logged) but "
                    f"its model could not be registered: {err}"
                ) from None
            mlflow.set_tag("registered_version", str(info.registered_model_version))
            # MLflow 3's model-linked metrics: the experiment's models page compares models by
            # their validation and test scores (each headline metric and its interval).
            headline = re.compile(rf"(val|test)_\w+_h{preset.horizon}(_lo|_hi)?")
            linked = {k: v for k, v in final.items() if headline.fullmatch(k)}
            mlflow.log_metrics(linked, step=result.steps, model_id=info.model_id)

    settings = {"lr": req.lr, "rank": req.rank, "context_length": req.context_length}
    describe_run(run_description(req.phase, settings, final))
    return final
