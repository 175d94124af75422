"""`baseline` entry point: the untrained base model, zero-shot, at each context length."""

from __future__ import annotations

import json
from typing import Any

import click
import mlflow

from lvmodel.base import BaseModelError, base_shape, describe_base, load_base
from lvmodel.evaluate import evaluate_llm
from lvtrack.datafile import prepare_data
from lvtrack.describe import describe_run, parent_description, run_description
from lvtrack.evaluation_log import log_common, log_evaluation
from lvtrack.experiment_plan import baseline_plan
from lvtrack.options import (
    CONTEXTS,
    base_option,
    data_option,
    eval_series_option,
    preset_option,
    preset_value,
)
from lvtrack.presets import get_preset
from lvtrack.runs import budgeted_run, parent_run
from lvtrack.selection import SELECTION_METRIC


@click.command()
@preset_option
@base_option
@data_option
@preset_value("contexts", CONTEXTS, "--contexts", "Comma-separated context lengths")
@eval_series_option
def main(
    preset: str,
    base_model: str | None,
    data_file: str,
    contexts: tuple[int, ...] | None,
    eval_series: int | None,
) -> None:
    """Zero-shot forecasts of the validation split at each context length (budgeted: generation
    FLOPs count)."""
    p = get_preset(preset, base_model=base_model, eval_series=eval_series, contexts=contexts)
    sizes, base = p.contexts, p.base_model
    prep = prepare_data(data_file)
    try:
        shape = base_shape(base)  # plans need the config only; weights load once a run is admitted
    except BaseModelError as err:
        raise click.ClickException(str(err)) from None
    loaded: list[Any] = []

    def model_and_tokenizer() -> tuple[Any, Any]:
        if not loaded:
            try:
                loaded.extend(load_base(base))
            except BaseModelError as err:
                raise click.ClickException(str(err)) from None
        return loaded[0], loaded[1]

    val = prep.scored("val", p.eval_series)
    scores = {}
    with parent_run(
        "baseline",
        "baseline",
        {"preset": p.name, "base_model": base, "contexts": ",".join(map(str, sizes))},
        p.name,
    ):
        for ctx in sizes:
            planned = baseline_plan(p, shape, prep.codec.decimals, len(val), ctx)
            params: dict[str, object] = {
                "preset": p.name,
                "base_model": base,
                "context_length": ctx,
                "history_steps": p.history_steps,
                "horizon": p.horizon,
                "eval_series": p.eval_series,
                "budget": p.budget,
                "lr": 0.0,
                "rank": 0,
            }
            with budgeted_run(
                f"baseline {ctx}",
                "baseline",
                p,
                planned,
                lambda params=params: log_common(prep, params),
                nested=True,
                tags={"base_model": base},
            ) as (_, meter):
                model, tok = model_and_tokenizer()
                mlflow.log_params({f"base_{k}": v for k, v in describe_base(model).items()})
                ev = evaluate_llm(model, tok, prep.codec, val, p.history_steps, p.horizon, ctx)
                final = log_evaluation(ev, "val", p.horizon, prep.traj.time)
                meter.log(ev.flops, 0)
                final["budget_share"] = ev.flops / p.budget
                mlflow.log_metric("budget_share", final["budget_share"])
                describe_run(run_description("baseline", params, final, state="zero-shot"))
            scores[ctx] = final.get(SELECTION_METRIC, float("nan"))
        mlflow.log_metrics({f"{SELECTION_METRIC}_ctx{c}": v for c, v in scores.items()})
        children = [({"context_length": c}, v) for c, v in scores.items()]
        describe_run(parent_description("baseline", len(scores), "contexts", children))
    click.echo(json.dumps(scores))


if __name__ == "__main__":
    main()
