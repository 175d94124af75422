"""Reading earlier runs of the experiment: the best settings of a phase, finished steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from lvtrack.ledger import TAG_PHASE

#: The validation forecasting metric that picks settings and the champion (lower is better):
#: MSE over the 5-step horizon with invalid values replaced by persistence, so a model cannot
#: look good by emitting unparsable text. Equal to `val_mse_h5` when every value is valid.
SELECTION_METRIC = "val_mse_filled_h5"


@dataclass(frozen=True)
class Best:
    run_id: str
    lr: float
    rank: int
    context_length: int
    value: float


def finished_runs(
    experiment_id: str, phase: str, preset: str, client: MlflowClient | None = None
) -> list[Run]:
    """FINISHED runs of a phase and preset in the experiment, newest first."""
    client = client or MlflowClient()
    return list(
        client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{TAG_PHASE}` = '{phase}' and tags.preset = '{preset}' "
                "and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )
    )


def best_of(
    experiment_id: str, phase: str, preset: str, metric: str = SELECTION_METRIC
) -> Best | None:
    """The finished run of `phase` with the lowest `metric`, or None if there is none."""
    scored = [
        r
        for r in finished_runs(experiment_id, phase, preset)
        if metric in r.data.metrics and math.isfinite(r.data.metrics[metric])
    ]
    if not scored:
        return None
    run = min(scored, key=lambda r: r.data.metrics[metric])
    p = run.data.params
    return Best(
        run_id=run.info.run_id,
        lr=float(p["lr"]),
        rank=int(p["rank"]),
        context_length=int(p["context_length"]),
        value=run.data.metrics[metric],
    )


def step_errors(run: Run, split: str, horizon: int, metric: str = "mse") -> list[float] | None:
    """The run's `{split}_{metric}_step1..H` metrics (error against the step ahead), or None when
    it did not log all of them."""
    keys = [f"{split}_{metric}_step{h}" for h in range(1, horizon + 1)]
    values = [run.data.metrics.get(k) for k in keys]
    return None if any(v is None for v in values) else [float(v) for v in values]  # type: ignore[arg-type]


def reference_runs(experiment_id: str, preset: str) -> dict[str, Run]:
    """The newest finished run of each reference forecaster (`reference` entry point; tag
    `forecaster`) in the experiment: name -> run."""
    out: dict[str, Run] = {}
    for run in finished_runs(experiment_id, "reference", preset):  # newest first
        name = run.data.tags.get("forecaster")
        if name and name not in out:
            out[name] = run
    return out


def reference_step_errors(
    experiment_id: str, preset: str, split: str, horizon: int, metric: str = "mse"
) -> dict[str, list[float]]:
    """Per-step errors of each reference forecaster's newest run (:func:`reference_runs`) that
    logged them: name -> errors at steps 1..H."""
    out: dict[str, list[float]] = {}
    for name, run in reference_runs(experiment_id, preset).items():
        if errors := step_errors(run, split, horizon, metric):
            out[name] = errors
    return out
