"""Predicted wall time of each pipeline step, from :class:`lvmodel.walltime.Rates`.

The FLOPs plan (`lvtrack.experiment_plan.experiment_plan`) says what each budgeted phase may spend;
this says how long every step of `pipeline` takes on the machine the rates were measured on.
Each step: its entry point's process start (measured per entry point: their imports differ),
then its own work:

- training phases (`initial`, `sweep`, `context`, `final`): `lvmodel.walltime.run_seconds` of
  each run's request (the same config its FLOPs plan is made of); `final` at the step count,
  rank and context the FLOPs plan assumes (the preset's: the search's pick is not known
  before), with the range its training would take at the search space's other contexts and
  ranks (the budget fixes its FLOPs, the pick their seconds per FLOP);
- `search`: its trials spend its share of the budget (the ledger stops them there): the rung
  evaluations successive halving plans (`max(1, trials / eta**k)` at rung k, each a
  validation loss and a forecasting metric at the space's mean), the rest training at the mean
  seconds per training FLOP over the space's contexts and ranks; each rung two `fit` calls,
  each trial a run, the worker's one base load and windows per context, and the study's own
  set-up. An approximation: which contexts and ranks the sampler picks, and how many trials
  successive halving promotes, are known only once it runs;
- `baseline` and `report`: one forecast per context or table cell (the report's cells as
  `report_plan` counts them), each in a run of its own, the base loads, the report's page;
- `data`, `reference`, `promote`, `budget`: seconds measured by `lvtrack.rates_probe` (data
  generation, the reference forecasters, the registry and ledger reads);
- `pipeline`: the pipeline's own process and `mlflow run`'s work for each step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from lvflops import ModelShape, train_step_flops
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import plan_run
from lvmodel.walltime import Rates, dominant, forecast_seconds, run_seconds, val_loss_seconds
from lvtrack.pipeline_steps import STEPS
from lvtrack.presets import Preset
from lvtrack.report import cell_samples
from lvtrack.request import TrainRequest
from lvtrack.search_settings import SearchSettings, SearchSpace, first_rung_flops

#: The preset's target for its whole pipeline on one GPU (seconds), where it has one.
TARGETS = {"qwen": (600.0, "one H100")}


@dataclass(frozen=True)
class StepWall:
    """One pipeline step's predicted seconds, by part."""

    step: str
    parts: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    @property
    def dominated_by(self) -> str:
        return dominant(self.parts)


def _run(req: TrainRequest, rates: Rates, n_val: int, n_test: int) -> dict[str, float]:
    final = {"val": n_val, **({"test": n_test} if req.evaluate_test else {})}
    rs = run_seconds(req.train_config(), final, rates, req.eval_samples, req.register)
    return rs.parts()


def _add(total: dict[str, float], more: Mapping[str, float]) -> dict[str, float]:
    for k, v in more.items():
        total[k] = total.get(k, 0.0) + v
    return total


def training_wall(
    step: str, reqs: list[TrainRequest], rates: Rates, n_val: int, n_test: int, note: str = ""
) -> StepWall:
    """An entry point that runs `reqs` one after another in one process."""
    parts = {"process start": rates.process_start(step)}
    for req in reqs:
        _add(parts, _run(req, rates, n_val, n_test))
    return StepWall(step, parts, note)


def seconds_per_train_flop(
    rates: Rates, shape: ModelShape, context: int, batch: int, lora: LoraSettings
) -> float:
    """Seconds a training FLOP (as the plan counts them) takes at `context` with `lora`."""
    flops = train_step_flops(shape, context, batch, **lora.flops_kwargs()).total
    return rates.seconds_per_train_position(context) * batch * context / flops


def _space_loras(space: SearchSpace) -> list[tuple[int, LoraSettings]]:
    """(context, LoRA) of every combination the space holds."""
    return [
        (ctx, LoraSettings(rank=rank, targets=targets))
        for ctx in space.contexts
        for rank in space.ranks
        for targets in space.targets
    ]


def _mean_evaluation_flops(
    shape: ModelShape, preset: Preset, space: SearchSpace, decimals: int
) -> float:
    """A rung's scoring (validation loss, forecasting metric) at full windows, averaged over the
    space (`lvtrack.search.evaluation_flops` takes its largest context and rank instead)."""
    total = 0
    for ctx, lora in _space_loras(space):
        config = TrainConfig(
            steps=1, context_length=ctx, batch_size=preset.batch_size, eval_every=0,
            eval_windows=preset.eval_windows, forecast_every=0,
            forecast_series=preset.forecast_series, forecast_history=preset.history_steps,
            forecast_horizon=preset.horizon,
        )  # fmt: skip
        plan = plan_run(shape, config, lora, decimals, {}, preset.horizon)
        total += plan.val_loss + plan.val_forecast
    return total / len(_space_loras(space))


def search_wall(
    preset: Preset, shape: ModelShape, decimals: int, settings: SearchSettings, rates: Rates
) -> StepWall:
    """The search's predicted seconds (see the module docstring for the approximation): its
    trials spend its share of the budget (the ledger stops them there), the rung evaluations
    successive halving plans (`max(1, trials / eta**k)` at rung k) at the space's mean, the
    rest training at the mean seconds per training FLOP over the space."""
    space, eta = settings.space, settings.eta
    first_rung_flops(shape, preset, settings, decimals)  # refuses a share its rungs do not fit
    rung_runs = sum(max(1.0, settings.trials / eta**k) for k in range(settings.rungs))
    evaluation_flops = rung_runs * _mean_evaluation_flops(shape, preset, space, decimals)
    train_flops = max(settings.share * preset.budget - evaluation_flops, 0.0)
    per_flop = [
        seconds_per_train_flop(rates, shape, ctx, preset.batch_size, lora)
        for ctx, lora in _space_loras(space)
    ]
    evaluation = sum(
        val_loss_seconds(rates, ctx, preset.eval_windows)
        + forecast_seconds(rates, ctx, 1, preset.forecast_series)
        for ctx in space.contexts
    ) / len(space.contexts)
    parts = {
        "process start": rates.process_start("search"),
        "training": train_flops * sum(per_flop) / len(per_flop),
        "rung evaluations": rung_runs * evaluation,
        "fixed costs": rates.steps_s.get("search", 0.0)
        + rates.load_base_s  # once per worker; each trial a copy (`lvtrack.training_run.lora_model`)
        + len(space.contexts) * rates.windows_s  # once per worker and context
        + settings.trials * rates.run_fixed_s
        + 2 * rung_runs * rates.fit_fixed_s,
    }
    note = (
        f"{rung_runs:.1f} rung evaluations, {train_flops:.2e} training FLOPs at the mean rate "
        "over the space"
    )
    return StepWall("search", parts, note)


def final_range(
    final: StepWall, req: TrainRequest, shape: ModelShape, rates: Rates, space: SearchSpace
) -> tuple[float, float]:
    """(least, most) seconds of `final` if the search picks another context or rank: its
    training FLOPs (what the budget leaves) at each combination's seconds per FLOP."""
    p = req.preset
    planned = seconds_per_train_flop(rates, shape, p.context_length, p.batch_size, req.lora())
    others = [
        seconds_per_train_flop(rates, shape, ctx, p.batch_size, lora)
        for ctx, lora in _space_loras(space)
    ]
    train = final.parts.get("training", 0.0)
    rest = final.seconds - train
    return rest + train * min(others) / planned, rest + train * max(others) / planned


def forecast_runs_wall(
    step: str, cells: list[tuple[int, int]], n_series: int, loads: int, rates: Rates, note: str
) -> StepWall:
    """An entry point that loads `loads` models and forecasts `n_series` series for each
    (context, samples) in `cells`, each in a run of its own, logging each evaluation."""
    parts = {
        "process start": rates.process_start(step),
        "forecasts": sum(forecast_seconds(rates, c, s, n_series) for c, s in cells),
        "fixed costs": rates.steps_s.get(step, 0.0)
        + loads * rates.load_base_s
        + len(cells) * (rates.run_fixed_s + rates.eval_log_s),
    }
    return StepWall(step, parts, note)


def fixed_wall(step: str, rates: Rates, note: str = "") -> StepWall:
    """A step that is not budgeted: its process start and its measured seconds."""
    return StepWall(
        step,
        {"process start": rates.process_start(step), "work": rates.steps_s.get(step, 0.0)},
        note,
    )


def pipeline_walls(
    preset: Preset,
    shape: ModelShape,
    decimals: int,
    n_val: int,
    n_test: int,
    rates: Rates,
    final_steps: int,
    search: SearchSettings | None = None,
) -> list[StepWall]:
    """Every step of `pipeline` (with `search`, the search's; else the coursework's grid) in
    its order, and the pipeline's own process last; `final_steps` as the FLOPs plan has it."""

    def req(phase: str, steps: int, **kw: object) -> TrainRequest:
        return TrainRequest.from_preset(preset, phase, phase, steps, **kw)

    zero_shot = [(c, 1) for c in preset.contexts]
    walls: dict[str, StepWall] = {
        "data": fixed_wall("data", rates, "generate the data set, log it"),
        "reference": fixed_wall("reference", rates, "the reference forecasters, val and test"),
        "baseline": forecast_runs_wall(
            "baseline", zero_shot, n_val, 1, rates, f"{len(zero_shot)} zero-shot x {n_val} series"
        ),
        "initial": training_wall(
            "initial", [req("initial", preset.initial_steps)], rates, n_val, n_test
        ),
        "sweep": training_wall(
            "sweep",
            [
                req("sweep", preset.sweep_steps, lr=lr, rank=rank)
                for lr in preset.sweep_lrs
                for rank in preset.sweep_ranks
            ],
            rates,
            n_val,
            n_test,
        ),
        "context": training_wall(
            "context",
            [req("context", preset.context_steps, context_length=c) for c in preset.contexts],
            rates,
            n_val,
            n_test,
        ),
        "budget": fixed_wall("budget", rates, "the FLOPs table"),
    }
    if search is not None:
        walls["search"] = search_wall(preset, shape, decimals, search, rates)
    final = req("final", max(final_steps, 1), evaluate_test=True, register=True)
    finals = [final] * preset.final_seeds if final_steps else []  # each seed a run
    walls["final"] = training_wall("final", finals, rates, n_val, n_test)
    if search is not None and final_steps:
        low, high = final_range(walls["final"], final, shape, rates, search.space)
        walls["final"] = replace(
            walls["final"],
            note=f"{format_seconds(low)} to {format_seconds(high)} at the search's other "
            "contexts and ranks",
        )
    walls["report"] = report_wall(preset, n_test, rates)
    steps = STEPS["search" if search is not None else "grid"]
    per_step = rates.steps_s.get("mlflow_run", 0.0)
    pipeline = StepWall(
        "pipeline",
        {
            "process start": rates.process_start("pipeline"),
            "mlflow run per step": len(steps) * per_step,
        },
        "the pipeline's own process, `mlflow run`'s work for each step",
    )
    return [walls[s] for s in steps] + [pipeline]


def report_wall(preset: Preset, n_test: int, rates: Rates) -> StepWall:
    """The report's cells as `experiment_plan.report_plan` counts them: untrained and initial
    greedy at every context, the final model sampled at the contexts it did not score itself."""
    cells = [(c, 1) for c in preset.contexts for _ in ("untrained", "initial")]
    sampled = cell_samples("final", preset)
    cells += [(c, sampled) for c in preset.contexts if c != preset.context_length]
    return forecast_runs_wall(
        "report", cells, n_test, 3, rates, f"{len(cells)} table cells of {n_test} test series"
    )


def format_seconds(seconds: float) -> str:
    """`42 s`, `12.5 min` or `2.3 h`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def wall_summary(walls: list[StepWall], preset: Preset, rates: Rates) -> str:
    """The total, the steps that dominate it (with what dominates each), and the preset's
    target where it has one."""
    total = sum(w.seconds for w in walls)
    top = sorted(walls, key=lambda w: w.seconds, reverse=True)[:2]
    lines = [
        f"Predicted wall time of the pipeline: {format_seconds(total)} on {rates.device} "
        f"(rates of {rates.base}); the largest steps: "
        + "; ".join(
            f"{w.step} {format_seconds(w.seconds)} ({w.seconds / total:.0%}; {w.dominated_by})"
            for w in top
        )
        + "."
    ]
    if preset.name in TARGETS:
        limit, where = TARGETS[preset.name]
        met = total <= limit
        lines.append(
            f"Target: at most {format_seconds(limit)} on {where}: "
            + ("met." if met else f"NOT met ({total / limit:.1f}x); {top[0].step} dominates.")
        )
    return "\n".join(lines)
