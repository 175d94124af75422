"""FLOPs plans of runs and of a whole experiment, before anything runs.

One plan per run, computed once: :func:`request_plan` (a training run: `lvmodel.plan_run` on the
request's settings) and :func:`baseline_plan` (zero-shot evaluations). `train_run` reserves
the first in the ledger, the `baseline` entry point the second, and :func:`experiment_plan` adds
them up over the preset's phases for the `plan` entry point. A run given a budget instead of a
step count gets its steps here (:func:`steps_from_budget`), after the report's phase: what the
report will need for the table cells no run has measured yet (:func:`report_reserve`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import click
from mlflow.tracking import MlflowClient

from lvflops import ModelShape
from lvmodel.lora import LoraSettings
from lvmodel.run_plan import RunPlan, affordable_steps, forecast_bound, plan_run
from lvtrack.ledger import open_ledger
from lvtrack.presets import Preset
from lvtrack.report import (
    PENDING,
    Source,
    cell_samples,
    fill_bound,
    find_sources,
    list_cells,
    untrained_source,
)
from lvtrack.request import TrainRequest
from lvtrack.search_settings import SearchSettings, first_rung_flops
from lvtrack.wall_plan import StepWall, format_seconds


def request_plan(
    req: TrainRequest, shape: ModelShape, decimals: int, n_val: int, n_test: int
) -> RunPlan:
    """The most FLOPs the training run `req` can spend: training at full windows, its in-run
    evaluations, and its final forecasts of `n_val` validation (and `n_test` test) series from
    each of its origins (`TrainRequest.origins`: a forecast's bound does not depend on its
    history, only on the context it is cut to)."""
    k = len(req.origins())
    final = {"val": k * n_val, **({"test": k * n_test} if req.evaluate_test else {})}
    return plan_run(
        shape,
        req.train_config(),
        req.lora(),
        decimals,
        final,
        req.preset.horizon,
        final_samples=req.eval_samples,
    )


def budget_steps(
    req: TrainRequest, shape: ModelShape, decimals: int, n_val: int, n_test: int, flops: float
) -> int:
    """The most steps `req` can train with its whole plan (training, in-run and final
    evaluations) within `flops`: the length of a run whose budget, not a step count, is given
    (`steps` None, what `final` does by default). 0 when not even one step fits."""
    return affordable_steps(
        flops, lambda steps: request_plan(replace(req, steps=steps), shape, decimals, n_val, n_test)
    )


def steps_from_budget(
    req: TrainRequest,
    shape: ModelShape,
    decimals: int,
    n_val: int,
    n_test: int,
    experiment_id: str,
    runs: int = 1,
) -> TrainRequest:
    """`req` with the most steps whose plan fits what the experiment's ledger has left (an
    equal share of it, for the first of `runs` runs with the same settings: `final`'s seeds).

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
            req.preset.context_length,
            req.preset.base_model,
        )
        left -= kept
    steps = budget_steps(req, shape, decimals, n_val, n_test, left // runs)
    if steps == 0:
        one = request_plan(replace(req, steps=1), shape, decimals, n_val, n_test).total
        raise click.ClickException(
            f"the budget has {max(left, 0):.3e} FLOPs left of {req.preset.budget:.3e}: not enough "
            f"for one training step and the run's evaluations ({one:.3e}). Raise the budget or "
            "use another experiment (see `mlflow run . -e budget` for what was spent)."
        )
    click.echo(
        f"{req.phase}: {steps} steps, what "
        + (f"1/{runs} of " if runs > 1 else "")
        + f"the {left:.3e} FLOPs left of the budget affords (training, in-run and final "
        "evaluations)" + (f"; {kept:.3e} kept for the report's other cells" if kept else ""),
        err=True,
    )
    return replace(req, steps=steps)


def report_reserve(
    experiment_id: str,
    preset: Preset,
    shape: ModelShape,
    decimals: int,
    n_test: int,
    final_lora: LoraSettings,
    final_context: int,
    base: str = "",
) -> int:
    """The FLOPs the report will need to fill the cells no run measured, assuming a final run
    (LoRA `final_lora` on `base`, default the runs' base) is about to train and score the test
    split at `final_context` itself: its other contexts, and the cells of the other columns no
    run measured yet."""
    client = MlflowClient()
    sources = find_sources(client, experiment_id, preset)
    untrained = sources["untrained"]
    assert isinstance(untrained, Source)
    base = base or untrained.base
    sources["untrained"] = untrained_source(base)
    sources["final"] = Source("final", PENDING, base, final_lora, final_context)
    cells = list_cells(client, experiment_id, preset, sources)
    return sum(
        fill_bound(c, preset, shape, decimals, n_test)
        for c in cells
        if c.fillable and not (c.column == "final" and c.context == final_context)
    )


def report_plan(
    preset: Preset, shape: ModelShape, decimals: int, n_test: int, final_context: int
) -> int:
    """The most the `report` can spend filling the reference study's table when no run scored
    any of it on the test split but `final` (at `final_context`): the untrained base and the
    initial model at every context of the preset (greedy, as their own runs score), the final
    model at the others (`eval_samples` samples, as `final` scores). `report_reserve`
    is the same sum over the cells a given experiment has not measured yet."""
    initial = TrainRequest.from_preset(preset, "initial", "initial", 1).lora()
    final = TrainRequest.from_preset(preset, "final", "final", 1).lora()
    columns = (("untrained", None), ("initial", initial))
    cells = [(ctx, column, lora) for ctx in preset.contexts for column, lora in columns]
    cells += [(ctx, "final", final) for ctx in preset.contexts if ctx != final_context]
    return sum(
        forecast_bound(
            shape, n_test, ctx, preset.horizon, decimals, lora, num_samples=cell_samples(c, preset)
        )
        for ctx, c, lora in cells
    )


def baseline_plan(
    preset: Preset, shape: ModelShape, decimals: int, n_val: int, context_length: int
) -> int:
    """The most FLOPs a zero-shot evaluation of `n_val` series at `context_length` can spend."""
    return forecast_bound(shape, n_val, context_length, preset.horizon, decimals)


@dataclass(frozen=True)
class PhasePlan:
    """A phase's runs and planned FLOPs; `steps` the optimizer steps `final` is planned at;
    with rates, the predicted wall `seconds` and what dominates them (`lvtrack.wall_plan`)."""

    phase: str
    runs: int
    flops: int
    note: str = ""
    steps: int = 0
    seconds: float | None = None
    wall: str = ""


def experiment_plan(
    preset: Preset,
    shape: ModelShape,
    decimals: int,
    n_val: int,
    n_test: int,
    search: SearchSettings | None = None,
) -> list[PhasePlan]:
    """Each phase of the pipeline as the preset runs it: the runs it starts and their plans.

    The sweep's cells use their own lr and rank; the context runs and `final` use the preset's
    rank (they take the sweep's best, unknown before it runs: a rank above the preset's costs
    a little more LoRA arithmetic, noted in the table). With `search`, the search takes the
    place of sweep and context, planned at its share of the budget (what its trials may hold).
    """

    def plan(phase: str, steps: int, **overrides: object) -> int:
        req = TrainRequest.from_preset(preset, phase, phase, steps, **overrides)
        return request_plan(req, shape, decimals, n_val, n_test).total

    sweep = [
        plan("sweep", preset.sweep_steps, lr=lr, rank=rank)
        for lr in preset.sweep_lrs
        for rank in preset.sweep_ranks
    ]
    contexts = [
        plan("context", preset.context_steps, context_length=ctx) for ctx in preset.contexts
    ]
    at_rank = f"at rank {preset.rank}"
    before = [
        PhasePlan(
            "baseline",
            len(preset.contexts),
            sum(baseline_plan(preset, shape, decimals, n_val, c) for c in preset.contexts),
        ),
        PhasePlan("initial", 1, plan("initial", preset.initial_steps)),
    ]
    if search is None:
        before += [
            PhasePlan("sweep", len(sweep), sum(sweep)),
            PhasePlan("context", len(contexts), sum(contexts), at_rank),
        ]
    else:
        r0 = first_rung_flops(shape, preset, search, decimals)
        before.append(
            PhasePlan(
                "search",
                search.trials,
                int(search.share * preset.budget),
                f"{search.sampler}: {search.trials} trials, {search.rungs} rungs of "
                f"{r0:.2e} x {search.eta}^k training FLOPs",
            )
        )
    note = f"{at_rank}, context {preset.context_length}"
    report = PhasePlan(
        "report",
        1,
        report_plan(preset, shape, decimals, n_test, preset.context_length),
        "the table's cells no run scored on test (untrained, initial; final at other contexts)",
    )
    steps, seeds = preset.final_steps, preset.final_seeds
    if steps is None:  # what is left after the other phases and the report, shared by the seeds
        final = TrainRequest.from_preset(preset, "final", "final", None, evaluate_test=True)
        left = preset.budget - sum(p.flops for p in before) - report.flops
        steps = budget_steps(final, shape, decimals, n_val, n_test, left // seeds)
        note = f"{steps} steps: what the budget has left; {note}"
    if seeds > 1:
        note = f"{seeds} seeds of {note}"
    final_flops = plan("final", steps, evaluate_test=True) if steps else 0
    runs = seeds if steps else 0
    return [*before, PhasePlan("final", runs, runs * final_flops, note, steps), report]


def with_walls(phases: list[PhasePlan], walls: Sequence[StepWall]) -> list[PhasePlan]:
    """The phases with their steps' predicted wall time (`seconds`) and what dominates it."""
    by_step = {w.step: w for w in walls}
    return [
        replace(p, seconds=by_step[p.phase].seconds, wall=by_step[p.phase].dominated_by)
        if p.phase in by_step
        else p
        for p in phases
    ]


def plan_table(phases: list[PhasePlan], budget: float, walls: Sequence[StepWall] = ()) -> str:
    """A markdown table: phase, runs, planned FLOPs, share of the budget; the total and what the
    plan leaves unspent. With `walls` (every pipeline step's predicted wall time, in its order:
    `lvtrack.wall_plan.pipeline_walls`), a predicted-wall column, the steps that are not budgeted
    phases in their place, and the total wall time."""
    if not walls:
        lines = [
            "| phase | runs | planned FLOPs | share of budget | note |",
            "|---|---:|---:|---:|---|",
        ]
        for p in phases:
            lines.append(
                f"| {p.phase} | {p.runs} | {p.flops:.3e} | {p.flops / budget:.2%} | {p.note} |"
            )
    else:
        lines = [
            "| phase | runs | planned FLOPs | share of budget | predicted wall | note |",
            "|---|---:|---:|---:|---:|---|",
        ]
        by_phase = {p.phase: p for p in phases}
        for w in walls:
            wall = f"{format_seconds(w.seconds)} | wall: {w.dominated_by}"
            if (ph := by_phase.get(w.step)) is None:
                lines.append(f"| {w.step} | | | | {wall}; not budgeted: {w.note} |")
                continue
            share = f"{ph.flops / budget:.2%}"
            note = "".join(f"; {n}" for n in (w.note, ph.note) if n)
            lines.append(f"| {ph.phase} | {ph.runs} | {ph.flops:.3e} | {share} | {wall}{note} |")
    total = sum(p.flops for p in phases)
    runs = sum(p.runs for p in phases)
    wall_total = f" {format_seconds(sum(w.seconds for w in walls))} |" if walls else ""
    lines.append(f"| **total** | {runs} | {total:.3e} | {total / budget:.2%} |{wall_total} |")
    before_final = total - sum(p.flops for p in phases if p.phase in ("final", "report"))
    lines.append(
        f"\nBudget {budget:.3e} FLOPs; the plan leaves {budget - total:.3e} unspent "
        f"({(budget - total) / budget:.2%}); before `final` and `report`, "
        f"{budget - before_final:.3e} remain."
    )
    return "\n".join(lines)
