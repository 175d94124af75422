"""The `report` run: fill the cells of the results table that no run measured (each a budgeted
child run, phase `report`), then write the report (`lvtrack.report_render`) with the FLOPs by
phase, the error against the step ahead and the final model's fan charts, and log it.

Apart from :mod:`lvtrack.report` (which cells exist, what filling them costs) so that the
training layer can import that without importing this (it uses `lvtrack.training_run`).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lvdata import LLMTimeCodec
from lvmodel.base import BaseModelError, base_shape, load_base
from lvmodel.evaluate import evaluate_llm
from lvmodel.intervals import Terms, difference_interval, value
from lvmodel.lora import adapter_settings, load_adapter
from lvtrack.budget_table import budget_table
from lvtrack.datafile import Prepared, prepare_data
from lvtrack.evaluation_log import log_common, log_evaluation
from lvtrack.plots import plot_step_errors
from lvtrack.presets import PRESETS, Preset
from lvtrack.report import (
    PHASE,
    SPLIT,
    TAG_CONTEXT,
    TAG_MODEL,
    TAG_SOURCE,
    THIS,
    Cell,
    Source,
    cell_samples,
    fill_bound,
    find_sources,
    list_cells,
    metric_keys,
)
from lvtrack.report_render import (
    differences_table,
    markdown_to_html,
    origins_table,
    reference_table,
    results_table,
    sources_list,
)
from lvtrack.runs import budgeted_run, parent_run
from lvtrack.selection import reference_runs, reference_step_errors, step_errors
from lvtrack.tracking import setup_tracking

SEED = 0  # of the fills' sampling: a rerun of the same cell draws the same samples


class Unfillable(Exception):
    """A source's model cannot be loaded (the reason is the message)."""


def _load(src: Source, prep: Prepared, workdir: Path) -> tuple[Any, Any, LLMTimeCodec, Any]:
    """(model, tokenizer, codec, lora) of a column's model."""
    codec = prep.codec
    adapter = None
    if src.run is not None:
        run_id = src.run.info.run_id
        if not MlflowClient().list_artifacts(run_id, "adapter"):
            raise Unfillable(f"run {run_id} logged no adapter/ artifact")
        adapter = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="adapter", dst_path=str(workdir / run_id)
            )
        )
        # An older run without codec.json: the experiment's codec (the same split and fit).
        with contextlib.suppress(MlflowException, OSError, ValueError):
            codec = LLMTimeCodec.from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/codec.json"))
    try:
        model, tok = load_base(src.base)
    except BaseModelError as err:
        raise Unfillable(f"the base model {src.base} cannot be loaded: {err}") from None
    if adapter is None:
        return model, tok, codec, None
    try:
        return load_adapter(model, adapter), tok, codec, adapter_settings(adapter)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise Unfillable(f"run {src.key}'s adapter cannot be loaded: {err}") from None


def fill_cells(cells: Iterable[Cell], prep: Prepared, preset: Preset, exp_id: str) -> None:
    """Evaluate each fillable cell on the test split in a budgeted child run of the active run;
    a cell that cannot be filled gets its reason (the model does not load, the budget refused)."""
    test = prep.scored(SPLIT, preset.eval_series)
    todo = [c for c in cells if c.fillable]
    refs = reference_step_errors(exp_id, preset.name, SPLIT, preset.horizon) if todo else {}
    by_source: dict[str, list[Cell]] = {}
    for c in todo:
        assert c.source is not None
        by_source.setdefault(c.source.key, []).append(c)
    with tempfile.TemporaryDirectory(prefix="lv-report-") as tmp:
        for group in by_source.values():
            src = group[0].source
            assert src is not None
            try:
                shape = base_shape(src.base)
                model, tok, codec, lora = _load(src, prep, Path(tmp))
            except (Unfillable, BaseModelError) as err:
                for c in group:
                    c.reason = str(err)
                continue
            if lora is not None:
                src = replace(src, lora=lora)  # what the adapter says it is
            for cell in group:
                cell.source = src
                planned = fill_bound(cell, preset, shape, codec.decimals, len(test))
                _fill_one(cell, (model, tok, codec), test, prep, preset, planned, refs)


def _fill_one(
    cell: Cell,
    loaded: tuple[Any, Any, LLMTimeCodec],
    test: Any,
    prep: Prepared,
    preset: Preset,
    planned: int,
    refs: dict[str, list[float]],
) -> None:
    src = cell.source
    assert src is not None
    model, tok, codec = loaded
    params = {
        "preset": preset.name,
        "base_model": src.base,
        "report_model": cell.column,
        "source_run": src.run.info.run_id if src.run is not None else "",
        "context_length": cell.context,
        "history_steps": preset.history_steps,
        "horizon": preset.horizon,
        "eval_series": preset.eval_series,
        "eval_samples": cell_samples(cell.column, preset),
        "temperature": preset.temperature,
        "top_p": preset.top_p,
        "seed": SEED,
        "budget": preset.budget,
    }
    tags = {
        TAG_MODEL: cell.column,
        TAG_CONTEXT: str(cell.context),
        TAG_SOURCE: src.key,
        "base_model": src.base,
    }
    entered = False
    try:
        with budgeted_run(
            f"report {cell.column} ctx{cell.context}",
            PHASE,
            preset,
            planned,
            lambda: log_common(prep, params),
            nested=True,
            tags=tags,
        ) as (run, meter):
            entered = True
            ev = evaluate_llm(
                model,
                tok,
                codec,
                test,
                preset.history_steps,
                preset.horizon,
                cell.context,
                src.lora,
                num_samples=cell_samples(cell.column, preset),
                temperature=preset.temperature,
                top_p=preset.top_p,
                seed=SEED,
            )
            meter.log(ev.flops, 0)
            logged = log_evaluation(ev, SPLIT, preset.horizon, prep.traj.time, refs)
            mlflow.log_metric("budget_share", ev.flops / preset.budget)
            run_id = run.info.run_id
    except click.ClickException as err:
        if entered:
            raise
        cell.reason = f"budget refused: {err.message.rstrip('.')}"
        return
    keys = metric_keys(preset.horizon)
    cell.metrics = {n: logged[k] for n, k in keys.items() if k in logged}
    cell.by, cell.how, cell.flops = run_id, THIS, int(ev.flops)


@dataclass
class Report:
    """What a report found, filled and wrote."""

    run_id: str
    experiment_id: str
    sources: dict[str, Source | str]
    cells: list[Cell]
    markdown: str
    html: str
    budget_metrics: dict[str, float]

    @property
    def filled(self) -> list[Cell]:
        """The cells this report evaluated."""
        return filled_cells(self.cells)

    @property
    def charged(self) -> int:
        return sum(c.flops for c in self.filled)


def filled_cells(cells: Iterable[Cell]) -> list[Cell]:
    """The cells this report evaluated (and charged)."""
    return [c for c in cells if c.how == THIS]


def references(exp_id: str, preset: Preset) -> dict[str, dict[str, float]]:
    """name -> the test metrics (`mse`, `mse_lo`, `mse_hi`, `mae`, ...) at the horizon of each
    reference forecaster's newest run."""
    keys = metric_keys(preset.horizon)
    out: dict[str, dict[str, float]] = {}
    for name, run in reference_runs(exp_id, preset.name).items():
        m = run.data.metrics
        if keys["mse"] in m:
            out[name] = {n: m[k] for n, k in keys.items() if k in m}
    return out


def series_scores(run_id: str | None, split: str = SPLIT) -> Terms | None:
    """The per-series terms a run's evaluation logged (`scores/{split}_series.json`), if any."""
    if not run_id:
        return None
    try:
        logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/scores/{split}_series.json")
    except (MlflowException, OSError):
        return None
    return {k: (np.asarray(v["num"]), np.asarray(v["den"])) for k, v in logged.items()}


def differences(
    exp_id: str, preset: Preset, final: Source | str, cells: list[Cell]
) -> list[tuple[str, float, float, float]]:
    """Paired differences of the test MSE (filled) over the same series: the final model against
    each reference forecaster, and at each context the final model against the initial one."""
    metric = "mse_filled"
    rows: list[tuple[str, float, float, float]] = []

    def pair(what: str, a: Terms | None, b: Terms | None) -> None:
        if a is None or b is None or metric not in a or metric not in b:
            return
        if len(a[metric][0]) != len(b[metric][0]):
            return  # scored on different series: not comparable pairwise
        diff = value(a, metric) - value(b, metric)
        rows.append((what, diff, *difference_interval(a, b, metric)))

    own = series_scores(final.key) if isinstance(final, Source) and final.run else None
    if isinstance(final, Source) and own is not None:
        for name, run in reference_runs(exp_id, preset.name).items():
            pair(f"final (ctx {final.context}) - {name}", own, series_scores(run.info.run_id))
    at = {(c.column, c.context): c for c in cells}
    for ctx in preset.contexts:
        f, i = at.get(("final", ctx)), at.get(("initial", ctx))
        if f and i and f.measured and i.measured:
            pair(f"final - initial (ctx {ctx})", series_scores(f.by), series_scores(i.by))
    return rows


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def figures(
    exp_id: str, preset: Preset, final: Source | str, workdir: Path
) -> tuple[dict[str, bytes], list[str]]:
    """The report's figures (artifact path -> PNG) and their markdown sections: the error
    against the step ahead of the final model and the reference forecasters on the test split,
    and the final model's fan charts (its run's `plots/fan_{test,val}.png`)."""
    images: dict[str, bytes] = {}
    lines = ["## Error against the step ahead (test)", ""]
    errors: dict[str, list[float]] = {}
    run = final.run if isinstance(final, Source) else None
    if isinstance(final, Source) and run is not None:
        if own := step_errors(run, SPLIT, preset.horizon):
            errors[f"LLM final (ctx {final.context})"] = own
        else:
            lines += [f"The final run `{final.key}` logged no per-step test errors.", ""]
    errors.update(reference_step_errors(exp_id, preset.name, SPLIT, preset.horizon))
    if errors:
        images["plots/step_errors_test.png"] = _png(plot_step_errors(errors, metric="MSE"))
        lines += ["![MSE against the step ahead](plots/step_errors_test.png)", ""]
    else:
        lines += ["No run logged per-step test errors (`test_mse_step{h}`).", ""]
    lines += ["## Fan charts of the final model", ""]
    if not isinstance(final, Source) or run is None:
        lines += [f"No final model: {final if isinstance(final, str) else 'none'}.", ""]
        return images, lines
    run_id = final.key
    logged = {f.path for f in MlflowClient().list_artifacts(run_id, "plots")}
    lines += [f"Run `{run_id}` ({final.note}): median of the samples, 10-90% band, truth.", ""]
    for split in (SPLIT, "val"):
        path = f"plots/fan_{split}.png"
        if path not in logged:
            lines += [f"Run `{run_id}` logged no fan chart of the {split} split (`{path}`).", ""]
            continue
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=str(workdir)
        )
        images[path] = Path(local).read_bytes()
        lines += [f"![fan chart, {split}]({path})", ""]
    return images, lines


def report_markdown(
    preset: Preset,
    exp_id: str,
    n_test: int,
    sources: dict[str, Source | str],
    cells: list[Cell],
    budget_md: str,
    figure_lines: list[str],
) -> str:
    h = preset.horizon
    filled = filled_cells(cells)
    empty = [c for c in cells if not c.measured]
    rows = differences(exp_id, preset, sources["final"], cells)
    diff_lines = (
        differences_table(rows)
        if rows
        else ["No pair of runs logged per-series test scores (`scores/test_series.json`)."]
    )
    lines = [
        f"# lv-forecast report: preset {preset.name}",
        "",
        f"Experiment id {exp_id}. Test split: {n_test} series, the first {preset.history_steps} "
        f"steps in, the next {h} out.",
        "",
        "## Test error by context length",
        "",
        f"MSE and MAE over the {h} steps ahead (h{h}) in original units, with invalid values "
        f"penalised by persistence: a value the model did not emit validly counts as the last "
        f"observed one (`test_mse_filled_h{h}`, `test_mae_filled_h{h}`). CRPS and the 80% "
        f"interval's coverage (cov80) where the evaluation was sampled: each column keeps its "
        f"phase's protocol, the untrained and initial models greedy, the final model the median "
        f"of {preset.eval_samples} continuations per series at temperature "
        f"{preset.temperature:g}, top-p {preset.top_p:g}. A mark [n] is a cell not scored by "
        "its model's own run.",
        "",
        *results_table(cells, preset.contexts),
        "",
        "Models:",
        "",
        *sources_list(sources),
        "",
        f"This report evaluated {len(filled)} cell(s), charged "
        f"{sum(c.flops for c in filled):.3e} FLOPs to the budget (phase `report`); "
        f"{len(empty)} cell(s) remain empty.",
        "",
        *origin_lines(preset, sources["final"]),
        "## Reference forecasters (test)",
        "",
        "Scored by the `reference` entry point (no LLM, no FLOPs charged) on the preset's own "
        f"test series ({PRESETS[preset.name].eval_series or 'all'}).",
        "",
        *reference_table(references(exp_id, preset), h),
        "",
        "## Differences (test MSE, paired)",
        "",
        "Each difference is bootstrapped over the same test series, drawn whole and together for "
        "both forecasts (2,000 resamples, BCa, `lvmodel.intervals`); a difference whose interval "
        "includes 0 is not resolved by this test set.",
        "",
        *diff_lines,
        "",
        "## FLOPs by phase",
        "",
        budget_md,
        "",
        *figure_lines,
    ]
    return "\n".join(lines).rstrip() + "\n"


def origin_lines(preset: Preset, final: Source | str) -> list[str]:
    """The final model's test scores from each of the preset's origins, when its run has them."""
    if not isinstance(final, Source) or final.run is None or len(preset.origins) < 2:
        return []
    run = final.run
    h = preset.horizon
    return [
        "## Test error by forecast origin",
        "",
        f"The final model (its own run, context {final.context}) scored on the same test series "
        f"from several points of each: the first K steps in, the next {h} out "
        f"(K = {preset.history_steps} is the headline). The context cuts a long history to its "
        "latest steps, so a later origin forecasts later dynamics rather than seeing more.",
        "",
        *origins_table(run.data.metrics, sorted(preset.origins), preset.history_steps, h),
        "",
    ]


def _table_metrics(cells: list[Cell]) -> dict[str, float]:
    return {
        f"{c.column}_{SPLIT}_{name}_ctx{c.context}": v
        for c in cells
        for name, v in c.metrics.items()
    }


def run_report(preset: Preset, data_file: str) -> Report:
    """Fill the table's missing cells, write the report and log it to a `report` run (tags
    phase=report, preset); returns what it found and wrote."""
    exp_id = setup_tracking()
    client = MlflowClient()
    prep = prepare_data(data_file)
    sources = find_sources(client, exp_id, preset)
    cells = list_cells(client, exp_id, preset, sources)
    n_test = len(prep.scored(SPLIT, preset.eval_series))
    params = {
        "preset": preset.name,
        "data_file": data_file,
        "eval_series": preset.eval_series,
        "eval_samples": preset.eval_samples,
    }
    with parent_run("report", PHASE, params, preset.name) as run:
        fill_cells(cells, prep, preset, exp_id)
        budget_md, budget_metrics = budget_table(exp_id, preset.budget)  # the fills included
        with tempfile.TemporaryDirectory(prefix="lv-report-") as tmp:
            images, figure_lines = figures(exp_id, preset, sources["final"], Path(tmp))
            md = report_markdown(preset, exp_id, n_test, sources, cells, budget_md, figure_lines)
            page = markdown_to_html(md, f"lv-forecast report: preset {preset.name}", images)
            for path, data in images.items():
                local = Path(tmp) / "out" / path
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
                mlflow.log_artifact(str(local), str(Path(path).parent))
        mlflow.log_text(md, "report.md")
        mlflow.log_text(page, "report.html")
        filled = filled_cells(cells)
        mlflow.log_metrics(
            {
                **budget_metrics,
                **_table_metrics(cells),
                "flops_this_report": float(sum(c.flops for c in filled)),
                "cells_filled": float(len(filled)),
                "cells_empty": float(sum(not c.measured for c in cells)),
            }
        )
        run_id = run.info.run_id
    return Report(run_id, exp_id, sources, cells, md, page, budget_metrics)
