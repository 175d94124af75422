"""The training run, in stages (litgpt's setup -> fit -> validate): prepare the data -> plan and admit
-> load and wrap the model -> fit -> score -> register. The training entry points (`projects/`)
only parse parameters and call `train_run`; the loop itself is `lvmodel.train.fit`.

A run that dies can be resumed (`train_run(..., resume=...)`, see `lvtrack.resume`): the same
MLflow run is reopened and `fit` continues from its newest checkpoint.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
from lvmodel.evaluate import evaluate_llm
from lvmodel.lora import LoraSettings, apply_lora, parameter_counts, save_adapter
from lvmodel.run_plan import RunPlan
from lvmodel.train import FitResult, fit
from lvtrack.datafile import Prepared, prepare_data
from lvtrack.describe import describe_run, run_description
from lvtrack.evaluation_log import log_common, log_evaluation, log_origin
from lvtrack.experiment_plan import request_plan, steps_from_budget
from lvtrack.ledger import METRIC_FLOPS
from lvtrack.plots import plot_curves
from lvtrack.registry import REGISTERED_MODEL, RegistryError, log_forecaster
from lvtrack.request import TrainRequest, settings_conflicts
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
from lvtrack.runs import FlopsMeter, budgeted_run, entry_parent, parent_run
from lvtrack.selection import SELECTION_METRIC, reference_step_errors
from lvtrack.tracking import array_digest, setup_tracking

TAG_STEPS_FROM = "lv.steps_from"  # "budget": the run's steps were what the budget had left


def train_run(
    req: TrainRequest,
    nested: bool = False,
    settings_source: str = "",
    resume: Resume | None = None,
    runs: int = 1,
) -> dict[str, float]:
    """Run one budgeted LoRA training run end to end; returns its final metrics.

    With `resume` (see `lvtrack.resume.find_resumable`), reopen that run instead of starting one
    and continue from its newest checkpoint; `req` must be its request (`TrainRequest.from_params`).
    A run whose steps the budget sets (`req.steps` None) takes 1/`runs` of what is left: the first of
    `runs` runs with the same settings (`train_seeds`).
    """
    experiment_id = setup_tracking()
    prep = prepare(req, resume)
    req, plan, by_budget = planned(req, prep, experiment_id, resume, runs)
    with admitted(req, prep, plan, by_budget, settings_source, nested, resume) as (meter, ckpt):
        model, tok = lora_model(req.preset.base_model, req.lora(), req.seed)
        if resume is None:
            log_model_size(model)
        result = fit(
            model,
            tok,
            prep.codec,
            prep.series("train"),
            prep.scored("val", req.preset.eval_series),
            req.train_config(),
            req.lora(),
            on_metrics=meter.log_fit_rows,
            checkpoint_dir=ckpt,
            resume_from=resume.checkpoint if resume else None,
            progress=sys.stderr.isatty(),
        )
        return finish_run(req, prep, model, tok, result, plan, meter)


#: The metrics whose spread across seeds `train_seeds` logs (when the runs have them).
SPREAD_METRICS = (SELECTION_METRIC, "val_mse_h5", "val_crps_h5", "test_mse_h5", "test_crps_h5")


def train_seeds(req: TrainRequest, seeds: int, settings_source: str = "") -> dict[str, float]:
    """`req` trained with `seeds` seeds (req.seed, req.seed + 1, ...), children of one parent run
    of its phase: the first takes 1/`seeds` of what the budget has left when its steps are the
    budget's, the others the same steps. The parent logs the spread of each of
    :data:`SPREAD_METRICS` across the seeds (`seeds_{metric}_mean`, `_sd`, `_min`, `_max`) and
    each seed's metrics (`seeds.json`); returns the metrics of the best seed on validation
    (`lvtrack.selection.SELECTION_METRIC`) with the spread beside them."""
    params = {"preset": req.preset.name, "seeds": seeds, "first_seed": req.seed}
    results: dict[int, dict[str, float]] = {}
    with parent_run(req.run_name, req.phase, params, req.preset.name):
        for seed in range(req.seed, req.seed + seeds):
            one = replace(req, seed=seed, run_name=f"{req.run_name} seed {seed}")
            results[seed] = train_run(one, True, settings_source, runs=seeds - len(results))
            if req.steps is None:  # the first run's budget-given steps, for every seed after it
                req = replace(req, steps=int(results[seed]["steps_run"]))
        spread = seed_spread(results)
        mlflow.log_metrics(spread)
        mlflow.log_dict({str(s): m for s, m in results.items()}, "seeds.json")
    best = min(results, key=lambda s: results[s].get(SELECTION_METRIC, np.inf))
    click.echo(
        f"{req.phase}: {seeds} seeds; the best on validation is seed {best}; "
        + ", ".join(
            f"{k} {spread[f'seeds_{k}_mean']:.4g} +- {spread[f'seeds_{k}_sd']:.2g}"
            for k in SPREAD_METRICS
            if f"seeds_{k}_mean" in spread
        ),
        err=True,
    )
    return {**results[best], "best_seed": float(best), **spread}


def seed_spread(results: dict[int, dict[str, float]]) -> dict[str, float]:
    """Mean, sample standard deviation, min and max of :data:`SPREAD_METRICS` over the runs."""
    out = {}
    for key in SPREAD_METRICS:
        values = np.array([m[key] for m in results.values() if np.isfinite(m.get(key, np.nan))])
        if len(values) < 2:
            continue
        out.update(
            {
                f"seeds_{key}_mean": float(values.mean()),
                f"seeds_{key}_sd": float(values.std(ddof=1)),
                f"seeds_{key}_min": float(values.min()),
                f"seeds_{key}_max": float(values.max()),
            }
        )
    return out


def prepare(req: TrainRequest, resume: Resume | None) -> Prepared:
    """The run's data (generated when missing); a resumed run in its own experiment, on its data."""
    if resume:
        follow_experiment(resume)
    prep = prepare_data(req.data_file)
    if resume and resume.data_digest and resume.data_digest != array_digest(prep.traj.values):
        raise click.ClickException(
            f"run {resume.run_id} trained on other data than {req.data_file} now holds (digest "
            f"{resume.data_digest}, now {array_digest(prep.traj.values)}); cannot resume it"
        )
    return prep


def planned(
    req: TrainRequest, prep: Prepared, experiment_id: str, resume: Resume | None, runs: int = 1
) -> tuple[TrainRequest, RunPlan, bool]:
    """The request with its steps (what the budget has left when it gives none), its FLOPs
    plan, and whether the budget chose the steps. Reads the base model's config only: the
    weights load once the ledger admits the plan."""
    try:
        shape: ModelShape = base_shape(req.preset.base_model)
    except BaseModelError as err:
        raise click.ClickException(str(err)) from None
    if resume:
        check_resumable_config(resume, asdict(req.train_config()))
    n_val, n_test = (len(prep.scored(split, req.preset.eval_series)) for split in ("val", "test"))
    decimals = prep.codec.decimals
    by_budget = req.steps is None
    if by_budget:  # as many steps as what is left of the budget affords
        req = steps_from_budget(req, shape, decimals, n_val, n_test, experiment_id, runs)
    return req, request_plan(req, shape, decimals, n_val, n_test), by_budget


@contextmanager
def admitted(
    req: TrainRequest,
    prep: Prepared,
    plan: RunPlan,
    by_budget: bool,
    settings_source: str,
    nested: bool,
    resume: Resume | None,
) -> Iterator[tuple[FlopsMeter, Path]]:
    """The run, once the ledger admits its plan (a child of `mlflow run`'s run when there is
    one); yields its meter and checkpoint folder, and closes it with what it spent."""
    params = req.to_params()
    tags = {
        "base_model": req.preset.base_model,
        **({"settings_from": settings_source} if settings_source else {}),
        **({TAG_STEPS_FROM: "budget"} if by_budget else {}),
    }
    parent_tags = {TAG_RESUMES: resume.run_id} if resume else {}
    with (
        entry_parent(req.phase, req.preset.name, req.run_name, parent_tags) as parent,
        budgeted_run(
            req.run_name,
            req.phase,
            req.preset,
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
        ckpt = resume.checkpoint_dir if resume else checkpoint_root() / run_id
        mlflow.set_tag(TAG_CHECKPOINTS, str(ckpt.resolve()))
        if parent is not None:
            MlflowClient().set_tag(parent.info.run_id, TAG_WORK_RUN, run_id)
        if resume:
            click.echo(
                f"resuming run {run_id} (attempt {meter.attempt}) from {resume.checkpoint}: "
                f"{resume.rework:.3e} FLOPs spent after that checkpoint are redone and counted",
                err=True,
            )
        yield meter, ckpt


def lora_model(
    spec: str, lora: LoraSettings, seed: int, bases: dict[str, tuple[Any, Any]] | None = None
) -> tuple[Any, Any]:
    """The base model `spec` wrapped with LoRA, its init drawn from `seed` (the same seed, the
    same run), and its tokenizer. With `bases` (spec -> loaded model and tokenizer, kept by the
    caller: a search worker), each base loads once and every call wraps a copy of it (LoRA wraps
    in place); loading takes seconds (about 4 s for Qwen2.5 on a GPU machine, docs/gpu.md), a
    copy of its bf16 weights on the device milliseconds."""
    try:
        if bases is None:
            base, tok = load_base(spec)
        else:
            if spec not in bases:
                bases[spec] = load_base(spec)
            base, tok = copy.deepcopy(bases[spec][0]), bases[spec][1]
    except BaseModelError as err:
        raise click.ClickException(str(err)) from None
    torch.manual_seed(seed)
    return apply_lora(base, lora), tok


def log_model_size(model: Any) -> None:
    """Trainable and total parameters, and the base model's shape, as parameters."""
    trainable, total = parameter_counts(model)
    described = describe_base(model.get_base_model())
    mlflow.log_params(
        {
            "trainable_params": trainable,
            "total_params": total,
            **{f"base_{k}": v for k, v in described.items()},
        }
    )


def resume_run(
    run_id: str, budget: float | None, given: dict[str, Any], defaults: dict[str, Any]
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
    result: FitResult,
    plan: RunPlan,
    meter: FlopsMeter | None = None,
) -> dict[str, float]:
    """After `fit`: score, log what the run spent, keep the adapter, register; the metrics.

    `flops_total` is what the run spent: the counted work plus the rework of a resumed run.
    """
    mlflow.flush_async_logging()  # the training rows first: the closing values are the latest
    meter = meter or FlopsMeter(counted=result.total_flops)
    final, eval_flops = score(req, prep, model, tok, result, meter)
    final.update(log_spending(req, result, plan, meter, eval_flops))
    with tempfile.TemporaryDirectory() as tmp:
        adapter = save_adapter(model, Path(tmp) / "adapter", req.lora())
        mlflow.log_artifacts(str(adapter), "adapter")
        mlflow.log_dict(prep.codec.to_dict(), "codec.json")
        if req.register:
            register(req, prep, adapter, final, result.steps)
    settings = {k: getattr(req.preset, k) for k in ("lr", "rank", "context_length")}
    describe_run(run_description(req.phase, settings, final))
    return final


def score(
    req: TrainRequest, prep: Prepared, model: Any, tok: Any, result: FitResult, meter: FlopsMeter
) -> tuple[dict[str, float], int]:
    """Forecast the validation split (and the test split) as the run's protocol says, from each
    of its origins; log each split's scores (at the headline origin beside the reference
    forecasters'); returns them and their FLOPs."""
    preset, final, eval_flops = req.preset, {}, 0
    for split in ("val", "test") if req.evaluate_test else ("val",):
        for origin in req.origins():
            ev = evaluate_llm(
                model,
                tok,
                prep.codec,
                prep.scored(split, preset.eval_series),
                origin,
                preset.horizon,
                preset.context_length,
                req.lora(),
                num_samples=req.eval_samples,
                temperature=preset.temperature,
                top_p=preset.top_p,
                seed=req.seed,
            )
            eval_flops += ev.flops
            meter.log(result.total_flops + eval_flops, result.steps)  # a failure later counts it
            if origin != preset.history_steps:
                final.update(log_origin(ev, split, preset.horizon, origin))
                continue
            run = mlflow.active_run()
            refs = (
                reference_step_errors(run.info.experiment_id, preset.name, split, preset.horizon)
                if run is not None
                else None
            )
            final.update(log_evaluation(ev, split, preset.horizon, prep.traj.time, refs))
    return final, eval_flops


def log_spending(
    req: TrainRequest, result: FitResult, plan: RunPlan, meter: FlopsMeter, eval_flops: int
) -> dict[str, float]:
    """The FLOPs the run spent (metrics, and `flops.json` by part against its plan), why it
    stopped, and its curves."""
    spent = {
        METRIC_FLOPS: meter.spent,
        "flops_train": float(result.train_flops),
        "flops_eval": float(result.eval_flops + eval_flops),
        METRIC_REWORK: meter.offset,
        "budget_share": meter.spent / req.preset.budget,
        "steps_run": float(result.steps),
    }
    mlflow.log_metrics(spent, step=result.steps)
    mlflow.set_tag("stopped", result.stopped)
    if result.history:
        mlflow.log_figure(plot_curves(result.history), "plots/curves.png")
    mlflow.log_dict(
        {
            "planned": plan.as_dict(),  # what the ledger reserved for this run, by part
            "train": result.train_flops,
            "eval_in_training": result.eval_flops,
            "eval_final": eval_flops,
            "counted": result.total_flops + eval_flops,
            "rework": meter.offset,
            "total": meter.spent,
            "budget": req.preset.budget,
        },
        "flops.json",
    )
    return spent


def register(
    req: TrainRequest, prep: Prepared, adapter: Path, final: dict[str, float], step: int
) -> None:
    """Log the forecaster (served as it was scored: the median of `eval_samples` samples) and
    register it; its validation and test scores become MLflow 3's model-linked metrics, so that
    the experiment's models page compares models by them."""
    preset = req.preset
    try:  # registration loads the logged model and forecasts with it: it must work
        info = log_forecaster(
            name=REGISTERED_MODEL,
            adapter_dir=adapter,
            codec=prep.codec,
            base_spec=preset.base_model,
            settings={
                "context_length": preset.context_length,
                "horizon": preset.horizon,
                "num_samples": req.eval_samples,
                "temperature": preset.temperature,
                "top_p": preset.top_p,
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
    headline = re.compile(rf"(val|test)_\w+_h{preset.horizon}(_lo|_hi)?")
    linked = {k: v for k, v in final.items() if headline.fullmatch(k)}
    mlflow.log_metrics(linked, step=step, model_id=info.model_id)
