"""`context` entry point: context-length sweep with the sweep's best lr and rank."""

from __future__ import annotations

import json

import click
import mlflow

from lvtrack.describe import describe_run, parent_description
from lvtrack.options import CONTEXTS, preset_value, run_options, steps_option
from lvtrack.presets import get_preset
from lvtrack.request import TrainRequest
from lvtrack.runs import parent_run
from lvtrack.selection import SELECTION_METRIC, best_of
from lvtrack.tracking import setup_tracking
from lvtrack.training_run import train_run


@click.command()
@run_options
@preset_value("contexts", CONTEXTS, "--contexts", "Comma-separated context lengths")
@steps_option("context_steps")
def main(
    preset: str,
    base_model: str | None,
    data_file: str,
    seed: int,
    contexts: tuple[int, ...] | None,
    steps: int | None,
    eval_series: int | None,
) -> None:
    """Train at each context length with the best (lr, rank) of the finished sweep."""
    p = get_preset(
        preset,
        base_model=base_model,
        context_steps=steps,
        eval_series=eval_series,
        contexts=contexts,
    )
    sizes = p.contexts
    scores: dict[int, float] = {}
    with parent_run(
        "context",
        "context",
        {"preset": p.name, "contexts": ",".join(map(str, sizes)), "steps": p.context_steps},
        p.name,
    ):
        best = best_of(setup_tracking(), "sweep", p.name)
        lr, rank = (best.lr, best.rank) if best else (p.lr, p.rank)
        mlflow.log_params(
            {
                "child_lr": lr,
                "child_rank": rank,
                "settings_from": best.run_id if best else "preset defaults",
            }
        )
        for ctx in sizes:
            req = TrainRequest.from_preset(
                p,
                "context",
                f"context {ctx}",
                p.context_steps,
                lr=lr,
                rank=rank,
                context_length=ctx,
                seed=seed,
                data_file=data_file,
            )
            scores[ctx] = train_run(req, nested=True).get(SELECTION_METRIC, float("nan"))
        best_ctx = min(scores, key=lambda c: scores[c])
        mlflow.log_param("best_context_length", best_ctx)
        mlflow.log_metric(f"best_{SELECTION_METRIC}", scores[best_ctx])
        children = [({"context_length": c}, v) for c, v in scores.items()]
        fixed = {"lr": lr, "rank": rank}
        describe_run(parent_description("context", len(scores), "runs", children, fixed=fixed))
    click.echo(json.dumps({"lr": lr, "rank": rank, "best_context_length": best_ctx}))


if __name__ == "__main__":
    main()
