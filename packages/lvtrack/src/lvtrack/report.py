"""The reference study's results table, from what the tracking store holds (`report` entry point).

Rows: the preset's context lengths; columns: the untrained base, the initial run and the final
model, each scored on the test split (MSE and MAE at the horizon, invalid values penalised by
persistence; CRPS and 80% coverage where sampled); beside it the reference forecasters.

One function lists the cells (:func:`list_cells`): which model fills each column
(:func:`find_sources`) and which run, if any, measured it already (the model's own run at its
context, a `baseline` run for the base model, or an earlier report's fill run). The report
evaluates the cells no run measured, each in a budgeted child run (phase `report`) charged to the
ledger (`lvtrack.report_run`, which also writes the report); what those fills will cost, for the
final run to leave room, is the report's phase of the plan (`lvtrack.experiment_plan.
report_reserve`), which reads the cells from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lvflops import ModelShape
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import forecast_bound
from lvtrack.presets import Preset
from lvtrack.registry import REGISTERED_MODEL
from lvtrack.selection import finished_runs

COLUMNS = ("untrained", "initial", "final")
SPLIT = "test"
PHASE = "report"
#: The fill runs' tags: which column, at which context, of which model (a run id, or `base:SPEC`).
TAG_MODEL = "lv.report.model"
TAG_CONTEXT = "lv.report.context"
TAG_SOURCE = "lv.report.source"
CHAMPION = "champion"
#: How a cell was measured (`Cell.how`).
OWN, BASELINE, EARLIER, THIS = "own run", "baseline run", "earlier report", "this report"
PENDING = "pending"  # the key of the final run `lvtrack.experiment_plan.report_reserve` assumes is about to be trained


def metric_keys(horizon: int) -> dict[str, str]:
    """Cell metric name -> the run metric it reads."""
    keys = {
        "mse": f"{SPLIT}_mse_filled_h{horizon}",
        "mae": f"{SPLIT}_mae_filled_h{horizon}",
        "crps": f"{SPLIT}_crps_h{horizon}",
        "coverage80": f"{SPLIT}_coverage80_h{horizon}",
    }
    # Their 95% series-bootstrap intervals (lvtrack.evaluation_log.log_evaluation).
    bounds = {f"{n}_{end}": f"{k}_{end}" for n, k in keys.items() for end in ("lo", "hi")}
    return keys | bounds


@dataclass(frozen=True)
class Source:
    """The model behind a column: a training run (LoRA on its base), or the base model alone."""

    column: str
    key: str  # the run id, or `base:SPEC` for the untrained base
    base: str
    lora: LoraSettings | None = None
    context: int | None = None  # the context the run scored the test split at itself
    run: Run | None = None
    note: str = ""


@dataclass
class Cell:
    """One column at one context: its metrics once measured, else why it is empty."""

    column: str
    context: int
    source: Source | None
    metrics: dict[str, float] = field(default_factory=dict)
    by: str = ""  # the run whose metrics these are
    how: str = ""  # OWN, BASELINE, EARLIER or THIS
    flops: int = 0  # what this report charged for it
    reason: str = ""  # why it is empty

    @property
    def measured(self) -> bool:
        return bool(self.metrics)

    @property
    def fillable(self) -> bool:
        return not self.measured and self.source is not None and not self.reason


def _read(run: Run, horizon: int) -> dict[str, float]:
    """The cell metrics a run logged (empty without the MSE)."""
    keys = metric_keys(horizon)
    got = {name: run.data.metrics[k] for name, k in keys.items() if k in run.data.metrics}
    return got if "mse" in got else {}


def _work_runs(client: MlflowClient, exp_id: str, phase: str, preset: str) -> list[Run]:
    """FINISHED runs of a phase, newest first, without the parent runs `mlflow run` makes."""
    runs = finished_runs(exp_id, phase, preset, client)
    return [r for r in runs if r.data.tags.get("lv.parent") != "true"]


def _trained(run: Run, column: str, preset: Preset, note: str) -> Source | str:
    p = run.data.params
    try:
        lora = LoraSettings(
            rank=int(p["rank"]),
            targets=tuple(p["lora_targets"].split(",")),
            lm_head_bias=p.get("lm_head_bias", "True") == "True",
        )
        context = int(p["context_length"])
    except (KeyError, ValueError) as err:
        return f"run {run.info.run_id} lacks the LoRA parameters to rebuild it ({err})"
    base = p.get("base_model") or preset.base_model
    note = f"{note}; context {context}, LoRA rank {lora.rank}"
    return Source(column, run.info.run_id, base, lora, context, run, note)


def _champion(client: MlflowClient) -> tuple[str, str] | None:
    """(run id, version) of the registered champion, if any."""
    try:
        mv = client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION)
    except MlflowException:
        return None
    return (mv.run_id, str(mv.version)) if mv.run_id else None


def _final_source(client: MlflowClient, exp_id: str, preset: Preset) -> Source | str:
    aside = ""
    if champion := _champion(client):
        run_id, version = champion
        try:
            run = client.get_run(run_id)
        except MlflowException:
            run = None
        if run is not None:
            own = run.info.experiment_id == exp_id and run.data.tags.get("preset") == preset.name
            if own:
                return _trained(
                    run, "final", preset, f"the champion, {REGISTERED_MODEL} v{version}"
                )
        aside = f"; the champion ({REGISTERED_MODEL} v{version}, run {run_id}) is not of this experiment and preset"
    runs = _work_runs(client, exp_id, "final", preset.name)
    if not runs:
        return f"no finished final run of preset {preset.name} in this experiment{aside}"
    return _trained(runs[0], "final", preset, f"the newest finished final run{aside}")


def untrained_source(base: str) -> Source:
    return Source("untrained", f"base:{base}", base, note=f"the base model `{base}`, zero-shot")


def find_sources(client: MlflowClient, exp_id: str, preset: Preset) -> dict[str, Source | str]:
    """The model of each column, or why there is none: untrained = the base of the final (else
    initial) run, else the preset's; initial = the newest finished `initial` run; final = the
    champion when it is of this experiment and preset, else the newest finished `final` run."""
    out: dict[str, Source | str] = {"final": _final_source(client, exp_id, preset)}
    runs = _work_runs(client, exp_id, "initial", preset.name)
    out["initial"] = (
        _trained(runs[0], "initial", preset, "the newest finished initial run")
        if runs
        else f"no finished initial run of preset {preset.name} in this experiment"
    )
    trained = [s for s in (out["final"], out["initial"]) if isinstance(s, Source)]
    out["untrained"] = untrained_source(trained[0].base if trained else preset.base_model)
    return out


def _measurements(
    client: MlflowClient, exp_id: str, preset: Preset
) -> dict[tuple[str, int], tuple[Run, str]]:
    """(source key, context) -> (newest finished run that measured it, how): earlier reports'
    fill runs and baseline runs that scored the test split."""
    out: dict[tuple[str, int], tuple[Run, str]] = {}
    fills = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{TAG_SOURCE}` != '' and tags.preset = '{preset.name}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    for run in fills:
        if _read(run, preset.horizon):
            t = run.data.tags
            out.setdefault((t[TAG_SOURCE], int(t.get(TAG_CONTEXT, -1))), (run, EARLIER))
    for run in _work_runs(client, exp_id, "baseline", preset.name):
        base, ctx = run.data.tags.get("base_model"), run.data.params.get("context_length")
        if base and ctx and _read(run, preset.horizon):
            out.setdefault((f"base:{base}", int(ctx)), (run, BASELINE))
    return out


def list_cells(
    client: MlflowClient, exp_id: str, preset: Preset, sources: dict[str, Source | str]
) -> list[Cell]:
    """Every cell of the table (contexts x columns), measured where a run scored it already."""
    found = _measurements(client, exp_id, preset)
    cells = []
    for ctx in preset.contexts:
        for column in COLUMNS:
            src = sources[column]
            if isinstance(src, str):
                cells.append(Cell(column, ctx, None, reason=src))
                continue
            cell = Cell(column, ctx, src)
            if (
                src.run is not None
                and src.context == ctx
                and (got := _read(src.run, preset.horizon))
            ):
                cell.metrics, cell.by, cell.how = got, src.key, OWN
            elif (src.key, ctx) in found:
                run, how = found[(src.key, ctx)]
                cell.metrics, cell.by, cell.how = _read(run, preset.horizon), run.info.run_id, how
            cells.append(cell)
    return cells


def cell_samples(column: str, preset: Preset) -> int:
    """Samples per series a column is scored with: each column keeps its phase's protocol, the
    untrained and initial models greedy (as `baseline` and `initial` score), the final model
    with the preset's `eval_samples` (as `final` scores; CRPS and coverage come with it)."""
    return preset.eval_samples if column == "final" else 1


def fill_bound(cell: Cell, preset: Preset, shape: ModelShape, decimals: int, n_test: int) -> int:
    """The most FLOPs filling `cell` can spend: its forecasts of the test series."""
    assert cell.source is not None
    return forecast_bound(
        shape,
        n_test,
        cell.context,
        preset.horizon,
        decimals,
        cell.source.lora,
        num_samples=cell_samples(cell.column, preset),
    )
