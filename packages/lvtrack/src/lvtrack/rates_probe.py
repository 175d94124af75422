"""Measure a machine's rates for a wall-time plan (`plan --measure-rates`).

`lvmodel.walltime.measure_rates` times the model's work (training, validation loss, forecasts,
loading the base); this adds what the runs around it cost on this machine and its tracking
store, each timed on the project's own functions against a throwaway SQLite store in a
temporary folder (never the user's):

- `run_fixed_s`: a budgeted run opened (tags, parameters, the data set, the ledger's
  reservation) and closed, with what `finish_run` logs beside the evaluations (the curves plot,
  FLOPs JSON, the adapter);
- `eval_log_s`: one evaluation logged (metrics, the forecast plot, the step-error plot);
- `register_s`: `log_forecaster` of the adapter (the pyfunc is logged, loaded back and
  forecasts once) and its registration;
- `steps_s`: `data` (generating `n_systems` series and logging them), `reference` (the
  reference forecasters' fit and forecasts of val and test, and their runs), `promote`,
  `budget` (the ledger's table), `report` (its own run, the table and the page beyond its cells),
  `search` (its Optuna study in a new SQLite storage, its parent run and plots);
- with the project's folder, `mlflow_run_budget_s`: the `budget` step run as `pipeline` runs a
  step (`mlflow.projects.run`, local environment): `mlflow run`'s own work is what it takes
  beyond the entry point's process start and the budget table.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import mlflow
import numpy as np
import optuna
import torch

from lvmodel.base import load_base
from lvmodel.evaluate import Evaluation
from lvmodel.lora import LoraSettings, apply_lora, save_adapter
from lvmodel.metrics import baseline_forecasts, protocol_split, score
from lvmodel.tiny import cache_root
from lvmodel.walltime import Rates, measure_process_start, measure_rates, measure_reference
from lvtrack.budget_table import budget_table
from lvtrack.datafile import Prepared, prepare_data
from lvtrack.evaluation_log import log_common, log_evaluation
from lvtrack.plots import plot_curves, plot_rungs, plot_search_history, plot_series_grid
from lvtrack.presets import Preset
from lvtrack.registry import REGISTERED_MODEL, RegistryError, log_forecaster, promote
from lvtrack.report_render import markdown_to_html
from lvtrack.request import TrainRequest
from lvtrack.runs import budgeted_run
from lvtrack.search import open_storage
from lvtrack.tracking import setup_tracking

_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@contextlib.contextmanager
def throwaway_store(root: Path) -> Iterator[str]:
    """A fresh SQLite tracking store and experiment under `root` (the working directory while
    inside, so artifacts land there too); the environment and tracking URI are restored after."""
    saved = {k: os.environ.get(k) for k in _ENV}
    before, cwd = mlflow.get_tracking_uri(), os.getcwd()
    for k in _ENV:
        os.environ.pop(k, None)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "lv-rates-probe"
    os.chdir(root)
    try:
        yield setup_tracking()
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mlflow.set_tracking_uri(before)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 pointed at 2 for a block (subprocesses inherit it)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _evaluation(series: np.ndarray, train: np.ndarray, preset: Preset) -> Evaluation:
    """Persistence forecasts of `series` as an LLM evaluation (what gets logged, not how)."""
    hist, truth = protocol_split(series, preset.history_steps, preset.horizon)
    pred = baseline_forecasts(hist, preset.horizon, train)["persistence"]
    return Evaluation(score(pred, hist, truth), hist, truth, pred)


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_tracking(
    prep: Prepared,
    preset: Preset,
    base: Any,
    tokenizer: Any,
    base_spec: str,
    lora: LoraSettings,
    n_systems: int,
    say: Any = lambda message: None,
    project_dir: Path | None = None,
) -> dict[str, Any]:
    """The fixed seconds listed in the module docstring, as `lvmodel.walltime.Rates` fields.

    `base`/`tokenizer` are the loaded base (wrapped with `lora` here for an adapter to log);
    `base_spec` is what the registered model refers to (it is loaded again by the check).
    """
    val, test = prep.scored("val", preset.eval_series), prep.scored("test", preset.eval_series)
    params = {"preset": preset.name, "probe": "rates"}
    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="lv-rates-probe-") as tmp,
        throwaway_store(Path(tmp)) as exp_id,
    ):
        adapter = save_adapter(apply_lora(base, lora), Path(tmp) / "adapter", lora)
        out["run_fixed_s"], out["eval_log_s"] = _logging_seconds(prep, preset, adapter, params)
        say(f"a budgeted run's open and close {out['run_fixed_s']:.2f} s; "
            f"one logged evaluation {out['eval_log_s']:.2f} s")  # fmt: skip
        out["register_s"], steps = _registry_seconds(prep, preset, adapter, base_spec, exp_id)
        steps["report"] = (
            out["run_fixed_s"]
            + steps["budget"]
            + _timed(lambda: markdown_to_html("# report\n\n| a |\n|---|\n| 1 |\n", "probe", {}))
        )
        say(f"register {out['register_s']:.1f} s, promote {steps['promote']:.2f} s, "
            f"budget table {steps['budget']:.2f} s")  # fmt: skip
        steps["data"], study_s = _data_and_study_seconds(Path(tmp), n_systems, params)
        computed = measure_reference(
            prep.series("train"), prep.traj.time, [val, test], preset.history_steps,
            preset.horizon,
        )  # fmt: skip
        # Each forecaster's run: a plain run (no ledger) with its val and test evaluations.
        steps["reference"] = sum(computed.values()) + len(computed) * 2 * out["eval_log_s"]
        steps["search"] = out["run_fixed_s"] + study_s
        out["steps_s"], out["measured_reference_s"] = steps, computed
        say(f"data {steps['data']:.1f} s, reference forecasters {computed}")
        if project_dir is not None:
            with _stdout_to_stderr():  # the step prints its table: not into this one's output
                out["mlflow_run_budget_s"] = _timed(
                    lambda: mlflow.projects.run(
                        str(project_dir), entry_point="budget", parameters={"preset": preset.name},
                        env_manager="local", experiment_id=exp_id, synchronous=True,
                    )
                )  # fmt: skip
            say(f"the budget step through `mlflow run`: {out['mlflow_run_budget_s']:.1f} s")
    return out


def _logging_seconds(
    prep: Prepared, preset: Preset, adapter: Path, params: dict[str, Any]
) -> tuple[float, float]:
    """A budgeted run's opening and closing (what `finish_run` logs beside the evaluations),
    and one logged evaluation; each the mean of two after a first that sets the store up."""
    ev = _evaluation(prep.scored("val", preset.eval_series), prep.series("train"), preset)
    history = [{"step": i, "train_loss": 1.0 / (i + 1), "lr": 1e-3} for i in range(1, 300)]

    def training_run() -> None:
        with budgeted_run("probe", "probe", preset, 1, lambda: log_common(prep, params)) as (
            _,
            meter,
        ):
            meter.log(1.0, 1)
            mlflow.log_figure(plot_curves(history), "plots/curves.png")
            mlflow.log_dict({"total": 1}, "flops.json")
            mlflow.log_artifacts(str(adapter), "adapter")

    def logged_evaluation() -> None:
        with mlflow.start_run(run_name="probe eval"):
            refs = {"persistence": [0.1] * preset.horizon}
            log_evaluation(ev, "val", preset.horizon, prep.traj.time, refs)

    training_run()  # the store's first run: schema, experiment, lazy imports
    run_s = [_timed(training_run) for _ in range(2)]
    eval_s = [_timed(logged_evaluation) for _ in range(2)]
    return sum(run_s) / len(run_s), sum(eval_s) / len(eval_s)


def _registry_seconds(
    prep: Prepared, preset: Preset, adapter: Path, base_spec: str, exp_id: str
) -> tuple[float, dict[str, float]]:
    """Logging and registering the forecaster; the promote and budget steps' own seconds."""

    def register() -> None:
        with mlflow.start_run(run_name="probe register"):
            mlflow.log_metric("val_mse_filled_h5", 0.1)
            log_forecaster(
                adapter_dir=adapter, codec=prep.codec, base_spec=base_spec,
                settings={"context_length": preset.context_length, "horizon": preset.horizon},
                registered_model_name=REGISTERED_MODEL,
            )  # fmt: skip

    def promoted() -> None:
        with mlflow.start_run(run_name="probe promote"), contextlib.suppress(RegistryError):
            promote(REGISTERED_MODEL)

    register_s = _timed(register)
    steps = {
        "promote": _timed(promoted),
        "budget": _timed(lambda: budget_table(exp_id, preset.budget)),
    }
    return register_s, steps


def _data_and_study_seconds(
    tmp: Path, n_systems: int, params: dict[str, Any]
) -> tuple[float, float]:
    """The data step (generate, log, plot) and the search's own set-up (its study, its parent
    run, its two plots)."""

    def data() -> None:
        made = prepare_data(tmp / "data.h5", n_systems=n_systems)
        with mlflow.start_run(run_name="probe data"):
            log_common(made, params)
            fig = plot_series_grid(made.traj.time, made.series("val")[:6], title="val")
            mlflow.log_figure(fig, "series.png")

    def study() -> None:
        storage = open_storage(f"sqlite:///{tmp / 'optuna.db'}")
        optuna.create_study(study_name="probe", storage=storage, direction="minimize")
        with mlflow.start_run(run_name="probe search"):
            mlflow.log_figure(plot_search_history([]), "plots/history.png")
            mlflow.log_figure(plot_rungs([], [1.0, 3.0, 9.0]), "plots/rungs.png")

    return _timed(data), _timed(study)


def rates_cache(preset: str, base: str) -> Path:
    """Where `plan --measure-rates` keeps what it measured: the project's cache folder
    ($LV_CACHE_DIR, else ~/.cache/lv-forecast, where the tiny base lives),
    `rates/<preset>-<base>.json`."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_")[-60:]
    return cache_root() / "rates" / f"{preset}-{slug}.json"


def measure_pipeline_rates(
    preset: Preset,
    base: str,
    n_series: int,
    data_file: str,
    entry_points: Mapping[str, str],
    project_dir: Path | None = None,
) -> Rates:
    """The rates of this machine for the preset's pipeline: lvmodel's training, validation-loss
    and forecasting timed at the preset's contexts and sample counts with its base, batch and
    LoRA (`lvmodel.walltime.measure_rates`, on `data_file` if it exists, else on `n_series`
    series generated into a temporary folder), the MLflow layer's fixed costs
    (:func:`measure_tracking`), and the process start of each step's entry point
    (`entry_points`: step -> module, e.g. `projects.final`, run from the working directory)."""

    def say(message: str) -> None:
        click.echo(f"measure-rates: {message}", err=True)

    with tempfile.TemporaryDirectory(prefix="lv-rates-") as tmp:
        data = Path(data_file) if Path(data_file).is_file() else Path(tmp) / "data.h5"
        prep = prepare_data(data, n_systems=n_series)
        lora = TrainRequest.from_preset(preset, "initial", "initial", 1).lora()
        val = prep.scored("val", preset.eval_series)
        rates = measure_rates(
            lambda: load_base(base),
            prep.codec,
            prep.series("train"),
            val,
            contexts=preset.contexts,
            samples=sorted({1, preset.eval_samples}),
            batch_size=preset.batch_size,
            lora=lora,
            eval_windows=preset.eval_windows,
            forecast_sizes=(min(preset.forecast_series, len(val) // 2), len(val)),
            history_steps=preset.history_steps,
            horizon=preset.horizon,
            train_steps=10,  # 5 timed steps vary by +-6% from call to call on 2 CPU cores
            warmup_steps=3,
            device=f"this machine ({'cuda' if torch.cuda.is_available() else 'cpu'}, "
            f"{torch.get_num_threads()} torch threads)",
            base=base,
            say=say,
        )
        model, tok = load_base(base)
        probe = measure_tracking(prep, preset, model, tok, base, lora, n_series, say, project_dir)
    rates.run_fixed_s, rates.eval_log_s = probe["run_fixed_s"], probe["eval_log_s"]
    rates.register_s = probe["register_s"]
    rates.steps_s.update(probe["steps_s"])
    rates.measured["reference_s"] = probe["measured_reference_s"]
    # Each step's own entry point: their imports differ (`data` and `promote` need no torch).
    for step, module in entry_points.items():
        rates.process_start_by_step[step] = measure_process_start([module], repeats=1)
    starts = rates.process_start_by_step
    rates.process_start_s = starts.get("final", max(starts.values(), default=0.0))
    say(f"process starts: { {k: round(v, 1) for k, v in starts.items()} }")
    if "mlflow_run_budget_s" in probe:  # `mlflow run`'s own work for a step
        rates.measured["mlflow_run_budget_s"] = run = probe["mlflow_run_budget_s"]
        beyond = run - rates.process_start("budget") - rates.steps_s["budget"]
        rates.steps_s["mlflow_run"] = max(beyond, 0.0)
    return rates


def rates_for(
    rates_file: str,
    measure: bool,
    preset: Preset,
    base: str,
    n_series: int,
    data_file: str,
    entry_points: Mapping[str, str],
    project_dir: Path | None = None,
) -> Rates | None:
    """`plan`'s rates: read from `rates_file` (a bad one is a `click.BadParameter` naming
    `--rates`), else with `measure` measured here (:func:`measure_pipeline_rates`) and kept in
    :func:`rates_cache`, else None."""
    if rates_file:
        try:
            return Rates.from_json(rates_file)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise click.BadParameter(f"{rates_file}: {err}", param_hint="--rates") from None
    if not measure:
        return None
    t0 = time.perf_counter()
    rates = measure_pipeline_rates(preset, base, n_series, data_file, entry_points, project_dir)
    path = rates_cache(preset.name, base)
    rates.to_json(path)
    click.echo(
        f"rates measured in {time.perf_counter() - t0:.0f} s, kept in {path} "
        f"(next time: --rates {path})",
        err=True,
    )
    return rates
